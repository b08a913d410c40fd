r"""SCE-MAE Table 4 on a dataset we have: matching + detection, with references.

Rows (every row on the same val faces, the same matching pairs and the same
training faces; features by cover-and-stride):
  (a) random ViT      - untrained encoder (seed `backbone.seed`), last layer
                        ("backbone" features);
  (b) MAE (Baseline)  - the stage-1 encoder's last-layer features
                        ("backbone");
  (c) cluster, no LCR - a stage-2 run trained WITH clustering (CARB) but
                        without the LCR loss's locality and repellence: the
                        plain distance-weighted correspondence loss of
                        DVE / CL (`--config.lcr.locality=distance`, all
                        `lcr.r_*` = 1); the paper's "Cluster yes, L_LCR no"
                        row. Matching on its projector, detection on
                        `detection.feature_kind`;
  (d) SCE-MAE         - the stage-2 run (CARB + LCR): matching on the
                        unit-norm projector features, detection on
                        `detection.feature_kind` ("concat" = last-layer
                        backbone tokens + projector, the paper's regressor
                        input);
  (e) CL projector    - not a paper row: (d) trained with CL's
                        spatial-softmax projector
                        (`--config.projector.kind=spatial_softmax`) instead
                        of the linear one.
References, computed by the same code on the same faces:
  * identity matcher  - predicts the source pixel (no features at all);
  * mean-shape matcher / detector - predicts the mean landmarks of the
    training crops (no image at all);
  * supervised CNN    - `supervised.py`: a small CNN + the same head trained
    end to end WITH the labels on the same training crops (what labels buy);
    `--supervised_epochs=0` skips it.

Columns:
  * Same / Diff.: DVE landmark matching (`matching.py`): pairs (2k, 2k+1)
    over the eval split with DVE's evaluation TPS warps; mean pixel error in
    a 70 x 70 frame. The per-pair errors of every row are written to
    `matching_errors.npz`; `bootstrap` in the JSON holds paired bootstrap
    95 % intervals (over pairs) of (d) - (b), (b) - identity and (d) -
    identity, for Same and Diff.
  * NME (%): 5-point detection on the row's frozen dense features
    (`detection.train_all_annotations`): the features of EVERY training face
    (and of its mirror image when `detection.flip`) and of every val face are
    cached once at `detection.stride`, the all-annotation head
    (`detection.head`, default the paper's conv block) is trained with
    `detection.epochs` epochs of the decaying schedule, and the mean per-face
    NME on the val faces (% of the inter-ocular distance,
    `detection.normaliser`) is reported; the JSON has the per-epoch curve.

With configs/mtfl_matching.py (the default) these are MTFL-val numbers (the
fixed split of the shared 80 x 80 MTFL copy, "center" crops), not MAFL /
AFLW results, and not comparable with the paper's Table 4 values.

Detection settings: `configs.common.detection()`'s `detection`
section, overridden by the `detection` section of `--detection_config`
(default configs/mtfl_detection.py), overridden by the `detection` section
of `--config` when it has one. Only that section of `--detection_config` is
read; data, backbone and the matching stride come from `--config`.

Writes `ablation.md`, `ablation.json` (row name -> result or {"skipped":
reason}) and `matching_errors.npz` to --out.

  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce_no_lcr \
      --config.backbone.checkpoint=runs/faces_mae \
      --config.lcr.locality=distance --config.lcr.r_att_att=1 \
      --config.lcr.r_att_inatt=1 --config.lcr.r_inatt_inatt=1
  python -m sce_mae_jax.ablation --config=configs/mtfl_matching.py \
      --stage1_workdir=runs/faces_mae --stage2_workdir=runs/mtfl_sce \
      --stage2_no_lcr_workdir=runs/mtfl_sce_no_lcr --out=runs/ablation
  (--rows=c,d evaluates only those rows; --skip_detection: matching only;
   smoke run: --config.matching.num_pairs=16 --detection_epochs=1
   --supervised_epochs=1)
Rows whose inputs are missing (no --stage1_workdir: (b); no
--stage2_no_lcr_workdir: (c); no --stage2_workdir: (d); no
--stage2_cl_workdir: (e)) are skipped and
listed as such, never filled in. Row (c)'s JSON records the `lcr` settings
of its workdir's config.json, so a mislabelled run shows.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, NamedTuple, Optional

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from configs import common
from data import schemes
from landmarks import metrics
from sce_mae_jax import backbone as backbone_lib
from sce_mae_jax import detection
from sce_mae_jax import keypoint_head
from sce_mae_jax import matching
from sce_mae_jax import stage2
from sce_mae_jax import supervised
from training import checkpoints as ckpt_lib

_FLAGS = {}  # filled by _define_flags() when run as a program.


class Row(NamedTuple):
  letter: str            # --rows selects by it
  name: str
  source: str            # "random" | "stage1" | "stage2" | "stage2_no_lcr"
  kind: str              # matching feature kind (stage2.FEATURE_KINDS)
  detection_kind: Optional[str]  # None: `detection.feature_kind`


ROWS = (Row("a", "(a) random ViT", "random", "backbone", "backbone"),
        Row("b", "(b) MAE last layer (Baseline)", "stage1", "backbone",
            "backbone"),
        Row("c", "(c) clustering, no LCR", "stage2_no_lcr", "projector", None),
        Row("d", "(d) SCE-MAE (cluster + LCR)", "stage2", "projector", None),
        Row("e", "(e) SCE-MAE, CL spatial-softmax projector", "stage2_cl",
            "projector", None))
ROW_LETTERS = tuple(row.letter for row in ROWS)
IDENTITY = "reference: identity matcher (source pixel)"
MEAN_SHAPE = "reference: mean training shape"
SUPERVISED = "reference: supervised CNN + same head (labels)"
BOOTSTRAP_PAIRS = (("d", "b"), ("b", "identity"), ("d", "identity"))


def detection_settings(config, detection_config=None):
  """The `detection` section: base defaults < `detection_config` < `config`.

  Returns:
    a new ConfigDict (`configs.common.detection().detection` with the keys of
    `detection_config.detection`, then of `config.detection`, overridden).
  """
  settings = common.detection().detection
  for source in (detection_config, config):
    if source is not None and "detection" in source:
      section = source.detection
      unknown = sorted(set(section.keys()) - set(settings.keys()))
      if unknown:
        raise ValueError(f"unknown detection settings {unknown}; expected "
                         f"keys of {sorted(settings.keys())}.")
      settings.update(section.to_dict())
  return settings


def _with_detection(config, settings) -> ml_collections.ConfigDict:
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.detection = settings
  return cfg


def evaluate_detection(config, model, params, kind: str,
                       train: Dict[str, np.ndarray],
                       val: Dict[str, np.ndarray], settings, *,
                       epochs: Optional[int] = None, log=print
                       ) -> Dict[str, object]:
  """One row's NME: cache `kind` features of all training faces (+ mirrors)
  and the val faces, train the all-annotation head, evaluate on `val`."""
  cfg = _with_detection(config, settings)
  size = val["image"].shape[1]
  head = detection.head_from_config(
      cfg, train["landmarks"].shape[1], "head",
      detection.norm_groups_for(kind, model))
  images, landmarks = detection.training_samples(
      train["image"], train["landmarks"], bool(settings.flip))
  n = images.shape[0]
  t0 = time.time()
  feats = detection.cache_features(
      model, params, np.concatenate([images, val["image"]]), kind,
      stride=detection.detection_stride(cfg),
      dtype=np.dtype(settings.cache_dtype))
  del images
  t1 = time.time()
  overrides = {"seed": int(config.seed)}
  if epochs:
    overrides["epochs"] = int(epochs)
  train_settings = detection.all_annotation_settings(settings, **overrides)
  out = detection.train_all_annotations(
      head, feats[:n], landmarks, feats[n:], val["landmarks"], size,
      train_settings, normaliser=settings.normaliser,
      augment=detection.all_annotation_augment(settings, size),
      eval_every=int(settings.eval_every), log=None)
  shape = feats.shape
  del feats
  log(f"  detection ({kind}, features {shape[1:]}): caching {t1 - t0:.0f} s, "
      f"head {time.time() - t1:.0f} s, final epoch "
      f"{out['history'][-1]}")
  return {"nme": float(np.mean(out["nme"])),
          "nme_median": float(np.median(out["nme"])),
          "detection_train_faces": int(train["image"].shape[0]),
          "detection_train_samples": int(n),
          "detection_epochs": int(train_settings.epochs),
          "detection_feature_kind": kind,
          "detection_history": out["history"]}


def mean_shape_nme(train: Dict[str, np.ndarray], val: Dict[str, np.ndarray],
                   normaliser: str) -> Dict[str, float]:
  """The mean-shape reference row (`keypoint_head.mean_shape_nme`)."""
  per_face = keypoint_head.mean_shape_nme(train["landmarks"],
                                          val["landmarks"], normaliser)
  return {"nme": float(np.mean(per_face)),
          "nme_median": float(np.median(per_face)),
          "detection_train_faces": int(train["landmarks"].shape[0])}


def supervised_reference(config, train, val, settings, *, epochs: int,
                         log=print) -> Dict[str, object]:
  """The supervised row: `supervised.SmallCNN` + the all-annotation head,
  trained end to end with the labels (flips), scored like the other rows."""
  cfg = _with_detection(config, settings)
  k = train["landmarks"].shape[1]
  model = supervised.SupervisedDetector(
      head=detection.head_from_config(cfg, k, "head"))
  normaliser = settings.normaliser

  def evaluate(params):
    pred = supervised.predict(model, params, val["image"])
    return np.mean(keypoint_head.nme_percent(pred, val["landmarks"],
                                             normaliser))

  out = supervised.train_supervised(
      model, train, epochs=int(epochs),
      scheme=schemes.get_scheme(k),
      batch_size=int(settings.batch_size),
      learning_rate=float(settings.learning_rate), seed=int(config.seed),
      evaluate=evaluate, log=log)
  pred = supervised.predict(model, out["params"], val["image"])
  per_face = keypoint_head.nme_percent(pred, val["landmarks"], normaliser)
  return {"nme": float(np.mean(per_face)),
          "nme_median": float(np.median(per_face)),
          "detection_train_faces": int(train["image"].shape[0]),
          "supervised_epochs": int(epochs),
          "supervised_history": out["history"],
          "supervised_seconds": out["seconds"]}


STAGE2_FLAGS = {"stage2": "--stage2_workdir",
                "stage2_no_lcr": "--stage2_no_lcr_workdir",
                "stage2_cl": "--stage2_cl_workdir"}


def row_config(config, row: Row):
  """The config a row's model is built from: row (e) has CL's projector."""
  if row.source != "stage2_cl":
    return config
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.projector.kind = "spatial_softmax"
  return cfg


def _row_params(config, model, row: Row, stage1_workdir: str,
                workdirs: Dict[str, str], projector):
  """`(params, None)` or `(None, skip reason)`; `workdirs`: row source ->
  stage-2 workdir."""
  if row.source in STAGE2_FLAGS:
    workdir = workdirs.get(row.source, "")
    if not workdir:
      return None, f"no {STAGE2_FLAGS[row.source]}"
    return detection.load_stage2_params(config, model, workdir), None
  cfg = config.copy_and_resolve_references()
  if row.source == "stage1":
    if not stage1_workdir:
      return None, "no --stage1_workdir"
    cfg.backbone.checkpoint = stage1_workdir
  else:
    cfg.backbone.checkpoint = ""
  return {"encoder": backbone_lib.backbone_params(cfg, model.encoder),
          "projector": projector}, None


def bootstrap_intervals(errors: Dict[str, Dict[str, np.ndarray]],
                        seed: int = 0) -> Dict[str, dict]:
  """Paired bootstrap (over pairs) of `BOOTSTRAP_PAIRS` present in `errors`
  (key -> {"same": [P, K], "diff": [P, K]}); "a-b" -> {"same", "diff"}."""
  out = {}
  for a, b in BOOTSTRAP_PAIRS:
    if a in errors and b in errors:
      out[f"{a}-{b}"] = {tag: metrics.paired_bootstrap(
          errors[a][tag], errors[b][tag], seed=seed) for tag in ("same",
                                                                 "diff")}
  return out


def _features_label(row: Row, detection_kind: str, with_detection: bool
                    ) -> str:
  if with_detection and detection_kind != row.kind:
    return f"{row.kind} (NME: {detection_kind})"
  return row.kind


def _number(r: dict, key: str, fmt: str) -> str:
  return format(r[key], fmt) if key in r else ""


def markdown_table(results: Dict[str, dict], detection_kind: str,
                   with_detection: bool) -> str:
  """`| Method | features | Same | Diff. | NME (%) |`: references, rows."""
  lines = ["| Method | features | Same | Diff. | NME (%) |",
           "|---|---|---|---|---|"]
  for name, kind in ((IDENTITY, "none"), (MEAN_SHAPE, "none"),
                     (SUPERVISED, "CNN trained with labels")):
    if name in results:
      r = results[name]
      lines.append(f"| {name} | {kind} | {_number(r, 'same', '.3f')} | "
                   f"{_number(r, 'diff', '.3f')} | {_number(r, 'nme', '.2f')} "
                   "|")
  for row in ROWS:
    r = results[row.name]
    kind = _features_label(row, row.detection_kind or detection_kind,
                           with_detection)
    if "skipped" in r:
      lines.append(f"| {row.name} | {kind} | skipped ({r['skipped']}) | | |")
      continue
    nme = _number(r, "nme", ".2f") or "not run"
    lines.append(f"| {row.name} | {kind} | {r['same']:.3f} | {r['diff']:.3f} "
                 f"| {nme} |")
  return "\n".join(lines)


def bootstrap_table(intervals: Dict[str, dict]) -> str:
  lines = ["| difference (70 px frame) | Same: mean [95 % CI] | "
           "Diff.: mean [95 % CI] |", "|---|---|---|"]
  for key, v in intervals.items():
    cells = [f"{v[t]['mean_difference']:+.3f} [{v[t]['low']:+.3f}, "
             f"{v[t]['high']:+.3f}]" for t in ("same", "diff")]
    lines.append(f"| {key} | {cells[0]} | {cells[1]} |")
  return "\n".join(lines)


def run_ablation(config, stage1_workdir: str, stage2_workdir: str,
                 out_dir: str, *, stage2_no_lcr_workdir: str = "",
                 stage2_cl_workdir: str = "",
                 rows=ROW_LETTERS, detection_config=None,
                 detection_epochs: Optional[int] = None,
                 supervised_epochs: int = 0, skip_detection: bool = False,
                 log=print) -> Dict[str, dict]:
  """Evaluates the references and the selected rows; writes MD, JSON, NPZ.

  Returns:
    row name -> result dict (see the module docstring) or `{"skipped": why}`,
    plus "bootstrap".
  """
  unknown = sorted(set(rows) - set(ROW_LETTERS))
  if unknown:
    raise ValueError(f"unknown rows {unknown}; expected letters of "
                     f"{ROW_LETTERS}.")
  config = config.copy_and_resolve_references()
  settings = detection_settings(config, detection_config)
  seed = int(config.seed)
  model = stage2.FeatureModel(config)
  split = config.data.eval_splits[0]
  val = stage2.load_arrays(config, stage2.list_records(config, split,
                                                       eval_set=True))
  t0 = time.time()
  train = stage2.load_arrays(config, stage2.list_records(
      config, config.data.train_split))
  log(f"{train['image'].shape[0]} training and {val['image'].shape[0]} val "
      f"faces loaded in {time.time() - t0:.0f} s")
  pairs = matching.make_pairs(val["image"], val["landmarks"],
                              int(config.matching.num_pairs), seed,
                              dict(config.matching.warp))
  mean_shape = np.mean(train["landmarks"], axis=0)
  results = {IDENTITY: matching.baseline_matching(pairs),
             MEAN_SHAPE: matching.baseline_matching(pairs, mean_shape)}
  errors = {"identity": {t: results[IDENTITY][f"{t}_errors"]
                         for t in ("same", "diff")}}
  if not skip_detection:
    results[MEAN_SHAPE].update(mean_shape_nme(train, val,
                                              settings.normaliser))
  for name in (IDENTITY, MEAN_SHAPE):
    log(f"{name}: " + matching.format_result(results[name]))
  if not skip_detection and supervised_epochs > 0:
    results[SUPERVISED] = supervised_reference(
        config, train, val, settings, epochs=supervised_epochs, log=log)
    log(f"{SUPERVISED}: NME {results[SUPERVISED]['nme']:.2f}%")
  proj = jax.tree.map(np.asarray, model.init_projector(jax.random.PRNGKey(0)))
  workdirs = {"stage2": stage2_workdir, "stage2_no_lcr": stage2_no_lcr_workdir,
              "stage2_cl": stage2_cl_workdir}
  base_model = model
  for row in ROWS:
    if row.letter not in rows:
      results[row.name] = {"skipped": "not selected (--rows)"}
      continue
    model = (base_model if row.source != "stage2_cl" else
             stage2.FeatureModel(row_config(config, row)))
    params, skipped = _row_params(config, model, row, stage1_workdir,
                                  workdirs, proj)
    if skipped:
      results[row.name] = {"skipped": skipped}
      log(f"{row.name}: skipped ({skipped})")
      continue
    t0 = time.time()
    res = matching.evaluate_matching(model, params, val, kind=row.kind,
                                     pairs=pairs)
    res["matching_seconds"] = time.time() - t0
    errors[row.letter] = {t: res[f"{t}_errors"] for t in ("same", "diff")}
    if row.source == "stage2_no_lcr":
      # Provenance: the run's own lcr settings, so a mislabelled run shows.
      res["stage2_lcr"] = (ckpt_lib.read_workdir_config(stage2_no_lcr_workdir)
                           or {}).get("lcr")
    log(f"{row.name}: " + matching.format_result(res) +
        f" [{res['matching_seconds']:.0f} s]")
    if not skip_detection:
      t0 = time.time()
      res.update(evaluate_detection(
          config, model, params, row.detection_kind or settings.feature_kind,
          train, val, settings, epochs=detection_epochs, log=log))
      res["detection_seconds"] = time.time() - t0
      log(f"{row.name}: NME {res['nme']:.2f}% (median "
          f"{res['nme_median']:.2f}%) [{res['detection_seconds']:.0f} s]")
    results[row.name] = res
    del params
  results["bootstrap"] = bootstrap_intervals(errors, seed)
  table = markdown_table(results, settings.feature_kind, not skip_detection)
  boot = bootstrap_table(results["bootstrap"])
  header = (f"{config.data.name} {split} ({val['image'].shape[0]} faces; not "
            "MAFL / AFLW numbers). Same / Diff.: mean matching error in pixels "
            f"of a 70 x 70 frame, {results[IDENTITY]['num_pairs']} DVE pairs, "
            f"stride {config.inference.stride}.")
  if not skip_detection:
    first = next((results[r.name] for r in ROWS
                  if "detection_epochs" in results[r.name]), None)
    epochs = first["detection_epochs"] if first else detection_epochs
    header += (f" NME (%): mean per-face NME in % of the inter-ocular "
               f"distance ({settings.normaliser}) of the {settings.head} head "
               f"(hidden {settings.hidden}, {settings.intermediate} "
               f"intermediate maps per landmark) trained on the frozen "
               f"features (stride {detection_stride_of(config, settings)}) "
               f"of all {train['image'].shape[0]} training faces"
               f"{' and their mirror images' if settings.flip else ''} for "
               f"{epochs} epochs (batch {settings.batch_size}, "
               f"{'AMSGrad' if settings.amsgrad else 'Adam'} "
               f"{settings.learning_rate}, weight decay "
               f"{settings.weight_decay}, {settings.schedule} schedule).")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ablation.md"), "w") as f:
    f.write(header + "\n\n" + table + "\n\nPaired bootstrap over pairs:\n\n" +
            boot + "\n")
  with open(os.path.join(out_dir, "ablation.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True,
              default=matching.json_default)
  np.savez_compressed(os.path.join(out_dir, "matching_errors.npz"),
                      **{f"{k}_{t}": v[t] for k, v in errors.items()
                         for t in ("same", "diff")})
  log(table + "\n\n" + boot)
  return results


def detection_stride_of(config, settings) -> int:
  return detection.detection_stride(_with_detection(config, settings))


def _define_flags():
  """The command-line flags, defined only when this module is the program:
  importing it (tests, run.py in the same process) must not clash with
  run.py's --config."""
  f = _FLAGS
  f["config"] = config_flags.DEFINE_config_file(
      "config", "configs/mtfl_matching.py",
      "A stage-2 config (data, backbone).")
  f["detection_config"] = config_flags.DEFINE_config_file(
      "detection_config", "configs/mtfl_detection.py",
      "A config whose `detection` section sets the detection head and its "
      "training (only that section is read).")
  f["stage1"] = flags.DEFINE_string("stage1_workdir", "",
                                    "Stage-1 (MAE) workdir.")
  f["stage2"] = flags.DEFINE_string("stage2_workdir", "",
                                    "Stage-2 (CARB+LCR) workdir.")
  f["stage2_no_lcr"] = flags.DEFINE_string(
      "stage2_no_lcr_workdir", "",
      "Stage-2 workdir trained with clustering but without LCR (row (c)): "
      "--config.lcr.locality=distance and all three lcr.r_* = 1.")
  f["stage2_cl"] = flags.DEFINE_string(
      "stage2_cl_workdir", "",
      "Stage-2 workdir trained with --config.projector.kind=spatial_softmax "
      "(row (e)).")
  f["rows"] = flags.DEFINE_list(
      "rows", list(ROW_LETTERS),
      "The rows to evaluate (letters); the others are listed as not "
      "selected.")
  f["out"] = flags.DEFINE_string("out", "runs/ablation", "Output folder.")
  f["epochs"] = flags.DEFINE_integer(
      "detection_epochs", 0,
      "Epochs of the all-annotation head per row (0: detection.epochs).")
  f["supervised_epochs"] = flags.DEFINE_integer(
      "supervised_epochs", 0,
      "Epochs of the supervised CNN reference (0: skip it).")
  f["skip_detection"] = flags.DEFINE_bool("skip_detection", False,
                                          "Only the matching columns.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every restore.
  f = {k: v.value for k, v in _FLAGS.items()}
  run_ablation(f["config"], f["stage1"], f["stage2"], f["out"],
               stage2_no_lcr_workdir=f["stage2_no_lcr"],
               stage2_cl_workdir=f["stage2_cl"], rows=tuple(f["rows"]), detection_config=f["detection_config"],
               detection_epochs=f["epochs"] or None,
               supervised_epochs=f["supervised_epochs"],
               skip_detection=f["skip_detection"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)

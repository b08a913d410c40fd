r"""SCE-MAE Table 4 on a dataset we have: matching + detection ablation.

Rows (all at the same resolution, cover-and-stride stride `inference.stride`):
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
                        `detection.feature_kind`. (Replacing tokens by their
                        cluster centres at inference, "backbone_carb", is not
                        this row: clustering is a training-time device and
                        at inference it erases locality; measured on MTFL
                        val with the faces_mae backbone, 500 pairs: 26.6 /
                        29.0 px, vs 1.38 / 4.91 without it.)
  (d) SCE-MAE         - the stage-2 run (CARB + LCR): matching on the
                        unit-norm projector features ("projector"), detection
                        on `detection.feature_kind` ("concat" = last-layer
                        backbone tokens + projector, the paper's regressor
                        input, by default).

Columns:
  * Same / Diff.: DVE landmark matching (`matching.py`): mean pixel error in a
    70 x 70 frame of `matching.num_pairs` val faces matched against their own
    thin-plate-spline warp (same identity) and against another face's warp
    (different identity).
  * NME (%): 5-point landmark detection on the row's frozen dense features:
    the features of N training faces and of every val face are computed once
    (`detection.cache_features`), a `detection.DetectionHead` is trained on
    the N faces for `--detection_steps` Adam steps (default 500, the
    few-shot study's count: 16 epochs of 1000 faces; batch
    `detection.fewshot_batch_size`, learning rate `detection.learning_rate`,
    seed `config.seed`; `detection.fit_and_evaluate`)
    and evaluated on the val faces: mean (table; JSON also the median) of the
    per-face NME in % of the inter-ocular distance (`detection.normaliser`,
    "five_point": eye centres). The N training faces
    (`--detection_train_faces`, default 1000) are the first N of
    `np.random.default_rng(config.seed).permutation(len(train))` over the
    train split of `config.data` (for the shared MTFL copy: the 9,000 faces
    of `stage2.fixed_split`, never a val face), kept in file order.

With configs/mtfl_matching.py (the default) these are MTFL-val numbers (the
1,000 faces of the fixed split of the shared 80 x 80 MTFL copy, 96 px crops),
not MAFL / AFLW results, and not comparable with the paper's Table 4 values.

Detection settings (head width, intermediate maps, normaliser, batch, learning
rate): `sce_mae_jax.detection.base_config()`'s `detection` section, overridden
by the `detection` section of `--detection_config` (default
configs/mtfl_detection.py: hidden 64, "concat"), overridden by the `detection`
section of `--config` when it has one. Only the `detection` section of
`--detection_config` is read; data, backbone and stride come from `--config`.

Writes `ablation.md` (Markdown table) and `ablation.json` (row name ->
{"same", "diff", "same_px", "diff_px", "num_pairs", "feature_kind", "nme",
"nme_median", "detection_train_faces", "detection_steps",
"detection_feature_kind", "detection_final_loss", "matching_seconds",
"detection_seconds"} or {"skipped": reason}) to --out.

  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce_no_lcr \
      --config.backbone.checkpoint=runs/faces_mae \
      --config.lcr.locality=distance --config.lcr.r_att_att=1 \
      --config.lcr.r_att_inatt=1 --config.lcr.r_inatt_inatt=1
  python -m sce_mae_jax.ablation --config=configs/mtfl_matching.py \
      --stage1_workdir=runs/faces_mae --stage2_workdir=runs/mtfl_sce \
      --stage2_no_lcr_workdir=runs/mtfl_sce_no_lcr --out=runs/ablation
  (--rows=c,d evaluates only those rows; the others are listed as not
   selected)
  (tiny smoke run: --config.matching.num_pairs=16 --detection_train_faces=64
   --detection_steps=50; matching only: --skip_detection)
Rows whose inputs are missing (no --stage1_workdir: (b); no
--stage2_no_lcr_workdir: (c); no --stage2_workdir: (d)) are skipped and
listed as such, never filled in. Row (c)'s JSON records the `lcr` settings
of its workdir's config.json, so a mislabelled run shows.

Cost (DeiT-T, stride 4 = 4 shifted forwards per face; measured niced on the
shared 2-core CPU): ~0.12 CPU-s per face per dense pass, ~0.4 CPU-s per head
step (hidden 64, batch 32); a row is ~1,500 dense passes for 500 matching
pairs, 2,000 for caching 1,000 train + 1,000 val faces, plus the head steps:
~11 CPU-min per row at 500 steps (each extra 1,000 steps: +~7 CPU-min).
Per-row timings are logged and stored in the JSON.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, NamedTuple, Optional

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags
import numpy as np

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
        Row("d", "(d) SCE-MAE (cluster + LCR)", "stage2", "projector", None))
ROW_LETTERS = tuple(row.letter for row in ROWS)


def detection_settings(config, detection_config=None):
  """The `detection` section: base defaults < `detection_config` < `config`.

  Returns:
    a new ConfigDict (`detection.base_config().detection` with the keys of
    `detection_config.detection`, then of `config.detection`, overridden).
  """
  from sce_mae_jax import detection  # pylint: disable=g-import-not-at-top
  settings = detection.base_config().detection
  for source in (detection_config, config):
    if source is not None and "detection" in source:
      section = source.detection
      unknown = sorted(set(section.keys()) - set(settings.keys()))
      if unknown:
        raise ValueError(f"unknown detection settings {unknown}; expected "
                         f"keys of {sorted(settings.keys())}.")
      settings.update(section.to_dict())
  return settings


def detection_train_indices(num_train: int, count: int, seed: int
                            ) -> np.ndarray:
  """The first `count` of `default_rng(seed).permutation(num_train)`, sorted.
  """
  if not 0 < count <= num_train:
    raise ValueError(f"--detection_train_faces must be in [1, {num_train}] "
                     f"(the size of the train split), got {count}.")
  perm = np.random.default_rng(int(seed)).permutation(int(num_train))
  return np.sort(perm[:count])


def evaluate_detection(model, params, kind: str, train: Dict[str, np.ndarray],
                       val: Dict[str, np.ndarray], settings, *, steps: int,
                       seed: int, log=print) -> Dict[str, float]:
  """One row's NME: cache `kind` features, fit the head, evaluate on `val`.

  Args:
    train, val: `stage2.load_arrays` outputs (`image`, `landmarks`).
    settings: `detection_settings(...)`.
  """
  from sce_mae_jax import detection  # pylint: disable=g-import-not-at-top
  size = val["image"].shape[1]
  head = detection.head_from_config(
      ml_collections.ConfigDict({"detection": settings.to_dict()}),
      train["landmarks"].shape[1])
  t0 = time.time()
  n = train["image"].shape[0]
  # One call (one compilation) for both sets.
  feats = detection.cache_features(
      model, params, np.concatenate([train["image"], val["image"]]), kind)
  train_feats, val_feats = feats[:n], feats[n:]
  t1 = time.time()
  per_face, losses = detection.fit_and_evaluate(
      head, train_feats, train["landmarks"], val_feats, val["landmarks"],
      size, normaliser=settings.normaliser, steps=int(steps),
      batch_size=int(settings.fewshot_batch_size),
      learning_rate=float(settings.learning_rate), beta=float(settings.beta),
      seed=int(seed))
  shape = feats.shape
  del feats, train_feats, val_feats
  log(f"  detection ({kind}, features {shape[1:]}): caching {t1 - t0:.0f} s, "
      f"head {time.time() - t1:.0f} s, final train loss {losses[-1]:.4g}")
  return {"nme": float(np.mean(per_face)),
          "nme_median": float(np.median(per_face)),
          "detection_train_faces": int(train["image"].shape[0]),
          "detection_steps": int(steps),
          "detection_feature_kind": kind,
          "detection_final_loss": float(losses[-1])}


MEAN_SHAPE = "reference: mean training shape"


def mean_shape_nme(train: Dict[str, np.ndarray], val: Dict[str, np.ndarray],
                   normaliser: str) -> Dict[str, float]:
  """The mean-shape reference row (`detection.mean_shape_nme`)."""
  from sce_mae_jax import detection  # pylint: disable=g-import-not-at-top
  per_face = detection.mean_shape_nme(train["landmarks"], val["landmarks"],
                                      normaliser)
  return {"nme": float(np.mean(per_face)),
          "nme_median": float(np.median(per_face)),
          "detection_train_faces": int(train["landmarks"].shape[0])}


def _row_params(config, model, row: Row, stage1_workdir: str,
                stage2_workdir: str, projector,
                stage2_no_lcr_workdir: str = ""):
  """`(params, None)` or `(None, skip reason)`."""
  from sce_mae_jax import backbone as backbone_lib  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import detection  # pylint: disable=g-import-not-at-top
  if row.source in ("stage2", "stage2_no_lcr"):
    workdir, flag = ((stage2_workdir, "--stage2_workdir")
                     if row.source == "stage2" else
                     (stage2_no_lcr_workdir, "--stage2_no_lcr_workdir"))
    if not workdir:
      return None, f"no {flag}"
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


def _features_label(row: Row, detection_kind: str, with_detection: bool
                    ) -> str:
  if with_detection and detection_kind != row.kind:
    return f"{row.kind} (NME: {detection_kind})"
  return row.kind


def markdown_table(results: Dict[str, dict], detection_kind: str,
                   with_detection: bool) -> str:
  """`| Method | features | Same | Diff. | NME (%) |`, one line per ROW."""
  lines = ["| Method | features | Same | Diff. | NME (%) |",
           "|---|---|---|---|---|"]
  for row in ROWS:
    r = results[row.name]
    kind = _features_label(row, row.detection_kind or detection_kind,
                           with_detection)
    if "skipped" in r:
      lines.append(f"| {row.name} | {kind} | skipped ({r['skipped']}) | | |")
      continue
    nme = f"{r['nme']:.2f}" if "nme" in r else "not run"
    lines.append(f"| {row.name} | {kind} | {r['same']:.3f} | {r['diff']:.3f} "
                 f"| {nme} |")
  if MEAN_SHAPE in results:
    lines.append(f"| {MEAN_SHAPE} | none | | | "
                 f"{results[MEAN_SHAPE]['nme']:.2f} |")
  return "\n".join(lines)


def run_ablation(config, stage1_workdir: str, stage2_workdir: str,
                 out_dir: str, *, stage2_no_lcr_workdir: str = "",
                 rows=ROW_LETTERS, detection_config=None,
                 detection_train_faces: int = 1000,
                 detection_steps: int = 500, skip_detection: bool = False,
                 log=print) -> Dict[str, dict]:
  """Evaluates the selected rows that have their inputs; writes MD + JSON.

  Returns:
    row name -> result dict (see the module docstring) or `{"skipped": why}`.
  """
  unknown = sorted(set(rows) - set(ROW_LETTERS))
  if unknown:
    raise ValueError(f"unknown rows {unknown}; expected letters of "
                     f"{ROW_LETTERS}.")
  import jax  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import matching  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import stage2  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  settings = detection_settings(config, detection_config)
  seed = int(config.seed)
  model = stage2.FeatureModel(config)
  split = config.data.eval_splits[0]
  val = stage2.load_arrays(config, stage2.list_records(config, split,
                                                       eval_set=True))
  train = None
  if not skip_detection:
    if detection_steps < 1:
      raise ValueError(f"--detection_steps must be >= 1, got "
                       f"{detection_steps}.")
    records = stage2.list_records(config, config.data.train_split)
    idx = detection_train_indices(len(records), detection_train_faces, seed)
    t0 = time.time()
    train = stage2.load_arrays(config, [records[int(i)] for i in idx])
    log(f"detection: {idx.size} of {len(records)} training faces "
        f"(default_rng({seed}) permutation), {val['image'].shape[0]} val "
        f"faces, {detection_steps} steps; crops loaded in "
        f"{time.time() - t0:.0f} s")
  proj = jax.tree.map(np.asarray, model.init_projector(jax.random.PRNGKey(0)))
  results = {}
  if train is not None:
    results[MEAN_SHAPE] = mean_shape_nme(train, val, settings.normaliser)
    log(f"{MEAN_SHAPE}: NME {results[MEAN_SHAPE]['nme']:.2f}%")
  for row in ROWS:
    if row.letter not in rows:
      results[row.name] = {"skipped": "not selected (--rows)"}
      continue
    params, skipped = _row_params(config, model, row, stage1_workdir,
                                  stage2_workdir, proj, stage2_no_lcr_workdir)
    if skipped:
      results[row.name] = {"skipped": skipped}
      log(f"{row.name}: skipped ({skipped})")
      continue
    t0 = time.time()
    res = matching.evaluate_matching(
        model, params, val, kind=row.kind,
        num_pairs=int(config.matching.num_pairs), seed=seed,
        warp_kwargs=dict(config.matching.warp))
    res["matching_seconds"] = time.time() - t0
    if row.source == "stage2_no_lcr":
      from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
      # Provenance: the run's own lcr settings, so a mislabelled run shows.
      res["stage2_lcr"] = (ckpt_lib.read_workdir_config(stage2_no_lcr_workdir)
                           or {}).get("lcr")
    log(f"{row.name}: " + matching.format_result(res) +
        f" [{res['matching_seconds']:.0f} s]")
    if train is not None:
      t0 = time.time()
      res.update(evaluate_detection(
          model, params, row.detection_kind or settings.feature_kind, train,
          val, settings, steps=detection_steps, seed=seed, log=log))
      res["detection_seconds"] = time.time() - t0
      log(f"{row.name}: NME {res['nme']:.2f}% (median "
          f"{res['nme_median']:.2f}%) [{res['detection_seconds']:.0f} s]")
    results[row.name] = res
    del params
  table = markdown_table(results, settings.feature_kind, train is not None)
  header = (f"{config.data.name} {split} ({val['image'].shape[0]} faces; not "
            "MAFL / AFLW numbers). Same / Diff.: mean matching error in pixels "
            f"of a 70 x 70 frame, {config.matching.num_pairs} pairs, stride "
            f"{config.inference.stride}.")
  if train is not None:
    header += (f" NME (%): mean per-face NME in % of the inter-ocular "
               f"distance ({settings.normaliser}) of a detection head "
               f"(hidden {settings.hidden}, {settings.intermediate} "
               f"intermediate maps) trained on the frozen features of "
               f"{train['image'].shape[0]} training faces for "
               f"{detection_steps} steps (batch "
               f"{settings.fewshot_batch_size}, Adam "
               f"{settings.learning_rate}).")
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "ablation.md"), "w") as f:
    f.write(header + "\n\n" + table + "\n")
  with open(os.path.join(out_dir, "ablation.json"), "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  log(table)
  return results


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
  f["rows"] = flags.DEFINE_list(
      "rows", list(ROW_LETTERS),
      "The rows to evaluate (letters); the others are listed as not "
      "selected.")
  f["out"] = flags.DEFINE_string("out", "runs/ablation", "Output folder.")
  f["train_faces"] = flags.DEFINE_integer(
      "detection_train_faces", 1000,
      "Training faces of the detection head: the first N of a "
      "default_rng(config.seed) permutation of the train split.")
  f["steps"] = flags.DEFINE_integer(
      "detection_steps", 500,
      "Adam steps of the detection head per row (500 = 16 epochs of 1000 "
      "faces at batch 32, as detection.fewshot_steps).")
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
               rows=tuple(f["rows"]), detection_config=f["detection_config"],
               detection_train_faces=f["train_faces"],
               detection_steps=f["steps"],
               skip_detection=f["skip_detection"])


if __name__ == "__main__":
  _define_flags()
  app.run(main)

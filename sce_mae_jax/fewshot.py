"""Landmark detection with limited annotations (SCE-MAE Table 3).

For each count n in (1, 5, 10, 20, 50, 100) and each seed (>= 3), n training
faces are drawn (`sample_few_shot`, reproducible from (seed, n), always from
the training pool, never from the validation faces), a keypoint head
(default: DVE / CL's `keypoint_head.IntermediateKeypointRegressor`,
`detection.fewshot_head`) is trained on the cached frozen features of those
faces (`keypoint_head.fit`) and evaluated on the whole validation split; the
table reports NME (% inter-ocular) mean +- std over seeds (std with ddof=0,
i.e. the population std of the per-seed NMEs), with the NME of the mean shape
of the same n faces as a reference row, written as Markdown and JSON
(`run_fewshot`).

Training (`fewshot_settings`, after DVE's aflw-mtfl-limit-annos configs and
CL's eval_face.py): the n faces are tiled to a fixed epoch length
(`fewshot_epoch_length`, CL's 1000; DVE tiles to the training-set size), every
step warps each face's cached feature map and landmarks by a fresh random TPS
(`fewshot_tps`, `detection.warp` / `warp_kwargs`: DVE's WarperSingle
settings; DVE instead draws one warp per tiled copy once, when it caches the
descriptors), AMSGrad at lr 0.01 with L2 weight decay 5e-4 (CL: 0.05 for its
ResNet features), cosine decay (CL; DVE keeps the rate constant) over
`fewshot_epochs` epochs; the head starts at the mean shape of the n faces.

Run:  python run.py --config=configs/mtfl_detection.py --mode=fewshot \
          --workdir=/tmp/mtfl_fewshot \
          --config.detection.stage2_workdir=/tmp/mtfl_sce
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, Optional, Sequence

import flax.linen as nn
import numpy as np

from sce_mae_jax import keypoint_head as kh
from sce_mae_jax import stage2


def sample_few_shot(pool: Sequence[int], count: int, seed: int,
                    exclude: Optional[Sequence[int]] = None) -> np.ndarray:
  """`count` distinct indices of `pool`, reproducible from `(seed, count)`.

  Args:
    pool: candidate training indices.
    count: how many to draw (<= len(pool)).
    seed: repetition seed.
    exclude: indices that must never be drawn (e.g. validation faces); they
      are removed from the pool first.

  Returns:
    sorted int64 `[count]`.
  """
  pool = np.asarray(sorted(set(int(i) for i in pool)), np.int64)
  if exclude is not None:
    pool = np.setdiff1d(pool, np.asarray(list(exclude), np.int64))
  if not 0 < count <= pool.size:
    raise ValueError(f"cannot draw {count} faces from a training pool of "
                     f"{pool.size}.")
  rng = np.random.default_rng([int(seed), int(count)])
  return np.sort(rng.choice(pool, size=count, replace=False))


def summarise(nmes: Dict[int, Sequence[float]]) -> Dict[int, Dict[str, float]]:
  return {n: {"mean": float(np.mean(v)), "std": float(np.std(v)),
              "runs": [float(x) for x in v]} for n, v in sorted(nmes.items())}


def markdown_table(summary: Dict[int, Dict[str, float]], title: str,
                   reference: Optional[Dict[int, Dict[str, float]]] = None
                   ) -> str:
  """One NME row (mean ± std over seeds) per count; `reference` (same
  layout, e.g. the mean shape of the drawn faces) adds a second row."""
  counts = sorted(summary)
  head = "| " + title + " | " + " | ".join(str(n) for n in counts) + " |"
  rule = "|---" * (len(counts) + 1) + "|"

  def row(name, values):
    return f"| {name} | " + " | ".join(
        f"{values[n]['mean']:.2f} ± {values[n]['std']:.2f}" for n in counts
    ) + " |"
  lines = [head, rule, row("NME (%)", summary)]
  if reference is not None:
    lines.append(row("mean shape of the n faces (reference)", reference))
  return "\n".join(lines)


def fewshot_settings(d, **overrides) -> kh.TrainSettings:
  """`TrainSettings` of one few-shot run from `config.detection`."""
  s = kh.TrainSettings(
      epochs=int(d.get("fewshot_epochs", 50)),
      steps=int(d.get("fewshot_steps", 0)),
      epoch_length=int(d.get("fewshot_epoch_length", 1000)),
      batch_size=int(d.fewshot_batch_size),
      learning_rate=float(d.get("fewshot_learning_rate", 0.01)),
      schedule=d.get("fewshot_schedule", "cosine"),
      warmup_steps=int(d.get("fewshot_warmup_steps", 0)),
      weight_decay=float(d.get("fewshot_weight_decay", 5e-4)),
      decoupled_weight_decay=bool(d.get("decoupled_weight_decay", False)),
      amsgrad=bool(d.get("amsgrad", True)),
      loss_alpha=float(d.get("loss_alpha", 10.0)), beta=float(d.beta))
  return dataclasses.replace(s, **overrides)


def fewshot_augment(d, image_size: int) -> Optional[kh.TpsAugment]:
  """The per-step TPS augmentation (`fewshot_tps`), or None."""
  if not bool(d.get("fewshot_tps", True)):
    return None
  return kh.named_tps_augment(image_size, d.get("warp", "random_dve_warp"),
                              dict(d.get("warp_kwargs", {})))


def run_fewshot(encode: Callable[[np.ndarray], np.ndarray], head: nn.Module,
                load_train: Callable[[np.ndarray], Dict[str, np.ndarray]],
                num_train: int, val: Dict[str, np.ndarray],
                settings: kh.TrainSettings = kh.TrainSettings(), *,
                augment: Optional[kh.Augment] = None,
                counts=(1, 5, 10, 20, 50, 100), seeds=(0, 1, 2),
                normaliser="five_point", out_dir: Optional[str] = None,
                title: str = "faces", log=print
                ) -> Dict[int, Dict[str, float]]:
  """The limited-annotation table.

  Args:
    encode: uint8 crops `[m, S, S, 3]` -> cached features `[m, h, w, C]`.
    head: the keypoint head (re-initialised for every run).
    load_train: `indices -> stage2.load_arrays` of those training faces (in
      that order); only the sampled faces are decoded and encoded, once each.
    num_train: size of the training pool (indices 0 .. num_train - 1).
    val: `stage2.load_arrays` of the validation faces.
    settings: training of one run; its seed is replaced by the run's seed.
    augment: e.g. `kh.TpsAugment` (per step), or None.

  Returns:
    count -> {"mean", "std", "runs", "mean_shape_reference"}.
  """
  if len(seeds) < 3:
    log(f"warning: {len(seeds)} seeds; the protocol asks for >= 3")
  size = val["image"].shape[1]
  pool = np.arange(num_train)
  draws = {(n, s): sample_few_shot(pool, n, s) for n in counts for s in seeds}
  needed = np.unique(np.concatenate(list(draws.values())))
  log(f"caching features of {needed.size} training and "
      f"{val['image'].shape[0]} validation faces")
  train = load_train(needed)
  feats = encode(train["image"])
  where = {int(i): j for j, i in enumerate(needed)}
  val_feats = encode(val["image"])
  nmes: Dict[int, list] = {}
  reference: Dict[int, list] = {}
  for (n, s), idx in draws.items():
    rows = np.array([where[int(i)] for i in idx])
    lms = train["landmarks"][rows]
    result = kh.fit(head, feats[rows], lms, size,
                    dataclasses.replace(settings, seed=int(s)),
                    augment=augment)
    nme = float(np.mean(kh.evaluate(head, result.params, val_feats,
                                    val["landmarks"], size, normaliser)))
    nmes.setdefault(n, []).append(nme)
    reference.setdefault(n, []).append(float(np.mean(
        kh.mean_shape_nme(lms, val["landmarks"], normaliser))))
    log(f"n={n} seed={s}: {result.losses.size} steps, final epoch loss "
        f"{result.history[-1]['train_loss']:.4g}, val NME {nme:.2f}% (mean "
        f"shape of the {n} faces: {reference[n][-1]:.2f}%)")
  summary = summarise(nmes)
  reference = summarise(reference)
  for n in summary:
    summary[n]["mean_shape_reference"] = reference[n]
  table = markdown_table(summary, title, reference)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fewshot.json"), "w") as f:
      json.dump({str(k): v for k, v in summary.items()}, f, indent=2)
    with open(os.path.join(out_dir, "fewshot.md"), "w") as f:
      f.write(table + "\n")
    with open(os.path.join(out_dir, "fewshot_settings.json"), "w") as f:
      json.dump({"head": repr(head), "augment": repr(augment),
                 "settings": dataclasses.asdict(settings)}, f, indent=2)
  log(table)
  return summary


def fewshot_mode(method, config, workdir):
  """`--mode=fewshot` of the detection method (`detection.DetectionMethod`:
  its `cache`, `fewshot_head`, `train_records`, `eval_records`)."""
  d = config.detection
  records = method.train_records
  load_train = lambda idx: stage2.load_arrays(config,
                                              [records[int(i)] for i in idx])
  val = stage2.load_arrays(config, method.eval_records[
      config.data.eval_splits[0]])
  return run_fewshot(
      method.cache, method.fewshot_head, load_train, len(records), val,
      fewshot_settings(d), augment=fewshot_augment(d, val["image"].shape[1]),
      counts=tuple(d.fewshot_counts), seeds=tuple(d.fewshot_seeds),
      normaliser=d.normaliser, out_dir=workdir,
      title=f"{config.data.name} faces")

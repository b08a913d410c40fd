"""Landmark detection with limited annotations (SCE-MAE Table 3).

For each count n in (1, 5, 10, 20, 50, 100) and each seed (>= 3), n training
faces are drawn (`sample_few_shot`, reproducible from (seed, n), always from
the training pool, never from the validation faces), the detection head
(`detection.DetectionHead`) is trained on the cached frozen features of those
faces (`detection.fit_head`) and evaluated on the whole validation split; the
table reports NME (% inter-ocular) mean +- std over seeds (std with ddof=0,
i.e. the population std of the per-seed NMEs), written as Markdown and JSON
(`run_fewshot`).

Run:  python run.py --config=configs/mtfl_detection.py --mode=fewshot \
          --workdir=/tmp/mtfl_fewshot \
          --config.detection.stage2_workdir=/tmp/mtfl_sce
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from sce_mae_jax import detection
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


def run_fewshot(model: stage2.FeatureModel, params, head: detection.DetectionHead,
                load_train: Callable[[np.ndarray], Dict[str, np.ndarray]],
                num_train: int, val: Dict[str, np.ndarray], *,
                counts=(1, 5, 10, 20, 50, 100), seeds=(0, 1, 2),
                kind: str = "concat", normaliser: str = "five_point",
                steps: int = 500, batch_size: int = 32,
                learning_rate: float = 1e-3, beta: float = 1.0,
                out_dir: Optional[str] = None, title: str = "faces",
                log=print) -> Dict[int, Dict[str, float]]:
  """The limited-annotation table.

  Args:
    load_train: `indices -> stage2.load_arrays` of those training faces (in
      that order); only the sampled faces are decoded and encoded, once each.
    num_train: size of the training pool (indices 0 .. num_train - 1).
    val: `stage2.load_arrays` of the validation faces.
  """
  if len(seeds) < 3:
    log(f"warning: {len(seeds)} seeds; the protocol asks for >= 3")
  size = val["image"].shape[1]
  pool = np.arange(num_train)
  draws = {(n, s): sample_few_shot(pool, n, s) for n in counts for s in seeds}
  needed = np.unique(np.concatenate(list(draws.values())))
  log(f"caching {kind} features of {needed.size} training and "
      f"{val['image'].shape[0]} validation faces")
  train = load_train(needed)
  feats = detection.cache_features(model, params, train["image"], kind)
  where = {int(i): j for j, i in enumerate(needed)}
  val_feats = detection.cache_features(model, params, val["image"], kind)
  nmes: Dict[int, list] = {}
  reference: Dict[int, list] = {}
  for (n, s), idx in draws.items():
    rows = np.array([where[int(i)] for i in idx])
    per_face, losses = detection.fit_and_evaluate(
        head, feats[rows], train["landmarks"][rows], val_feats,
        val["landmarks"], size, normaliser=normaliser, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, beta=beta, seed=s)
    nme = float(np.mean(per_face))
    nmes.setdefault(n, []).append(nme)
    reference.setdefault(n, []).append(float(np.mean(
        detection.mean_shape_nme(train["landmarks"][rows], val["landmarks"],
                                 normaliser))))
    log(f"n={n} seed={s}: train loss {losses[-1]:.4g}, val NME {nme:.2f}% "
        f"(mean shape of the {n} faces: {reference[n][-1]:.2f}%)")
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
  log(table)
  return summary


def fewshot_mode(method, config, workdir):
  """`--mode=fewshot` of the detection method."""
  d = config.detection
  params = method.frozen_params()
  records = method.train_records
  load_train = lambda idx: stage2.load_arrays(config,
                                              [records[int(i)] for i in idx])
  val = stage2.load_arrays(config, method.eval_records[
      config.data.eval_splits[0]])
  return run_fewshot(
      method.model, params, method.head, load_train, len(records), val,
      counts=tuple(d.fewshot_counts), seeds=tuple(d.fewshot_seeds),
      kind=d.feature_kind, normaliser=d.normaliser,
      steps=int(d.fewshot_steps), batch_size=int(d.fewshot_batch_size),
      learning_rate=float(d.learning_rate), beta=float(d.beta),
      out_dir=workdir, title=f"{config.data.name} faces")

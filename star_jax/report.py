"""The report of `run.py --mode=eval`: results.json, results.md, ced.png.

Inputs are the per-face NMEs the evaluation computed (`star_jax.method.
StarMethod.eval_step`: one array per normaliser, for the raw and the EMA
parameters) and the named face groups of each split (`StarData.eval_groups`:
WFLW attribute flags, 300W subset groups). Every number comes from
`landmarks.metrics` (`subset_metrics`: NME, FR@t, AUC@t; `ced_curve`); this
module only arranges them:

  results.json   config path, dataset, checkpoint (dir, latest|best, step,
                 path), eval settings (normalisers, threshold, flip test),
                 "metrics": the flat `<split>[_ema]/<metric>` values of
                 training.loop.evaluate, "splits": split -> raw|ema ->
                 normaliser -> subset ("full" or a group) -> {nme, fr, auc,
                 median, count}, and "per_image": split -> index, group
                 flags, raw|ema -> normaliser -> per-face NME (to redraw any
                 curve). NME / FR / AUC / median are fractions (not %);
                 an empty subset has count 0 and null values.
  results.md     Markdown tables in the STAR paper's layout, per split and
                 parameter set: WFLW (test set + pose, expression,
                 illumination, make-up, occlusion, blur; rows NME %, FR@t %,
                 AUC@t: the layout of the paper's Table 12, the WFLW part of
                 Table 1) when the six attribute flags are present; 300W
                 (common / challenge / full NME %, inter-ocular and
                 inter-pupil: Tables 10-11) when the "common" and "challenge"
                 groups are; COFW (NME % inter-pupil and inter-ocular, with
                 FR / AUC) for the 29-point scheme; and for every set (yt68
                 csv, any other data) the generic table: faces, NME, FR@t,
                 AUC@t, median NME for the full split and each group.
  ced.png        the cumulative error distribution up to the threshold, one
                 curve per split and parameter set (primary normaliser).
  predictions.npz  per split and parameter set, `<split>/<raw|ema>/pred`
                 `[F, N, 2]` landmarks in original pixels and
                 `<split>/index` (record order of the split).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from landmarks import metrics as metrics_lib
from landmarks import plots

# WFLW columns in the paper's order: (group names accepted, header). The
# WFLW reader names make-up "makeup"; landmarks.metrics uses "make-up".
WFLW_COLUMNS = ((("pose",), "Pose"), (("expression",), "Expression"),
                (("illumination",), "Illumination"),
                (("makeup", "make-up"), "Make-up"),
                (("occlusion",), "Occlusion"), (("blur",), "Blur"))
PARAMS = {"raw": "raw", "ema": "EMA"}
NORMALISER_LABELS = {
    "inter_ocular": "inter-ocular", "inter_pupil": "inter-pupil"}


@dataclasses.dataclass
class SplitEvaluation:
  """The evaluation of one split.

  Attributes:
    index: `[F]` record index of each evaluated face (split order).
    groups: group name -> `[F]` bool flags (e.g. "pose", "common").
    nmes: "raw" | "ema" -> normaliser name (landmarks.metrics.NORMALISERS) ->
      `[F]` per-face NME. The first normaliser is the primary one.
    predictions: optional "raw" | "ema" -> `[F, N, 2]` (original pixels).
  """
  index: np.ndarray
  groups: Mapping[str, np.ndarray]
  nmes: Mapping[str, Mapping[str, np.ndarray]]
  predictions: Optional[Mapping[str, np.ndarray]] = None


def _finite_or_none(v):
  v = float(v)
  return v if math.isfinite(v) else None


def subset_table(nmes, groups: Mapping[str, np.ndarray], threshold: float,
                 step: float = 1e-4) -> Dict[str, Dict[str, Any]]:
  """Metrics of the full split and of each group (fractions, not %).

  Returns `{"full" | group: {nme, fr, auc, median, count}}`.

  NME / FR / AUC from `landmarks.metrics.subset_metrics`; median is the
  median per-face NME. A group with no face has count 0 and None values.
  """
  nmes = np.asarray(nmes, np.float64)
  out = {}
  for name, flags in {"full": np.ones(nmes.shape, bool), **groups}.items():
    flags = np.asarray(flags, bool)
    if flags.shape != nmes.shape:
      raise ValueError(f"group {name!r} has {flags.shape} flags for "
                       f"{nmes.shape} faces")
    if not flags.any():
      out[name] = {"nme": None, "fr": None, "auc": None, "median": None,
                   "count": 0}
      continue
    m = metrics_lib.subset_metrics(nmes[flags], threshold, step)
    out[name] = {"nme": m["nme"], "fr": m["fr"], "auc": m["auc"],
                 "median": float(np.median(nmes[flags])),
                 "count": int(m["count"])}
  return out


def build_report(evaluations: Mapping[str, SplitEvaluation], *,
                 results: Mapping[str, float], info: Mapping[str, Any],
                 dataset: str, scheme: str, primary: str, threshold: float,
                 step: float = 1e-4, flip_test: bool = False
                 ) -> Dict[str, Any]:
  """The results.json content (module docstring)."""
  splits, per_image = {}, {}
  normalisers: List[str] = []
  for split, ev in evaluations.items():
    groups = {k: np.asarray(v, bool) for k, v in ev.groups.items()}
    splits[split] = {}
    per_image[split] = {
        "index": [int(i) for i in np.asarray(ev.index)],
        "groups": {k: [bool(b) for b in v] for k, v in groups.items()},
        "nme": {}}
    for variant, by_norm in ev.nmes.items():
      splits[split][variant] = {}
      per_image[split]["nme"][variant] = {}
      for norm, nmes in by_norm.items():
        if norm not in normalisers:
          normalisers.append(norm)
        nmes = np.asarray(nmes, np.float64)
        splits[split][variant][norm] = subset_table(nmes, groups, threshold,
                                                    step)
        per_image[split]["nme"][variant][norm] = [float(x) for x in nmes]
  if primary in normalisers:
    normalisers.remove(primary)
  return {
      "config": info.get("config"),
      "dataset": dataset,
      "scheme": scheme,
      "checkpoint": {k: info.get(k) for k in
                     ("checkpoint_dir", "which", "step", "checkpoint_path")},
      "eval": {"normaliser": primary, "normalisers": [primary] + normalisers,
               "threshold": float(threshold), "step": float(step),
               "flip_test": bool(flip_test)},
      "metrics": {k: _finite_or_none(v) for k, v in results.items()},
      "splits": splits,
      "per_image": per_image,
  }


# ------------------------------------------------------------- markdown ----

def _pct(v, digits=2) -> str:
  return "-" if v is None else f"{100.0 * v:.{digits}f}"


def _num(v, digits=4) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def _table(header: List[str], rows: List[List[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def _norm_label(name: str) -> str:
  """A readable normaliser name: cofw_inter_pupil -> inter-pupil (16, 17)."""
  indices = metrics_lib.NORMALISERS.get(name)
  label = name
  for key, text in NORMALISER_LABELS.items():
    if name.endswith(key):
      label = text
  if indices is None:
    return label
  left, right = indices
  if isinstance(left, int):
    return f"{label} ({left}, {right})"
  return f"{label} (means of {left[0]}-{left[-1]} and {right[0]}-{right[-1]})"


def wflw_columns(groups) -> Optional[List[tuple]]:
  """[(group name or "full", header)] when all six WFLW flags are present."""
  cols = [("full", "Testset")]
  for names, header in WFLW_COLUMNS:
    found = [n for n in names if n in groups]
    if not found:
      return None
    cols.append((found[0], header))
  return cols


def wflw_table(table: Mapping[str, Mapping[str, Any]], columns,
               threshold: float) -> str:
  """Rows NME (%), FR@t (%), AUC@t; columns test set + the six subsets."""
  t = f"{threshold:g}"
  rows = [["NME (%)"] + [_pct(table[g]["nme"]) for g, _ in columns],
          [f"FR@{t} (%)"] + [_pct(table[g]["fr"]) for g, _ in columns],
          [f"AUC@{t}"] + [_num(table[g]["auc"]) for g, _ in columns]]
  return _table(["Metric"] + [h for _, h in columns], rows)


def w300_table(by_norm: Mapping[str, Mapping[str, Mapping[str, Any]]],
               order: List[str]) -> str:
  """NME (%) on common / challenge / full, one row per normaliser."""
  rows = []
  for norm in order:
    t = by_norm[norm]
    rows.append([_norm_label(norm), _pct(t["common"]["nme"]),
                 _pct(t["challenge"]["nme"]), _pct(t["full"]["nme"])])
  return _table(["NME (%)", "Common", "Challenge", "Full"], rows)


def cofw_table(by_norm, order: List[str], threshold: float) -> str:
  """NME (%), FR@t (%), AUC@t with each normaliser (inter-pupil first)."""
  order = sorted(order, key=lambda n: 0 if n.endswith("inter_pupil") else 1)
  t = f"{threshold:g}"
  rows = [[_norm_label(n), _pct(by_norm[n]["full"]["nme"]),
           _pct(by_norm[n]["full"]["fr"]), _num(by_norm[n]["full"]["auc"])]
          for n in order]
  return _table(["Normaliser", "NME (%)", f"FR@{t} (%)", f"AUC@{t}"], rows)


def generic_table(split: str, by_norm, order: List[str],
                  threshold: float) -> str:
  """Faces, NME, FR, AUC, median of the split and each group."""
  primary, others = order[0], order[1:]
  t = f"{threshold:g}"
  header = ["Subset", "Faces", "NME (%)", f"FR@{t} (%)", f"AUC@{t}",
            "median NME (%)"] + [f"NME (%) {_norm_label(n)}" for n in others]
  rows = []
  for group, m in by_norm[primary].items():
    name = f"{split} (all)" if group == "full" else group
    rows.append([name, str(m["count"]), _pct(m["nme"]), _pct(m["fr"]),
                 _num(m["auc"]), _pct(m["median"])] +
                [_pct(by_norm[n][group]["nme"]) for n in others])
  return _table(header, rows)


def markdown(report: Mapping[str, Any]) -> str:
  """results.md from a `build_report` dict."""
  ev, ck = report["eval"], report["checkpoint"]
  threshold = ev["threshold"]
  order = list(ev["normalisers"])
  lines = ["# Evaluation report", ""]
  lines.append(f"- config: `{report.get('config') or '-'}`")
  lines.append(f"- checkpoint: `{ck.get('checkpoint_path')}` ({ck.get('which')}"
               f", step {ck.get('step')})")
  lines.append(f"- data: {report['dataset']} (scheme {report['scheme']}); "
               f"NME normaliser: {_norm_label(order[0])}; FR / AUC threshold "
               f"{threshold:g}; horizontal-flip test: "
               f"{'on' if ev['flip_test'] else 'off'}")
  lines.append("- NME, FR and median in %, AUC as a fraction (as in the STAR "
               "paper); `-`: no face in that subset.")
  for split, variants in report["splits"].items():
    groups = report["per_image"][split]["groups"]
    for variant, by_norm in variants.items():
      lines += ["", f"## {split}, {PARAMS.get(variant, variant)} parameters",
                ""]
      norms = [n for n in order if n in by_norm]
      cols = wflw_columns(groups)
      if cols is not None:
        lines += ["WFLW (layout of the STAR paper's Table 12):", "",
                  wflw_table(by_norm[norms[0]], cols, threshold), ""]
      if "common" in groups and "challenge" in groups:
        lines += ["300W (layout of the STAR paper's Tables 10-11):", "",
                  w300_table(by_norm, norms), ""]
      if str(report["scheme"]).startswith("cofw"):
        lines += ["COFW (layout of the STAR paper's Table 1):", "",
                  cofw_table(by_norm, norms, threshold), ""]
      lines += ["All faces and groups:", "",
                generic_table(split, by_norm, norms, threshold)]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- write ----

def write_report(workdir: str, evaluations: Mapping[str, SplitEvaluation],
                 **kwargs) -> Dict[str, Any]:
  """Writes results.json, results.md, ced.png, predictions.npz in `workdir`.

  Args:
    workdir: output folder (created).
    evaluations: split -> SplitEvaluation.
    **kwargs: as `build_report` (results, info, dataset, scheme, primary,
      threshold, step, flip_test).

  Returns:
    the results.json content.
  """
  os.makedirs(workdir, exist_ok=True)
  report = build_report(evaluations, **kwargs)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(report, f, indent=1, allow_nan=False)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(markdown(report))
  primary = report["eval"]["normaliser"]
  curves = {}
  for split, ev in evaluations.items():
    for variant, by_norm in ev.nmes.items():
      curves[f"{split} ({PARAMS.get(variant, variant)})"] = by_norm[primary]
  plots.ced_curve(curves, report["eval"]["threshold"],
                  step=report["eval"]["step"],
                  path=os.path.join(workdir, "ced.png"),
                  title=f"CED, NME {_norm_label(primary)}")
  arrays = {}
  for split, ev in evaluations.items():
    arrays[f"{split}/index"] = np.asarray(ev.index)
    for variant, pred in (ev.predictions or {}).items():
      arrays[f"{split}/{variant}/pred"] = np.asarray(pred, np.float32)
  np.savez(os.path.join(workdir, "predictions.npz"), **arrays)
  print(f"wrote {os.path.join(workdir, 'results.json')}, results.md, "
        "ced.png, predictions.npz", flush=True)
  return report

r"""Is STAR robust to ambiguous (tangential) label noise, and not to normal?

The STAR paper (Sec. 1, Fig. 1) argues that annotators disagree on where a
contour point sits *along* the face edge, that this misleads regression-style
losses, and that STAR, which down-weights the error along each heatmap's
principal axis, is robust to it. This study tests that on yt68 (68 points,
real faces): it trains STAR and the smooth-L1 baseline on training labels
whose jaw points (0-16) were moved along the jaw (tangent) or across it
(normal) by N(0, (sigma * IOD)^2) (data/ambiguity.py), evaluates on the
unchanged val labels, and compares how much each loss's NME grows. The
expectation from the paper: STAR's NME grows less than smooth-L1's under
tangential noise, and not less under normal noise. Extra training seeds at
sigma 0 give the seed-to-seed spread of the predictions per landmark (the
instability of paper Fig. 1: jaw points should scatter along the jaw).

  python -m star_jax.ambiguity_study --workdir=runs/ambiguity --steps=1700 \
      --parallel=2 [--only=star_clean,l1_clean] [--analyse_only]

What it does:
  1. The sweep (`sweep()`): loss {star, l1} x jaw noise {none; tangent 0.05,
     0.1, 0.3; normal 0.05, 0.1, 0.3} (training seed 0), plus training seeds
     1, 2 of both losses without noise. The noise seed
     (`data.label_noise.seed` 0) is the same for every run, so both losses
     see the same noisy labels, and sigma 0.1 / 0.3 is sigma 0.05's
     displacement times 2 / 6. (yt68 jaw points are 0.22 IOD apart: at 0.3
     a point's label moves past its neighbours' places, the strongest
     ambiguity of the sweep.)
  2. Each run that has no final predictions yet: `python run.py
     --config=configs/yt68_ambiguity.py --workdir=<workdir>/<name>
     --config.max_steps=<steps> <overrides>` (training; run.py resumes from
     the run's checkpoints after an interruption), then the same command with
     `--mode=eval`, which restores the latest (= final) checkpoint and writes
     results.json and predictions.npz into the run's workdir (training itself
     writes only final_metrics.json). Up to `--parallel` runs at once, each
     pinned to its own core (`taskset -c i`) when taskset exists; output goes
     to <workdir>/<name>.log (star_jax/sweep.py runs the commands).
     <workdir>/study.json records steps, config and extra overrides;
     re-running with other values is refused.
  3. The analysis (`analyse`), on the raw (not EMA) parameters' predictions
     of the final evaluation (`<split>/raw/pred`; `--variant=ema` for the
     other), against the val ground truth listed as the runs list it
     (star_jax.data.StarData): table.md, results.json, growth.png,
     instability.png in <workdir>. Runs without predictions are listed as
     missing and left out; nothing fails for them.

Measures (all in % of the face's inter-ocular distance, outer eye corners
36 / 45 of the ground truth, as the configs' NME):
  * NME all points / jaw (0-16) / inner (17-67), mean over faces.
  * Jaw error split into the components along and across the ground-truth
    jaw tangent (`data.ambiguity.tangent_normal_errors`), RMS over faces and
    jaw points.
  * Per noisy run: the NME difference to the same loss without noise, with a
    paired bootstrap 95 % interval (faces resampled with replacement; the
    same resamples for every comparison).
  * Growth comparison: per face `(star_noisy - star_clean) - (l1_noisy -
    l1_clean)`; its mean and bootstrap interval, for NME all and jaw. A
    negative value: STAR's error grew less.
  * Instability: for the k models (seeds) of one loss without noise, the RMS
    over models of each predicted point's distance to the per-face mean of
    the k predictions (not corrected for k: sqrt((k-1)/k) times the per-model
    std), averaged over faces; jaw vs inner, and the jaw part along / across
    the jaw tangent; the per-face difference STAR - L1 of the jaw spread with
    a bootstrap interval.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from data import ambiguity
from data import schemes as schemes_lib
from landmarks import plots
from star_jax import sweep as sweep_lib
from training import errors

DEFAULT_CONFIG = "configs/yt68_ambiguity.py"
LOSSES = ("star", "l1")
LOSS_LABELS = {"star": "STAR", "l1": "smooth-L1"}
SIGMAS = (0.05, 0.1, 0.3)
DIRECTIONS = ("tangent", "normal")
EXTRA_SEEDS = (1, 2)
GROUP = "jaw"


# ----------------------------------------------------------------- sweep ----

@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study.

  Attributes:
    name: folder name under the study workdir.
    loss: "star" or "l1" (smooth-L1 baseline, `--config.loss.star=False`).
    direction: "none", "tangent" or "normal".
    sigma: label-noise std in units of the inter-ocular distance.
    seed: the training seed (`config.seed`).
  """
  name: str
  loss: str
  direction: str = "none"
  sigma: float = 0.0
  seed: int = 0

  @property
  def clean(self) -> bool:
    return self.sigma == 0

  def overrides(self) -> List[str]:
    """The run's `--config.*` flags on top of the study config."""
    out = []
    if self.loss == "l1":
      out.append("--config.loss.star=False")
    if not self.clean:
      out += [f"--config.data.label_noise.sigma={self.sigma!r}",
              f"--config.data.label_noise.direction={self.direction}"]
    if self.seed:
      out.append(f"--config.seed={self.seed}")
    return out

  def job(self, config_path: str = DEFAULT_CONFIG) -> sweep_lib.Run:
    """The run.py run (star_jax.sweep) of this run with `config_path`."""
    return sweep_lib.Run(self.name, config_path, tuple(self.overrides()))


def clean_name(loss: str, seed: int = 0) -> str:
  return f"{loss}_clean" + (f"_seed{seed}" if seed else "")


def noisy_name(loss: str, direction: str, sigma: float) -> str:
  return f"{loss}_{direction}_{sigma:g}"


def sweep() -> List[Run]:
  """The study's runs, in the order they are trained."""
  runs = [Run(clean_name(loss), loss) for loss in LOSSES]
  for direction in DIRECTIONS:
    for sigma in SIGMAS:
      runs += [Run(noisy_name(loss, direction, sigma), loss, direction, sigma)
               for loss in LOSSES]
  for seed in EXTRA_SEEDS:
    runs += [Run(clean_name(loss, seed), loss, seed=seed) for loss in LOSSES]
  return runs




# ---------------------------------------------------------------- running ----

def run_command(run: Run, workdir: str, steps: int, *,
                config_path: str = DEFAULT_CONFIG,
                extra: Sequence[str] = (), mode: str = "train") -> List[str]:
  """The run.py command line of `run` (training, or `mode="eval"`)."""
  return sweep_lib.run_command(run.job(config_path), workdir, steps,
                               extra=extra, mode=mode)




def train_runs(runs: Sequence[Run], workdir: str, steps: int, *,
               parallel: int = 2, config_path: str = DEFAULT_CONFIG,
               extra: Sequence[str] = (), pin: bool = True
               ) -> Dict[str, str]:
  """Trains and evaluates each unfinished run; returns name -> status.

  `star_jax.sweep.train_runs` of the runs with the study config
  `config_path`: status "done" (already finished), "trained", or
  "failed: <what>" (the log says why).
  """
  return sweep_lib.train_runs([r.job(config_path) for r in runs], workdir,
                              steps, parallel=parallel, extra=extra, pin=pin)


# --------------------------------------------------------------- metrics ----



def face_metrics(pred: np.ndarray, gt: np.ndarray, jaw: Sequence[int],
                 inner: Sequence[int]) -> Dict[str, np.ndarray]:
  """Per-face errors in units of the inter-ocular distance.

  Returns `nme`, `nme_jaw`, `nme_inner` `[F]` and the jaw error components
  `along`, `across` `[F, K]` (signed, over the gt jaw tangent / normal).
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  scheme = schemes_lib.get_scheme(gt.shape[1])
  iod = schemes_lib.normaliser_distance(scheme, gt, "ocular")
  err = np.linalg.norm(pred - gt, axis=-1) / iod[:, None]
  along, across = ambiguity.tangent_normal_errors(pred, gt, jaw)
  return {"nme": err.mean(1), "nme_jaw": err[:, list(jaw)].mean(1),
          "nme_inner": err[:, list(inner)].mean(1),
          "along": along / iod[:, None], "across": across / iod[:, None]}




def instability(preds: Sequence[np.ndarray], gt: np.ndarray,
                jaw: Sequence[int]) -> Dict[str, np.ndarray]:
  """Seed-to-seed spread of k models' predictions, per face and landmark.

  Args:
    preds: k >= 2 arrays `[F, N, 2]` (same faces).
    gt: `[F, N, 2]` (for the normaliser and the jaw tangents).
    jaw: the jaw curve's indices.

  Returns:
    `spread` `[F, N]`: sqrt(mean over models of |p_m - mean_m p|^2) / IOD;
    `along`, `across` `[F, K]`: the same of the jaw deviations' components
    along / across the gt jaw tangent.
  """
  p = np.stack([np.asarray(x, np.float64) for x in preds])  # [k, F, N, 2]
  if p.shape[0] < 2:
    raise ValueError(f"instability needs at least 2 models, got {p.shape[0]}")
  gt = np.asarray(gt, np.float64)
  scheme = schemes_lib.get_scheme(gt.shape[1])
  iod = schemes_lib.normaliser_distance(scheme, gt, "ocular")
  dev = p - p.mean(0, keepdims=True)
  spread = np.sqrt(np.mean(np.sum(dev ** 2, -1), 0)) / iod[:, None]
  jaw = list(jaw)
  t = ambiguity.curve_tangents(gt, jaw)                      # [F, K, 2]
  n = ambiguity.curve_normals(gt, jaw)
  along = np.sum(dev[:, :, jaw] * t, -1)                     # [k, F, K]
  across = np.sum(dev[:, :, jaw] * n, -1)
  return {"spread": spread,
          "along": np.sqrt(np.mean(along ** 2, 0)) / iod[:, None],
          "across": np.sqrt(np.mean(across ** 2, 0)) / iod[:, None]}


def _rms_pct(x) -> float:
  return 100 * float(np.sqrt(np.mean(np.square(x))))


# -------------------------------------------------------------- analysis ----

def analyse(workdir: str, gt, *, runs: Optional[Sequence[Run]] = None,
            split: str = "val", variant: str = "raw",
            steps: Optional[int] = None,
            image_fn: Optional[Callable[[int], np.ndarray]] = None,
            samples: int = sweep_lib.BOOTSTRAP_SAMPLES,
            seed: int = sweep_lib.BOOTSTRAP_SEED,
            figures: bool = True) -> Dict[str, Any]:
  """Reads each run's predictions and writes table.md, results.json, figures.

  Args:
    workdir: the study folder (runs in `<workdir>/<name>`).
    gt: `[F, N, 2]` ground truth of `split` in record order (the order of
      the runs' `<split>/index`).
    runs: the sweep (default `sweep()`).
    split, variant: which predictions (`<split>/<variant>/pred`).
    steps: when given, a run evaluated at another step counts as missing.
    image_fn: face index -> image, for the instability figure (optional).
    samples, seed: the bootstrap resamples (shared by every comparison).
    figures: write growth.png and instability.png.

  Returns:
    the results.json content.
  """
  runs = list(runs if runs is not None else sweep())
  gt = np.asarray(gt, np.float64)
  scheme = schemes_lib.get_scheme(gt.shape[1])
  jaw, inner = ambiguity.group_and_rest(GROUP, scheme)
  boot = functools.partial(sweep_lib.paired_interval, samples=samples,
                           seed=seed)

  per_face, preds, status = {}, {}, {}
  for r in runs:
    pred, why = sweep_lib.load_final_predictions(
        os.path.join(workdir, r.name), gt, split, variant, steps)
    status[r.name] = why
    if pred is not None:
      preds[r.name] = pred
      per_face[r.name] = face_metrics(pred, gt, jaw, inner)

  results: Dict[str, Any] = {
      "split": split, "variant": variant, "faces": int(gt.shape[0]),
      "steps": steps, "bootstrap": {"samples": int(samples), "seed": int(seed),
                                    "confidence": 0.95},
      "units": "% of the inter-ocular distance (gt points 36 / 45)",
      "runs": {}, "growth": [], "instability": {}}
  for r in runs:
    entry: Dict[str, Any] = {"loss": r.loss, "direction": r.direction,
                             "sigma": r.sigma, "seed": r.seed,
                             "status": status[r.name]}
    m = per_face.get(r.name)
    if m is not None:
      entry.update({
          "nme": 100 * float(m["nme"].mean()),
          "nme_jaw": 100 * float(m["nme_jaw"].mean()),
          "nme_inner": 100 * float(m["nme_inner"].mean()),
          "jaw_along_rms": _rms_pct(m["along"]),
          "jaw_across_rms": _rms_pct(m["across"]),
          "reported_nme": sweep_lib.reported_nme(
              os.path.join(workdir, r.name), split, variant)})
      base = per_face.get(clean_name(r.loss))
      if not r.clean and base is not None:
        entry["vs_clean"] = {
            k: boot(m[k] - base[k])
            for k in ("nme", "nme_jaw", "nme_inner")}
    results["runs"][r.name] = entry

  for direction in DIRECTIONS:
    for sigma in SIGMAS:
      names = [noisy_name(l, direction, sigma) for l in LOSSES] + [
          clean_name(l) for l in LOSSES]
      row: Dict[str, Any] = {"direction": direction, "sigma": sigma}
      if not all(n in per_face for n in names):
        row["missing"] = [n for n in names if n not in per_face]
        results["growth"].append(row)
        continue
      (sn, ln, s0, l0) = (per_face[n] for n in names)
      for k in ("nme", "nme_jaw"):
        row[k] = {"star": boot(sn[k] - s0[k]),
                  "l1": boot(ln[k] - l0[k]),
                  "star_minus_l1": boot(
                      (sn[k] - s0[k]) - (ln[k] - l0[k]))}
      results["growth"].append(row)

  spreads = {}
  for loss in LOSSES:
    names = [clean_name(loss, s) for s in (0,) + EXTRA_SEEDS]
    have = [n for n in names if n in preds]
    entry = {"models": have,
             "missing": [n for n in names if n not in preds]}
    if len(have) >= 2:
      s = instability([preds[n] for n in have], gt, jaw)
      spreads[loss] = s
      entry.update({
          "jaw": 100 * float(s["spread"][:, list(jaw)].mean()),
          "inner": 100 * float(s["spread"][:, inner].mean()),
          "jaw_along": 100 * float(s["along"].mean()),
          "jaw_across": 100 * float(s["across"].mean()),
          "per_landmark": [100 * float(v) for v in s["spread"].mean(0)]})
    results["instability"][loss] = entry
  if len(spreads) == 2:
    results["instability"]["star_minus_l1"] = {
        part: boot(
            spreads["star"]["spread"][:, sel].mean(1) -
            spreads["l1"]["spread"][:, sel].mean(1))
        for part, sel in (("jaw", list(jaw)), ("inner", inner))}

  results["missing"] = [n for n, s in status.items() if s != "ok"]
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, allow_nan=False)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(markdown(results))
  if figures:
    growth_figure(results, os.path.join(workdir, "growth.png"))
    instability_figure({l: [preds[n] for n in
                            results["instability"][l]["models"]]
                        for l in LOSSES},
                       gt, os.path.join(workdir, "instability.png"),
                       image_fn=image_fn)
  return results


# -------------------------------------------------------------- markdown ----



def markdown(results: Dict[str, Any]) -> str:
  """table.md from the `analyse` results."""
  fmt, ci, table = (sweep_lib.fmt, sweep_lib.fmt_interval,
                    sweep_lib.markdown_table)
  lines = ["# Label ambiguity study (yt68)", "",
           f"- {results['split']} split, {results['faces']} faces, "
           f"{results['variant']} parameters of the final evaluation"
           + (f" (step {results['steps']})" if results["steps"] else ""),
           f"- all values in {results['units']}; intervals: paired bootstrap "
           f"over faces, {results['bootstrap']['samples']} resamples, 95 %",
           "- label noise on the jaw (0-16) of the training labels only; "
           "jaw along / across: RMS of the error components along / across "
           "the ground-truth jaw tangent", ""]
  rows = []
  for name, e in results["runs"].items():
    noise = ("none" if e["sigma"] == 0 else f"{e['direction']} {e['sigma']:g}")
    if e["status"] != "ok":
      rows.append([name, LOSS_LABELS[e["loss"]], noise, str(e["seed"]),
                   e["status"]] + ["-"] * 6)
      continue
    vs = e.get("vs_clean", {})
    rows.append([name, LOSS_LABELS[e["loss"]], noise, str(e["seed"]), "ok",
                 fmt(e["nme"]), fmt(e["nme_jaw"]), fmt(e["nme_inner"]),
                 fmt(e["jaw_along_rms"]), fmt(e["jaw_across_rms"]),
                 ci(vs.get("nme"))])
  lines += ["## Runs", ""] + table(
      ["run", "loss", "jaw label noise", "seed", "status", "NME", "NME jaw",
       "NME inner", "jaw along RMS", "jaw across RMS",
       "NME - same loss without noise"], rows)
  lines += ["", "## Growth with the noise: STAR vs smooth-L1", "",
            "Growth = NME(sigma) - NME(0) of the same loss; last columns: "
            "per-face (STAR growth - smooth-L1 growth), negative = STAR "
            "grew less.", ""]
  rows = []
  for g in results["growth"]:
    label = [g["direction"], f"{g['sigma']:g}"]
    if "missing" in g:
      rows.append(label + [f"missing: {', '.join(g['missing'])}"] + ["-"] * 5)
      continue
    rows.append(label + [ci(g["nme"]["star"]), ci(g["nme"]["l1"]),
                         ci(g["nme"]["star_minus_l1"]),
                         ci(g["nme_jaw"]["star"]), ci(g["nme_jaw"]["l1"]),
                         ci(g["nme_jaw"]["star_minus_l1"])])
  lines += table(["direction", "sigma", "STAR growth", "L1 growth",
                   "STAR - L1", "STAR jaw growth", "L1 jaw growth",
                   "STAR - L1 (jaw)"], rows)
  lines += ["", "## Instability across training seeds (no label noise)", "",
            "Spread = RMS over the k models of each predicted point's "
            "distance to the per-face mean prediction, averaged over faces "
            "and the points of the part.", ""]
  rows = []
  for loss in LOSSES:
    e = results["instability"][loss]
    if "jaw" not in e:
      rows.append([LOSS_LABELS[loss], str(len(e["models"])),
                   "fewer than 2 models; missing: " +
                   ", ".join(e["missing"])] + ["-"] * 3)
      continue
    rows.append([LOSS_LABELS[loss], str(len(e["models"])), fmt(e["jaw"]),
                 fmt(e["inner"]), fmt(e["jaw_along"]), fmt(e["jaw_across"])])
  lines += table(["loss", "models", "jaw spread", "inner spread",
                   "jaw along", "jaw across"], rows)
  diff = results["instability"].get("star_minus_l1")
  if diff:
    lines += ["", f"STAR - smooth-L1 spread, per face: jaw {ci(diff['jaw'])}"
              f", inner {ci(diff['inner'])}"]
  if results["missing"]:
    lines += ["", "Not in the analysis (missing or unusable): " + ", ".join(
        f"{n} ({results['runs'][n]['status']})" for n in results["missing"])]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------- figures ----

def _colour(i: int):
  return tuple(c / 255 for c in plots.PALETTE[i % len(plots.PALETTE)])


def growth_figure(results: Dict[str, Any], path: str) -> None:
  """NME vs sigma (tangent solid, normal dashed, one colour per loss)."""
  fig = plots.new_figure(1000, 420)
  runs = results["runs"]
  for col, key in enumerate(("nme", "nme_jaw")):
    ax = fig.add_subplot(1, 2, col + 1)
    for li, loss in enumerate(LOSSES):
      for direction, style in zip(DIRECTIONS, ("-", "--")):
        xs, ys, err = [], [], []
        for sigma in (0.0,) + SIGMAS:
          name = (clean_name(loss) if sigma == 0
                  else noisy_name(loss, direction, sigma))
          e = runs.get(name, {})
          if e.get("status") != "ok":
            continue
          xs.append(sigma)
          ys.append(e[key])
          c = e.get("vs_clean", {}).get(key)
          err.append((0.0, 0.0) if c is None else
                     (c["mean"] - c["low"], c["high"] - c["mean"]))
        if not xs:
          continue
        ax.errorbar(xs, ys, yerr=np.array(err).T, color=_colour(li),
                    marker="o" if direction == "tangent" else "s",
                    linestyle=style, capsize=3,
                    label=f"{LOSS_LABELS[loss]}, {direction}")
    ax.set_xlabel("jaw label noise sigma (x inter-ocular distance)")
    ax.set_ylabel(("NME" if key == "nme" else "jaw NME") + " (%)")
    ax.set_title("all points" if key == "nme" else "jaw (0-16)")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  fig.suptitle("NME vs training-label noise on the jaw (bars: paired "
               "bootstrap 95 % of the growth)", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)


def figure_faces(num_faces: int, count: int = 3) -> List[int]:
  """Evenly spaced face indices (not selected by error)."""
  count = max(1, min(count, num_faces))
  return sorted({int(round(i)) for i in
                 np.linspace(0, num_faces - 1, count + 2)[1:-1]})


def instability_figure(preds_by_loss: Dict[str, Sequence[np.ndarray]],
                       gt: np.ndarray, path: str, *,
                       image_fn: Optional[Callable[[int], np.ndarray]] = None,
                       faces: Optional[Sequence[int]] = None) -> None:
  """Rows: faces; columns: losses; each seed model's points in one colour."""
  gt = np.asarray(gt, np.float64)
  faces = list(faces if faces is not None else figure_faces(gt.shape[0]))
  scheme = schemes_lib.get_scheme(gt.shape[1])
  fig = plots.new_figure(380 * len(LOSSES), 380 * len(faces))
  for row, f in enumerate(faces):
    image = None
    if image_fn is not None:
      try:
        image = np.asarray(image_fn(f))
      except (OSError, ValueError):
        image = None
    lo, hi = gt[f].min(0), gt[f].max(0)
    pad = 0.15 * float(np.max(hi - lo))
    for col, loss in enumerate(LOSSES):
      ax = fig.add_subplot(len(faces), len(LOSSES),
                           row * len(LOSSES) + col + 1)
      if image is not None:
        ax.imshow(image)
      models = list(preds_by_loss.get(loss, ()))
      for m, pred in enumerate(models):
        for edge, closed in zip(scheme.edges, scheme.edge_closed):
          e = list(edge) + ([edge[0]] if closed else [])
          ax.plot(pred[f, e, 0], pred[f, e, 1], color=_colour(m), lw=0.6,
                  alpha=0.8)
        ax.scatter(pred[f, :, 0], pred[f, :, 1], s=6, color=_colour(m),
                   label=f"seed model {m}")
      ax.scatter(gt[f, :, 0], gt[f, :, 1], s=12, marker="x", lw=0.8,
                 color="white" if image is not None else "black",
                 label="ground truth")
      ax.set_xlim(lo[0] - pad, hi[0] + pad)
      ax.set_ylim(hi[1] + pad, lo[1] - pad)
      ax.set_aspect("equal")
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_title(f"{LOSS_LABELS[loss]}, face {f}" +
                   ("" if len(models) >= 2 else " (fewer than 2 models)"),
                   fontsize=9)
      if row == 0 and col == 0 and models:
        ax.legend(fontsize=7, loc="lower left")
  fig.suptitle("Predictions of the seed models without label noise",
               fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)


# ----------------------------------------------------------------- inputs ----



# -------------------------------------------------------------------- cli ----

def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  workdir = os.path.abspath(f.workdir)
  runs = sweep_lib.select(sweep(), f.only)
  extra = tuple(f.extra_overrides)
  if not f.analyse_only:
    sweep_lib.check_study_settings(
        workdir, {"steps": int(f.steps), "config": f.config,
                  "extra_overrides": list(extra)})
    status = train_runs(runs, workdir, f.steps, parallel=f.parallel,
                        config_path=f.config, extra=extra, pin=f.pin)
    for name, s in status.items():
      print(f"  {name}: {s}", flush=True)
  if f.keep_dir:
    kept = sweep_lib.keep_results(workdir, f.keep_dir)
    print(f"kept the predictions of {len(kept)} runs in {f.keep_dir}",
          flush=True)
  steps = f.steps
  saved = os.path.join(workdir, "study.json")
  if f.analyse_only and os.path.exists(saved) and not f["steps"].present:
    with open(saved) as fh:
      steps = json.load(fh)["steps"]
  config = sweep_lib.load_config(f.config)
  split = f.split or config.data.eval_splits[0]
  gt, records = sweep_lib.ground_truth(config, split)
  results = analyse(workdir, gt, runs=sweep(), split=split,
                    variant=f.variant, steps=steps,
                    image_fn=lambda i: records[i].load_image())
  print(markdown(results), flush=True)
  print(f"wrote {workdir}/table.md, results.json, growth.png, "
        "instability.png", flush=True)


def _define_flags():
  sweep_lib.define_study_flags(
      "runs/ambiguity", "Train only these runs (names of sweep()); the "
      "analysis always covers the whole sweep.",
      "bench/predictions/yt68_ambiguity")
  flags.DEFINE_string("config", DEFAULT_CONFIG, "The study's config file.")
  flags.DEFINE_multi_string("extra_overrides", [],
                            "More run.py flags for every run, e.g. "
                            "--extra_overrides=--config.data.augment."
                            "flip_prob=0 (repeatable).")


if __name__ == "__main__":
  _define_flags()
  app.run(errors.reporting_user_errors(main))

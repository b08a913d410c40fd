r"""STAR for coordinate regression vs its baselines and vs heatmap STAR (yt68).

star_jax/regression.py applies STAR's decomposition to the covariance that a
coordinate-regression head predicts per landmark (our own formulation, not
the paper's). This study asks, on yt68 (68 points, real faces) at one
training budget: does that loss beat the two usual losses of the same head,
smooth-L1 on the mean (the paper's eq. 2 baseline) and the Gaussian negative
log-likelihood of mean and covariance, and how far is the regression head
from the heatmap head trained with STAR and with smooth-L1?

  python -m star_jax.regression_study --workdir=runs/regression --steps=1700 \
      --parallel=2 [--only=star,nll] [--analyse_only] \
      [--heatmap_workdir=runs/ambiguity]

What it does:
  1. The regression runs (`regression_runs()`), one per
     `config.loss.regression`, named after it: `star`, `nll`, `smooth_l1`.
     Each run that has no final predictions yet: `python run.py
     --config=configs/yt68_regression.py --workdir=<workdir>/<name>
     --config.max_steps=<steps> --config.loss.regression=<name>`, then the
     same command with `--mode=eval` (results.json and predictions.npz in
     the run's folder; star_jax/sweep.py runs the commands, up to
     `--parallel` at once, each pinned to one core, log <workdir>/<name>.log).
     Plus `<loss>_seed1` and `<loss>_seed2` of every loss (EXTRA_SEEDS: the
     same with `--config.seed=S`), the head's seed-to-seed spread, and
     `star_w100` (STAR with the restriction weight `--config.loss.w=100`).
  2. The heatmap references (`heatmap_runs()`) in `--heatmap_workdir`
     (default <workdir>/heatmap): `star_clean` (configs/yt68_star.py) and
     `l1_clean` (the same with `--config.loss.star=False`), and their
     `_seed1` / `_seed2` runs, at the same budget. These are the ambiguity
     study's runs of the same names
     (configs/yt68_ambiguity.py without label noise is configs/yt68_star.py),
     so `--heatmap_workdir=runs/ambiguity` reuses them; the ones missing
     there are trained with the commands above (config yt68_star.py),
     unless `--analyse_only`. A heatmap folder whose study.json names
     another step count is not trained into.
  3. The analysis (`analyse`) of the runs' raw (not EMA) predictions of
     the final evaluation (`<split>/raw/pred`; `--variant=ema` for the
     other) against the val ground truth listed as the runs list it
     (star_jax.sweep.ground_truth): table.md, results.json, ced.png in
     <workdir>. Runs without usable predictions (missing, unreadable,
     evaluated at another step) are listed and left out; nothing fails for
     them.

<workdir>/study.json records the steps and configs; re-running the training
with other values is refused. `--only` restricts the training to the named
runs (any of them); the analysis always covers all.

Measures (% of the face's inter-ocular distance, outer eye corners 36 / 45
of the ground truth, as the configs' NME; per face, then over faces):
  * per run: NME mean and median, FR@t (% of faces with NME > t) and AUC@t
    (area under the CED up to t, / t; landmarks.metrics.fr_auc) with t the
    config's eval.threshold (0.1); NME of the jaw (0-16) and the inner
    points (17-67); the run's own results.json NME as a cross-check.
  * paired differences (per-face NME a - b, mean and bootstrap 95 %
    interval, faces resampled with replacement, the same resamples for every
    comparison): regression STAR - regression smooth-L1, regression STAR -
    regression NLL, regression STAR - heatmap STAR, heatmap STAR - heatmap
    smooth-L1, regression smooth-L1 seed 1 - seed 0. Negative: a's error is
    lower.
  * per seed group (one model and loss, seeds 0, 1, 2): the NMEs, mean and
    sample sd; differences of seed means with their standard error over
    training runs (the spread the face bootstrap does not see).
  * ced.png: the cumulative error distributions up to t of the seed-0 runs
    and STAR at w = 100.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
import numpy as np

from data import ambiguity
from data import schemes as schemes_lib
from landmarks import metrics
from landmarks import plots
from star_jax import sweep as sweep_lib
from training import errors

REGRESSION_CONFIG = "configs/yt68_regression.py"
HEATMAP_CONFIG = "configs/yt68_star.py"
REGRESSION_LOSSES = ("star", "nll", "smooth_l1")
# Extra training seeds of the regression head: (loss, seed) -> run
# `<loss>_seed<seed>`, the seed-to-seed spread of one loss at this budget.
EXTRA_SEEDS = (("smooth_l1", 1), ("star", 1), ("nll", 1), ("smooth_l1", 2),
               ("star", 2), ("nll", 2))
# STAR's restriction weight w (eq. 7): at w = 1 the free covariance settles
# at a standard deviation of ~10 crop px, 5x the errors (README); w = 100
# puts the optimum (d / 2w)^(1/3) at ~2 px. Run `star_w100`, seed 0.
STAR_WEIGHTS = (100,)
HEATMAP_BASES = ("star_clean", "l1_clean")
HEATMAP_SEEDS = (1, 2)   # the ambiguity study's `<name>_seed<s>` runs.
HEATMAP_NAMES = HEATMAP_BASES + tuple(
    f"{n}_seed{s}" for s in HEATMAP_SEEDS for n in HEATMAP_BASES)
_LOSS_LABELS = {"star": "regression STAR", "nll": "regression NLL",
                "smooth_l1": "regression smooth-L1"}
LABELS = dict(
    _LOSS_LABELS,
    **{f"{loss}_seed{seed}": f"{_LOSS_LABELS[loss]} (seed {seed})"
       for loss, seed in EXTRA_SEEDS},
    **{f"star_w{w:g}": f"regression STAR, w = {w:g}" for w in STAR_WEIGHTS},
    star_clean="heatmap STAR", l1_clean="heatmap smooth-L1",
    **{f"{n}_seed{s}": f"{h} (seed {s})" for s in HEATMAP_SEEDS
       for n, h in (("star_clean", "heatmap STAR"),
                    ("l1_clean", "heatmap smooth-L1"))})
# Seed groups: one model and loss, every training seed (seed 0 first).
SEED_GROUPS = dict(
    **{loss: (loss,) + tuple(f"{loss}_seed{s}" for l, s in EXTRA_SEEDS
                             if l == loss) for loss in REGRESSION_LOSSES},
    **{n: (n,) + tuple(f"{n}_seed{s}" for s in HEATMAP_SEEDS)
       for n in HEATMAP_BASES})
# (a, b) of seed groups: difference of the seed means, with its standard
# error over training runs (what the face bootstrap does not see).
SEED_COMPARISONS = (("star", "smooth_l1"), ("star", "nll"),
                    ("nll", "smooth_l1"), ("star", "star_clean"),
                    ("star_clean", "l1_clean"))
# (a, b): per-face NME of a - b.
COMPARISONS = (("star", "smooth_l1"), ("star", "nll"), ("star", "star_clean"),
               ("star_clean", "l1_clean"), ("smooth_l1_seed1", "smooth_l1"),
               ("star_w100", "star"), ("star_w100", "smooth_l1"))
PARTS = ("nme", "nme_jaw", "nme_inner")
GROUP = "jaw"
THRESHOLD = 0.1


# ----------------------------------------------------------------- sweep ----

def regression_runs() -> List[sweep_lib.Run]:
  """The regression head's runs: one per `config.loss.regression` (seed 0),
  then the EXTRA_SEEDS runs, then STAR at each STAR_WEIGHTS w."""
  runs = [sweep_lib.Run(loss, REGRESSION_CONFIG,
                        (f"--config.loss.regression={loss}",))
          for loss in REGRESSION_LOSSES]
  runs += [sweep_lib.Run(f"{loss}_seed{seed}", REGRESSION_CONFIG,
                         (f"--config.loss.regression={loss}",
                          f"--config.seed={seed}"))
           for loss, seed in EXTRA_SEEDS]
  runs += [sweep_lib.Run(f"star_w{w:g}", REGRESSION_CONFIG,
                         ("--config.loss.regression=star",
                          f"--config.loss.w={w:g}"))
           for w in STAR_WEIGHTS]
  return runs


def heatmap_runs() -> List[sweep_lib.Run]:
  """The heatmap references: STAR and the smooth-L1 baseline, seed 0, then
  seeds HEATMAP_SEEDS of both."""
  loss = {"star_clean": (), "l1_clean": ("--config.loss.star=False",)}
  runs = [sweep_lib.Run(n, HEATMAP_CONFIG, loss[n]) for n in HEATMAP_BASES]
  runs += [sweep_lib.Run(f"{n}_seed{s}", HEATMAP_CONFIG,
                         loss[n] + (f"--config.seed={s}",))
           for s in HEATMAP_SEEDS for n in HEATMAP_BASES]
  return runs


def default_heatmap_workdir(workdir: str) -> str:
  return os.path.join(workdir, "heatmap")


def run_dirs(workdir: str, heatmap_workdir: Optional[str] = None
             ) -> Dict[str, str]:
  """Name -> folder of each run, in the analysis order."""
  heatmap_workdir = heatmap_workdir or default_heatmap_workdir(workdir)
  out = {r.name: os.path.join(workdir, r.name) for r in regression_runs()}
  out.update({r.name: os.path.join(heatmap_workdir, r.name)
              for r in heatmap_runs()})
  return out


def check_heatmap_workdir(heatmap_workdir: str, steps: int) -> None:
  """UserError if another study's folder (study.json) has another budget."""
  saved = sweep_lib.saved_steps(heatmap_workdir)
  if saved is not None and saved != int(steps):
    raise errors.UserError(
        f"{heatmap_workdir}/study.json was written for {saved} steps, this "
        f"study trains {int(steps)}: its heatmap runs are not trained there. "
        f"Use --steps={saved}, another --heatmap_workdir, or --analyse_only.")


def train(workdir: str, steps: int, *, heatmap_workdir: Optional[str] = None,
          only: Sequence[str] = (), parallel: int = 2, pin: bool = True
          ) -> Dict[str, str]:
  """Trains and evaluates the unfinished runs of `only` (all when empty).

  Returns name -> status (star_jax.sweep.train_runs). The regression runs go
  to `workdir`, the heatmap references to `heatmap_workdir`.
  """
  workdir = os.path.abspath(workdir)
  heatmap_workdir = os.path.abspath(heatmap_workdir or
                                    default_heatmap_workdir(workdir))
  chosen = {r.name for r in sweep_lib.select(
      regression_runs() + heatmap_runs(), only)}
  sweep_lib.check_study_settings(workdir, {
      "steps": int(steps), "config": REGRESSION_CONFIG,
      "heatmap_config": HEATMAP_CONFIG})
  reg = [r for r in regression_runs() if r.name in chosen]
  heat = [r for r in heatmap_runs() if r.name in chosen]
  if any(not sweep_lib.is_finished(os.path.join(heatmap_workdir, r.name),
                                   steps) for r in heat):
    check_heatmap_workdir(heatmap_workdir, steps)
  status = {}
  if reg:
    status.update(sweep_lib.train_runs(reg, workdir, steps, parallel=parallel,
                                       pin=pin))
  if heat:
    status.update(sweep_lib.train_runs(heat, heatmap_workdir, steps,
                                       parallel=parallel, pin=pin))
  return status


# --------------------------------------------------------------- metrics ----

def face_nmes(pred: np.ndarray, gt: np.ndarray, jaw: Sequence[int],
              inner: Sequence[int]) -> Dict[str, np.ndarray]:
  """Per-face `nme`, `nme_jaw`, `nme_inner` `[F]` (fractions of the IOD)."""
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  scheme = schemes_lib.get_scheme(gt.shape[1])
  iod = schemes_lib.normaliser_distance(scheme, gt, "ocular")
  err = np.linalg.norm(pred - gt, axis=-1) / iod[:, None]
  return {"nme": err.mean(1), "nme_jaw": err[:, list(jaw)].mean(1),
          "nme_inner": err[:, list(inner)].mean(1)}


def summary(nmes: Mapping[str, np.ndarray],
            threshold: float = THRESHOLD) -> Dict[str, float]:
  """NME / median / FR (%) and AUC (0..1) of per-face `nmes["nme"]`."""
  m = metrics.subset_metrics(nmes["nme"], threshold)
  return {"nme": 100 * m["nme"],
          "median": 100 * float(np.median(nmes["nme"])),
          "fr": 100 * m["fr"], "auc": m["auc"],
          "nme_jaw": 100 * float(np.mean(nmes["nme_jaw"])),
          "nme_inner": 100 * float(np.mean(nmes["nme_inner"]))}


# -------------------------------------------------------------- analysis ----

def analyse(workdir: str, gt, *, heatmap_workdir: Optional[str] = None,
            split: str = "val", variant: str = "raw",
            steps: Optional[int] = None, threshold: float = THRESHOLD,
            samples: int = sweep_lib.BOOTSTRAP_SAMPLES,
            seed: int = sweep_lib.BOOTSTRAP_SEED,
            figures: bool = True) -> Dict[str, Any]:
  """Reads the runs' predictions; writes table.md, results.json, ced.png.

  Args:
    workdir: the study folder (regression runs in `<workdir>/<name>`; the
      outputs go there).
    gt: `[F, N, 2]` ground truth of `split` in record order (the order of
      the runs' `<split>/index`).
    heatmap_workdir: the heatmap references' folder (default
      <workdir>/heatmap).
    split, variant: which predictions (`<split>/<variant>/pred`).
    steps: when given, a run evaluated at another step counts as missing.
    threshold: FR / AUC / CED threshold (fraction of the IOD).
    samples, seed: the bootstrap resamples (shared by every comparison).
    figures: write ced.png.

  Returns:
    the results.json content.
  """
  gt = np.asarray(gt, np.float64)
  scheme = schemes_lib.get_scheme(gt.shape[1])
  jaw, inner = ambiguity.group_and_rest(GROUP, scheme)
  boot = functools.partial(sweep_lib.paired_interval, samples=samples,
                           seed=seed)
  dirs = run_dirs(workdir, heatmap_workdir)

  results: Dict[str, Any] = {
      "split": split, "variant": variant, "faces": int(gt.shape[0]),
      "steps": steps, "threshold": float(threshold),
      "bootstrap": {"samples": int(samples), "seed": int(seed),
                    "confidence": 0.95},
      "units": ("% of the inter-ocular distance (gt points 36 / 45); AUC: "
                "fraction"),
      "heatmap_workdir": os.path.dirname(dirs["star_clean"]),
      "runs": {}, "comparisons": [], "figures": []}
  per_face = {}
  for name, run_dir in dirs.items():
    pred, why = sweep_lib.load_final_predictions(run_dir, gt, split, variant,
                                                 steps)
    entry: Dict[str, Any] = {
        "label": LABELS[name],
        "head": "heatmap" if name in HEATMAP_NAMES else "regression",
        "status": why}
    if pred is not None:
      per_face[name] = face_nmes(pred, gt, jaw, inner)
      entry.update(summary(per_face[name], threshold))
      entry["reported_nme"] = sweep_lib.reported_nme(run_dir, split, variant)
    results["runs"][name] = entry

  for a, b in COMPARISONS:
    row: Dict[str, Any] = {"a": a, "b": b,
                           "label": f"{LABELS[a]} - {LABELS[b]}"}
    if a in per_face and b in per_face:
      row.update({k: boot(per_face[a][k] - per_face[b][k]) for k in PARTS})
    else:
      row["missing"] = [n for n in (a, b) if n not in per_face]
    results["comparisons"].append(row)

  results["seeds"] = seed_summary(results["runs"])
  results["seed_comparisons"] = seed_comparisons(results["seeds"])
  results["missing"] = [n for n, e in results["runs"].items()
                        if e["status"] != "ok"]
  os.makedirs(workdir, exist_ok=True)
  drawn = {n: m for n, m in per_face.items() if "_seed" not in n}
  if figures and drawn:
    ced_figure({LABELS[n]: m["nme"] for n, m in drawn.items()}, threshold,
               os.path.join(workdir, "ced.png"),
               title=f"{split}: regression head vs heatmap head")
    results["figures"].append("ced.png")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=1, allow_nan=False)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(markdown(results))
  return results


def seed_summary(runs: Mapping[str, Mapping[str, Any]]
                 ) -> Dict[str, Dict[str, Any]]:
  """Per SEED_GROUPS group: the runs found, their NMEs, mean and sample sd.

  The spread over training seeds is the uncertainty of one run's NME that
  the paired face bootstrap cannot see (it resamples faces of fixed models).
  """
  out = {}
  for group, names in SEED_GROUPS.items():
    ok = [n for n in names if runs.get(n, {}).get("status") == "ok"]
    nme = [float(runs[n]["nme"]) for n in ok]
    out[group] = {
        "label": LABELS[group], "runs": ok, "nme": nme,
        "mean": float(np.mean(nme)) if nme else None,
        "sd": float(np.std(nme, ddof=1)) if len(nme) > 1 else None}
  return out


def seed_comparisons(seeds: Mapping[str, Mapping[str, Any]]
                     ) -> List[Dict[str, Any]]:
  """SEED_COMPARISONS: mean_a - mean_b and its standard error
  sqrt(sd_a^2 / n_a + sd_b^2 / n_b) over training runs (None below 2 runs
  of either group)."""
  out = []
  for a, b in SEED_COMPARISONS:
    ga, gb = seeds[a], seeds[b]
    row: Dict[str, Any] = {"a": a, "b": b,
                           "label": f"{ga['label']} - {gb['label']}",
                           "runs": [len(ga["nme"]), len(gb["nme"])],
                           "diff": None, "se": None}
    if ga["nme"] and gb["nme"]:
      row["diff"] = ga["mean"] - gb["mean"]
      if ga["sd"] is not None and gb["sd"] is not None:
        row["se"] = float(np.sqrt(ga["sd"] ** 2 / len(ga["nme"]) +
                                  gb["sd"] ** 2 / len(gb["nme"])))
    out.append(row)
  return out


def ced_figure(nmes_by_label: Mapping[str, np.ndarray], threshold: float,
               path: str, title: str = "") -> None:
  """The models' CED curves up to `threshold` (landmarks.plots.ced_curve)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  plots.ced_curve(dict(nmes_by_label), threshold, path=path,
                  title=title,
                  size=(720, 460))


# -------------------------------------------------------------- markdown ----

def markdown(results: Dict[str, Any]) -> str:
  """table.md from the `analyse` results."""
  f, ci, table = sweep_lib.fmt, sweep_lib.fmt_interval, sweep_lib.markdown_table
  t = f"{results['threshold']:g}"
  lines = ["# STAR for coordinate regression (yt68)", "",
           f"- {results['split']} split, {results['faces']} faces, "
           f"{results['variant']} parameters of the final evaluation"
           + (f" (step {results['steps']})" if results["steps"] else ""),
           f"- NME, median, FR@{t}, jaw (0-16), inner (17-67) in % of the "
           "inter-ocular distance (gt points 36 / 45); AUC@" + t + " as a "
           "fraction; run NME: the run's own results.json",
           f"- intervals: paired bootstrap over faces, "
           f"{results['bootstrap']['samples']} resamples, 95 %",
           f"- heatmap references from {results['heatmap_workdir']}", ""]
  rows = []
  for name, e in results["runs"].items():
    if e["status"] != "ok":
      rows.append([name, e["label"], e["status"]] + ["-"] * 7)
      continue
    rows.append([name, e["label"], "ok", f(e["nme"]), f(e["median"]),
                 f(e["fr"]), f(e["auc"], 4), f(e["nme_jaw"]),
                 f(e["nme_inner"]), f(e["reported_nme"])])
  lines += ["## Runs", ""] + table(
      ["run", "model", "status", "NME", "median NME", f"FR@{t}", f"AUC@{t}",
       "NME jaw", "NME inner", "run NME"], rows)
  lines += ["", "## Paired differences (a - b, negative: a is better)", ""]
  rows = []
  for c in results["comparisons"]:
    if "missing" in c:
      rows.append([c["label"], f"missing: {', '.join(c['missing'])}", "-",
                   "-"])
      continue
    rows.append([c["label"]] + [ci(c[k]) for k in PARTS])
  lines += table(["a - b", "NME", "NME jaw", "NME inner"], rows)
  lines += ["", "## Training seeds (NME, mean +- sample sd over the runs "
            "found)", ""]
  rows = [[g, e["label"], str(len(e["nme"])),
           " / ".join(f(v) for v in e["nme"]) or "-", f(e["mean"]),
           f(e["sd"])] for g, e in results["seeds"].items()]
  lines += table(["group", "model", "runs", "NME per seed", "mean", "sd"],
                 rows)
  lines += ["", "Differences of the seed means, +- their standard error "
            "over training runs:", ""]
  rows = [[c["label"], " vs ".join(map(str, c["runs"])),
           "-" if c["diff"] is None else f"{c['diff']:+.2f}", f(c["se"])]
          for c in results["seed_comparisons"]]
  lines += table(["a - b", "runs", "difference", "standard error"], rows)
  if results["missing"]:
    lines += ["", "Not in the analysis (missing or unusable): " + ", ".join(
        f"{n} ({results['runs'][n]['status']})" for n in results["missing"])]
  return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- cli ----

def study(workdir: str, *, steps: int = 1700, steps_given: bool = True,
          parallel: int = 2, only: Sequence[str] = (),
          analyse_only: bool = False, heatmap_workdir: Optional[str] = None,
          pin: bool = True, split: str = "", variant: str = "raw",
          ground_truth_fn=None) -> Dict[str, Any]:
  """The command: training (unless `analyse_only`), then `analyse`.

  With `analyse_only` and not `steps_given`, the steps of
  <workdir>/study.json (when present) select the final predictions.
  `ground_truth_fn(config, split) -> (gt, records)` defaults to
  star_jax.sweep.ground_truth.
  """
  workdir = os.path.abspath(workdir)
  heatmap_workdir = os.path.abspath(heatmap_workdir or
                                    default_heatmap_workdir(workdir))
  sweep_lib.select(regression_runs() + heatmap_runs(), only)  # check names.
  if not analyse_only:
    status = train(workdir, steps, heatmap_workdir=heatmap_workdir,
                   only=only, parallel=parallel, pin=pin)
    for name, s in status.items():
      print(f"  {name}: {s}", flush=True)
  if analyse_only and not steps_given:
    steps = sweep_lib.saved_steps(workdir) or steps
  config = sweep_lib.load_config(REGRESSION_CONFIG)
  split = split or config.data.eval_splits[0]
  gt, _ = (ground_truth_fn or sweep_lib.ground_truth)(config, split)
  return analyse(workdir, gt, heatmap_workdir=heatmap_workdir, split=split,
                 variant=variant, steps=steps,
                 threshold=float(config.eval.get("threshold", THRESHOLD)))


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  results = study(f.workdir, steps=f.steps, steps_given=f["steps"].present,
                  parallel=f.parallel, only=f.only,
                  analyse_only=f.analyse_only,
                  heatmap_workdir=f.heatmap_workdir or None, pin=f.pin,
                  split=f.split, variant=f.variant)
  print(markdown(results), flush=True)
  workdir = os.path.abspath(f.workdir)
  if f.keep_dir:
    kept = sweep_lib.keep_results(workdir, f.keep_dir)
    print(f"kept the predictions of {len(kept)} runs in {f.keep_dir}",
          flush=True)
  print(f"wrote {workdir}/table.md, results.json"
        + "".join(f", {n}" for n in results["figures"]), flush=True)


def _define_flags():
  sweep_lib.define_study_flags(
      "runs/regression", "Train only these runs (names: regression_runs() "
      "and heatmap_runs(), e.g. star, nll_seed1, star_w100, star_clean); "
      "the analysis always covers all.", "bench/predictions/yt68_regression")
  flags.DEFINE_string("heatmap_workdir", "", "Folder of the heatmap runs "
                      "star_clean, l1_clean and their _seed1 / _seed2 runs "
                      "(default <workdir>/heatmap; "
                      "the ambiguity study's folder holds them).")


if __name__ == "__main__":
  _define_flags()
  app.run(errors.reporting_user_errors(main))

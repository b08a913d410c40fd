r"""Sweeps of run.py runs: train, evaluate, read back (shared by the studies).

A study (star_jax/ambiguity_study.py, star_jax/regression_study.py) is a list
of named runs, each one run.py command line: a config file plus `--config.*`
overrides. This module turns a `Run` into its commands, trains and evaluates
the runs that have no final predictions yet (several at once, each pinned to
one core), guards a study folder against being reused with other settings,
and reads the predictions and the ground truth back for the analysis.

For a run `name` of a study folder `workdir`:

  python run.py --config=<config> --workdir=<workdir>/<name> \
      --config.max_steps=<steps> <overrides> <extra>

trains (run.py resumes from the run's checkpoints after an interruption),
then the same command with `--mode=eval` restores the latest (= final)
checkpoint and writes results.json and predictions.npz into the run's folder
(star_jax/report.py). A run is finished when predictions.npz exists and
results.json names the final step. Output of both commands goes to
<workdir>/<name>.log.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from data import schemes as schemes_lib
from landmarks import metrics
from star_jax import data as star_data
from training import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class Run:
  """One run.py run of a sweep.

  Attributes:
    name: folder name under the study workdir (also the log's name).
    config: the config file, relative to the repository root (as run.py is
      started from there) or absolute.
    overrides: the run's `--config.*` flags on top of `config`.
  """
  name: str
  config: str
  overrides: Tuple[str, ...] = ()


def select(runs: Sequence[Any], only: Sequence[str]) -> List[Any]:
  """The runs named in `only` (all when empty); UserError on unknown names.

  `runs` may be any records with a `name`.
  """
  if not only:
    return list(runs)
  names = {r.name for r in runs}
  unknown = [n for n in only if n not in names]
  if unknown:
    raise errors.UserError(f"--only names unknown runs {unknown}; the sweep's "
                           f"runs: {[r.name for r in runs]}")
  return [r for r in runs if r.name in set(only)]


# ---------------------------------------------------------------- running ----

def run_command(run: Run, workdir: str, steps: int, *,
                extra: Sequence[str] = (), mode: str = "train") -> List[str]:
  """The run.py command line of `run` (training, or `mode="eval"`)."""
  cmd = [sys.executable, "run.py", f"--config={run.config}",
         f"--workdir={os.path.join(workdir, run.name)}",
         f"--config.max_steps={int(steps)}"] + list(run.overrides) + list(extra)
  if mode != "train":
    cmd.append(f"--mode={mode}")
  return cmd


def evaluated_step(run_dir: str) -> Optional[int]:
  """The checkpoint step named in the run's results.json (None: unreadable)."""
  try:
    with open(os.path.join(run_dir, "results.json")) as f:
      return int(json.load(f)["checkpoint"]["step"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def is_finished(run_dir: str, steps: Optional[int] = None) -> bool:
  """Final predictions present (and, given `steps`, of that step)."""
  if not os.path.exists(os.path.join(run_dir, "predictions.npz")):
    return False
  return steps is None or evaluated_step(run_dir) == int(steps)


def cores() -> List[int]:
  """The cores this process may run on (the `taskset -c` slots)."""
  try:
    return sorted(os.sched_getaffinity(0))
  except AttributeError:
    return list(range(os.cpu_count() or 1))


def check_study_settings(workdir: str, settings: Dict[str, Any]) -> None:
  """Writes <workdir>/study.json, or UserError if it holds other settings."""
  path = os.path.join(workdir, "study.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != settings:
      raise errors.UserError(
          f"{path} was written for other settings:\n  saved: {saved}\n  now:  "
          f" {settings}\nUse another --workdir, or the saved settings.")
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    json.dump(settings, f, indent=1, sort_keys=True)


def saved_steps(workdir: str) -> Optional[int]:
  """The steps of <workdir>/study.json (None: no readable study.json)."""
  try:
    with open(os.path.join(workdir, "study.json")) as f:
      return int(json.load(f)["steps"])
  except (OSError, ValueError, KeyError, TypeError):
    return None


def train_runs(runs: Sequence[Run], workdir: str, steps: int, *,
               parallel: int = 2, extra: Sequence[str] = (), pin: bool = True
               ) -> Dict[str, str]:
  """Trains and evaluates each unfinished run; returns name -> status.

  Status: "done" (already finished), "trained", or "failed: <what>" (the
  log says why). `parallel` runs at once; slot i is pinned to the i-th
  allowed core with `taskset -c` when `pin` and taskset is installed.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  status: Dict[str, str] = {}
  todo: "queue.Queue[Run]" = queue.Queue()
  for r in runs:
    if is_finished(os.path.join(workdir, r.name), steps):
      status[r.name] = "done"
    else:
      todo.put(r)
  slots = cores()
  taskset = shutil.which("taskset") if pin else None
  lock = threading.Lock()

  def say(text):
    with lock:
      print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

  def worker(slot: int):
    prefix = ["taskset", "-c", str(slots[slot % len(slots)])] if taskset else []
    while True:
      try:
        r = todo.get_nowait()
      except queue.Empty:
        return
      log_path = os.path.join(workdir, f"{r.name}.log")
      result = "trained"
      with open(log_path, "a") as log:
        for mode in ("train", "eval"):
          cmd = prefix + run_command(r, workdir, steps, extra=extra, mode=mode)
          log.write(f"\n$ {' '.join(cmd)}\n")
          log.flush()
          say(f"{r.name}: {mode} (log {log_path})")
          start = time.time()
          rc = subprocess.run(cmd, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT).returncode
          log.write(f"# exit {rc} after {time.time() - start:.0f} s\n")
          if rc != 0:
            result = f"failed: {mode} exited {rc}"
            break
      if result == "trained" and not is_finished(
          os.path.join(workdir, r.name), steps):
        result = "failed: no predictions.npz of the final step"
      say(f"{r.name}: {result}")
      with lock:
        status[r.name] = result

  threads = [threading.Thread(target=worker, args=(i,))
             for i in range(max(1, int(parallel)))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return {r.name: status[r.name] for r in runs}


# ------------------------------------------------------------ reading back ----

def load_predictions(run_dir: str, split: str, variant: str,
                     num_faces: int) -> Tuple[Optional[np.ndarray], str]:
  """`([F, N, 2] predictions in record order, "ok")` or `(None, why)`."""
  path = os.path.join(run_dir, "predictions.npz")
  if not os.path.exists(path):
    return None, "missing"
  try:
    with np.load(path) as z:
      key = f"{split}/{variant}/pred"
      if key not in z or f"{split}/index" not in z:
        return None, f"no {key} in predictions.npz"
      pred = np.asarray(z[key], np.float64)
      index = np.asarray(z[f"{split}/index"], int)
  except (OSError, ValueError) as e:
    return None, f"unreadable predictions.npz ({e})"
  if pred.ndim != 3 or pred.shape[0] != index.shape[0]:
    return None, f"predictions {pred.shape} do not match index {index.shape}"
  if sorted(index.tolist()) != list(range(num_faces)):
    return None, (f"predictions cover {len(set(index.tolist()))} faces, the "
                  f"ground truth has {num_faces}")
  out = np.empty_like(pred)
  out[index] = pred
  return out, "ok"


def load_final_predictions(run_dir: str, gt: np.ndarray, split: str,
                           variant: str, steps: Optional[int] = None
                           ) -> Tuple[Optional[np.ndarray], str]:
  """`load_predictions`, also `(None, why)` for another step or shape.

  Given `steps`, predictions evaluated at another checkpoint step (a run of
  another budget, or one still training) are not used.
  """
  pred, why = load_predictions(run_dir, split, variant, gt.shape[0])
  if pred is not None and steps is not None and (
      evaluated_step(run_dir) != int(steps)):
    pred, why = None, (f"evaluated at step {evaluated_step(run_dir)}, not "
                       f"{steps}")
  if pred is not None and pred.shape != gt.shape:
    pred, why = None, f"predictions {pred.shape}, ground truth {gt.shape}"
  return pred, why


def keep_results(workdir: str, dest: str,
                 names: Optional[Sequence[str]] = None) -> List[str]:
  """Copies each finished run's final predictions into `dest` (to commit).

  A study's workdir holds checkpoints (megabytes per run); its results are
  the final predictions. For every run folder of `workdir` (or of `names`)
  with a predictions.npz, `dest/<name>/` gets `predictions.npz` (the
  splits' record index and the raw parameters' predictions, float32,
  compressed: ~200 kB for yt68 val; the EMA ones are left behind, so
  `--variant=ema` needs the workdir itself) and
  a `results.json` with only its `checkpoint` and `metrics` entries, the
  two things the analyses read; `dest/study.json` is `workdir`'s. So
  `--workdir=<dest> --analyse_only` gives the analysis of the kept runs,
  and runs made in later sessions add to the same folder. Existing kept
  runs are overwritten only by a run evaluated at the same or a later
  step. Returns the names copied.
  """
  os.makedirs(dest, exist_ok=True)
  study = os.path.join(workdir, "study.json")
  if os.path.exists(study):
    shutil.copyfile(study, os.path.join(dest, "study.json"))
  names = names if names is not None else sorted(
      n for n in os.listdir(workdir)
      if os.path.isfile(os.path.join(workdir, n, "predictions.npz")))
  copied = []
  for name in names:
    src = os.path.join(workdir, name)
    if not is_finished(src):
      continue
    step = evaluated_step(src)
    out = os.path.join(dest, name)
    kept = evaluated_step(out) if os.path.isdir(out) else None
    if step is None or (kept is not None and kept > step):
      continue
    with open(os.path.join(src, "results.json")) as f:
      results = json.load(f)
    with np.load(os.path.join(src, "predictions.npz")) as z:
      arrays = {k: (np.asarray(z[k], np.float32) if k.endswith("/pred")
                    else np.asarray(z[k])) for k in z.files
                if not k.endswith("/ema/pred")}
    os.makedirs(out, exist_ok=True)
    np.savez_compressed(os.path.join(out, "predictions.npz"), **arrays)
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump({k: results[k] for k in ("checkpoint", "metrics")
                 if k in results}, f, indent=1)
    copied.append(name)
  return copied


def reported_nme(run_dir: str, split: str, variant: str) -> Optional[float]:
  """The run's own results.json NME (%), a cross-check of the listing."""
  key = f"{split}/nme" if variant == "raw" else f"{split}_ema/nme"
  try:
    with open(os.path.join(run_dir, "results.json")) as f:
      value = json.load(f)["metrics"][key]
    return None if value is None else 100 * float(value)
  except (OSError, ValueError, KeyError, TypeError):
    return None


def paired_interval(diff: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                    seed: int = BOOTSTRAP_SEED) -> Dict[str, float]:
  """Mean of per-face `diff` and its 95 % bootstrap interval, in %.

  `landmarks.metrics.paired_bootstrap` of `diff` against 0: the resamples
  depend only on `seed` and the face count, so every comparison of one
  analysis uses the same ones.
  """
  diff = np.asarray(diff, np.float64)
  r = metrics.paired_bootstrap(diff, np.zeros_like(diff), num_samples=samples,
                               seed=seed, confidence=0.95)
  return {"mean": 100 * r["mean_difference"], "low": 100 * r["low"],
          "high": 100 * r["high"]}


# ----------------------------------------------------------------- inputs ----

def load_config(path: str):
  """The ConfigDict of a configs/*.py file (relative paths: the repo root)."""
  full = path if os.path.isabs(path) else os.path.join(REPO, path)
  if not os.path.exists(full):
    raise errors.MissingInputError(f"config file {full} does not exist")
  spec = importlib.util.spec_from_file_location("study_config", full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def ground_truth(config, split: Optional[str] = None):
  """`(gt [F, N, 2], records)` of an eval split, listed as the runs list it."""
  config = config.copy_and_resolve_references()
  split = split or config.data.eval_splits[0]
  root = config.data.get("root", "")
  if root and not os.path.isabs(os.path.expanduser(root)):
    config.data.root = os.path.join(REPO, root)  # as run.py from the repo.
  config.data.eval_splits = (split,)
  scheme = schemes_lib.get_scheme(config.data.scheme)
  records = star_data.StarData(config, scheme).eval_records[split]
  gt = np.stack([np.asarray(r.landmarks, np.float64) for r in records])
  return gt, records


# --------------------------------------------------------------- markdown ----

def fmt(v: Optional[float], digits: int = 2) -> str:
  """A number for a table cell ("-" for None)."""
  return "-" if v is None else f"{v:.{digits}f}"


def fmt_interval(c: Optional[Dict[str, float]]) -> str:
  """`mean [low, high]` of a `paired_interval` ("-" for None)."""
  if not c:
    return "-"
  return f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


def markdown_table(header: List[str], rows: List[List[str]]) -> List[str]:
  """The lines of a Markdown table."""
  return (["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * len(header)) + "|"] +
          ["| " + " | ".join(r) + " |" for r in rows])


# ------------------------------------------------------------------ flags ----

def define_study_flags(workdir: str, only_help: str, keep_example: str
                       ) -> None:
  """The absl flags every study command shares (each adds its own)."""
  flags.DEFINE_string("workdir", workdir, "Study folder.")
  flags.DEFINE_integer("steps", 1700, "Training steps per run "
                       "(--config.max_steps).")
  flags.DEFINE_integer("parallel", 2, "Runs trained at once.")
  flags.DEFINE_list("only", [], only_help)
  flags.DEFINE_bool("analyse_only", False, "Only the analysis.")
  flags.DEFINE_string("keep_dir", "", "Also copy each finished run's final "
                      "predictions here (star_jax.sweep.keep_results; "
                      f"e.g. {keep_example}).")
  flags.DEFINE_bool("pin", True, "Pin each parallel run to one core "
                    "(taskset -c).")
  flags.DEFINE_string("split", "", "Eval split (default: the config's first).")
  flags.DEFINE_enum("variant", "raw", ["raw", "ema"],
                    "Which parameters' predictions the analysis reads.")

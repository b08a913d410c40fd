r"""Fault injection: the embedded default trained under faults, one table.

  taskset -c 0 python bench/faults.py --workdir=/tmp/star_faults
  taskset -c 0 python bench/faults.py --workdir=/tmp/star_faults --quick

Every run is `python run.py --config=bench/faults.py ...` in a subprocess of
its own process group, as a scheduler runs a job: the embedded default's
model and training settings (configs/default.py: STAR, 2-stack hourglass,
64 px, batch 32, one grain worker) on the embedded default's procedural
faces written to disk first (`--faces` PNG + .pts files, so that the data
can be checked for writes and corrupted), `--steps` steps, a checkpoint every
`--checkpoint_every` steps (the last 2 kept), no evaluation. Scenarios:

  clean           uninterrupted, twice: the reference, and its repeat (the
                  run-to-run baseline: bit-identical or not).
  kill -9         `--kills` SIGKILLs of the whole process group at random
                  steps, each followed by a restart of the same command.
  SIGTERM         `--sigterms` SIGTERMs of the process group at random steps
                  (grain worker included) + restarts: each should save the
                  step it stopped at and exit 0.
  corrupt ckpt    SIGKILL after the third checkpoint, the largest file of the
                  latest checkpoint truncated to a third, restart.
  NaN, guard      the loss times NaN at step `--nan_step` (0-based) with the
                  non-finite guard (max_nonfinite_steps 10, the default).
  NaN, no guard   the same with max_nonfinite_steps=0 (no guard: the public
                  STAR code's behaviour, its issue #37).
  bad image       one training image overwritten with random bytes a third
                  of the way through the run (its own copy of the data).

Columns: survived (the final run exited 0 at step `--steps` with finite
parameters), steps lost (steps computed twice because of the faults: for
each interruption, the step reached minus the step resumed from), final
parameters against the clean run's (bit-identical, or the largest absolute
difference), data files unchanged (SHA-256 of every file of the data folder
before and after; the bad-image row: every file but the one the bench
overwrote, which holds exactly what the bench wrote), leaked shared-memory
warnings in the logs, wall time. README "Measured" has this table.

This file is also the config (`get_config`) and the method (`make_method`:
STAR whose loss is multiplied by NaN at `config.faults.nan_at_step`) of the
runs it launches.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

STEP_RE = re.compile(r"step (\d+)/(\d+)")
RESUMED_RE = re.compile(r"resumed from .* \(step (\d+)\)")
STOPPED_RE = re.compile(r"stopped by SIGTERM at step (\d+)")


# ------------------------------------------ the runs' config and method ----

def get_config():
  """configs/default.py on a folder of .pts faces, no evaluation."""
  from configs import default  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.method = "bench.faults"
  c.data.name = "pts"
  c.data.root = ""                   # --config.data.root=<the faces>.
  c.data.eval_splits = ()
  c.eval_every_epochs = 0
  c.best_metric = ""
  c.max_steps = 96
  c.checkpoint_every_steps = 16
  c.keep_checkpoints = 2
  c.log_every_steps = 8
  c.progress_every_steps = 1
  c.faults = ml_collections.ConfigDict(dict(nan_at_step=-1))
  return c


def make_method(config):
  """STAR with its loss multiplied by NaN at `config.faults.nan_at_step`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top

  class NanAtStep(star_method.StarMethod):

    def loss_fn(self, params, model_state, batch, rng, step):
      loss, aux = super().loss_fn(params, model_state, batch, rng, step)
      k = int(self.config.faults.nan_at_step)
      return loss * jnp.where(step == k, jnp.nan, 1.0), aux

  return NanAtStep(config)


# ----------------------------------------------------------------- data ----

def write_faces(folder: str, num_faces: int) -> None:
  """The embedded default's training faces (seed 0) as PNG + .pts."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from data.readers import pts  # pylint: disable=g-import-not-at-top
  from data.synthetic import faces  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  for i, r in enumerate(faces.make_records(num_faces, seed=0, image_size=96)):
    Image.fromarray(r.load_image()).save(os.path.join(folder, f"face_{i:04d}.png"))
    pts.write_pts(os.path.join(folder, f"face_{i:04d}.pts"), r.landmarks)


def snapshot(folder: str) -> dict[str, str]:
  out = {}
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name), "rb") as f:
      out[name] = hashlib.sha256(f.read()).hexdigest()
  return out


# ----------------------------------------------------------------- runs ----

class Run:
  """One `run.py` process in its own process group, output to a file."""

  def __init__(self, workdir: str, data: str, steps: int, ckpt_every: int,
               extra=(), log_path: str = ""):
    self.log_path = log_path
    # Only this run's part of the (appended) log is read.
    self.offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    args = [sys.executable, "run.py", f"--config={os.path.abspath(__file__)}",
            f"--workdir={workdir}", f"--config.data.root={data}",
            f"--config.max_steps={steps}",
            f"--config.checkpoint_every_steps={ckpt_every}", *extra]
    self._log = open(log_path, "a")
    self.proc = subprocess.Popen(
        args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"), start_new_session=True)

  def text(self) -> str:
    if not self._log.closed:
      self._log.flush()
    with open(self.log_path) as f:
      f.seek(self.offset)
      return f.read()

  def last_step(self) -> int:
    steps = STEP_RE.findall(self.text())
    return int(steps[-1][0]) if steps else 0

  def wait_for_step(self, target: int, timeout: float = 1800) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and self.proc.poll() is None:
      if self.last_step() >= target:
        break
      time.sleep(0.05)
    return self.last_step()

  def signal_group(self, sig) -> None:
    try:
      os.killpg(self.proc.pid, sig)
    except ProcessLookupError:
      pass

  def wait(self, timeout: float = 3600) -> int:
    rc = self.proc.wait(timeout=timeout)
    self._log.close()
    return rc


def final_params(workdir: str):
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  run = ckpt_lib.restore_run(workdir, which="latest")
  return run.step, [np.asarray(x) for x in jax.tree.leaves(
      (run.state["params"], run.state.get("model_state"),
       run.state.get("opt_state"), run.state.get("ema")))]


def compare(a, b) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  if any(not np.isfinite(x).all() for x in b if x.dtype.kind == "f"):
    return "NaN in parameters"
  if all(np.array_equal(x, y) for x, y in zip(a, b)):
    return "bit-identical"
  # Float leaves only: a skipped step also leaves Adam's step count 1 behind.
  diff = max(float(np.max(np.abs(x.astype(np.float64) - y)))
             for x, y in zip(a, b) if x.size and x.dtype.kind == "f")
  return f"max abs diff {diff:.3g}"


def interrupted(name, root, data, steps, ckpt_every, targets, sig,
                extra=(), after_kill=None):
  """Runs to the end, interrupted by `sig` at each of `targets` (steps).

  `after_kill(workdir)`, when given, runs after each interruption; the
  interruption then waits until the periodic checkpoint of the target step
  is on disk (so that there is a latest checkpoint to damage).

  Returns (workdir, exit status of the last run, steps lost, notes, log).
  Steps lost are counted from the last step an interrupted run printed (a
  SIGKILL can land a step later, so this is a lower bound for kill -9).
  """
  workdir = os.path.join(root, name)
  log = os.path.join(root, f"{name}.log")
  lost, notes, last_interrupt = 0, [], None
  pending = list(targets)
  while True:
    run = Run(workdir, data, steps, ckpt_every, extra, log)
    interrupted_at = None
    if pending:
      target = pending.pop(0)
      run.wait_for_step(target)
      if after_kill is not None:
        # Until the periodic checkpoint of `target` is on disk.
        deadline = time.time() + 300
        while (not os.path.isdir(os.path.join(workdir, "checkpoints",
                                              str(target)))
               and time.time() < deadline):
          time.sleep(0.05)
      run.signal_group(sig)
      rc = run.wait()
      interrupted_at = run.last_step()
      if sig == signal.SIGTERM:
        stopped = STOPPED_RE.findall(run.text())
        notes.append(f"exit {rc}, saved step "
                     f"{stopped[-1] if stopped else 'none'}")
      if after_kill is not None:
        after_kill(workdir)
    else:
      rc = run.wait()
    if last_interrupt is not None:
      resumed = RESUMED_RE.findall(run.text())
      lost += last_interrupt - (int(resumed[0]) if resumed else 0)
    if interrupted_at is None:
      return workdir, rc, lost, notes, log
    last_interrupt = interrupted_at


def truncate_latest_checkpoint(workdir: str) -> None:
  ckpts = os.path.join(workdir, "checkpoints")
  latest = max((int(n) for n in os.listdir(ckpts) if n.isdigit()))
  files = []
  for dirpath, _, names in os.walk(os.path.join(ckpts, str(latest), "state")):
    files += [os.path.join(dirpath, n) for n in names]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)
  print(f"  truncated {path}", flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="/tmp/star_faults")
  p.add_argument("--steps", type=int, default=96)
  p.add_argument("--checkpoint_every", type=int, default=16)
  p.add_argument("--faces", type=int, default=256)
  p.add_argument("--kills", type=int, default=10)
  p.add_argument("--sigterms", type=int, default=3)
  p.add_argument("--nan_step", type=int, default=40)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true",
                 help="24 steps, 2 kills, 1 SIGTERM (a smoke run)")
  args = p.parse_args()
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # orbax's read-only notices.
  if args.quick:
    args.steps, args.checkpoint_every, args.kills, args.sigterms = 24, 8, 2, 1
    args.nan_step = 10
  root = os.path.abspath(args.workdir)
  if os.path.exists(root):
    shutil.rmtree(root)
  os.makedirs(root)
  data = os.path.join(root, "faces")
  write_faces(data, args.faces)
  before = snapshot(data)
  rng = random.Random(args.seed)
  n, every = args.steps, args.checkpoint_every
  rows = []

  def finish(name, faults, workdir, rc, lost, log, t0, reference,
             data_dir=data, expected=None, note=""):
    step, params = final_params(workdir)
    versus = compare(reference, params) if reference is not None else "-"
    finite = versus != "NaN in parameters"
    survived = rc == 0 and step == n and finite
    now = snapshot(data_dir)
    unchanged = now == (expected or before)
    with open(log) as f:
      leaks = f.read().count("leaked shared_memory")
    rows.append((name, faults, "yes" if survived else f"no (rc {rc}, step "
                 f"{step}{', NaN' if not finite else ''})", str(lost), versus,
                 "yes" if unchanged else "NO", str(leaks),
                 f"{time.time() - t0:.0f}", note))
    print("  " + " | ".join(rows[-1]), flush=True)
    return params

  print(f"{args.faces} faces in {data}; {n} steps, checkpoint every {every}",
        flush=True)
  # clean, twice.
  t0 = time.time()
  w, rc, lost, _, log = interrupted("clean", root, data, n, every, [], None)
  _, reference = final_params(w)
  finish("clean", "none", w, rc, lost, log, t0, None)
  t0 = time.time()
  w, rc, lost, _, log = interrupted("clean_again", root, data, n, every, [], None)
  finish("clean, again", "none", w, rc, lost, log, t0, reference)
  # kill -9.
  targets = sorted(rng.sample(range(2, n - 1), args.kills))
  t0 = time.time()
  w, rc, lost, _, log = interrupted("kill9", root, data, n, every, targets,
                                    signal.SIGKILL)
  finish("kill -9", f"{args.kills} at steps {targets}", w, rc, lost, log, t0,
         reference)
  # SIGTERM.
  targets = sorted(rng.sample(range(2, n - 1), args.sigterms))
  t0 = time.time()
  w, rc, lost, notes, log = interrupted("sigterm", root, data, n, every,
                                        targets, signal.SIGTERM)
  finish("SIGTERM", f"{args.sigterms} at steps {targets}", w, rc, lost, log,
         t0, reference, note="; ".join(notes))
  # Corrupted latest checkpoint.
  t0 = time.time()
  w, rc, lost, _, log = interrupted(
      "corrupt_ckpt", root, data, n, every, [3 * every], signal.SIGKILL,
      after_kill=truncate_latest_checkpoint)
  with open(log) as f:
    fell_back = "does not restore" in f.read()
  finish("corrupt ckpt", f"kill -9 after step {3 * every}, latest truncated",
         w, rc, lost, log, t0, reference,
         note="set aside, resumed from the previous" if fell_back else
         "no fallback message")
  # NaN with and without the guard.
  for name, extra in (("NaN, guard", ()),
                      ("NaN, no guard", ("--config.max_nonfinite_steps=0",))):
    t0 = time.time()
    w, rc, lost, _, log = interrupted(
        name.replace(", ", "_").replace(" ", "_"), root, data, n, every, [],
        None, extra=(f"--config.faults.nan_at_step={args.nan_step}", *extra))
    with open(log) as f:
      skipped = f.read().count("non-finite loss or gradients")
    finish(name, f"loss x NaN at step {args.nan_step}", w, rc, lost, log, t0,
           reference, note=f"{skipped} step(s) reported skipped")
  # A training image overwritten mid-run (its own copy of the data).
  bad_data = os.path.join(root, "faces_bad_image")
  shutil.copytree(data, bad_data)
  t0 = time.time()
  workdir, log = os.path.join(root, "bad_image"), os.path.join(root, "bad_image.log")
  run = Run(workdir, bad_data, n, every, (), log)
  run.wait_for_step(n // 3)
  victim = os.path.join(bad_data, "face_0007.png")
  junk = random.Random(args.seed + 1).randbytes(4096)
  with open(victim, "wb") as f:
    f.write(junk)
  rc = run.wait()
  expected = dict(before)
  expected["face_0007.png"] = hashlib.sha256(junk).hexdigest()
  with open(log) as f:
    named = f.read().count("face_0007.png")
  finish("bad image", f"face_0007.png -> random bytes at step {n // 3}",
         workdir, rc, 0, log, t0, reference, data_dir=bad_data,
         expected=expected, note=f"file named {named} time(s) in the log")

  header = ("scenario", "faults", "survived", "steps lost",
            "final parameters vs clean", "data unchanged", "shm leaks",
            "wall s", "note")
  print()
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for r in rows:
    print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
  main()

"""Tests of run.py: interrupted runs resume exactly; eval and summary modes."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import test_loop as toy
from training import checkpoints as ckpt_lib
from training import loop

REPO = toy.REPO
_CONFIG = """
from tests.test_loop import toy_config

def get_config():
  return toy_config(num_epochs=30, checkpoint_every_steps=8,
                    log_every_steps=4, eval_every_epochs=15,
                    data_delay_s=0.002)
"""


class _Proc:
  """A run.py subprocess whose output goes to a file (no pipe to fill)."""

  def __init__(self, args, log_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    self.log_path = log_path
    self._log = open(log_path, "w")
    self.popen = subprocess.Popen(
        [sys.executable, "run.py", *args], cwd=REPO, env=env,
        stdout=self._log, stderr=subprocess.STDOUT, text=True)

  def poll(self):
    return self.popen.poll()

  def kill(self):
    self.popen.send_signal(signal.SIGKILL)
    self.popen.wait()
    self._log.close()

  def output(self, timeout=300):
    self.popen.wait(timeout=timeout)
    self._log.close()
    with open(self.log_path) as f:
      return f.read()

  @property
  def returncode(self):
    return self.popen.returncode


_COUNTER = [0]


def _run(args, tmp_path=None):
  _COUNTER[0] += 1
  log = os.path.join(str(tmp_path or "/tmp"), f"run_{os.getpid()}_{_COUNTER[0]}.log")
  return _Proc(args, log)


def _committed_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def test_interrupted_run_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG)
  workdir = str(tmp_path / "interrupted")
  proc = _run([f"--config={config_path}", f"--workdir={workdir}"], tmp_path)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = _committed_steps(workdir)
    if steps and steps[-1] >= 16:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be interrupted:\n" + (
      proc.output()[-3000:])
  proc.kill()
  killed_at = _committed_steps(workdir)[-1]
  assert 16 <= killed_at < 120

  proc = _run([f"--config={config_path}", f"--workdir={workdir}"], tmp_path)
  out = proc.output()
  assert proc.returncode == 0, out[-3000:]
  resumed = [l for l in out.splitlines() if l.startswith("resumed from")]
  assert len(resumed) == 1 and f"(step {killed_at})" in resumed[0], out[-2000:]

  # The same experiment without interruption, in this process.
  config = toy.toy_config(num_epochs=30, checkpoint_every_steps=8,
                          log_every_steps=4, eval_every_epochs=15)
  reference = loop.train(toy.ToyMethod(config), config,
                         str(tmp_path / "straight"))
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  c = ckpt_lib.Checkpointer(workdir)
  assert c.latest_step() == 120
  state, _, _, _ = c.restore(120, trainer.abstract_state)
  c.close()
  for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # --mode=eval restores the last checkpoint and reproduces the final
  # in-training evaluation.
  final = [l for l in out.splitlines() if "val_ema/mse =" in l][-1]
  proc = _run([f"--config={config_path}", f"--workdir={workdir}",
               "--mode=eval"], tmp_path)
  eval_out = proc.output()
  assert proc.returncode == 0, eval_out[-3000:]
  assert final.strip() in eval_out


def test_summary_mode_and_unknown_method(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG)
  proc = _run([f"--config={config_path}", "--mode=summary"], tmp_path)
  out = proc.output()
  assert proc.returncode == 0, out[-3000:]
  # Dense(4->8) + BN(8) + Dense(8->2): 40 + 16 + 18 parameters.
  assert "parameters: 74" in out
  # The two matmuls alone are 2 * (4*8 + 8*2) = 96 FLOPs; biases, BN and ReLU
  # add a few dozen more.
  flops = float(out.split("forward FLOPs per image: ")[1].split()[0])
  assert 96 <= flops <= 400
  import run  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown config.method 'nope'"):
    run.make_method(toy.toy_config(method="nope"))

"""Tests of training/preemption.py: SIGTERM / SIGINT save and exit cleanly.

In this process: a signal that arrives while the loop runs makes it save the
current step (data iterator included) and return; re-running resumes there
and ends bit-identical to an uninterrupted run; the handlers are restored.
Through run.py (a subprocess whose process group gets the signal, the grain
worker included): exit status 0, the message, and no leaked shared memory.
"""

import os
import signal
import subprocess
import sys
import time

from grain import multiprocessing as grain_mp
import jax
import numpy as np
import pytest

from tests import test_loop as toy
from training import checkpoints as ckpt_lib
from training import loop
from training import preemption


class SignalAtBatch(toy.ToyMethod):
  """The toy method whose training iterator sends `config.signal_name` to
  this process when it hands out batch number `config.signal_at_batch`."""

  def train_iterator(self, local_batch_size):
    inner = super().train_iterator(local_batch_size)
    method = self

    class _Iterator:
      served = 0

      def __next__(self):
        batch = next(inner)
        _Iterator.served += 1
        if _Iterator.served == method.config.signal_at_batch:
          os.kill(os.getpid(), getattr(signal, method.config.signal_name))
        return batch

      def get_state(self):
        return inner.get_state()

      def set_state(self, state):
        inner.set_state(state)

    return _Iterator()


def _config(**overrides):
  base = dict(signal_at_batch=0, signal_name="SIGTERM", checkpoint_every_steps=4,
              resume_may_change=("data_delay_s", "signal_at_batch",
                                 "signal_name"))
  base.update(overrides)
  return toy.toy_config(**base)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(name="straight", scope="module")
def _straight(tmp_path_factory):
  """The final state of the uninterrupted run (the reference)."""
  return loop.train(toy.ToyMethod(_config()), _config(),
                    str(tmp_path_factory.mktemp("straight")))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_mid_run_saves_then_resume_equals_uninterrupted(tmp_path, name,
                                                               capsys,
                                                               straight):
  # Batch 6 is drawn for step 6: the signal lands during it, so step 6 (not
  # a periodic step: those are 4 and 8) is saved and the loop returns.
  config = _config(signal_at_batch=6, signal_name=name)
  handler_before = signal.getsignal(getattr(signal, name))
  stopped = loop.train(SignalAtBatch(config), config, str(tmp_path / "run"))
  assert signal.getsignal(getattr(signal, name)) is handler_before
  assert int(stopped.step) == 6
  out = capsys.readouterr().out
  assert f"stopped by {name} at step 6 of 8" in out
  c = ckpt_lib.Checkpointer(str(tmp_path / "run"))
  assert sorted(c.periodic.all_steps()) == [4, 6]
  c.close()
  assert not os.path.exists(tmp_path / "run" / "final_metrics.json")

  resumed = loop.train(SignalAtBatch(_config()), _config(),
                       str(tmp_path / "run"))
  assert "resumed from" in capsys.readouterr().out
  assert int(resumed.step) == 8
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_watcher_restores_handlers_and_only_stops_after_a_signal():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher() as w:
    assert signal.getsignal(signal.SIGTERM) != before
    assert not w.should_stop(3)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)
    assert w.should_stop(4) and w.signal_name == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is before


_CONFIG = """
from tests.test_loop import toy_config

def get_config():
  return toy_config(num_epochs=200, checkpoint_every_steps=1000,
                    log_every_steps=4, eval_every_epochs=0, best_metric="",
                    data_delay_s=0.01, num_workers=1)
"""


def test_run_py_on_sigterm_saves_exits_0_and_leaks_nothing(tmp_path):
  config_path = tmp_path / "toy_config.py"
  config_path.write_text(_CONFIG)
  workdir = tmp_path / "run"
  log_path = tmp_path / "log.txt"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, "run.py", f"--config={config_path}",
         f"--workdir={workdir}"], cwd=toy.REPO, stdout=log,
        stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
        start_new_session=True)
    deadline = time.time() + 240
    metrics = workdir / "metrics.jsonl"
    rows = []
    while time.time() < deadline and proc.poll() is None:
      if metrics.exists() and metrics.read_text().strip():  # step 4 logged.
        rows = metrics.read_text().splitlines()
        break
      time.sleep(0.2)
    # As a scheduler does (SLURM, a terminal's Ctrl-C): the whole process
    # group, the grain worker included, gets the signal.
    os.killpg(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=240)
  out = log_path.read_text()
  assert rc == 0, out[-3000:]
  assert "received SIGTERM" in out and "stopped by SIGTERM at step" in out
  step = int(out.split("stopped by SIGTERM at step ")[1].split()[0])
  assert 4 <= step < 800
  # Rows are flushed as they are logged (every 4 steps here): the file was
  # first seen with a row or a few, not with a buffer's worth (~34 rows).
  assert 1 <= len(rows) <= 10, rows
  assert os.path.isdir(workdir / "checkpoints" / str(step))
  assert "leaked shared_memory" not in out, out[-3000:]
  assert "Traceback" not in out


def test_close_waits_for_grain_to_unlink_freed_batches():
  shm_array = grain_mp.SharedMemoryArray
  shm_array.enable_async_del(1)
  pool = shm_array._del_thread_pool  # pylint: disable=protected-access
  # The deletion thread is busy when the batch is freed (a loaded machine).
  pool.apply_async(time.sleep, (0.5,))
  batch = shm_array((64,), np.float32)
  batch.unlink_on_del()
  path = os.path.join("/dev/shm", batch.shm.name)
  assert os.path.exists(path)
  del batch
  assert os.path.exists(path)           # queued behind the busy thread.
  loop.wait_for_shared_memory_deletions()
  assert not os.path.exists(path)

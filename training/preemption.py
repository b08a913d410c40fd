"""Preemption: SIGTERM / SIGINT make the training loop save and exit cleanly.

Cloud TPU, GKE and cluster schedulers (SLURM, Kubernetes) announce an
eviction with SIGTERM some seconds before they kill the job; a user stops a
run with Ctrl-C (SIGINT). Without a handler both lose every step since the
last periodic checkpoint. With `PreemptionWatcher` the loop asks
`should_stop(step)` after each step; when it says yes the loop writes a
checkpoint of that step (train state and data-iterator state, as any
periodic save), waits until it is on disk, prints how to resume and returns
(run.py exits 0). Re-running the same command resumes from that step, and
the resumed run is bit-identical to an uninterrupted one (tests/test_loop.py).

One process: Python signal handlers set a flag (installed only from the main
thread, restored on exit). A second Ctrl-C while the save is under way gets
Python's default behaviour (KeyboardInterrupt), so a user can always force
an exit; the earlier checkpoints stay intact (orbax writes a step to a
temporary folder and renames it when complete).

Several processes (`jax.distributed.initialize`, config.distributed): the
JAX coordination service receives the scheduler's SIGTERM on any host and
agrees on one step for all hosts; `jax.experimental.multihost_utils.
reached_preemption_sync_point(step)` turns True on every host at that same
step, so every host saves the same step (orbax saves are collective). No
Python handler is installed then (it would hide SIGTERM from the
coordination service, and a Ctrl-C reaching one host only cannot be agreed
on); stop such a run with the scheduler's own signal.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import jax

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionWatcher:
  """Context manager: catches SIGTERM / SIGINT; `should_stop(step)` polls."""

  def __init__(self, signals=SIGNALS):
    self.signals = tuple(signals)
    self.received: Optional[int] = None
    self._previous: dict[int, object] = {}
    self._multihost = jax.process_count() > 1

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      # Second Ctrl-C: give up on the clean save.
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.received = signum
    print(f"received {signal.Signals(signum).name}: saving a checkpoint at "
          "the end of this step, then exiting", flush=True)

  def __enter__(self) -> "PreemptionWatcher":
    if self._multihost:
      return self  # the coordination service handles it (module doc).
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread.
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  @property
  def signal_name(self) -> str:
    if self.received is None:
      return "a preemption notice"
    return signal.Signals(self.received).name

  def should_stop(self, step: int) -> bool:
    """Whether to save step `step` and stop (same answer on every host)."""
    if self._multihost:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # no preemption sync manager (not initialised).
        return False
    return self.received is not None

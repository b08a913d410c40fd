"""The non-finite guard: a step whose loss or gradients are not finite is not
applied, and a run whose steps stay non-finite stops with a clear message.

Inside the jitted step (`guarded_update`): the step is finite when the loss
and the global gradient norm are finite (the norm is a sum of squares of
every gradient, so one NaN / inf anywhere makes it non-finite; the norm is
computed for the logs anyway), and `jax.lax.cond` picks the updated or
the previous state. (A `jnp.where` per state leaf did the same but changed
how XLA fuses the optimizer update, and with it the float rounding: the runs
drifted from the unguarded ones; with `cond` the update computes exactly as
without the guard, bit-identical on CPU, tests/test_nonfinite.py.) A
non-finite step keeps the parameters, the optimizer
state, the model state (BatchNorm statistics) and the EMA of the step before;
only `step` advances, because the step counter counts the batches consumed:
the data order, the per-step PRNG (`fold_in(rng, step)`) and the schedule stay
aligned with an uninterrupted run, and a resumed run repeats the same skips.

On the host (`NonfiniteMonitor`): the step's `nonfinite` flag is read one step
late (after the next step has been dispatched, so the device never waits on
the host), each skipped step is logged with its loss terms, and after
`max_nonfinite_steps` skipped steps in a row the run stops with
`NonfiniteLossError` naming the step, the loss terms and the last good
checkpoint. `max_nonfinite_steps = 0` turns the guard off (every update is
applied, as before; for measuring the guard's cost, bench/guard_cost.py).

Why not stop at the first NaN: on large runs an occasional overflowing batch
(bf16, a degenerate face) is survivable; a streak means the run diverged.
The public STAR code (its issue #37) applies NaN updates and keeps going,
which poisons the parameters and every later checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp

from training import errors

# Config field and its default (configs/common.py spine()).
DEFAULT_MAX_NONFINITE_STEPS = 10


class NonfiniteLossError(errors.UserError):
  """The run's loss or gradients stayed non-finite: it diverged."""


def is_finite_step(loss, grad_norm) -> jax.Array:
  """bool scalar: the loss and the global gradient norm are both finite."""
  return jnp.logical_and(jnp.all(jnp.isfinite(loss)),
                         jnp.isfinite(grad_norm))


def guarded_update(state, new_state, finite):
  """`new_state` when the step is finite, else `state` with `step` advanced.

  `state` and `new_state` are `training.state.TrainState`s (same tree).
  """
  skipped = state.replace(step=new_state.step)
  return jax.lax.cond(finite, lambda: new_state, lambda: skipped)


class NonfiniteMonitor:
  """Host-side bookkeeping of skipped steps (one step late, no device wait).

  Usage in the loop: `monitor.push(step, metrics)` after dispatching step
  `step`; it returns the metrics of the previous step once they are known to
  be finite (for the running averages) or None, and raises
  `NonfiniteLossError` after `max_in_a_row` skipped steps in a row.
  `flush()` at the end handles the last step.
  """

  def __init__(self, max_in_a_row: int,
               last_good_checkpoint: Callable[[], Optional[str]],
               log: Callable[[str], None] = print):
    self.max_in_a_row = int(max_in_a_row)
    self.last_good_checkpoint = last_good_checkpoint
    self.log = log
    self.total = 0
    self.in_a_row = 0
    self._pending: Optional[tuple[int, Mapping[str, Any]]] = None

  @property
  def enabled(self) -> bool:
    return self.max_in_a_row > 0

  def push(self, step: int, metrics: Mapping[str, Any]
           ) -> Optional[Mapping[str, Any]]:
    """Queues step `step`'s metrics; returns the previous step's if finite."""
    previous, self._pending = self._pending, (step, metrics)
    return self._settle(previous)

  def flush(self) -> Optional[Mapping[str, Any]]:
    """Settles the last pushed step (end of training or before a save)."""
    previous, self._pending = self._pending, None
    return self._settle(previous)

  def _settle(self, item) -> Optional[Mapping[str, Any]]:
    if item is None:
      return None
    step, metrics = item
    if not self.enabled or not float(metrics.get("nonfinite", 0.0)):
      self.in_a_row = 0
      return metrics
    self.total += 1
    self.in_a_row += 1
    terms = format_terms(metrics)
    self.log(f"warning: step {step}: non-finite loss or gradients ({terms}); "
             f"the update was not applied ({self.in_a_row} in a row, "
             f"{self.total} in this run)")
    if self.in_a_row >= self.max_in_a_row:
      last = self.last_good_checkpoint()
      raise NonfiniteLossError(
          f"stopped at step {step}: {self.in_a_row} steps in a row had a "
          f"non-finite loss or gradients (max_nonfinite_steps="
          f"{self.max_in_a_row}); loss terms at step {step}: {terms}\n"
          "The parameters were not updated by these steps. Last good "
          "checkpoint: " + (last or "none written yet") + "\nLower "
          "optimizer.learning_rate, set optimizer.grad_clip_norm, or check "
          "the data (python -m data.inspect). Re-running the same command "
          "resumes from that checkpoint and repeats the same steps; to "
          "resume with a changed setting, allow it, e.g. --config."
          "resume_may_change='(\"optimizer.learning_rate\",)'.")
    return None


def format_terms(metrics: Mapping[str, Any]) -> str:
  """`loss=nan, grad_norm=inf, ...`: the step's scalar metrics."""
  parts = []
  for k in sorted(metrics):
    if k in ("nonfinite", "learning_rate"):
      continue
    try:
      v = float(metrics[k])
    except (TypeError, ValueError):
      continue
    parts.append(f"{k}={v:.4g}" if math.isfinite(v) else f"{k}={v}")
  return ", ".join(parts)

"""Tests of training/nonfinite.py: the non-finite guard of the train step.

An injected NaN (in the loss, or only in a gradient) leaves parameters,
optimizer state, BatchNorm statistics and EMA exactly as before the step and
is counted; without the guard the same NaN poisons the parameters (so the
test can fail); finite steps compute bit-identically with and without the
guard; a streak stops the run with a message naming the step, the loss terms
and the last good checkpoint, whose parameters are finite.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import test_loop as toy
from training import checkpoints as ckpt_lib
from training import loop
from training import nonfinite


class NanAtSteps(toy.ToyMethod):
  """The toy method whose loss (or only its gradient) is NaN at
  `config.nan_steps` (0-based step numbers, before the update)."""

  def loss_fn(self, params, model_state, batch, rng, step):
    loss, aux = super().loss_fn(params, model_state, batch, rng, step)
    bad = jnp.isin(step, jnp.asarray(self.config.nan_steps, jnp.int32))
    where = self.config.get("nan_in", "both")
    if where == "gradient":
      # The value is unchanged (s - s); the gradient of sqrt at 0 is
      # inf * 0 = NaN when bad, 0 otherwise (where's other branch).
      w = params["dense2"]["kernel"]
      s = jnp.sqrt(jnp.where(bad, jnp.sum(w * 0.0), 1.0))
      loss = loss + s - jax.lax.stop_gradient(s)
    elif where == "value":  # the loss is NaN, its gradient 0 (where).
      loss = jnp.where(bad, jnp.nan, loss)
    else:  # both NaN, as an overflowing loss gives.
      loss = loss * jnp.where(bad, jnp.nan, 1.0)
    return loss, aux


def _config(**overrides):
  base = dict(nan_steps=[2], max_nonfinite_steps=3)
  base.update(overrides)
  return toy.toy_config(**base)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _steps(trainer, n, seed=5):
  state = trainer.init_state()
  history = [state]
  for i in range(n):
    state, metrics = trainer.train_step(state, toy._fixed_batch(trainer, seed + i))
    history.append((state, metrics))
  return history


@pytest.mark.parametrize("nan_in", ["both", "value", "gradient"])
def test_injected_nan_leaves_the_state_unchanged_and_is_counted(nan_in):
  config = _config(nan_in=nan_in)
  trainer = loop.Trainer(NanAtSteps(config), config)
  state = trainer.init_state()
  batches = [toy._fixed_batch(trainer, 5 + i) for i in range(4)]
  for b in batches[:2]:
    state, metrics = trainer.train_step(state, b)
    assert float(metrics["nonfinite"]) == 0.0
  before = jax.tree.map(np.asarray, state)
  state, metrics = trainer.train_step(state, batches[2])  # step 2: NaN.
  assert float(metrics["nonfinite"]) == 1.0
  assert np.isfinite(float(metrics["loss"])) == (nan_in == "gradient")
  assert np.isfinite(float(metrics["grad_norm"])) == (nan_in == "value")
  assert int(state.step) == 3  # the batch is consumed, the step counted.
  after = jax.tree.map(np.asarray, state.replace(step=before.step))
  for a, b in zip(_leaves(before), _leaves(after)):
    np.testing.assert_array_equal(a, b)
  # params, opt_state (Adam moments and count), BN stats and EMA are all
  # in the comparison:
  assert state.ema is not None and state.model_state["batch_stats"]
  state, metrics = trainer.train_step(state, batches[3])
  assert float(metrics["nonfinite"]) == 0.0
  assert all(np.isfinite(x).all() for x in _leaves(state.params))


def test_without_the_guard_the_nan_poisons_the_parameters():
  config = _config(max_nonfinite_steps=0)
  trainer = loop.Trainer(NanAtSteps(config), config)
  state = trainer.init_state()
  for i in range(3):
    state, metrics = trainer.train_step(state, toy._fixed_batch(trainer, 5 + i))
  assert "nonfinite" not in metrics
  assert not all(np.isfinite(x).all() for x in _leaves(state.params))


def test_finite_steps_are_bit_identical_with_and_without_the_guard():
  on, off = _config(nan_steps=[]), _config(nan_steps=[], max_nonfinite_steps=0)
  a = _steps(loop.Trainer(NanAtSteps(on), on), 5)[-1][0]
  b = _steps(loop.Trainer(NanAtSteps(off), off), 5)[-1][0]
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_a_streak_stops_the_run_naming_step_terms_and_last_checkpoint(
    tmp_path, capsys):
  # Checkpoints every 4 steps; steps 5.. are NaN: the run stops at the third
  # in a row (step number 8, counted from 1) and step 4 is the last good one.
  config = _config(nan_steps=list(range(5, 16)), checkpoint_every_steps=4,
                   eval_every_epochs=0, best_metric="")
  with pytest.raises(nonfinite.NonfiniteLossError) as info:
    loop.train(NanAtSteps(config), config, str(tmp_path))
  message = str(info.value)
  assert "stopped at step 8" in message
  assert "3 steps in a row" in message and "loss=nan" in message
  assert f"{tmp_path}/checkpoints/4 (step 4)" in message
  out = capsys.readouterr().out
  for step in (6, 7, 8):
    assert f"warning: step {step}: non-finite loss" in out
  # Step 4 restores with finite parameters; nothing later was written
  # except skipped steps, which keep step 4's parameters.
  c = ckpt_lib.Checkpointer(str(tmp_path))
  trainer = loop.Trainer(NanAtSteps(config), config)
  state, _, _, _ = c.restore(4, trainer.abstract_state)
  c.close()
  assert all(np.isfinite(x).all() for x in _leaves(state))


def test_isolated_nan_steps_are_survived_and_logged(tmp_path):
  config = _config(nan_steps=[1, 3, 5], eval_every_epochs=0, best_metric="")
  state = loop.train(NanAtSteps(config), config, str(tmp_path))
  assert int(state.step) == 8
  from training import writers  # pylint: disable=g-import-not-at-top
  rows = writers.read_jsonl(str(tmp_path / "metrics.jsonl"))
  totals = [r["train/nonfinite_steps_total"] for r in rows
            if "train/nonfinite_steps_total" in r]
  assert totals[-1] == 3.0
  # The logged averages only include the finite steps.
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)


def test_monitor_reports_one_step_late_and_counts_streaks():
  logs = []
  m = nonfinite.NonfiniteMonitor(2, lambda: "ckpt/4", log=logs.append)
  ok, bad = {"nonfinite": 0.0, "loss": 1.0}, {"nonfinite": 1.0, "loss": np.nan}
  assert m.push(1, ok) is None          # nothing settled yet.
  assert m.push(2, bad) is ok           # step 1 settles: finite.
  assert m.push(3, ok) is None          # step 2 settles: skipped.
  assert m.total == 1 and "step 2" in logs[-1]
  assert m.push(4, bad) is ok and m.in_a_row == 0
  m.push(5, bad)                        # step 4: 1 in a row.
  with pytest.raises(nonfinite.NonfiniteLossError, match="stopped at step 5"):
    m.flush()                           # step 5: 2 in a row.

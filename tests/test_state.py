"""Tests of training/state.py: schedules, EMA, partition, optimizer masking."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from training import state as state_lib


def _opt(**kw):
  c = dict(name="adam", learning_rate=1e-3, schedule="step",
           decay_epochs=[200, 350, 450], decay_factor=0.1)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def test_star_step_schedule_in_steps():
  # WFLW: 7500 faces, batch 128 -> 58 steps per epoch.
  spe = 7500 // 128
  schedule = state_lib.make_schedule(_opt(), spe, 500 * spe)
  for epoch, lr in ((0, 1e-3), (199, 1e-3), (200, 1e-4), (349, 1e-4),
                    (350, 1e-5), (450, 1e-6), (499, 1e-6)):
    assert float(schedule(epoch * spe)) == pytest.approx(lr, rel=1e-5), epoch
  assert float(schedule(200 * spe - 1)) == pytest.approx(1e-3)


def test_cosine_schedule_warmup_and_end():
  c = ml_collections.ConfigDict(dict(learning_rate=1.0, schedule="cosine",
                                     warmup_epochs=1))
  s = state_lib.make_schedule(c, 10, 110)
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(0.5)
  assert float(s(10)) == pytest.approx(1.0)
  assert float(s(60)) == pytest.approx(0.5, abs=1e-6)
  assert float(s(110)) == pytest.approx(0.0, abs=1e-7)


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="schedule"):
    state_lib.make_schedule(ml_collections.ConfigDict(
        dict(learning_rate=1.0, schedule="linear")), 1, 1)
  with pytest.raises(ValueError, match="optimizer.name"):
    state_lib.make_optimizer(_opt(name="lamb"), 1, 1)


def test_ema_decay_formula():
  ema = ml_collections.ConfigDict(dict(enabled=True, half_life_examples=10000,
                                       decay=None))
  assert state_lib.ema_decay(ema, 128) == pytest.approx(0.5 ** 0.0128)
  # After 10000 examples the initial weight has halved.
  d = state_lib.ema_decay(ema, 100)
  assert d ** 100 == pytest.approx(0.5)
  ema.decay = 0.9
  assert state_lib.ema_decay(ema, 128) == 0.9
  ema.enabled = False
  assert state_lib.ema_decay(ema, 128) is None


def test_ema_update_matches_numpy_and_skips_ints():
  ema = {"w": jnp.array([1.0, 2.0]), "n": jnp.array(3, jnp.int32)}
  new = {"w": jnp.array([3.0, 6.0]), "n": jnp.array(7, jnp.int32)}
  out = state_lib.ema_update(ema, new, 0.75)
  np.testing.assert_allclose(out["w"], [1.5, 3.0])
  assert int(out["n"]) == 7


def test_partition_merge_round_trip_and_mask_errors():
  params = {"enc": {"k": jnp.ones((2, 2))}, "head": {"k": jnp.zeros(3),
                                                     "b": jnp.ones(1)}}
  mask = {"enc": {"k": False}, "head": {"k": True, "b": True}}
  trainable, frozen = state_lib.partition(params, mask)
  assert sorted(trainable) == ["head/b", "head/k"] and list(frozen) == ["enc/k"]
  merged = state_lib.merge(trainable, frozen)
  assert jax.tree.structure(merged) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="mask does not match"):
    state_lib.partition(params, {"enc": {"k": False}})


def test_frozen_params_have_no_optimizer_state():
  params = {"enc": {"k": jnp.ones((50, 50))}, "head": {"k": jnp.zeros(3)}}
  mask = {"enc": {"k": False}, "head": {"k": True}}
  tx, _ = state_lib.make_optimizer(_opt(), 10, 100)
  st = state_lib.create_train_state(params, {}, tx, mask,
                                    jax.random.PRNGKey(0), use_ema=False)
  n_opt = sum(x.size for x in jax.tree.leaves(st.opt_state))
  # Adam mu, nu for the 3 head weights + Adam's and the schedule's counts.
  assert n_opt == 2 * 3 + 2


def test_adamw_weight_decay_mask_exempts_masked_params():
  # With zero gradients Adam's update is 0, so only decoupled weight decay
  # moves a parameter: p <- p - lr * wd * p where the mask is True.
  c = _opt(name="adamw", schedule="constant", learning_rate=0.1,
           weight_decay=0.5)
  params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
  mask_fn = lambda p: {"kernel": True, "bias": False}
  tx, _ = state_lib.make_optimizer(c, 10, 100, weight_decay_mask=mask_fn)
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["kernel"], 2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)
  np.testing.assert_array_equal(new["bias"], params["bias"])
  # Without a mask every parameter decays.
  tx, _ = state_lib.make_optimizer(c, 10, 100)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["bias"],
                             2.0 - 0.1 * 0.5 * 2.0, rtol=1e-6)


def test_step_schedule_decay_fractions_of_total_steps():
  c = ml_collections.ConfigDict(dict(
      learning_rate=1.0, schedule="step", decay_factor=0.1,
      decay_epochs=(1, 2), decay_fractions=(0.7, 0.9)))
  # 1,700 steps: boundaries at steps 1,190 and 1,530 (epochs are ignored).
  s = state_lib.make_schedule(c, 92, 1700)
  assert float(s(1189)) == pytest.approx(1.0)
  assert float(s(1190)) == pytest.approx(0.1)
  assert float(s(1529)) == pytest.approx(0.1)
  assert float(s(1530)) == pytest.approx(0.01)
  assert float(s(92)) == pytest.approx(1.0)          # not at epoch 1.

"""Tests for star_jax.objective: the composed training loss (eq. 10)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data import schemes
from data import targets
from landmarks import coordinates
from star_jax import loss as loss_lib
from star_jax import objective

SCHEME = schemes.get_scheme("300w")
# Jitted once per settings (eager edge-map construction is slow).
_LOSS = jax.jit(objective.star_training_loss, static_argnums=(2, 3, 4))


def _fake_outputs(rng, b, n, e, h, num_stacks):
  outs = []
  for _ in range(num_stacks):
    outs.append({
        "heatmaps": jnp.asarray(rng.rand(b, n, h, h).astype(np.float32) ** 4),
        "pointmaps": jnp.asarray(rng.rand(b, n, h, h).astype(np.float32)),
        "edgemaps": jnp.asarray(rng.rand(b, e, h, h).astype(np.float32))})
  return outs


def _landmarks(rng, b, n, s):
  return jnp.asarray(rng.uniform(2, s - 3, (b, n, 2)).astype(np.float32))


def test_stack_weights():
  np.testing.assert_allclose(objective.stack_weights(4), [1 / 8, 1 / 4, 1 / 2, 1])
  np.testing.assert_allclose(objective.stack_weights(1), [1.0])


def test_star_loss_composition_over_stacks():
  rng = np.random.RandomState(0)
  b, n, e, h, s = 2, 68, 9, 8, 32
  outs = _fake_outputs(rng, b, n, e, h, 2)
  lm = _landmarks(rng, b, n, s)
  settings = objective.LossSettings()
  total, terms = _LOSS(outs, lm, settings, SCHEME, s)
  gt = jnp.asarray((2 * np.asarray(lm) + 1) / s - 1)
  pt = targets.point_heatmaps(lm, crop_size=s, heatmap_size=h)
  et = jax.jit(lambda x: targets.edge_maps(x, SCHEME, crop_size=s,
                                           heatmap_size=h))(lm)
  expected = 0.0
  for w, o in zip((0.5, 1.0), outs):
    expected += w * (loss_lib.star_loss(o["heatmaps"], gt)
                     + 10 * loss_lib.awing_heatmap_loss(o["pointmaps"], pt)
                     + 10 * loss_lib.awing_heatmap_loss(o["edgemaps"], et))
  assert float(total) == pytest.approx(float(expected), rel=1e-5)
  assert set(terms) == {"loss_coordinates", "loss_pointmaps", "loss_edgemaps"}
  # The edge targets really are non-trivial at this size.
  assert float(jnp.max(et)) > 0.3


def _smooth_l1_np(x, s=0.01):
  return np.where(x < s, 0.5 * x * x / s, x - 0.5 * s)


def test_star_off_is_the_eq2_baseline_on_soft_argmax():
  rng = np.random.RandomState(1)
  b, n, h, s = 2, 68, 8, 32
  heat = rng.rand(b, n, h, h) ** 4
  lm = rng.uniform(2, s - 3, (b, n, 2))
  outs = [{"heatmaps": jnp.asarray(heat, jnp.float32)}]  # no AAM heads.
  settings = objective.LossSettings(star=False)
  total, terms = _LOSS(
      outs, jnp.asarray(lm, jnp.float32), settings, SCHEME, s)
  # float64 numpy reference: soft-argmax on linspace(-1, 1, h), error norm.
  p = heat / heat.sum(axis=(-2, -1), keepdims=True)
  grid = np.linspace(-1, 1, h)
  mu = np.stack([(p.sum(-2) * grid).sum(-1), (p.sum(-1) * grid).sum(-1)], -1)
  gt = np.clip((2 * lm + 1) / s - 1, -1, 1)
  expected = np.mean(_smooth_l1_np(np.linalg.norm(gt - mu, axis=-1)))
  assert float(total) == pytest.approx(expected, rel=1e-4)
  assert set(terms) == {"loss_coordinates"}


def test_dr_and_variant_settings_are_used():
  rng = np.random.RandomState(2)
  b, n, e, h, s = 1, 68, 9, 8, 32
  outs = [{"heatmaps": _fake_outputs(rng, b, n, e, h, 1)[0]["heatmaps"]}]
  lm = _landmarks(rng, b, n, s)
  base, _ = _LOSS(outs, lm, objective.LossSettings(), SCHEME, s)
  with_dr, terms = _LOSS(
      outs, lm, objective.LossSettings(dr_weight=2.0), SCHEME, s)
  gt = coordinates.normalise_landmarks(lm, s, clamp=True)
  dr = loss_lib.distribution_regularization(outs[0]["heatmaps"], gt)
  assert float(with_dr - base) == pytest.approx(2.0 * float(dr), rel=1e-5)
  assert float(terms["loss_dr"]) == pytest.approx(float(dr), rel=1e-6)
  paper, _ = _LOSS(
      outs, lm, objective.LossSettings(value_form="paper", restriction="value"),
      SCHEME, s)
  expected = loss_lib.star_loss(outs[0]["heatmaps"], gt, value_form="paper")
  code = loss_lib.star_loss(outs[0]["heatmaps"], gt)
  assert float(paper - base) == pytest.approx(float(expected - code), abs=1e-4)
  with pytest.raises(ValueError, match="unknown config.loss keys"):
    objective.LossSettings.from_config(ml_collections.ConfigDict({"stars": 1}))


# ------------------------------------------------- method with fake data ----


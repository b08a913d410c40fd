"""Tests for sce_mae_jax.lcr (eq. 4-7) and sce_mae_jax.projector."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import lcr
from sce_mae_jax import projector


def _ref_lcr_image(phi, pos, att, tau, r_aa, r_ai, r_ii, exclude_self,
                   reduction, locality="log"):
  """Direct double loop of eq. 4-7 in float64 ("distance": plain distance)."""
  phi = np.asarray(phi, np.float64)
  pos = np.asarray(pos, np.float64)
  t = len(phi)
  total = 0.0
  for i in range(t):
    partners = [k for k in range(t) if not (exclude_self and k == i)]
    denom = sum(math.exp(float(phi[i] @ phi[k]) / tau) for k in partners)
    for j in partners:
      p = math.exp(float(phi[i] @ phi[j]) / tau) / denom
      dist = math.sqrt((pos[i, 0] - pos[j, 0]) ** 2 +
                       (pos[i, 1] - pos[j, 1]) ** 2)
      if att[i] and att[j]:
        r = r_aa
      elif not att[i] and not att[j]:
        r = r_ii
      else:
        r = r_ai
      f_loc = math.log(dist + 1.0) if locality == "log" else dist
      total += f_loc * r * p
  return total if reduction == "sum" else total / t


def _example(seed, b=3, t=7, d=5):
  rng = np.random.RandomState(seed)
  phi = rng.normal(size=(b, t, d))
  phi /= np.linalg.norm(phi, axis=-1, keepdims=True)
  pos = rng.randint(0, 12, size=(b, t, 2)).astype(np.float32)
  att = rng.rand(b, t) < 0.6
  return phi.astype(np.float32), pos, att


@pytest.mark.parametrize("tau,exclude_self,reduction,weights,locality",
                         [(1 / 7, False, "sum", (5.0, 5.0, 2.0), "log"),
                          (0.07, True, "mean", (3.0, 1.5, 0.5), "log"),
                          (1 / 7, False, "sum", (1.0, 1.0, 1.0), "distance")])
def test_lcr_matches_double_loop(tau, exclude_self, reduction, weights,
                                 locality):
  phi, pos, att = _example(0)
  loss = jax.jit(functools.partial(
      lcr.lcr_loss, tau=tau, r_att_att=weights[0], r_att_inatt=weights[1],
      r_inatt_inatt=weights[2], exclude_self=exclude_self,
      anchor_reduction=reduction, locality=locality))(phi, pos, att)
  ref = np.mean([_ref_lcr_image(phi[b], pos[b], att[b], tau, *weights,
                                exclude_self, reduction, locality)
                 for b in range(3)])
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_lcr_hand_computed_two_tokens():
  # Two orthogonal unit features, 3 patches apart (3-4-5 triangle: distance 5),
  # one attentive, one centre: each row puts 1 / (1 + e^{1/tau}) on the other
  # token, so L = 2 * log(6) * r_att_inatt / (1 + e^{1/tau}).
  phi = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
  pos = jnp.array([[[0.0, 0.0], [3.0, 4.0]]])
  att = jnp.array([[True, False]])
  loss = lcr.lcr_loss(phi, pos, att, tau=0.5)
  expected = 2 * math.log(6.0) * 5.0 / (1.0 + math.exp(2.0))
  np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
  # Excluding self, each anchor's only partner gets probability 1.
  loss = lcr.lcr_loss(phi, pos, att, tau=0.5, exclude_self=True)
  np.testing.assert_allclose(float(loss), 2 * math.log(6.0) * 5.0, rtol=1e-6)


def test_lcr_weighted_batch_mean_and_gradient():
  phi, pos, att = _example(1, b=2)
  w = jnp.array([1.0, 0.0])
  loss = lcr.lcr_loss(phi, pos, att, image_weights=w)
  only_first = lcr.lcr_loss(phi[:1], pos[:1], att[:1])
  np.testing.assert_allclose(float(loss), float(only_first), rtol=1e-6)
  # Gradient w.r.t. the features against central finite differences.
  f = jax.jit(lambda x: lcr.lcr_loss(x, pos, att))
  g = np.asarray(jax.grad(f)(jnp.asarray(phi)))
  rng = np.random.RandomState(0)
  for _ in range(4):
    idx = tuple(rng.randint(s) for s in phi.shape)
    e = np.zeros_like(phi)
    e[idx] = 1e-2
    num = (float(f(phi + e)) - float(f(phi - e))) / 2e-2
    np.testing.assert_allclose(g[idx], num, rtol=2e-2, atol=2e-3)


def test_lcr_bad_input_raises():
  phi, pos, att = _example(0)
  with pytest.raises(ValueError, match="anchor_reduction"):
    lcr.lcr_loss(phi, pos, att, anchor_reduction="max")
  with pytest.raises(ValueError, match="kept tokens"):
    lcr.lcr_loss(phi, pos[:, :3], att)
  with pytest.raises(ValueError, match="tau"):
    lcr.lcr_loss(phi, pos, att, tau=0.0)
  with pytest.raises(ValueError, match="locality"):
    lcr.lcr_loss(phi, pos, att, locality="linear")


def test_projector_is_linear_then_l2_normalised():
  rng = np.random.RandomState(0)
  x = rng.normal(size=(2, 4, 4, 12)).astype(np.float32)  # A 4x4 token map.
  model = projector.LightProjector(features=64)
  params = model.init(jax.random.PRNGKey(0), x)
  y = np.asarray(model.apply(params, x))
  kernel = np.asarray(params["params"]["conv1x1"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["conv1x1"]["bias"], np.float64)
  assert kernel.shape == (12, 64)
  ref = x.astype(np.float64) @ kernel + bias
  ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
  # A 1x1 conv acts per token: the same result on the flattened sequence.
  y_seq = model.apply(params, x.reshape(2, 16, 12))
  np.testing.assert_allclose(y_seq, y.reshape(2, 16, 64), rtol=1e-6)

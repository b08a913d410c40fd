"""Tests for sce_mae_jax.projector: the linear and the CL spatial-softmax kinds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sce_mae_jax import projector


def _np_spatial_softmax_projector(x, kernel, bias, mul):
  x = np.asarray(x, np.float64)
  y = x @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
  z = mul * y
  z = np.exp(z - z.max(axis=-2, keepdims=True))
  z = z / z.sum(axis=-2, keepdims=True)          # over the N tokens
  return z / np.linalg.norm(z, axis=-1, keepdims=True)


def test_spatial_softmax_projector_equals_numpy_reference():
  rng = np.random.RandomState(0)
  x = rng.normal(size=(2, 36, 12)).astype(np.float32)
  mod = projector.SpatialSoftmaxProjector(features=8, softmax_mul=7.0)
  params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
  params = jax.tree.map(lambda a: jnp.asarray(
      rng.normal(size=a.shape).astype(np.float32) * 0.3), params)
  got = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))
  ref = _np_spatial_softmax_projector(x, params["conv1x1"]["kernel"],
                                      params["conv1x1"]["bias"], 7.0)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
  # Each channel is a distribution over the image's tokens before the norm:
  # the output depends on the other tokens of the same image.
  x2 = x.copy()
  x2[0, 5] += 3.0
  other = np.asarray(mod.apply({"params": params}, jnp.asarray(x2)))
  assert not np.allclose(other[0, 0], got[0, 0])
  np.testing.assert_allclose(other[1], got[1], rtol=1e-6)


def test_linear_projector_is_per_token_and_unit_norm():
  rng = np.random.RandomState(1)
  x = rng.normal(size=(3, 10, 6)).astype(np.float32)
  mod = projector.LightProjector(features=4)
  params = mod.init(jax.random.PRNGKey(0), jnp.asarray(x))["params"]
  got = np.asarray(mod.apply({"params": params}, jnp.asarray(x)))
  k = np.asarray(params["conv1x1"]["kernel"], np.float64)
  b = np.asarray(params["conv1x1"]["bias"], np.float64)
  y = x.astype(np.float64) @ k + b
  np.testing.assert_allclose(got, y / np.linalg.norm(y, axis=-1,
                                                     keepdims=True),
                             rtol=1e-5, atol=1e-6)


def test_projector_from_config_kinds():
  c = ml_collections.ConfigDict(dict(projector=dict(dim=16, kind="linear")))
  assert isinstance(projector.projector_from_config(c),
                    projector.LightProjector)
  c.projector.kind = "spatial_softmax"
  c.projector.softmax_mul = 6.5
  mod = projector.projector_from_config(c)
  assert isinstance(mod, projector.SpatialSoftmaxProjector)
  assert mod.softmax_mul == 6.5 and mod.features == 16
  c.projector.kind = "mlp"
  with pytest.raises(ValueError, match="spatial_softmax"):
    projector.projector_from_config(c)

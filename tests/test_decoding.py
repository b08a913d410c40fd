"""Tests for landmarks.decoding: spatial softmax and cell-centre soft-argmax."""

import jax.numpy as jnp
import numpy as np

from landmarks import coordinates
from landmarks import decoding


def np_softmax_maps(logits):
  """float64 softmax over the h * w positions of `[B, h, w, M]` logits."""
  x = np.asarray(logits, np.float64)
  b, h, w, m = x.shape
  flat = x.reshape(b, h * w, m)
  e = np.exp(flat - flat.max(axis=1, keepdims=True))
  return (e / e.sum(axis=1, keepdims=True)).reshape(b, h, w, m)


def np_soft_argmax(probs):
  """float64 expected cell centre ((2 r + 1) / n - 1) -> `[B, M, 2]` (x, y)."""
  p = np.asarray(probs, np.float64)
  _, h, w, _ = p.shape
  cx = (2 * np.arange(w) + 1) / w - 1
  cy = (2 * np.arange(h) + 1) / h - 1
  return np.stack([np.einsum("bhwm,w->bm", p, cx),
                   np.einsum("bhwm,h->bm", p, cy)], axis=-1)


def test_soft_argmax_of_one_hot_maps_is_the_cell_centre():
  h, w = 5, 7
  cells = [(0, 0), (2, 6), (4, 3)]  # (row, col)
  maps = np.zeros((1, h, w, len(cells)), np.float32)
  for m, (r, c) in enumerate(cells):
    maps[0, r, c, m] = 1.0
  got = np.asarray(decoding.soft_argmax(jnp.asarray(maps)))[0]
  want = [[coordinates.grid_centres(w)[c], coordinates.grid_centres(h)[r]] for r, c in cells]
  np.testing.assert_allclose(got, want, atol=1e-7)


def test_spatial_softmax_and_soft_argmax_match_float64():
  logits = np.random.default_rng(0).normal(size=(2, 5, 7, 3)) * 3
  p = decoding.spatial_softmax(jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(np.asarray(p), np_softmax_maps(logits),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(decoding.soft_argmax(p)),
                             np_soft_argmax(np_softmax_maps(logits)),
                             atol=1e-6)


def test_spatial_softmax_computes_in_float32():
  logits = jnp.zeros((1, 2, 2, 1), jnp.bfloat16)
  p = decoding.spatial_softmax(logits)
  assert p.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(p), 0.25)

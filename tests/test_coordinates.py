"""Tests for landmarks.coordinates: normalised frame, grid centres, flips."""

import jax.numpy as jnp
import numpy as np
import pytest

from data import schemes
from landmarks import coordinates


def test_normalise_matches_the_public_formula_and_inverts():
  p = np.array([0.0, 100.0, 255.0, -5.0, 300.0])
  got = np.asarray(coordinates.normalise_landmarks(jnp.asarray(p), 256,
                                                   clamp=True))
  np.testing.assert_allclose(got, [1 / 256 - 1, 201 / 256 - 1, 511 / 256 - 1,
                                   -1.0, 1.0], rtol=1e-6)
  got = np.asarray(coordinates.normalise_landmarks(jnp.asarray(p), 256, True,
                                                   clamp=True))
  np.testing.assert_allclose(got[:3], [-1.0, 200 / 255 - 1, 1.0], rtol=1e-6)
  inside = jnp.asarray(np.linspace(0, 255, 7))
  for ac in (False, True):
    back = coordinates.denormalise_landmarks(
        coordinates.normalise_landmarks(inside, 256, ac), 256, ac)
    np.testing.assert_allclose(np.asarray(back), np.asarray(inside), atol=1e-4)


def test_unclamped_normalise_keeps_points_outside_the_crop():
  p = np.array([-5.0, 300.0])
  got = np.asarray(coordinates.normalise_landmarks(jnp.asarray(p), 256))
  np.testing.assert_allclose(got, [-9 / 256 - 1, 601 / 256 - 1], rtol=1e-6)
  back = coordinates.denormalise_landmarks(jnp.asarray(got), 256)
  np.testing.assert_allclose(np.asarray(back), p, atol=1e-4)


def test_grid_centres_are_the_normalised_pixel_centres():
  # Cell r of an n-cell axis covers pixels [r, r + 1) of an n-pixel image;
  # its centre r + 1/2 - 1/2 = r (pixel centres at integers) normalises to
  # (2 r + 1) / n - 1.
  n = 7
  np.testing.assert_allclose(
      coordinates.grid_centres(n),
      np.asarray(coordinates.normalise_landmarks(
          jnp.arange(n, dtype=jnp.float32), n)),
      atol=1e-6)
  assert coordinates.grid_centres(4).tolist() == [-0.75, -0.25, 0.25, 0.75]


def np_flip(points, perm, width):
  """Reference: point i of the mirror is the mirrored old point perm[i]."""
  out = np.empty_like(points)
  for i, j in enumerate(perm):
    out[..., i, 0] = (width - 1) - points[..., j, 0]
    out[..., i, 1] = points[..., j, 1]
  return out


def test_flip_points_against_numpy_and_symmetric_inputs():
  rng = np.random.RandomState(2)
  scheme = schemes.get_scheme("wflw")
  perm = scheme.flip_permutation
  p = rng.uniform(0, 255, (3, 98, 2))
  got = np.asarray(coordinates.flip_points(jnp.asarray(p), perm, 256))
  np.testing.assert_allclose(got, np_flip(p, perm, 256), atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(coordinates.flip_points(jnp.asarray(got), perm, 256)), p,
      atol=1e-4)
  images = jnp.zeros((3, 256, 256, 3), jnp.uint8)
  # A predictor that returns the same points for any image: TTA gives the
  # mirror-average, which for a symmetric shape is the shape itself.
  # (face k and its mirror, at k and k + 3 in the batch, get p[k]).
  fixed = lambda x: jnp.tile(jnp.asarray(p, jnp.float32),
                             (x.shape[0] // 3, 1, 1))
  tta = np.asarray(coordinates.flip_test_average(fixed, images, perm))
  np.testing.assert_allclose(tta, 0.5 * (p + np_flip(p, perm, 256)),
                             atol=1e-4)
  sym = 0.5 * (p + np_flip(p, perm, 256))
  fixed_sym = lambda x: jnp.tile(jnp.asarray(sym, jnp.float32),
                                 (x.shape[0] // 3, 1, 1))
  np.testing.assert_allclose(
      np.asarray(coordinates.flip_test_average(fixed_sym, images, perm)), sym,
      atol=1e-4)
  with pytest.raises(ValueError, match="flip_permutation"):
    coordinates.flip_points(jnp.zeros((2, 68, 2)), perm, 256)



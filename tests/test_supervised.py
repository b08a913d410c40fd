"""Tests for sce_mae_jax.supervised (the supervised detection reference)."""

import numpy as np

from data import schemes
from sce_mae_jax import supervised


def test_flip_batch_mirrors_pixels_and_swaps_points():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
  original = images.copy()
  lms = rng.uniform(0, 7, (3, 5, 2)).astype(np.float32)
  flip = np.array([True, False, True])
  scheme = schemes.get_scheme(5)
  im2, lm2 = supervised.flip_batch(images, lms, flip, scheme)
  np.testing.assert_array_equal(im2[0], images[0][:, ::-1])
  np.testing.assert_array_equal(im2[1], images[1])
  # By hand: eyes (0, 1) and mouth corners (3, 4) swap, x -> 7 - x.
  want = lms[0][[1, 0, 2, 4, 3]].copy()
  want[:, 0] = 7 - want[:, 0]
  np.testing.assert_allclose(lm2[0], want)
  np.testing.assert_array_equal(lm2[1], lms[1])
  back_im, back_lm = supervised.flip_batch(im2, lm2, flip, scheme)
  np.testing.assert_array_equal(back_im, images)
  np.testing.assert_allclose(back_lm, lms, atol=1e-6)
  np.testing.assert_array_equal(images, original)   # the input is not modified

"""Tests for sce_mae_jax.tps: TPS fit, image warp, forward landmark map."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import RBFInterpolator

from sce_mae_jax import tps

SIZE = (48, 48)


def _smooth_image(h=SIZE[0], w=SIZE[1]):
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  r = np.sin(xs / 7.0) + np.cos(ys / 9.0)
  g = np.cos((xs + ys) / 11.0)
  b = xs / w - ys / h
  return np.stack([r, g, b], axis=-1).astype(np.float32)


def _warp(seed, grid_size=5, control_sd=0.05, rot=5.0, scale=0.05, shift=0.05):
  return tps.random_tps_warp(
      jax.random.PRNGKey(seed), grid_size=grid_size, control_sd=control_sd,
      rotation_sd_deg=rot, scale_sd=scale, translation_sd=shift)


def test_zero_perturbation_is_identity():
  warp = _warp(0, control_sd=0.0, rot=0.0, scale=0.0, shift=0.0)
  image = _smooth_image()
  warped = tps.warp_image(jnp.asarray(image), warp)
  np.testing.assert_allclose(warped, image, atol=1e-4)
  pts = np.random.RandomState(0).uniform(0, 47, size=(10, 2)).astype(
      np.float32)
  np.testing.assert_allclose(tps.warp_points(pts, warp, SIZE), pts, atol=1e-3)


@pytest.mark.parametrize("grid_size,tol", [(5, 1e-5), (10, 1e-4)])
def test_fit_interpolates_control_points_and_matches_scipy(grid_size, tol):
  warp = _warp(1, grid_size=grid_size)
  np.testing.assert_allclose(tps.apply_tps(warp.sampling, warp.target),
                             warp.source, atol=tol)
  np.testing.assert_allclose(tps.apply_tps(warp.forward, warp.source),
                             warp.target, atol=tol)
  # Independent float64 reference: scipy's thin-plate RBF (kernel r^2 log r,
  # half of ours, which gives the same interpolant) with a degree-1 polynomial.
  ref = RBFInterpolator(np.asarray(warp.target, np.float64),
                        np.asarray(warp.source, np.float64),
                        kernel="thin_plate_spline", degree=1)
  pts = np.random.RandomState(2).uniform(-1.2, 1.2, size=(40, 2))
  got = tps.apply_tps(warp.sampling, jnp.asarray(pts, jnp.float32))
  np.testing.assert_allclose(got, ref(pts), atol=tol)


def test_similarity_warp_moves_points_by_the_similarity():
  # No jitter: the TPS is exactly the similarity d = s R c + t (normalised
  # coordinates, isotropic for a square image), so landmarks must follow it.
  key = jax.random.PRNGKey(3)
  warp = tps.random_tps_warp(key, grid_size=5, control_sd=0.0,
                             rotation_sd_deg=10.0, scale_sd=0.1,
                             translation_sd=0.1)
  src = np.asarray(warp.source, np.float64)
  dst = np.asarray(warp.target, np.float64)
  a, _, _, _ = np.linalg.lstsq(np.c_[src, np.ones(len(src))], dst, rcond=None)
  assert np.abs(np.c_[src, np.ones(len(src))] @ a - dst).max() < 1e-5
  pts = np.random.RandomState(4).uniform(0, 47, size=(12, 2))
  n = pts * 2.0 / 47.0 - 1.0
  expected = ((np.c_[n, np.ones(len(n))] @ a) + 1.0) * 47.0 / 2.0
  got = tps.warp_points(jnp.asarray(pts, jnp.float32), warp, SIZE)
  np.testing.assert_allclose(got, expected, atol=2e-3)


def test_warped_landmarks_are_consistent_with_the_warped_image():
  warp = _warp(5, grid_size=5, control_sd=0.06)
  image = _smooth_image()
  warped = np.asarray(tps.warp_image(jnp.asarray(image), warp))

  # (a) Exact check on the pixel grid: take warped-image pixels p, the original
  # points x = G(p) they were sampled from; forward-mapping x must give p back,
  # and the warped pixel is the original image at x.
  rng = np.random.RandomState(6)
  p = np.stack([rng.randint(6, 42, 16), rng.randint(6, 42, 16)], -1).astype(
      np.float32)
  x = tps.normalized_to_pixels(
      tps.apply_tps(warp.sampling, tps.pixels_to_normalized(p, SIZE)), SIZE)
  y, res = tps.warp_points(x, warp, SIZE, return_residual=True)
  assert float(np.max(res)) < 1e-5
  np.testing.assert_allclose(y, p, atol=1e-3)
  np.testing.assert_allclose(
      warped[p[:, 1].astype(int), p[:, 0].astype(int)],
      tps.bilinear_sample(jnp.asarray(image), x), atol=1e-5)

  # (b) Arbitrary landmarks: the warped image sampled at the warped landmark
  # equals the original at the landmark, up to bilinear interpolation of the
  # smooth image (the nearest-pixel snapping of DVE/CL is far worse).
  lm = rng.uniform(8, 40, size=(20, 2)).astype(np.float32)
  y = tps.warp_points(jnp.asarray(lm), warp, SIZE)
  moved = np.abs(np.asarray(y) - lm).max()
  assert moved > 1.0  # The warp does move the points.
  got = tps.bilinear_sample(jnp.asarray(warped), y)
  want = tps.bilinear_sample(jnp.asarray(image), jnp.asarray(lm))
  np.testing.assert_allclose(got, want, atol=5e-3)

  # warp_pair composes the same three steps.
  img2, lm2, warp2 = tps.warp_pair(jax.random.PRNGKey(5), jnp.asarray(image),
                                   jnp.asarray(lm), control_sd=0.06,
                                   rotation_sd_deg=5.0, scale_sd=0.05,
                                   translation_sd=0.05)
  np.testing.assert_allclose(warp2.target, warp.target, atol=1e-6)
  np.testing.assert_allclose(img2, warped, atol=1e-5)
  np.testing.assert_allclose(lm2, y, atol=1e-4)


def test_bilinear_sample_matches_numpy_and_padding():
  rng = np.random.RandomState(7)
  image = rng.rand(5, 6, 2).astype(np.float32)
  pts = np.array([[0.0, 0.0], [5.0, 4.0], [2.25, 1.5], [4.5, 3.75]],
                 np.float32)
  got = np.asarray(tps.bilinear_sample(jnp.asarray(image), jnp.asarray(pts)))
  for (x, y), g in zip(pts, got):
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - x0, y - y0
    val = 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
      for dx, wx in ((0, 1 - fx), (1, fx)):
        if wx * wy > 0:
          val = val + wx * wy * image[y0 + dy, x0 + dx]
    np.testing.assert_allclose(g, val, atol=1e-6)
  out = np.array([[-1.0, 2.0]], np.float32)
  np.testing.assert_allclose(tps.bilinear_sample(image, out), 0.0)
  np.testing.assert_allclose(tps.bilinear_sample(image, out, "border"),
                             image[2:3, 0])


def test_bad_input_raises():
  with pytest.raises(ValueError, match="grid_size"):
    tps.control_grid(1)
  with pytest.raises(ValueError, match="source and target"):
    tps.fit_tps(jnp.zeros((4, 2)), jnp.zeros((5, 2)))
  with pytest.raises(ValueError, match="padding"):
    tps.bilinear_sample(jnp.zeros((2, 2, 1)), jnp.zeros((1, 2)), "wrap")

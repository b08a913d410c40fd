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


# ------------------------------------------------------ DVE's own warps ----

def _dve_grid_numpy(weights, affine, h, w, grid_size=10):
  """DVE's `Warper` sampling grid in float64: `F @ [weights; affine]` with
  `F = [U(pixel, ctrl), 1, pixel]`, `U = D log(D + 1e-5)` (utils/tps.py)."""
  t = np.linspace(-1.0, 1.0, grid_size)
  cy, cx = np.meshgrid(t, t, indexing="ij")
  ctrl = np.stack([cx.ravel(), cy.ravel()], -1)
  py, px = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w),
                       indexing="ij")
  pix = np.stack([px.ravel(), py.ravel()], -1)
  d = np.sum((pix[:, None] - ctrl[None]) ** 2, axis=-1)
  f = np.concatenate([d * np.log(d + 1e-5), np.ones((len(pix), 1)), pix], 1)
  wa = np.concatenate([np.asarray(weights, np.float64),
                       np.asarray(affine, np.float64)], 0)
  return (f @ wa).reshape(h, w, 2)


def _grid_sample_numpy(image, grid):
  """`grid_sample(align_corners=True, padding zeros)` in float64."""
  h, w = image.shape[:2]
  x = (grid[..., 0] + 1.0) * (w - 1) / 2.0
  y = (grid[..., 1] + 1.0) * (h - 1) / 2.0
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  out = np.zeros(grid.shape[:2] + image.shape[2:])
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      wgt = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
      inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
      val = image[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
      out += np.where(inside, wgt, 0.0)[..., None] * val
  return out


def _dot_image(point, size=SIZE[0], sigma=1.2):
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  d2 = (xs - point[0]) ** 2 + (ys - point[1]) ** 2
  return (255.0 * np.exp(-d2 / (2 * sigma ** 2)))[..., None].astype(
      np.float32)


DVE_TRAIN = dict(warpsd_all=1e-3, warpsd_subset=1e-2, transsd=0.1,
                 scalesd=0.1, rotsd=5.0)


def test_dve_defaults_are_dve_evaluation_values():
  assert tps.DVE_EVAL_WARP == {k: v * 0.5 for k, v in DVE_TRAIN.items()}
  a = tps.random_dve_warp(jax.random.PRNGKey(0))
  b = tps.random_dve_warp(jax.random.PRNGKey(0), **tps.DVE_EVAL_WARP)
  np.testing.assert_allclose(a.sampling.weights, b.sampling.weights,
                             rtol=1e-6)
  np.testing.assert_allclose(a.sampling.affine, b.sampling.affine, rtol=1e-6)
  assert a.sampling.centres.shape == (100, 2)


def test_dve_warp_with_zero_sd_is_identity():
  zero = {k: 0.0 for k in DVE_TRAIN}
  warp = tps.random_dve_warp(jax.random.PRNGKey(1), **zero)
  np.testing.assert_array_equal(warp.sampling.weights, 0.0)
  np.testing.assert_array_equal(warp.sampling.affine,
                                [[0, 0], [1, 0], [0, 1]])
  image = _smooth_image()
  np.testing.assert_allclose(tps.warp_image(jnp.asarray(image), warp), image,
                             atol=1e-5)
  pts = np.random.RandomState(0).uniform(0, 47, (10, 2)).astype(np.float32)
  np.testing.assert_allclose(tps.warp_points(pts, warp, SIZE), pts, atol=1e-4)


@pytest.mark.parametrize("params", [tps.DVE_EVAL_WARP, DVE_TRAIN])
def test_dve_sampling_map_equals_dve_grid_formula(params):
  warp = tps.random_dve_warp(jax.random.PRNGKey(2), **params)
  want = _dve_grid_numpy(warp.sampling.weights, warp.sampling.affine, *SIZE)
  got = tps.apply_tps(warp.sampling, tps.pixels_to_normalized(
      tps.pixel_grid(SIZE), SIZE))
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert np.abs(want - tps.pixels_to_normalized(
      tps.pixel_grid(SIZE), SIZE)).max() > 0.02  # Not the identity.
  # The whole image warp against torch-style grid_sample on DVE's grid.
  image = _smooth_image()
  np.testing.assert_allclose(tps.warp_image(jnp.asarray(image), warp),
                             _grid_sample_numpy(image.astype(np.float64),
                                                want), atol=1e-3)


def test_dve_weights_and_affine_follow_random_tps_weights():
  key = jax.random.PRNGKey(3)
  # A random half of the kernel weights comes from the "subset" sd.
  only_subset = tps.random_dve_warp(key, warpsd_all=0.0, warpsd_subset=1.0)
  only_all = tps.random_dve_warp(key, warpsd_all=1.0, warpsd_subset=0.0)
  zero_s = np.asarray(only_subset.sampling.weights) == 0
  zero_a = np.asarray(only_all.sampling.weights) == 0
  assert 0.35 < zero_s.mean() < 0.65
  np.testing.assert_array_equal(zero_s, ~zero_a)  # Complementary halves.
  # Rotation only: rows 1, 2 are [cos, -sin], [sin, cos], no shift.
  rot = np.asarray(tps.random_dve_warp(
      key, transsd=0.0, scalesd=0.0, rotsd=30.0).sampling.affine, np.float64)
  np.testing.assert_allclose(rot[0], 0.0)
  angle = math.atan2(-rot[1, 1], rot[1, 0])
  assert abs(angle) > 1e-3
  np.testing.assert_allclose(rot[1:], [[math.cos(angle), -math.sin(angle)],
                                       [math.sin(angle), math.cos(angle)]],
                             atol=1e-6)
  # Scale and shift only.
  sc = np.asarray(tps.random_dve_warp(
      key, transsd=0.3, scalesd=0.3, rotsd=0.0).sampling.affine, np.float64)
  assert sc[1, 0] == pytest.approx(sc[2, 1]) and sc[1, 0] != 1.0
  np.testing.assert_allclose([sc[1, 1], sc[2, 0]], 0.0, atol=1e-7)
  assert np.all(sc[0] != 0.0)


def test_dve_forward_map_inverts_the_affine_part():
  warp = tps.random_dve_warp(jax.random.PRNGKey(4), **DVE_TRAIN)
  np.testing.assert_array_equal(warp.forward.weights, 0.0)
  p = np.random.RandomState(5).uniform(-1, 1, (20, 2))
  aff = np.asarray(warp.sampling.affine, np.float64)
  q = aff[0] + p @ aff[1:]
  np.testing.assert_allclose(
      tps.apply_tps(warp.forward, jnp.asarray(q, jnp.float32)), p, atol=1e-5)
  np.testing.assert_allclose(warp.target, tps.apply_tps(warp.forward,
                                                        warp.source))


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_a_dot_lands_where_warp_points_puts_it(seed):
  """A bright dot at a landmark: after the warp (and after two warps, as the
  DVE source view), the warped image peaks at the warped landmark."""
  rng = np.random.RandomState(seed)
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  first = tps.random_dve_warp(k1, **DVE_TRAIN)
  second = tps.random_dve_warp(k2, **DVE_TRAIN)
  moved = []
  for point in rng.uniform(12, 36, (4, 2)):
    image = jnp.asarray(_dot_image(point))
    once = tps.warp_image(image, first)
    twice = tps.warp_image(once, second)
    y1, res1 = tps.warp_points(jnp.asarray(point[None], jnp.float32), first,
                               SIZE, return_residual=True)
    y2, res2 = tps.warp_points(y1, second, SIZE, return_residual=True)
    assert float(res1[0]) < 1e-4 and float(res2[0]) < 1e-4
    for img, y in ((once, y1[0]), (twice, y2[0])):
      img = np.asarray(img)[..., 0]
      peak = np.array(np.unravel_index(np.argmax(img), img.shape))[::-1]
      assert np.linalg.norm(peak - np.asarray(y)) <= 1.0, (peak, y)
    moved.append(np.linalg.norm(np.asarray(y2[0]) - point))
  assert max(moved) > 1.0  # The warps do move the dots.


def test_snap_points_is_dves_nearest_pixel_rule():
  warp = tps.random_dve_warp(jax.random.PRNGKey(9), **DVE_TRAIN)
  pts = np.random.RandomState(10).uniform(10, 38, (12, 2)).astype(np.float32)
  snapped = np.asarray(tps.snap_points(jnp.asarray(pts), warp, SIZE))
  # Brute force in NumPy: the pixel whose sampling location is nearest.
  src = tps.normalized_to_pixels(
      _dve_grid_numpy(warp.sampling.weights, warp.sampling.affine, *SIZE),
      SIZE).reshape(-1, 2)
  best = np.argmin(((pts[:, None] - np.asarray(src)[None]) ** 2).sum(-1), 1)
  np.testing.assert_array_equal(snapped, np.stack([best % 48, best // 48], 1))
  exact = tps.warp_points(jnp.asarray(pts), warp, SIZE)
  assert np.abs(snapped - np.asarray(exact)).max() <= 1.0
  # warp_landmarks keeps the exact solution where Newton converges.
  out, flag = tps.warp_landmarks(jnp.asarray(pts), warp, SIZE)
  assert not np.any(flag)
  np.testing.assert_array_equal(out, exact)


def test_warp_landmarks_snaps_points_without_a_preimage():
  # G(x, y) = (x, 0): no point of the warped image reads (., 0.5), so Newton
  # cannot converge; the nearest sampling location is in column x.
  centres = tps.control_grid(3)
  flat = tps.Tps(centres=centres, weights=jnp.zeros((9, 2)),
                 affine=jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]))
  warp = tps.TpsWarp(source=centres, target=centres, sampling=flat,
                     forward=tps.Tps(centres, jnp.zeros((9, 2)),
                                     jnp.array([[0.0, 0.0], [1.0, 0.0],
                                                [0.0, 1.0]])))
  pts = jnp.array([[10.2, 35.0]], jnp.float32)
  _, res = tps.warp_points(pts, warp, SIZE, return_residual=True)
  assert not float(res[0]) <= 1e-3  # Large or NaN.
  out, flag = tps.warp_landmarks(pts, warp, SIZE)
  np.testing.assert_array_equal(flag, [True])
  np.testing.assert_array_equal(out, [[10.0, 0.0]])  # First such pixel.

"""Tests for sce_mae_jax.detection (regressor maths and head training)."""

import jax
import jax.numpy as jnp
import numpy as np

from sce_mae_jax import detection


def test_soft_argmax_plus_linear_on_constructed_heatmaps():
  h = w = 9
  grid = np.linspace(-1, 1, w)
  # M = 3 one-hot heatmaps at known cells -> exact grid coordinates.
  cells = [(0, 0), (4, 6), (8, 2)]  # (row, col)
  hm = np.zeros((1, 3, h, w), np.float32)
  for m, (r, c) in enumerate(cells):
    hm[0, m, r, c] = 1.0
  inter = np.array([[grid[c], grid[r]] for r, c in cells])  # (x, y)
  # Linear: landmark 0 = mean of maps 0 and 1; landmark 1 = map 2 + (0.1, -0.2).
  kernel = np.zeros((6, 4), np.float32)
  kernel[0, 0] = kernel[2, 0] = 0.5
  kernel[1, 1] = kernel[3, 1] = 0.5
  kernel[4, 2] = kernel[5, 3] = 1.0
  bias = np.array([0, 0, 0.1, -0.2], np.float32)
  got = np.asarray(detection.regress_points(jnp.asarray(hm),
                                            jnp.asarray(kernel),
                                            jnp.asarray(bias)))
  expected = np.array([[(inter[0] + inter[1]) / 2, inter[2] + [0.1, -0.2]]])
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_regress_points_matches_float64_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 5, 7))
  kernel = rng.normal(size=(8, 6))
  bias = rng.normal(size=6)
  hm = detection.spatial_softmax(jnp.asarray(logits, jnp.float32))
  got = np.asarray(detection.regress_points(hm, jnp.asarray(kernel, jnp.float32),
                                            jnp.asarray(bias, jnp.float32)))
  p = np.exp(logits - logits.max(axis=(2, 3), keepdims=True))
  p /= p.sum(axis=(2, 3), keepdims=True)
  xs, ys = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
  mx = np.einsum("bmhw,w->bm", p, xs)
  my = np.einsum("bmhw,h->bm", p, ys)
  inter = np.stack([mx, my], -1).reshape(2, -1)
  ref = (inter @ kernel + bias).reshape(2, 3, 2)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_normalise_roundtrip_and_values():
  p = jnp.array([[0.0, 95.0], [47.5, 10.0]])
  n = detection.normalise_points(p, 96)
  np.testing.assert_allclose(np.asarray(n)[0], [1 / 96 - 1, 191 / 96 - 1],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(detection.denormalise_points(n, 96)),
                             np.asarray(p), atol=1e-5)


def test_smooth_l1_piecewise():
  x = np.array([-2.0, -0.5, 0.0, 0.3, 1.5])
  ref = np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)
  np.testing.assert_allclose(np.asarray(detection.smooth_l1(jnp.asarray(x))),
                             ref)
  ref = np.where(np.abs(x) < 0.5, x**2, np.abs(x) - 0.25)  # beta = 0.5
  np.testing.assert_allclose(
      np.asarray(detection.smooth_l1(jnp.asarray(x), 0.5)), ref)


def test_nme_percent_eye_centres():
  gt = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]],
                np.float32)
  pred = gt + np.array([2.0, 0.0], np.float32)  # every point 2 px off.
  np.testing.assert_allclose(detection.nme_percent(pred, gt, "five_point"),
                             [10.0], rtol=1e-6)


def test_mean_shape_nme_hand_computed():
  # Two training faces 4 px apart in x: their mean is 2 px from each; on a
  # val face equal to the first one every point is 2 px off, eye distance
  # 20 px -> 10 %.
  a = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
  train = np.stack([a, a + np.array([4.0, 0.0], np.float32)])
  np.testing.assert_allclose(
      detection.mean_shape_nme(train, a[None], "five_point"), [10.0],
      rtol=1e-6)


def test_head_counts_maps_and_fits_positions():
  head = detection.DetectionHead(num_points=2, intermediate=3, hidden=8)
  assert head.num_maps == 6
  assert detection.DetectionHead(2, 3, per_landmark=False).num_maps == 3
  # Features: one-hot at a per-face landmark cell; landmarks = that cell.
  rng = np.random.default_rng(0)
  n, s, size = 16, 6, 24
  feats = np.zeros((n, s, s, 2), np.float32)
  lms = np.zeros((n, 2, 2), np.float32)
  for i in range(n):
    r, c = rng.integers(0, s, 2)
    feats[i, r, c, 0] = 1.0
    centre = (np.array([c, r]) + 0.5) * size / s - 0.5
    lms[i] = [centre, centre]
  params, losses = detection.fit_head(head, feats, lms, size, steps=100,
                                      batch_size=8, learning_rate=1e-2)
  assert losses.shape == (100,)
  assert np.mean(losses[-10:]) < 0.3 * losses[0], (losses[0], losses[-10:])
  pred = detection.predict_points(head, params, feats, size)
  assert pred.shape == (n, 2, 2)

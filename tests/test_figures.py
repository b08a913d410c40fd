"""Tests of star_jax/figures.py: ellipse geometry, curve pixels, overlay."""

import json
import math

import numpy as np
import pytest

from star_jax import figures

S = 256          # crop side (px)
H = 64           # heatmap side


def _gaussian_heatmap(mean, sigmas, angle_deg, h=H):
  """exp(-d^T C^-1 d / 2) on the decoder grid linspace(-1, 1, h); C has
  standard deviations `sigmas` (major first) along the major axis at
  `angle_deg` (x right, y down) and the axis perpendicular to it."""
  t = math.radians(angle_deg)
  major = np.array([math.cos(t), math.sin(t)])
  minor = np.array([-math.sin(t), math.cos(t)])
  cov = (sigmas[0] ** 2 * np.outer(major, major)
         + sigmas[1] ** 2 * np.outer(minor, minor))
  g = np.linspace(-1, 1, h)
  d = np.stack(np.meshgrid(g, g, indexing="xy"), -1) - np.asarray(mean)
  q = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)
  return np.exp(-0.5 * q), major, minor


def _numpy_pca(hm):
  """Independent float64 reference: weighted mean, eq. 4 covariance, eigh."""
  p = hm / hm.sum()
  g = np.linspace(-1, 1, hm.shape[-1])
  xs, ys = np.meshgrid(g, g, indexing="xy")
  mean = np.array([(p * xs).sum(), (p * ys).sum()])
  d = np.stack([xs - mean[0], ys - mean[1]], -1)
  cov = np.einsum("hw,hwi,hwj->ij", p, d, d)
  v1 = p.sum() + 1e-5
  v2 = (p * p).sum() + 1e-5
  cov /= v1 - v2 / v1
  values, vectors = np.linalg.eigh(cov)
  return mean, values, vectors


def _angle_between(u, v):
  c = abs(np.dot(u, v)) / np.linalg.norm(u) / np.linalg.norm(v)
  return math.degrees(math.acos(min(1.0, c)))


def test_pca_ellipse_geometry_of_an_anisotropic_gaussian():
  mean = (0.1, -0.2)
  sig_major, sig_minor = 0.15, 0.06
  hm, major, minor = _gaussian_heatmap(mean, (sig_major, sig_minor), 30.0)
  other, _, _ = _gaussian_heatmap((-0.3, 0.4), (0.12, 0.05), -70.0)
  geo = figures.pca_ellipses(np.stack([hm, other]), S, n_std=2.0)
  # Exact against the float64 NumPy reference (align_corners=False pixels).
  ref_mean, ref_values, ref_vectors = _numpy_pca(hm)
  np.testing.assert_allclose(geo.center[0], ((ref_mean + 1) * S - 1) / 2,
                             atol=1e-3)
  for i in range(2):
    expected = 2.0 * np.sqrt(ref_values[i]) * (S / 2) * ref_vectors[:, i]
    got = geo.axes[0][:, i]
    if np.dot(got, expected) < 0:
      got = -got
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
  # Against the analytic Gaussian: axes along its axes, lengths 2 sigma.
  assert _angle_between(geo.axes[0][:, 1], major) < 0.2
  assert _angle_between(geo.axes[0][:, 0], minor) < 0.2
  lengths = np.linalg.norm(geo.axes[0], axis=0)
  np.testing.assert_allclose(lengths, [2 * sig_minor * S / 2,
                                       2 * sig_major * S / 2], rtol=0.01)
  assert lengths[1] / lengths[0] == pytest.approx(sig_major / sig_minor,
                                                  rel=0.005)
  # The second landmark: its major axis is at -70 degrees.
  t = math.radians(-70.0)
  assert _angle_between(geo.axes[1][:, 1], [math.cos(t), math.sin(t)]) < 0.2
  # align_corners=True: (S - 1) / 2 pixels per grid unit.
  geo_ac = figures.pca_ellipses(hm[None], S, n_std=2.0, align_corners=True)
  np.testing.assert_allclose(geo_ac.axes[0] * (S / 2) / ((S - 1) / 2),
                             geo.axes[0], rtol=1e-5, atol=1e-4)


def test_drawn_ellipse_has_the_second_moments_of_the_pca():
  sig_major, sig_minor, n_std = 0.15, 0.06, 3.0
  hm, major, _ = _gaussian_heatmap((0.05, 0.1), (sig_major, sig_minor), 30.0)
  black = np.zeros((S, S, 3), np.uint8)
  img = figures.heatmap_pca_ellipses(
      black, hm[None], n_std=n_std, scale=1, color=(255, 255, 255),
      fill=(255, 255, 255), show_major_axis=False, show_mean=False)
  mask = np.asarray(img)[..., 0] > 0
  ys, xs = np.nonzero(mask)
  centre = np.array([xs.mean(), ys.mean()])
  geo = figures.pca_ellipses(hm[None], S, n_std=n_std)
  np.testing.assert_allclose(centre, geo.center[0], atol=0.25)
  cov = np.cov(np.stack([xs, ys]), bias=True)
  values, vectors = np.linalg.eigh(cov)
  # A uniform ellipse with semi-axes a, b has variances a^2 / 4, b^2 / 4.
  a, b = 2 * np.sqrt(values[::-1])
  assert a == pytest.approx(n_std * sig_major * S / 2, rel=0.03)
  assert b == pytest.approx(n_std * sig_minor * S / 2, rel=0.04)
  assert _angle_between(vectors[:, 1], major) < 1.0


def test_ced_curve_pixels_follow_the_cumulative_distribution():
  nmes = {"half": [0.02, 0.02, 0.06, 0.06], "late": [0.09, 0.09]}
  img, axes = figures.ced_curve(nmes, 0.1, return_axes=True)
  a = np.asarray(img)

  def rows_with(colour, x):
    u, _ = axes.px(x, 0.0)
    col = a[:, int(round(float(u)))]
    return np.nonzero(np.all(col == np.asarray(colour, np.uint8), -1))[0]

  # "late" is drawn after "half": check each where it is not covered.
  checks = [(figures.PALETTE[0], 0.04, 0.5), (figures.PALETTE[0], 0.08, 1.0),
            (figures.PALETTE[1], 0.01, 0.0), (figures.PALETTE[1], 0.04, 0.0),
            (figures.PALETTE[1], 0.095, 1.0)]
  for colour, x, share in checks:
    rows = rows_with(colour, x)
    _, v = axes.px(x, share)
    assert rows.size, f"no curve pixel at NME {x}"
    assert np.all(np.abs(rows - float(v)) <= 2.0), (x, rows, v)
  with pytest.raises(ValueError):
    figures.ced_curve({}, 0.1)


def test_training_curves_from_metrics_jsonl(tmp_path):
  rows = [{"step": s, "time": 0.0, "train/loss": 1.0 / s} for s in
          (10, 20, 30, 40)]
  rows.append({"step": 40, "time": 0.0, "test/nme": 0.2,
               "test_ema/nme": "nan"})
  rows.append({"step": 80, "time": 0.0, "train/loss": 0.01, "test/nme": 0.1,
               "test_ema/nme": 0.12})
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  assert figures.default_curve_keys(rows) == ["train/loss", "test/nme",
                                              "test_ema/nme"]
  img, axes = figures.training_curves(str(tmp_path), ["train/loss",
                                                      "test/nme"],
                                      path=str(tmp_path / "c.png"),
                                      return_axes=True)
  assert img.size == (640, 400)
  a = np.asarray(img)
  colour = np.asarray(figures.PALETTE[1], np.uint8)
  # Panel 2 (test/nme): the line from (40, 0.2) to (80, 0.1).
  for step, value in ((40, 0.2), (60, 0.15), (80, 0.1)):
    u, v = axes[1].px(step, value)
    patch = a[int(round(float(v))) - 2:int(round(float(v))) + 3,
              int(round(float(u))) - 2:int(round(float(u))) + 3]
    assert np.any(np.all(patch == colour, -1)), (step, value)
  assert axes[1].xlim == (40.0, 80.0)
  assert axes[0].xlim == (10.0, 80.0)
  with pytest.raises(ValueError, match="available"):
    figures.training_curves(str(tmp_path), ["val/nme"])
  with pytest.raises(FileNotFoundError):
    figures.training_curves(str(tmp_path / "nowhere"))


def test_landmark_overlay_puts_points_at_pixel_centres():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
  pred = np.array([[4.0, 5.0], [20.0, 10.0]])
  gt = np.array([[4.0, 9.0], [26.0, 24.0]])
  img = figures.landmark_overlay(image, pred, gt, scale=4, radius=1.5,
                                 error_lines=False)
  a = np.asarray(img)
  assert a.shape == (128, 128, 3)
  for (x, y), colour in ((pred[0], figures.PRED_COLOR),
                         (pred[1], figures.PRED_COLOR),
                         (gt[0], figures.GT_COLOR), (gt[1], figures.GT_COLOR)):
    u, v = (x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5
    patch = a[int(v):int(v) + 2, int(u):int(u) + 2]
    assert np.all(patch == np.asarray(colour, np.uint8)), (x, y)
  # Far from every point the image is the nearest-upscaled input.
  np.testing.assert_array_equal(a[100:120, 0:40],
                                np.kron(image[25:30, 0:10],
                                        np.ones((4, 4, 1), np.uint8)))
  with pytest.raises(ValueError, match=r"\[N, 2\]"):
    figures.landmark_overlay(image, np.zeros((3,)))


def test_matching_pairs_dots_land_on_the_points():
  s, scale = 16, 4
  grey = np.full((s, s, 3), 90, np.uint8)
  src = np.array([[3.0, 4.0], [12.0, 10.0]])
  matched = np.array([[5.0, 4.0], [12.0, 13.0]])
  true = np.array([[9.0, 2.0], [2.0, 13.0]])
  pair = dict(source_image=grey, target_image=grey, source_points=src,
              matched_points=matched, target_points=true)
  gap = 8
  img = np.asarray(figures.matching_pairs([pair, pair], scale=scale,
                                          radius=1.5, gap=gap))
  side = s * scale
  assert img.shape == (2 * side + gap, 2 * side + gap, 3)
  assert (img[side:side + gap] == 255).all()          # gap between rows

  def at(p, left, top):
    x, y = (np.asarray(p) + 0.5) * scale - 0.5
    return img[int(round(top + y)), int(round(left + x))]
  for row in (0, 1):
    top = row * (side + gap)
    for k in range(2):
      colour = figures.PALETTE[k]
      np.testing.assert_array_equal(at(src[k], 0, top), colour)
      np.testing.assert_array_equal(at(matched[k], side + gap, top), colour)
      # the true point is a ring of radius 1.5 + 1 output px: its top
      # (away from the error line) has the landmark's colour.
      x, y = (true[k] + 0.5) * scale - 0.5 + np.array([side + gap, top])
      patch = img[int(round(y - 2.5)) - 1:int(round(y - 2.5)) + 2,
                  int(round(x)) - 1:int(round(x)) + 2].reshape(-1, 3)
      assert (patch == colour).all(axis=1).any(), (k, patch)
      far = img[int(round(y - 6)), int(round(x))]
      np.testing.assert_array_equal(far, (90,) * 3)
  with pytest.raises(ValueError, match="shape"):
    figures.matching_pairs([dict(pair, matched_points=matched[:1])])

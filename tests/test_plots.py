"""Tests of landmarks/plots.py: ellipse geometry, plotted data, overlays."""

import json
import math

import numpy as np
import pytest

from landmarks import plots

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
  geo = plots.pca_ellipses(np.stack([hm, other]), S, n_std=2.0)
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
  geo_ac = plots.pca_ellipses(hm[None], S, n_std=2.0, align_corners=True)
  np.testing.assert_allclose(geo_ac.axes[0] * (S / 2) / ((S - 1) / 2),
                             geo.axes[0], rtol=1e-5, atol=1e-4)


def test_drawn_ellipse_has_the_second_moments_of_the_pca():
  sig_major, sig_minor, n_std = 0.15, 0.06, 3.0
  hm, major, _ = _gaussian_heatmap((0.05, 0.1), (sig_major, sig_minor), 30.0)
  black = np.zeros((S, S, 3), np.uint8)
  img = plots.heatmap_pca_ellipses(
      black, hm[None], n_std=n_std, scale=1, color=None,
      fill=(255, 255, 255), show_major_axis=False, show_mean=False)
  # Anti-aliased fill: pixel value / 255 = the pixel's area inside.
  w = np.asarray(img)[..., 0].astype(np.float64) / 255.0
  ys, xs = np.mgrid[:S, :S]
  area = w.sum()
  assert area == pytest.approx(
      math.pi * (n_std * S / 2) ** 2 * sig_major * sig_minor, rel=0.01)
  centre = np.array([(w * xs).sum(), (w * ys).sum()]) / area
  geo = plots.pca_ellipses(hm[None], S, n_std=n_std)
  np.testing.assert_allclose(centre, geo.center[0], atol=0.05)
  d = np.stack([xs - centre[0], ys - centre[1]], -1)
  cov = np.einsum("hw,hwi,hwj->ij", w, d, d) / area
  values, vectors = np.linalg.eigh(cov)
  # A uniform ellipse with semi-axes a, b has variances a^2 / 4, b^2 / 4.
  a, b = 2 * np.sqrt(values[::-1])
  assert a == pytest.approx(n_std * sig_major * S / 2, rel=0.01)
  assert b == pytest.approx(n_std * sig_minor * S / 2, rel=0.01)
  assert _angle_between(vectors[:, 1], major) < 0.5


def test_landmark_overlay_puts_points_at_pixel_centres():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 100, (32, 32, 3)).astype(np.uint8)
  pred = np.array([[4.0, 5.0], [20.0, 10.0]])
  gt = np.array([[4.0, 9.0], [26.0, 24.0]])
  img = plots.landmark_overlay(image, pred, gt, scale=4, radius=1.5,
                                 error_lines=False)
  a = np.asarray(img)
  assert a.shape == (128, 128, 3)
  for (x, y), colour in ((pred[0], plots.PRED_COLOR),
                         (pred[1], plots.PRED_COLOR),
                         (gt[0], plots.GT_COLOR), (gt[1], plots.GT_COLOR)):
    u, v = (x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5
    patch = a[int(v):int(v) + 2, int(u):int(u) + 2]
    assert np.all(patch == np.asarray(colour, np.uint8)), (x, y)
  # Far from every point the image is the nearest-upscaled input.
  np.testing.assert_array_equal(a[100:120, 0:40],
                                np.kron(image[25:30, 0:10],
                                        np.ones((4, 4, 1), np.uint8)))
  with pytest.raises(ValueError, match=r"\[N, 2\]"):
    plots.landmark_overlay(image, np.zeros((3,)))


def test_matching_pairs_dots_land_on_the_points():
  s, scale = 16, 4
  grey = np.full((s, s, 3), 90, np.uint8)
  src = np.array([[3.0, 4.0], [12.0, 10.0]])
  matched = np.array([[5.0, 4.0], [12.0, 13.0]])
  true = np.array([[9.0, 2.0], [2.0, 13.0]])
  pair = dict(source_image=grey, target_image=grey, source_points=src,
              matched_points=matched, target_points=true)
  gap = 8
  img = np.asarray(plots.matching_pairs([pair, pair], scale=scale,
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
      colour = plots.PALETTE[k]
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
    plots.matching_pairs([dict(pair, matched_points=matched[:1])])


# ----------------------------------------------------- matplotlib plots ----

def _png(path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(path).convert("RGB"))


def _near_colour(a, x_disp, y_disp, colour, half=3, tol=60.0):
  """Whether a pixel within `half` px of display point (x, y) (matplotlib:
  origin bottom-left) is within `tol` (RGB distance) of `colour`."""
  row = a.shape[0] - float(y_disp)
  col = float(x_disp)
  r0, c0 = int(round(row)), int(round(col))
  patch = a[max(r0 - half, 0):r0 + half + 1,
            max(c0 - half, 0):c0 + half + 1].astype(np.float64)
  return (np.linalg.norm(patch - np.asarray(colour, np.float64), axis=-1)
          < tol).any()


def test_ellipse_patch_boundary_is_the_geometry_ellipse():
  centre = np.array([30.0, 12.0])
  t = math.radians(-35.0)
  major = 9.0 * np.array([math.cos(t), math.sin(t)])
  minor = 4.0 * np.array([-math.sin(t), math.cos(t)])
  axes = np.stack([minor, major], axis=1)          # columns: minor, major
  patch = plots.ellipse_patch(centre, axes)
  unit = np.stack([np.cos(np.linspace(0, 2 * np.pi, 50)),
                   np.sin(np.linspace(0, 2 * np.pi, 50))], 1)
  boundary = patch.get_patch_transform().transform(unit)
  # (p - c)^T (A A^T)^-1 (p - c) = 1 on the ellipse with semi-axis columns A.
  inv = np.linalg.inv(axes @ axes.T)
  d = boundary - centre
  np.testing.assert_allclose(np.einsum("ni,ij,nj->n", d, inv, d), 1.0,
                             atol=1e-9)
  # The major axis end point is on it.
  np.testing.assert_allclose(
      patch.get_patch_transform().transform([[1.0, 0.0]])[0],
      centre + major, atol=1e-9)


def test_fig3_outline_pixels_lie_on_the_ellipse(tmp_path):
  hm, _, _ = _gaussian_heatmap((0.1, -0.15), (0.2, 0.08), 25.0)
  crop = np.full((64, 64, 3), 40, np.uint8)
  scale = 4
  img = plots.heatmap_pca_ellipses(crop, hm[None], n_std=2.0, scale=scale,
                                   show_major_axis=False, show_mean=False,
                                   path=str(tmp_path / "fig3.png"))
  a = np.asarray(img)
  assert a.shape == (64 * scale, 64 * scale, 3)
  np.testing.assert_array_equal(_png(tmp_path / "fig3.png"), a)
  geo = plots.pca_ellipses(hm[None], 64, n_std=2.0)
  rows, cols = np.nonzero(np.all(a == (255, 200, 0), -1))
  assert rows.size > 100
  # Output pixel (c, r) is crop point ((c + 0.5) / scale - 0.5, ...).
  pts = np.stack([(cols + 0.5) / scale - 0.5, (rows + 0.5) / scale - 0.5], 1)
  d = pts - geo.center[0]
  inv = np.linalg.inv(geo.axes[0] @ geo.axes[0].T)
  radius = np.sqrt(np.einsum("ni,ij,nj->n", d, inv, d))
  # Within one output pixel of the analytic ellipse (minor semi-axis >= 5).
  minor = np.linalg.norm(geo.axes[0][:, 0]) * scale
  assert np.all(np.abs(radius - 1.0) < 1.5 / minor), radius.min()
  # Away from the ellipse the crop is shown unchanged.
  assert np.all(a[:8, :8] == 40)


def test_ced_curve_plots_the_cumulative_fraction(tmp_path):
  nmes = {"half": [0.02, 0.02, 0.06, 0.06],
          "spread": [0.005, 0.031, 0.047, 0.088, 0.12]}
  img, ax = plots.ced_curve(nmes, 0.1, step=1e-3, path=str(tmp_path / "c.png"),
                            size=(500, 300), return_axes=True)
  assert img.size == (500, 300)
  a = np.asarray(img)
  np.testing.assert_array_equal(_png(tmp_path / "c.png"), a)
  assert a.std() > 10.0                         # not blank
  lines = ax.get_lines()
  assert [ln.get_label() for ln in lines] == ["half", "spread"]
  grid = np.arange(0, 0.1 + 1e-3, 1e-3)
  for ln, (name, values) in zip(lines, nmes.items()):
    # Independent reference: share of faces with NME <= x, by counting.
    share = (np.asarray(values)[None, :] <= grid[:, None]).mean(1)
    np.testing.assert_allclose(ln.get_xdata(), 100 * grid, rtol=1e-12)
    np.testing.assert_allclose(ln.get_ydata(), share, atol=1e-12)
    assert name in [t.get_text() for t in ax.get_legend().get_texts()]
  assert ax.get_xlim() == (0.0, 10.0) and ax.get_ylim() == (0.0, 1.0)
  # The drawn pixels are where the data are: (4 %, 0.5) on "half".
  x, y = ax.transData.transform((4.0, 0.5))
  assert _near_colour(a, x, y, plots.PALETTE[0])
  x, y = ax.transData.transform((4.0, 0.9))   # no curve there
  assert not _near_colour(a, x, y, plots.PALETTE[0])
  with pytest.raises(ValueError):
    plots.ced_curve({}, 0.1)


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
  assert plots.default_curve_keys(rows) == ["train/loss", "test/nme",
                                            "test_ema/nme"]
  img, axes = plots.training_curves(
      str(tmp_path), ["train/loss", "test/nme", "test_ema/nme"],
      path=str(tmp_path / "c.png"), log_y=["train/loss"], return_axes=True)
  assert img.size == (640, 600)
  a = np.asarray(img)
  np.testing.assert_array_equal(_png(tmp_path / "c.png"), a)
  (loss,), (nme,), (ema,) = (ax.get_lines() for ax in axes)
  np.testing.assert_array_equal(loss.get_xdata(), [10, 20, 30, 40, 80])
  np.testing.assert_allclose(loss.get_ydata(),
                             [0.1, 0.05, 1 / 30, 0.025, 0.01], rtol=1e-12)
  assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "linear"
  np.testing.assert_array_equal(nme.get_xdata(), [40, 80])
  np.testing.assert_allclose(nme.get_ydata(), [0.2, 0.1])
  # "nan" is skipped: one point left.
  np.testing.assert_array_equal(ema.get_xdata(), [80])
  assert axes[1].get_xlim() == (40.0, 80.0)
  assert axes[0].get_xlim() == (10.0, 80.0)
  # The line of panel 2 passes through (60, 0.15) on the image.
  x, y = axes[1].transData.transform((60.0, 0.15))
  assert _near_colour(a, x, y, plots.PALETTE[1])
  with pytest.raises(ValueError, match="available"):
    plots.training_curves(str(tmp_path), ["val/nme"])
  with pytest.raises(FileNotFoundError):
    plots.training_curves(str(tmp_path / "nowhere"))


def test_draw_scatter_plots_each_label_at_its_points(tmp_path):
  rng = np.random.default_rng(0)
  y = rng.normal(size=(30, 2)) * 5
  labels = np.repeat([4, 1, 7], 10)
  img, ax = plots.draw_scatter(y, labels, str(tmp_path / "s" / "t.png"),
                               names=["a", "b", "c", "d", "e"], size=300,
                               return_axes=True)
  assert img.size == (440, 300)
  a = np.asarray(img)
  np.testing.assert_array_equal(_png(tmp_path / "s" / "t.png"), a)
  sets = ax.collections
  assert len(sets) == 3
  for k, (collection, c) in enumerate(zip(sets, (1, 4, 7))):
    np.testing.assert_allclose(collection.get_offsets(), y[labels == c])
    np.testing.assert_allclose(collection.get_facecolor()[0, :3],
                               np.asarray(plots.PALETTE[k]) / 255)
    # A marker's centre pixel has its colour.
    x0, y0 = ax.transData.transform(y[labels == c][0])
    assert _near_colour(a, x0, y0, plots.PALETTE[k], half=1, tol=40.0)
  texts = [t.get_text() for t in ax.get_legend().get_texts()]
  assert texts == ["b", "e", "point 7"]

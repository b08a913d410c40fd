"""Tests for data.targets against float64 NumPy/SciPy references."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import interpolate

from data import schemes
from data import targets
from data import transforms as T

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO_ROOT, "..", "shared", "data", "yt68")


# ------------------------------------------------ float64 reference (public) --


def _public_circle(size, p, sigma):
  """The public `_circle` at crop resolution, in float64."""
  img = np.zeros((size, size))
  tmp = 3 * sigma
  p = np.clip(p, 0, size - 1)
  ul = [int(p[0] - tmp), int(p[1] - tmp)]
  br = [int(p[0] + tmp + 1), int(p[1] + tmp + 1)]
  n = 2 * tmp + 1
  x = np.arange(0, n, 1.0)
  y = x[:, None]
  g = np.exp(-((x - n // 2) ** 2 + (y - n // 2) ** 2) / (2 * sigma ** 2))
  gx = max(0, -ul[0]), min(br[0], size) - ul[0]
  gy = max(0, -ul[1]), min(br[1], size) - ul[1]
  ix = max(0, ul[0]), min(br[0], size)
  iy = max(0, ul[1]), min(br[1], size)
  img[iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
  return img


def _bilinear_down(img, h):
  """torch F.interpolate(bilinear, align_corners=False) without antialias."""
  s = img.shape[0]
  pos = np.maximum((np.arange(h) + 0.5) * s / h - 0.5, 0)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, s - 1)
  w = pos - lo
  rows = (1 - w)[:, None] * img[lo] + w[:, None] * img[hi]
  return (1 - w)[None] * rows[:, lo] + w[None] * rows[:, hi]


@pytest.mark.parametrize("size,h", [(256, 64), (128, 32), (64, 64)])
def test_point_heatmaps_match_public_reference(size, h):
  rng = np.random.default_rng(size)
  pts = np.concatenate([rng.uniform(-5, size + 5, (12, 2)),
                        [[0, 0], [size - 1, size - 1], [3.9, 4.1],
                         [4.6, 2.2], [size - 0.2, 10.5]]])
  sigma = 1.5 * size / 256
  want = np.stack([_bilinear_down(_public_circle(size, p, sigma), h) for p in pts])
  got = np.asarray(targets.point_heatmaps(pts[None], size, h))[0]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_point_heatmaps_subpixel_reference_and_peak():
  size, h = 256, 64
  pts = np.array([[4 * 20 + 1.5, 4 * 33 + 1.5], [100.3, 57.8]])
  got = np.asarray(targets.point_heatmaps(pts, size, h, mode="subpixel"))
  # The crop-resolution Gaussian (not truncated, not rounded) resampled by the
  # bilinear 256 -> 64 step: the mean of crop pixels 4j + 1 and 4j + 2.
  u = np.arange(size, dtype=np.float64)
  for k, (x, y) in enumerate(pts):
    full = np.outer(np.exp(-(u - y) ** 2 / 4.5), np.exp(-(u - x) ** 2 / 4.5))
    np.testing.assert_allclose(got[k], _bilinear_down(full, h), atol=1e-6)
  # A point on a sample position peaks there: exp(-0.5^2 / (2 sigma^2))^2.
  assert np.unravel_index(got[0].argmax(), got[0].shape) == (33, 20)
  assert got[0, 33, 20] == pytest.approx(np.exp(-0.25 / 4.5) ** 2, rel=1e-5)


def test_point_heatmaps_peak_at_landmark_public():
  rng = np.random.default_rng(3)
  pts = rng.uniform(10, 245, (40, 2))
  maps = np.asarray(targets.point_heatmaps(pts, 256, 64))
  for p, m in zip(pts, maps):
    iy, ix = np.unravel_index(m.argmax(), m.shape)
    expected = (p + 0.5) / 4 - 0.5  # the landmark in heatmap pixels
    assert abs(ix - expected[0]) <= 0.75 and abs(iy - expected[1]) <= 0.75


# ---------------------------------------------------------------- edges --


def _splprep_curve(pts, closed, density=5):
  """The public `_fit_curve` in float64 with SciPy."""
  x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
  if closed:
    x, y = np.append(x, x[0]), np.append(y, y[0])
  tck, u = interpolate.splprep([x, y], s=0, per=closed, k=3)
  steps = np.concatenate([np.linspace(u[i], u[i + 1], density, endpoint=False)
                          for i in range(len(u) - 1)])
  if closed:
    curve = np.stack(interpolate.splev(steps, tck), -1)
    return np.concatenate([curve, curve[:1]])
  steps = np.concatenate([steps, [u[-1]]])
  return np.stack(interpolate.splev(steps, tck), -1)


def _edge_reference(pts, scheme, size, h):
  pos = (np.arange(h) + 0.5) * size / h - 0.5
  qx, qy = np.meshgrid(pos, pos)
  q = np.stack([qx.ravel(), qy.ravel()], -1)
  maps = []
  for idx, closed in zip(scheme.edges, scheme.edge_closed):
    curve = np.clip(_splprep_curve(pts[list(idx)], closed), 0, size - 1)
    # Exact point-to-segment distances, float64.
    a, b = curve[:-1], curve[1:]
    v = b - a
    qa = q[:, None] - a[None]
    t = np.clip((qa * v).sum(-1) / np.maximum((v * v).sum(-1), 1e-300), 0, 1)
    d = np.sqrt(((qa - t[..., None] * v) ** 2).sum(-1)).min(1) * 256 / size
    maps.append((0.5 * np.clip(1.5 - d, 0, 1)).reshape(h, h))
  return np.stack(maps)


def _real_face_crop_landmarks(size):
  path = os.path.join(YT68, "val.csv")
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path}")
  with open(path) as f:
    rows = list(csv.reader(f))[1:4]
  out = []
  for r in rows:
    lm = np.array([float(v) for v in r[1:]]).reshape(68, 2)
    c, s = T.center_scale_from_points(lm)
    out.append(T.apply_affine(T.crop_matrix(c, s, size), lm))
  return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("size,h", [(256, 64), (128, 32)])
def test_edge_maps_match_float64_reference_on_real_faces(size, h):
  lms = _real_face_crop_landmarks(size)
  scheme = schemes.get_scheme(68)
  got = np.asarray(targets.edge_maps(lms, scheme, size, h))
  assert got.shape == (3, 9, h, h)
  for lm, g in zip(lms, got):
    want = _edge_reference(lm.astype(np.float64), scheme, size, h)
    # Dense sampling of the reference polyline is exact to ~0.003 px.
    np.testing.assert_allclose(g, want, atol=2e-3)
    assert (g > 0.25).sum() > h // 2  # the curves are actually drawn


def test_edge_maps_cofw_and_wflw_shapes_against_reference():
  rng = np.random.default_rng(0)
  for n in (29, 98):
    scheme = schemes.get_scheme(n)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([128 + 70 * np.cos(3 * t) + rng.normal(0, 4, n),
                    128 + 60 * np.sin(2 * t) + rng.normal(0, 4, n)], -1)
    got = np.asarray(targets.edge_maps(pts, scheme))
    np.testing.assert_allclose(got, _edge_reference(pts, scheme, 256, 64),
                               atol=2e-3)


def test_straight_edge_profile_hand_computed():
  # Horizontal nose bridge on sample row 25 (crop y = 101.5): value 0.5 on that
  # row between the end points, 0 on the rows above and below (4 px away).
  pts = np.zeros((68, 2), np.float32)
  pts[27:31] = [[40.0, 101.5], [80.0, 101.5], [120.0, 101.5], [160.0, 101.5]]
  m = np.asarray(targets.edge_maps(pts, schemes.get_scheme(68)))[3]
  cols = np.arange(11, 39)  # sample x = 4j + 1.5 in (41, 158)
  np.testing.assert_allclose(m[25, cols], 0.5, atol=1e-6)
  np.testing.assert_allclose(m[24], 0.0, atol=1e-6)
  np.testing.assert_allclose(m[26], 0.0, atol=1e-6)
  # Half a pixel off: partial coverage 0.5 * (1.5 - 1.0) = 0.25.
  pts[27:31, 1] += 1.0
  m = np.asarray(targets.edge_maps(pts, schemes.get_scheme(68)))[3]
  np.testing.assert_allclose(m[25, cols], 0.25, atol=1e-5)


def test_edge_maps_degenerate_points_fall_back_to_polyline():
  pts = np.zeros((68, 2), np.float32)
  pts[:, 0] = np.linspace(20, 230, 68)
  pts[:, 1] = 121.5  # on sample row 30
  pts[28] = pts[27]  # coincident neighbours: no spline
  m = np.asarray(targets.edge_maps(pts, schemes.get_scheme(68)))
  assert np.all(np.isfinite(m)) and m[3].max() > 0


def test_outer_jit_and_vmap_equal_batched_call():
  rng = np.random.default_rng(1)
  lms = jnp.asarray(rng.uniform(30, 220, (2, 68, 2)), jnp.float32)
  scheme = schemes.get_scheme(68)
  f = lambda l: (targets.point_heatmaps(l, 256, 64),
                 targets.edge_maps(l, scheme, 256, 64))
  eager = f(lms)
  jitted = jax.jit(f)(lms)
  mapped = jax.vmap(f)(lms)
  for a, b, c in zip(eager, jitted, mapped):
    np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_edge_maps_argument_errors_and_known_edges():
  lm = np.random.default_rng(0).uniform(20, 230, (68, 2))
  scheme = schemes.get_scheme(68)
  np.testing.assert_array_equal(targets.edge_maps(lm, scheme.edges),
                                targets.edge_maps(lm, scheme))
  with pytest.raises(ValueError, match="needs `closed`"):
    targets.edge_maps(np.zeros((68, 2)), [(0, 1, 2, 3)])
  with pytest.raises(ValueError, match="mode must be"):
    targets.point_heatmaps(np.zeros((3, 2)), mode="gauss")


def test_edge_maps_look_like_a_rasterised_line():
  """Against an independent rendering: the spline drawn 1 px wide with PIL at
  8x supersampling (area-averaged to 256, i.e. ideal anti-aliasing), then the
  public 256 -> 64 bilinear step. Distance profile and raster agree closely.
  """
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  lm = _real_face_crop_landmarks(256)[0].astype(np.float64)
  scheme = schemes.get_scheme(68)
  ours = np.asarray(targets.edge_maps(lm, scheme))
  ref = []
  for idx, closed in zip(scheme.edges, scheme.edge_closed):
    curve = np.clip(_splprep_curve(lm[list(idx)], closed), 0, 255)
    im = Image.new("L", (2048, 2048), 0)
    ImageDraw.Draw(im).line([(8 * (x + 0.5), 8 * (y + 0.5)) for x, y in curve],
                            fill=255, width=8, joint="curve")
    a = np.asarray(im, np.float64).reshape(256, 8, 256, 8).mean((1, 3)) / 255
    ref.append(a.reshape(64, 4, 64, 4)[:, 1:3, :, 1:3].mean((1, 3)))
  ref = np.stack(ref)
  assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.98
  assert abs(ours.sum() / ref.sum() - 1) < 0.1
  for e in range(9):  # every edge, not just the total
    assert np.corrcoef(ours[e].ravel(), ref[e].ravel())[0, 1] > 0.95

"""Tests for data.transforms: crop matrices, inverse maps, the PIL warp."""

import csv
import os

import numpy as np
import pytest

from data import records
from data import transforms as T

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO_ROOT, "..", "shared", "data", "yt68")


def _blob_image(h, w, x0, y0, sigma=5.0):
  yy, xx = np.mgrid[0:h, 0:w]
  img = 250.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
  return np.repeat(img[..., None], 3, -1).round().astype(np.uint8)


def _centroid(gray, near, radius):
  yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
  w = gray * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) < radius ** 2)
  return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_crop_matrix_hand_computed():
  m = T.crop_matrix((100.0, 50.0), 1.0, 256)
  # Centre -> crop centre (255 / 2); 100 px right of it -> +128 crop px (k=1.28).
  np.testing.assert_allclose(T.apply_affine(m, [100.0, 50.0]), [127.5, 127.5])
  np.testing.assert_allclose(T.apply_affine(m, [200.0, 50.0]), [255.5, 127.5])
  np.testing.assert_allclose(m[:, :2], 1.28 * np.eye(2))


def test_center_scale_rules():
  c, s = T.center_scale_from_box([10.0, 20.0, 110.0, 220.0])
  np.testing.assert_allclose(c, [60.0, 120.0])
  assert s == pytest.approx(100.0 / 200.0 * 1.05)
  pts = np.array([[10.0, 30.0], [50.0, 90.0], [30.0, 60.0]])
  c, s = T.center_scale_from_points(pts)
  np.testing.assert_allclose(c, [30.0, 60.0])
  assert s == pytest.approx(60.0 / 200.0 * 1.25)
  with pytest.raises(ValueError, match="positive width"):
    T.center_scale_from_box([10, 10, 5, 20])


def test_record_center_scale_modes():
  lm = np.array([[10.0, 30.0], [50.0, 90.0]], np.float32)
  rec = records.FaceRecord("x.jpg", lm, box=np.array([0, 0, 40, 80], np.float32),
                           center=np.array([5.0, 6.0], np.float32), scale=0.7)
  c, s = T.record_center_scale(rec, "auto")
  np.testing.assert_allclose(c, [5, 6])
  assert s == pytest.approx(0.7)
  c, s = T.record_center_scale(rec, "box")
  np.testing.assert_allclose(c, [20, 40])
  assert s == pytest.approx(0.21)
  c, s = T.record_center_scale(rec, "points")
  np.testing.assert_allclose(c, [30, 60])
  bare = records.FaceRecord("y.jpg", lm)
  np.testing.assert_allclose(T.record_center_scale(bare, "auto")[0], [30, 60])
  with pytest.raises(ValueError, match="needs record.box"):
    T.record_center_scale(bare, "box")
  with pytest.raises(ValueError, match="crop_mode must be"):
    T.record_center_scale(bare, "tight")


@pytest.mark.parametrize("angle,zoom,shift", [
    (0.0, 1.0, (0, 0)), (0.4, 0.8, (5.0, -3.0)), (-1.2, 1.3, (-7.5, 2.25))])
def test_crop_then_inverse_returns_original(angle, zoom, shift):
  rng = np.random.default_rng(0)
  pts = rng.uniform(0, 400, size=(68, 2))
  m = T.compose(T.similarity_about((127.5, 127.5), angle, zoom, shift),
                T.crop_matrix((210.3, 190.7), 1.37, 256))
  back = T.apply_affine(T.invert_affine(m), T.apply_affine(m, pts))
  np.testing.assert_allclose(back, pts, atol=1e-3)
  # float32 crop coordinates (as stored in a batch) still map back to 1e-3 px.
  crop32 = T.apply_affine(m, pts).astype(np.float32)
  back32 = T.apply_affine(T.invert_affine(m).astype(np.float32), crop32)
  np.testing.assert_allclose(back32, pts, atol=1e-3)


@pytest.mark.parametrize("scale,angle,zoom", [
    (0.5, 0.0, 1.0), (1.0, 0.3, 1.1), (1.7, -0.5, 0.9), (0.9, 2.0, 1.0)])
def test_dot_lands_on_transformed_landmark(scale, angle, zoom):
  x0, y0 = 141.3, 97.7
  img = _blob_image(240, 300, x0, y0)
  m = T.compose(T.similarity_about((63.5, 63.5), angle, zoom, (3.0, -2.0)),
                T.crop_matrix((150.2, 120.9), scale, 128))
  crop = T.warp_affine(img, m, 128)[..., 0].astype(np.float64)
  p = T.apply_affine(m, [x0, y0])
  radius = 4 * 5.0 * np.hypot(*m[:, 0]) + 3
  # A half-pixel convention error would move the dot by 0.5 * |1 - k| >= 0.05.
  np.testing.assert_allclose(_centroid(crop, p, radius), p, atol=0.02)


def test_integer_translation_copies_pixels_exactly():
  rng = np.random.default_rng(1)
  img = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
  m = np.array([[1.0, 0.0, -7.0], [0.0, 1.0, -3.0]])  # crop(x, y) = img(x+7, y+3)
  crop = T.warp_affine(img, m, 20)
  np.testing.assert_array_equal(crop, img[3:23, 7:27])
  # Outside the image is black.
  crop = T.warp_affine(img, np.array([[1.0, 0, 5.0], [0, 1.0, 0]]), 10)
  np.testing.assert_array_equal(crop[:, :5], 0)
  np.testing.assert_array_equal(crop[:, 5:], img[:10, :5])


def test_hflip_matrix_matches_numpy_flip():
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, size=(30, 37, 3), dtype=np.uint8)
  np.testing.assert_array_equal(
      T.warp_affine(img, T.hflip_about(37), (37, 30)), img[:, ::-1])


def test_real_yt68_crop_roundtrip():
  path = os.path.join(YT68, "val.csv")
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path}")
  with open(path) as f:
    row = list(csv.reader(f))[1]
  lm = np.array([float(v) for v in row[1:]], np.float32).reshape(68, 2)
  rec = records.FaceRecord(os.path.join(YT68, "images", row[0]), lm)
  image = rec.load_image()
  center, scale = T.record_center_scale(rec, "points")
  crop, crop_lm, m, inv = T.crop_face(image, lm, center, scale, 256)
  assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
  # The landmark box fills 1 / 1.25 of the crop, centred.
  span = crop_lm.max(0) - crop_lm.min(0)
  assert span.max() == pytest.approx(256 / 1.25, rel=1e-4)
  np.testing.assert_allclose((crop_lm.max(0) + crop_lm.min(0)) / 2, 127.5,
                             atol=1e-3)
  np.testing.assert_allclose(T.apply_affine(inv, crop_lm), lm, atol=1e-3)

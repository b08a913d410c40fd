"""Tests for data/readers/synthetic.py and its one inter-ocular table."""

import numpy as np
import pytest

from data import readers
from data import schemes
from data import synthetic
from data.readers import synthetic as synthetic_reader
from training import errors

SIZE = 48
OPTIONS = dict(num_faces=5, seed=3, image_size=SIZE, contour_noise=0.05,
               point_noise=0.02)


def _assert_same_records(got, want):
  assert len(got) == len(want)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g.landmarks, w.landmarks)
    np.testing.assert_array_equal(g.box, w.box)
    np.testing.assert_array_equal(g.visible, w.visible)
    assert g.image_path == w.image_path and g.image_key == w.image_key
    assert g.subset == w.subset and g.attributes == w.attributes


def test_reader_lists_what_make_records_makes():
  listing = synthetic_reader.read("", "train", **OPTIONS)
  want = synthetic.make_records(5, seed=3, image_size=SIZE,
                                contour_noise=0.05, point_noise=0.02)
  _assert_same_records(listing, want)
  assert listing.problems == [] and listing.name == "synthetic"
  assert listing.split == "train"
  for got, ref in zip(listing, want):
    image = got.load_image()
    assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(image, ref.load_image())
    np.testing.assert_array_equal(
        image, synthetic.render_face(3, got.image_key, SIZE)[0])
  # The noise moved the stored points off the true ones; the box did not.
  true = synthetic.make_records(5, seed=3, image_size=SIZE)
  assert np.abs(listing[0].landmarks - true[0].landmarks).max() > 0.01
  np.testing.assert_array_equal(listing[0].box, true[0].box)


def test_root_and_file_options_are_ignored_seed_is_not():
  a = synthetic_reader.read("/nonexistent/folder", "val", **OPTIONS)
  b = synthetic_reader.read("", "other", check_images="decode", **OPTIONS)
  _assert_same_records(a, b)
  c = synthetic_reader.read("", "val", **dict(OPTIONS, seed=4))
  assert np.abs(a[0].landmarks - c[0].landmarks).max() > 1.0


def test_registered_under_read_dataset():
  listing = readers.read_dataset("synthetic", "", "eval", check_images="none",
                                 **OPTIONS)
  _assert_same_records(listing, synthetic_reader.read("", "eval", **OPTIONS))


@pytest.mark.parametrize("bad, option", [
    (dict(num_faces=0), "num_faces"),
    (dict(num_faces=-2), "num_faces"),
    (dict(num_faces=2.5), "num_faces"),
    (dict(seed="a"), "seed"),
    (dict(image_size=31), "image_size"),
    (dict(image_size=64.0), "image_size"),
    (dict(contour_noise=-0.1), "contour_noise"),
    (dict(point_noise=-1e-3), "point_noise"),
    (dict(point_noise=float("nan")), "point_noise"),
    (dict(contour_noise=float("inf")), "contour_noise"),
])
def test_bad_options_raise_user_error(bad, option):
  with pytest.raises(errors.UserError, match=option):
    synthetic_reader.read("", "train", **dict(OPTIONS, **bad))


def test_layout_says_no_files_and_names_the_options():
  layout = synthetic_reader.LAYOUT
  assert "no files" in layout and "root is ignored" in layout
  for option in ("num_faces", "seed", "image_size", "contour_noise",
                 "point_noise"):
    assert option in layout


# ---------------------------------------- one inter-ocular normaliser table


def _scheme_iod(landmarks):
  """float64 distance between the 68-point scheme's ocular normaliser points."""
  a, b = schemes.get_scheme(68).ocular
  p = np.asarray(landmarks, np.float64)
  return float(np.hypot(*(p[a] - p[b])))


def test_scheme_ocular_points_are_the_synthetic_outer_eye_corners():
  """In the face frame (roll undone) the normaliser points are the leftmost and
  rightmost eye points, as the synthetic point order says."""
  a, b = schemes.get_scheme(68).ocular
  for i in range(10):
    g = synthetic.face_geometry(2, i, 96)
    r = np.deg2rad(g.roll)
    x = g.landmarks @ np.array([np.cos(r), np.sin(r)])
    eyes = np.arange(36, 48)
    assert eyes[np.argmin(x[eyes])] == a and eyes[np.argmax(x[eyes])] == b
    assert synthetic.inter_ocular(g.landmarks) == pytest.approx(
        _scheme_iod(g.landmarks), rel=1e-6)


def test_annotate_scales_noise_by_the_scheme_inter_ocular_distance():
  """Spreading the scheme's ocular points by a factor scales every other
  point's displacement by exactly that factor; spreading other eye points
  (the inner corners) changes nothing."""
  a, b = schemes.get_scheme(68).ocular
  for i in range(4):
    true = synthetic.face_geometry(5, i, 128).landmarks.astype(np.float64)

    def displacement(points):
      noisy = synthetic.annotate(points, 5, i, contour_noise=0.1,
                                 point_noise=0.3)
      return noisy.astype(np.float64) - points

    def spread(points, j, k, factor):
      out = points.copy()
      centre = 0.5 * (points[j] + points[k])
      out[[j, k]] = centre + factor * (points[[j, k]] - centre)
      return out

    base = displacement(true)
    others = np.setdiff1d(np.arange(68), [a, b, 39, 42])
    assert np.abs(base[others]).max() > 5.0   # The noise is not tiny.

    wide = spread(true, a, b, 1.5)
    ratio = _scheme_iod(wide) / _scheme_iod(true)
    assert ratio == pytest.approx(1.5)
    np.testing.assert_allclose(displacement(wide)[others],
                               ratio * base[others], atol=1e-4)

    inner = spread(true, 39, 42, 1.5)
    np.testing.assert_allclose(displacement(inner)[others], base[others],
                               atol=1e-4)

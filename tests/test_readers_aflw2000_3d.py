"""Tests for data/readers/aflw2000_3d.py on the real AFLW2000-3D samples."""

import os

import numpy as np
import pytest
import scipy.io

from data import readers
from tests.test_readers_common import shared_path


def test_sample_values_and_bounds():
  root = shared_path("formats", "aflw2000_3d")
  listing = readers.read_dataset("aflw2000_3d", root, "test")
  assert len(listing) == 16 and not listing.problems
  first = listing[0]
  assert os.path.basename(first.image_path) == "image00050.jpg"
  # pt3d_68 columns 0, 36, 67 of image00050.mat (rows x, y, z).
  np.testing.assert_allclose(first.landmarks[0], [125.84849, 209.62408],
                             rtol=1e-6)
  np.testing.assert_allclose(first.landmarks[36], [167.86673, 207.85593],
                             rtol=1e-6)
  np.testing.assert_allclose(first.landmarks[67], [208.93683, 312.43222],
                             rtol=1e-6)
  np.testing.assert_allclose(first.attributes["z"][0], -83.308266, rtol=1e-6)
  for record in listing:
    direct = scipy.io.loadmat(record.image_path[:-4] + ".mat")["pt3d_68"]
    np.testing.assert_allclose(record.landmarks, direct[:2].T, rtol=1e-6)
    h, w = record.load_image().shape[:2]
    assert (h, w) == (450, 450)
  np.testing.assert_allclose(first.box, [first.landmarks[:, 0].min(),
                                         first.landmarks[:, 1].min(),
                                         first.landmarks[:, 0].max(),
                                         first.landmarks[:, 1].max()])


def test_bad_mat_reported(tmp_path):
  scipy.io.savemat(tmp_path / "image1.mat", {"pt2d": np.zeros((2, 21))})
  scipy.io.savemat(tmp_path / "image2.mat", {"pt3d_68": np.zeros((3, 68))})
  listing = readers.read_dataset("aflw2000_3d", str(tmp_path), "test")
  assert len(listing) == 0 and len(listing.problems) == 2
  assert "no 'pt3d_68'" in str(listing.problems[0])
  assert "image2.jpg" in str(listing.problems[1])
  (tmp_path / "image3.mat").write_bytes(b"not a MATLAB file")
  listing = readers.read_dataset("aflw2000_3d", str(tmp_path), "test")
  assert len(listing.problems) == 3
  assert "image3.mat: not a readable MATLAB file" in str(listing.problems[2])
  with pytest.raises(FileNotFoundError, match="3DDFA"):
    readers.read_dataset("aflw2000_3d", str(tmp_path / "x"), "test")

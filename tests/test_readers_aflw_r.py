"""Tests for data/readers/aflw_r.py on a generated DVE aflw-recrop layout."""

import os

import numpy as np
from PIL import Image
import pytest
import scipy.io

from data import readers


def make_aflw_r(root, n=3, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "output"))
  names = [f"img{i}.jpg" for i in range(n)]
  xy = rng.uniform(5, 60, (n, 5, 2))
  for name in names:
    Image.fromarray(np.zeros((70, 64, 3), np.uint8)).save(
        os.path.join(root, "output", name))
  with open(os.path.join(root, "aflw_test_images.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
  scipy.io.savemat(os.path.join(root, "aflw_test_keypoints.mat"),
                   {"gt": xy[..., ::-1], "hw": np.tile([70, 64], (n, 1))})
  return names, xy


def test_points_swapped_to_xy(tmp_path):
  names, xy = make_aflw_r(str(tmp_path))
  listing = readers.read_dataset("aflw_r", str(tmp_path), "test")
  assert [os.path.basename(r.image_path) for r in listing] == names
  for record, points in zip(listing, xy):
    np.testing.assert_allclose(record.landmarks, points, rtol=1e-6)
    assert record.attributes == {"height": 70, "width": 64}


def test_count_mismatch_and_missing(tmp_path):
  make_aflw_r(str(tmp_path))
  with open(tmp_path / "aflw_test_images.txt", "a") as f:
    f.write("extra.jpg\n")
  with pytest.raises(ValueError, match="4 names"):
    readers.read_dataset("aflw_r", str(tmp_path), "test")
  with pytest.raises(FileNotFoundError, match="aflw-recrop"):
    readers.read_dataset("aflw_r", str(tmp_path), "train")

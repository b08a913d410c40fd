"""Tests for data/readers/mtfl.py: "aflw_m" fixture, shared "mtfl" copy."""

import os

import numpy as np
from PIL import Image
import pytest

from data import readers
from tests.test_readers_common import shared_path


def test_aflw_m_fixture_points_and_attributes(tmp_path):
  os.makedirs(tmp_path / "AFLW")
  os.makedirs(tmp_path / "lfw_5590")
  for name in ("AFLW/a.jpg", "lfw_5590/b.jpg"):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / name)
  (tmp_path / "testing.txt").write_text(
      "AFLW\\a.jpg 1 2 3 4 5 11 12 13 14 15 1 2 2 3\n"
      "\n"
      "AFLW\\a.jpg 1 2 3 4 5 11 12 13 14 15 1 2\n")
  (tmp_path / "training.txt").write_text(
      "lfw_5590\\b.jpg 1.5 2 3 4 5 6 7 8 9 10.25 2 1 1 5\n")
  test = readers.read_dataset("aflw_m", str(tmp_path), "test")
  assert len(test) == 1
  np.testing.assert_array_equal(test[0].landmarks,
                                [[1, 11], [2, 12], [3, 13], [4, 14], [5, 15]])
  assert test[0].attributes == {"gender": 1, "smile": 2, "glasses": 2,
                                "pose": 3}
  assert test[0].image_path == os.path.join(str(tmp_path), "AFLW/a.jpg")
  assert test.problems[0].line == 3
  train = readers.read_dataset("aflw_m", str(tmp_path), "train")
  np.testing.assert_array_equal(train[0].landmarks[0], [1.5, 6])
  np.testing.assert_array_equal(train[0].box, [1.5, 6, 5, 10.25])


def test_shared_mtfl_counts_values_bounds():
  root = shared_path("mtfl")
  listing = readers.read_dataset("mtfl", root, "train")
  assert len(listing) == 10000 and not listing.problems
  with open(os.path.join(root, "training.txt")) as f:
    first = f.readline().split()
  np.testing.assert_allclose(listing[0].landmarks[:, 0],
                             [float(v) for v in first[1:6]], rtol=1e-6)
  np.testing.assert_allclose(listing[0].landmarks[:, 1],
                             [float(v) for v in first[6:11]], rtol=1e-6)
  rng = np.random.default_rng(0)
  for i in rng.choice(len(listing), 20, replace=False):
    record = listing[int(i)]
    h, w = record.load_image().shape[:2]
    assert (h, w) == (80, 80)
    assert np.all(record.landmarks >= 0) and np.all(record.landmarks <= 80)
  with pytest.raises(ValueError, match="only the training half"):
    readers.read_dataset("mtfl", root, "test")

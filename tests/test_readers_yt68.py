"""Tests for data/readers/yt68.py on the real ../shared/data/yt68 set."""

import csv
import os

import numpy as np
import pytest

from data import readers
from tests.test_readers_common import shared_path


def test_counts_values_and_bounds():
  root = shared_path("yt68")
  train = readers.read_dataset("yt68", root, "train")
  val = readers.read_dataset("yt68", root, "val")
  assert (len(train), len(val)) == (2951, 422)
  assert not train.problems and not val.problems
  with open(os.path.join(root, "val.csv")) as f:
    rows = list(csv.reader(f))[1:]
  for record, row in zip(val, rows):
    assert record.image_path == os.path.join(root, "images", row[0])
    np.testing.assert_allclose(record.landmarks.reshape(-1),
                               [float(v) for v in row[1:]], rtol=1e-6)
    assert record.num_points == 68
  rng = np.random.default_rng(0)
  for i in rng.choice(len(train), 20, replace=False):
    record = train[int(i)]
    h, w = record.load_image().shape[:2]
    assert np.all(record.landmarks >= 0) and np.all(record.landmarks <= [w, h])
    # Boxes are derived from the points (the set has none).
    np.testing.assert_array_equal(record.box[:2], record.landmarks.min(0))
    np.testing.assert_array_equal(record.box[2:], record.landmarks.max(0))


def test_malformed_row_and_missing_layout(tmp_path):
  os.makedirs(tmp_path / "images")
  with open(tmp_path / "val.csv", "w") as f:
    f.write("," + ",".join(str(i) for i in range(136)) + "\n")
    f.write("a.jpg," + ",".join(["1.0"] * 135) + "\n")
    f.write("b.jpg," + ",".join(["1.0"] * 135 + ["x"]) + "\n")
  listing = readers.read_dataset("yt68", str(tmp_path), "val",
                                 check_images="none")
  assert len(listing) == 0
  assert [p.line for p in listing.problems] == [2, 3]
  assert "not a number: 'x'" in str(listing.problems[1])
  with pytest.raises(FileNotFoundError, match="train.csv"):
    readers.read_dataset("yt68", str(tmp_path), "train")


def test_any_csv_of_the_same_format_is_a_split(tmp_path):
  os.makedirs(tmp_path / "images")
  values = np.arange(136, dtype=np.float64) / 4.0
  with open(tmp_path / "my_frames.csv", "w") as f:
    f.write("," + ",".join(str(i) for i in range(136)) + "\n")
    f.write("x/a.jpg," + ",".join(str(float(v)) for v in values) + "\n")
  # The points lie on one line (a format probe, not a face): no label check.
  listing = readers.read_dataset("yt68", str(tmp_path), "my_frames",
                                 check_images="none", sanity="off")
  assert len(listing) == 1 and listing[0].subset == "my_frames"
  np.testing.assert_allclose(listing[0].landmarks, values.reshape(68, 2))
  for bad in ("", "my_frames.csv", os.path.join("x", "y")):
    with pytest.raises(ValueError, match="csv file stem"):
      readers.read_dataset("yt68", str(tmp_path), bad, check_images="none")

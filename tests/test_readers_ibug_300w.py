"""Tests for data/readers/ibug_300w.py and pts.py on a generated iBUG tree."""

import os

import numpy as np
from PIL import Image
import pytest
import scipy.io

from data import readers
from data.readers import pts as pts_lib
from tests.test_readers_common import upright

FOLDERS = ("afw", "helen/trainset", "lfpw/trainset", "helen/testset",
           "lfpw/testset", "ibug")


def write_pts_by_hand(path, points, declared=None):
  n = len(points) if declared is None else declared
  body = "".join(f"{x:.3f} {y:.3f}\n" for x, y in points)
  with open(path, "w") as f:
    f.write(f"version: 1\nn_points:  {n}\n{{\n{body}}}\n")


def make_300w(root, per_folder=2, seed=0, with_boxes=True):
  """Writes a tiny iBUG tree; returns {folder: [(stem, points as written)]}."""
  rng = np.random.default_rng(seed)
  truth = {}
  for folder in FOLDERS:
    os.makedirs(os.path.join(root, folder))
    entries, mat_entries = [], []
    for i in range(per_folder):
      stem = f"{folder.replace('/', '_')}_{i}"
      ext = ".png" if folder.startswith("lfpw") else ".jpg"
      Image.fromarray(rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)).save(
          os.path.join(root, folder, stem + ext))
      points = upright(np.round(rng.uniform(1, 24, (68, 2)), 3))
      write_pts_by_hand(os.path.join(root, folder, stem + ".pts"), points)
      entries.append((stem, points))
      mat_entries.append({
          "imgName": stem + ext,
          "bb_detector": np.array([[2.0, 3.0, 20.0, 21.0 + i]]),
          "bb_ground_truth": np.array([[1.0, 1.5, 22.0, 23.0]])})
    truth[folder] = entries
    if with_boxes:
      os.makedirs(os.path.join(root, "Bounding Boxes"), exist_ok=True)
      cell = np.empty((1, len(mat_entries)), dtype=object)
      for i, e in enumerate(mat_entries):
        cell[0, i] = e
      scipy.io.savemat(
          os.path.join(root, "Bounding Boxes",
                       f"bounding_boxes_{folder.replace('/', '_')}.mat"),
          {"bounding_boxes": cell})
  return truth


def test_splits_points_and_boxes(tmp_path):
  truth = make_300w(str(tmp_path))
  expected_folders = {"train": FOLDERS[:3], "common": FOLDERS[3:5],
                      "challenge": FOLDERS[5:], "full": FOLDERS[3:]}
  for split, folders in expected_folders.items():
    listing = readers.read_dataset("300w", str(tmp_path), split)
    written = [e for f in folders for e in truth[f]]
    assert [os.path.splitext(os.path.basename(r.image_path))[0]
            for r in listing] == [stem for stem, _ in written]
    for record, (_, points) in zip(listing, written):
      # .pts is 1-based: returned points are written - 1.
      np.testing.assert_allclose(record.landmarks, points - 1, atol=1e-4)
      np.testing.assert_allclose(
          record.box, np.r_[points.min(0), points.max(0)] - 1, atol=1e-4)
    # Fixture is not the official size: reported once, not raised.
    assert len(listing.problems) == 1
    assert "official 300W" in listing.problems[0].message
  raw = readers.read_dataset("300w", str(tmp_path), "common",
                             one_based=False)
  np.testing.assert_allclose(raw[0].landmarks, truth["helen/testset"][0][1],
                             atol=1e-4)


def test_official_bounding_box_files(tmp_path):
  make_300w(str(tmp_path))
  gt = readers.read_dataset("300w", str(tmp_path), "challenge",
                            box_source="ground_truth")
  np.testing.assert_allclose(gt[1].box, [0.0, 0.5, 21.0, 22.0])
  det = readers.read_dataset("300w", str(tmp_path), "challenge",
                             box_source="detector")
  np.testing.assert_allclose(det[1].box, [1.0, 2.0, 19.0, 21.0])
  with pytest.raises(ValueError, match="box_source"):
    readers.read_dataset("300w", str(tmp_path), "challenge", box_source="x")


def test_bad_files(tmp_path):
  make_300w(str(tmp_path), with_boxes=False)
  ibug = os.path.join(str(tmp_path), "ibug")
  with open(os.path.join(ibug, "ibug_0.pts"), "w") as f:
    f.write("version: 1\nn_points: 68\n{\n1.0 2.0\nthree 4.0\n}\n")
  listing = readers.read_dataset("300w", str(tmp_path), "challenge")
  assert len(listing) == 1
  assert "ibug_0.pts:5" in str(listing.problems[0])
  # Wrong landmark count for the set: error at load, naming the file.
  write_pts_by_hand(os.path.join(ibug, "ibug_1.pts"), np.ones((51, 2)))
  with pytest.raises(ValueError, match="ibug_1.pts.*51 landmarks"):
    readers.read_dataset("300w", str(tmp_path), "challenge")
  # Declared count disagreeing with the listed points is malformed.
  write_pts_by_hand(os.path.join(ibug, "ibug_1.pts"), np.ones((68, 2)),
                    declared=67)
  listing = readers.read_dataset("300w", str(tmp_path), "challenge")
  assert any("n_points says 67" in str(p) for p in listing.problems)
  with pytest.raises(FileNotFoundError, match="Bounding Boxes"):
    readers.read_dataset("300w", str(tmp_path), "common",
                         box_source="detector")


def test_missing_folder(tmp_path):
  os.makedirs(tmp_path / "afw")
  with pytest.raises(FileNotFoundError) as e:
    readers.read_dataset("300w", str(tmp_path), "train")
  assert "helen" in str(e.value) and "ibug.doc.ic.ac.uk" in str(e.value)


def test_pts_write_read_round_trip(tmp_path):
  points = np.random.default_rng(1).uniform(0, 100, (68, 2)).astype(np.float32)
  path = str(tmp_path / "a.pts")
  pts_lib.write_pts(path, points)
  np.testing.assert_allclose(pts_lib.read_pts(path), points, atol=1e-4)
  np.testing.assert_allclose(pts_lib.read_pts(path, one_based=False),
                             points + 1, atol=1e-4)

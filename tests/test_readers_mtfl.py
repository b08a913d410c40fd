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
  # The points lie on one line (a format probe, not a face): no label check.
  test = readers.read_dataset("aflw_m", str(tmp_path), "test", sanity="off")
  assert len(test) == 1
  np.testing.assert_array_equal(test[0].landmarks,
                                [[1, 11], [2, 12], [3, 13], [4, 14], [5, 15]])
  assert test[0].attributes == {"gender": 1, "smile": 2, "glasses": 2,
                                "pose": 3}
  assert test[0].image_path == os.path.join(str(tmp_path), "AFLW/a.jpg")
  assert test.problems[0].line == 3
  train = readers.read_dataset("aflw_m", str(tmp_path), "train", sanity="off")
  np.testing.assert_array_equal(train[0].landmarks[0], [1.5, 6])
  np.testing.assert_array_equal(train[0].box, [1.5, 6, 5, 10.25])


# Faces of the shared copy the label sanity check leaves out (training.txt
# order). Looked at: the labels are right, the faces sit far off-centre in
# their crops (centroid more than one median face spread from the set's).
SHARED_FLAGGED = ("Budd_Schulberg_0001.jpg", "Elena_de_Chavez_0001.jpg",
                  "Robin_Wright_Penn_0001.jpg", "Tim_Conway_0001.jpg")
SHARED_FACES = 7650  # ../shared/data/README.md


def flagged_names(listing, annotation):
  """Image names of the annotation lines `listing.problems` point at."""
  with open(annotation) as f:
    lines = f.read().splitlines()
  return [os.path.basename(lines[p.line - 1].split()[0].replace("\\", "/"))
          for p in listing.problems]


def test_shared_mtfl_counts_values_bounds():
  root = shared_path("mtfl")
  annotation = os.path.join(root, "training.txt")
  listing = readers.read_dataset("mtfl", root, "train")
  assert flagged_names(listing, annotation) == list(SHARED_FLAGGED)
  assert all(p.path == annotation and "centroid is a robust outlier" in
             p.message for p in listing.problems)
  assert len(listing) == SHARED_FACES - len(SHARED_FLAGGED)
  unchecked = readers.read_dataset("mtfl", root, "train", sanity="off")
  assert len(unchecked) == SHARED_FACES and not unchecked.problems
  with open(annotation) as f:
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


def test_shared_mtfl_copy_with_a_quarter_shifted_up_is_caught(tmp_path):
  """Every 4th face moved up 16 px (20 % of the image), as a broken copy."""
  root = shared_path("mtfl")
  for folder in ("lfw_5590", "net_7876"):
    os.symlink(os.path.join(root, folder), tmp_path / folder)
  with open(os.path.join(root, "training.txt")) as f:
    lines = f.read().splitlines()
  shifted = set(range(1, len(lines), 4))
  out = []
  for i, line in enumerate(lines):
    fields = line.split()
    if i in shifted:
      fields[6:11] = [f"{float(v) - 16:.2f}" for v in fields[6:11]]
    out.append(" ".join(fields))
  (tmp_path / "training.txt").write_text("\n".join(out) + "\n")
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  flagged = {p.line - 1 for p in listing.problems}
  # Nearly all shifted faces are caught (a few that sat low in their crop
  # end up near the median), and no clean face beyond the clean set's own.
  assert len(shifted - flagged) <= 0.01 * len(shifted)
  assert {os.path.basename(lines[i].split()[0]) for i in flagged - shifted
          } <= set(SHARED_FLAGGED)
  assert len(listing) == len(lines) - len(flagged)

"""Tests for data/readers/celeba.py on a generated CelebA-format tree."""

import os

import numpy as np
from PIL import Image
import pytest

from data import readers
from tests.test_readers_common import upright


def make_celeba(root, partition=(0, 0, 1, 2, 0, 2), seed=0):
  """Writes Img/, Anno/ and Eval/ like the CelebA download; returns points."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "Img", "img_align_celeba"))
  os.makedirs(os.path.join(root, "Anno"))
  os.makedirs(os.path.join(root, "Eval"))
  names = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
  points = {}
  rows = []
  for name in names:
    Image.fromarray(rng.integers(0, 255, (218, 178, 3), np.uint8)).save(
        os.path.join(root, "Img", "img_align_celeba", name))
    p = upright(rng.integers(40, 170, (5, 2)))
    points[name] = p
    rows.append(name + "  " + " ".join(f"{v:4d}" for v in p.reshape(-1)))
  header = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y "
            "leftmouth_x leftmouth_y rightmouth_x rightmouth_y")
  with open(os.path.join(root, "Anno", "list_landmarks_align_celeba.txt"),
            "w") as f:
    f.write(f"{len(names)}\n{header}\n" + "\n".join(rows) + "\n")
  with open(os.path.join(root, "Eval", "list_eval_partition.txt"), "w") as f:
    f.write("".join(f"{n} {p}\n" for n, p in zip(names, partition)))
  return names, points


def test_partitions_and_points(tmp_path):
  names, points = make_celeba(str(tmp_path))
  expected = {"train": [names[0], names[1], names[4]], "val": [names[2]],
              "test": [names[3], names[5]], "all": names}
  for split, wanted in expected.items():
    listing = readers.read_dataset("celeba", str(tmp_path), split)
    assert [os.path.basename(r.image_path) for r in listing] == wanted
    for record in listing:
      np.testing.assert_array_equal(
          record.landmarks, points[os.path.basename(record.image_path)])
      assert record.box is None


def test_malformed_line_and_missing_files(tmp_path):
  names, _ = make_celeba(str(tmp_path))
  path = os.path.join(str(tmp_path), "Anno", "list_landmarks_align_celeba.txt")
  with open(path) as f:
    lines = f.read().splitlines()
  lines[3] = names[1] + " 1 2 3"
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  listing = readers.read_dataset("celeba", str(tmp_path), "train")
  assert len(listing) == 2
  assert listing.problems[0].line == 4
  assert any("no landmarks for '000002.jpg'" in str(p)
             for p in listing.problems)
  with pytest.raises(FileNotFoundError, match="mmlab.ie.cuhk.edu.hk"):
    readers.read_dataset("celeba", str(tmp_path / "none"), "train")

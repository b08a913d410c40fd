"""Tests for data/readers/mafl.py (MAFL lists over a generated CelebA tree)."""

import os

import numpy as np
import pytest

from data import readers
from tests.test_readers_celeba import make_celeba


def test_lists_select_celeba_faces(tmp_path):
  names, points = make_celeba(str(tmp_path))
  os.makedirs(tmp_path / "MAFL")
  (tmp_path / "MAFL" / "training.txt").write_text(
      f"{names[4]}\n{names[0]}\n")
  (tmp_path / "MAFL" / "testing.txt").write_text(f"{names[5]}\n")
  train = readers.read_dataset("mafl", str(tmp_path), "train")
  assert [os.path.basename(r.image_path) for r in train] == [names[4],
                                                             names[0]]
  np.testing.assert_array_equal(train[0].landmarks, points[names[4]])
  test = readers.read_dataset("mafl", str(tmp_path), "test")
  assert len(test) == 1 and test[0].subset == "test"


def test_missing_lists(tmp_path):
  make_celeba(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="MAFL/training.txt"):
    readers.read_dataset("mafl", str(tmp_path), "train")

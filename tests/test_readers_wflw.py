"""Tests for data/readers/wflw.py on a generated official-format fixture."""

import os
import pickle

import numpy as np
from PIL import Image
import pytest

from data import readers
from data.readers import wflw
from tests.test_readers_common import upright

ATTRS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")


def make_wflw(root, num_faces=4, seed=0, corrupt=(), malformed_line=False):
  """Writes a tiny WFLW tree; returns the faces written (ground truth)."""
  rng = np.random.default_rng(seed)
  ann_dir = os.path.join(root, "WFLW_annotations",
                         "list_98pt_rect_attr_train_test")
  os.makedirs(ann_dir, exist_ok=True)
  faces = {"train": [], "test": []}
  for part in ("train", "test"):
    lines = []
    for i in range(num_faces):
      h, w = rng.integers(20, 40, size=2)
      event = f"{i % 2}--Event"
      rel = f"{event}/{part}_{i}.png"
      path = os.path.join(root, "WFLW_images", rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      if rel in corrupt:
        with open(path, "wb") as f:
          f.write(b"not an image at all")
      else:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            path)
      points = upright(np.round(rng.uniform(0, [w - 1, h - 1], (98, 2)), 3))
      box = [1.0 * i, 2.0, 3.5 + i, 4.25]
      flags = [int(v) for v in rng.integers(0, 2, 6)]
      flags[0] = int(i % 2)  # pose subset = odd faces
      fields = ([f"{v:.3f}" for v in points.reshape(-1)] +
                [f"{v}" for v in box] + [str(v) for v in flags] + [rel])
      lines.append(" ".join(fields))
      faces[part].append(dict(rel=rel, points=points, box=box,
                              flags=dict(zip(ATTRS, flags))))
    if malformed_line and part == "test":
      lines.insert(1, "1.0 2.0 3.0 oops.png")
    with open(os.path.join(ann_dir, f"list_98pt_rect_attr_{part}.txt"),
              "w") as f:
      f.write("\n".join(lines) + "\n")
  return faces


def test_parsed_values_equal_written(tmp_path):
  faces = make_wflw(str(tmp_path))
  for part in ("train", "test"):
    listing = readers.read_dataset("wflw", str(tmp_path), part)
    assert len(listing) == 4 and not listing.problems
    for record, face in zip(listing, faces[part]):
      assert record.image_path == os.path.join(str(tmp_path), "WFLW_images",
                                               face["rel"])
      np.testing.assert_allclose(record.landmarks, face["points"], atol=1e-4)
      np.testing.assert_array_equal(record.box, np.float32(face["box"]))
      assert dict(record.attributes) == face["flags"]
      assert record.visible.all() and record.landmarks.dtype == np.float32
      image = record.load_image()
      assert image.dtype == np.uint8 and image.ndim == 3
      assert np.array_equal(image, np.asarray(Image.open(record.image_path)))


def test_attribute_subsets(tmp_path):
  faces = make_wflw(str(tmp_path), num_faces=6)
  for attr in ATTRS:
    listing = readers.read_dataset("wflw", str(tmp_path), f"test_{attr}")
    expected = [f["rel"] for f in faces["test"] if f["flags"][attr]]
    got = [os.path.relpath(r.image_path,
                           os.path.join(str(tmp_path), "WFLW_images"))
           for r in listing]
    assert got == expected
  assert len(readers.read_dataset("wflw", str(tmp_path), "test_pose")) == 3


def test_malformed_line_reported_with_line_and_skipped(tmp_path):
  make_wflw(str(tmp_path), malformed_line=True)
  listing = readers.read_dataset("wflw", str(tmp_path), "test")
  assert len(listing) == 4
  assert len(listing.problems) == 1
  problem = listing.problems[0]
  assert problem.line == 2 and problem.path.endswith(
      "list_98pt_rect_attr_test.txt")
  assert "expected 207 fields" in str(problem)
  assert "list_98pt_rect_attr_test.txt:2" in listing.summary()


def test_corrupt_image_reported_by_name_and_skipped(tmp_path):
  make_wflw(str(tmp_path), corrupt=("1--Event/train_1.png",))
  before = {p: os.path.getmtime(p) for p in _files(tmp_path)}
  listing = readers.read_dataset("wflw", str(tmp_path), "train",
                                 check_images="verify")
  assert len(listing) == 3 and len(listing.problems) == 1
  assert "train_1.png" in str(listing.problems[0])
  assert listing.problems[0].line == 2
  assert "corrupt image" in str(listing.problems[0])
  # Default check ("exists") lists it; decoding it then fails naming the file.
  listing = readers.read_dataset("wflw", str(tmp_path), "train")
  with pytest.raises(ValueError, match="train_1.png"):
    listing[1].load_image()
  assert before == {p: os.path.getmtime(p) for p in _files(tmp_path)}


def test_missing_image_reported(tmp_path):
  make_wflw(str(tmp_path))
  os.remove(os.path.join(str(tmp_path), "WFLW_images", "0--Event",
                         "test_2.png"))
  listing = readers.read_dataset("wflw", str(tmp_path), "test")
  assert len(listing) == 3
  assert "test_2.png" in str(listing.problems[0])
  assert "not found" in str(listing.problems[0])


def test_missing_folder_names_layout_and_source(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    readers.read_dataset("wflw", str(tmp_path / "nope"), "train")
  assert "WFLW_images" in str(e.value) and wflw.SOURCE in str(e.value)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="list_98pt_rect_attr_train"):
    readers.read_dataset("wflw", str(tmp_path / "empty"), "train")


def test_unknown_split_and_name():
  with pytest.raises(ValueError, match="test_pose"):
    readers.read_dataset("wflw", "/tmp", "validation")
  with pytest.raises(ValueError, match="unknown dataset"):
    readers.read_dataset("wflw98", "/tmp", "train")


def test_records_pickle(tmp_path):
  make_wflw(str(tmp_path))
  listing = readers.read_dataset("wflw", str(tmp_path), "train")
  restored = pickle.loads(pickle.dumps(list(listing)))
  np.testing.assert_array_equal(restored[0].landmarks, listing[0].landmarks)
  np.testing.assert_array_equal(restored[0].load_image(),
                                listing[0].load_image())


def _files(root):
  return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]

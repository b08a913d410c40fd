"""Tests for data/sanity.py and the readers' `sanity` option."""

import os
import warnings

import numpy as np
from PIL import Image
import pytest

from data import readers
from data import sanity
from data.readers import common

SIZE = 80
# Left eye, right eye, nose, left and right mouth corner (MTFL order).
TEMPLATE = np.array([[28, 34], [52, 34], [40, 46], [31, 58], [49, 58]], float)


def make_mtfl(root, num_faces=40, edits=None, seed=0):
  """Writes an MTFL-format set: `training.txt` + 80x80 `lfw_5590/*.jpg`.

  `edits` maps a face index to a function of its `[5, 2]` points (the
  label damage). Returns the image names in line order.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, "lfw_5590"))
  names, lines = [], []
  for i in range(num_faces):
    points = TEMPLATE + rng.uniform(-2, 2, TEMPLATE.shape)
    if edits and i in edits:
      points = edits[i](points)
    name = f"face_{i:02d}.jpg"
    image = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(root, "lfw_5590", name))
    coords = " ".join(f"{v:.2f}" for v in np.concatenate([points[:, 0],
                                                           points[:, 1]]))
    lines.append(f"lfw_5590\\{name} {coords}")
    names.append(name)
  with open(os.path.join(root, "training.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return names


def flagged(listing):
  """Image names the problems of `listing` name, in order."""
  return [os.path.basename(p.message.split("'")[1]) for p in listing.problems]


def shift_up(points):
  return points - [0, 20]


def test_quarter_shifted_up_is_flagged_by_name(tmp_path):
  shifted = range(0, 40, 4)
  names = make_mtfl(str(tmp_path), edits={i: shift_up for i in shifted})
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  assert flagged(listing) == [names[i] for i in shifted]
  assert [p.line for p in listing.problems] == [i + 1 for i in shifted]
  for problem in listing.problems:
    assert problem.path == str(tmp_path / "training.txt")
    assert "landmark centroid is a robust outlier" in problem.message
  assert [os.path.basename(r.image_path) for r in listing] == [
      n for i, n in enumerate(names) if i not in shifted]


def test_clean_generated_set_flags_nothing(tmp_path):
  make_mtfl(str(tmp_path))
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  assert len(listing) == 40 and not listing.problems


def test_mouth_above_eyes_is_flagged(tmp_path):
  def swap_eyes_and_mouth(points):
    points = points.copy()
    points[[0, 1, 3, 4]] = points[[3, 4, 0, 1]]
    return points

  names = make_mtfl(str(tmp_path), num_faces=6,
                    edits={2: swap_eyes_and_mouth})
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  assert flagged(listing) == [names[2]]
  assert "is not below the eye line" in listing.problems[0].message
  assert listing.problems[0].line == 3


def test_points_outside_the_image_are_flagged(tmp_path):
  def far_right(points):  # 10 % tolerance: x up to 87.5 passes.
    points = points.copy()
    points[1, 0] = 95.0
    return points

  def just_outside(points):
    points = points.copy()
    points[1, 0] = 84.0
    return points

  names = make_mtfl(str(tmp_path), num_faces=6,
                    edits={1: far_right, 4: just_outside})
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  assert flagged(listing) == [names[1]]
  assert "1 point(s) outside the 80x80 image" in listing.problems[0].message
  assert "point 1 at (95.0," in listing.problems[0].message


def test_face_checks_pure_functions():
  face = TEMPLATE.copy()
  assert not sanity.face_problems(face, (SIZE, SIZE))
  # Any in-plane rotation keeps the mouth on the chin side of the eye line.
  centre = face.mean(0)
  for degrees in (30, 100, 179, -120):
    t = np.deg2rad(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    rotated = (face - centre) @ rotation.T + centre
    assert not sanity.face_problems(rotated)
  # A mirror image whose points were not permuted fails.
  mirrored = face.copy()
  mirrored[:, 0] = SIZE - 1 - mirrored[:, 0]
  assert "not below the eye line" in sanity.face_problems(mirrored)[0]
  # Visible NaN: a problem; NaN marked not visible: "not annotated".
  holes = face.copy()
  holes[2] = np.nan
  assert "visible points [2]" in sanity.face_problems(holes)[0]
  visible = np.array([True, True, False, True, True])
  assert not sanity.face_problems(holes, (SIZE, SIZE), visible=visible)
  assert sanity.face_problems(np.full((5, 2), np.nan)) == ["no finite landmark"]
  # Unknown schemes: only the finite and inside checks.
  assert not sanity.face_problems(np.array([[5.0, 9.0], [4.0, 1.0]] * 9))
  assert sanity.face_problems(np.full((19, 2), 200.0), (SIZE, SIZE))
  # 68 points: iBUG eye and mouth ranges.
  ibug = np.zeros((68, 2))
  ibug[36:42], ibug[42:48], ibug[48:68] = [20, 30], [60, 30], [40, 60]
  assert not sanity.face_problems(ibug, (SIZE, SIZE))
  ibug[48:68] = [40, 10]
  assert sanity.face_problems(ibug, (SIZE, SIZE))


def test_mad_zero_guard():
  faces = [TEMPLATE.copy() for _ in range(30)]
  sizes = [(SIZE, SIZE)] * 30
  faces[3] = TEMPLATE + [1.0, 0.0]   # within the floor: not an outlier
  faces[7] = TEMPLATE + [0.0, 25.0]  # beyond it
  faces[9] = (TEMPLATE - TEMPLATE.mean(0)) * 2.5 + TEMPLATE.mean(0)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    found = sanity.set_outliers(faces, sizes)
  assert sorted(found) == [7, 9]
  assert "centroid" in found[7][0] and "scale" in found[9][0]
  assert not sanity.set_outliers([TEMPLATE] * 30, sizes)


def test_small_sets_and_groups():
  rng = np.random.default_rng(0)
  small = [TEMPLATE + rng.uniform(-1, 1, (5, 2)) for _ in range(40)]
  large = [(f - f.mean(0)) * 1.8 + f.mean(0) for f in small[:20]]
  faces, sizes = small + large, [(SIZE, SIZE)] * 60
  # Pooled, the 20 faces of the other crop are scale outliers; compared with
  # their own group (the reader passes the source folder), none is.
  assert sorted(sanity.set_outliers(faces, sizes)) == list(range(40, 60))
  groups = ["a"] * 40 + ["b"] * 20
  assert not sanity.set_outliers(faces, sizes, groups=groups)
  # Fewer faces than min_faces: the set test is not run.
  assert not sanity.set_outliers(faces[35:45], sizes[35:45])


def test_modes_and_reader_errors(tmp_path):
  shifted = range(0, 40, 4)
  make_mtfl(str(tmp_path), edits={i: shift_up for i in shifted})
  keep = readers.read_dataset("mtfl", str(tmp_path), "train", sanity="keep")
  assert len(keep) == 40 and len(keep.problems) == 10
  assert all(p.message.endswith("(kept: sanity='keep')")
             for p in keep.problems)
  off = readers.read_dataset("mtfl", str(tmp_path), "train", sanity="off")
  assert len(off) == 40 and not off.problems
  with pytest.raises(ValueError, match="sanity must be one of"):
    readers.read_dataset("mtfl", str(tmp_path), "train", sanity="maybe")
  with pytest.raises(ValueError, match="does not check labels"):
    readers.read_dataset("pts", str(tmp_path), "all", sanity="skip")


def test_check_records_result_and_unknown_sizes(tmp_path):
  names = make_mtfl(str(tmp_path), num_faces=24, edits={5: shift_up})
  records = readers.read_dataset("mtfl", str(tmp_path), "train",
                                 sanity="off").records
  result = sanity.check_records(records)
  assert result.keep == [i for i in range(24) if i != 5]
  assert [os.path.basename(path) for path, _ in result.problems] == [names[5]]
  # Without a readable image no size-based test runs (check_images="none").
  missing = [common.make_record(str(tmp_path / "none.jpg"), r.landmarks)
             for r in records]
  assert not sanity.check_records(missing).flags


def test_input_files_are_not_modified(tmp_path):
  make_mtfl(str(tmp_path), edits={0: shift_up})
  files = [str(tmp_path / "training.txt")] + [
      str(tmp_path / "lfw_5590" / n) for n in os.listdir(tmp_path / "lfw_5590")]
  before = {f: (os.stat(f).st_mtime_ns, open(f, "rb").read()) for f in files}
  listing = readers.read_dataset("mtfl", str(tmp_path), "train")
  assert len(listing.problems) == 1
  after = {f: (os.stat(f).st_mtime_ns, open(f, "rb").read()) for f in files}
  assert after == before
  assert sorted(os.listdir(tmp_path)) == ["lfw_5590", "training.txt"]

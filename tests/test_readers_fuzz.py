"""Hostile files for every file-based reader of data/readers (issue #16, 5).

Each reader gets a small valid set in its own format (the builders of the
tests/test_readers_<name>.py files where they exist), which is then broken:
random bytes, empty and truncated annotation files, a line with a field too
few or too many, NaN / inf / 1e30 coordinates, images that are random bytes,
truncated, empty, a folder, a dangling link, a symbolic-link loop or a PNG
whose header claims 100000 x 100000 pixels. What every reader must do:

  * raise nothing but `training.errors.UserError` (MissingInputError is one),
    and that only when nothing of the set is usable;
  * report the bad item by file name (and line, for line-based files) and
    still list the good ones;
  * list no face with a non-finite visible point or a coordinate beyond
    `common.MAX_COORDINATE`, and no face whose box is not finite;
  * never write to its input (a SHA-256 + mtime snapshot of the tree, links
    by target, is equal before and after);
  * leave images lazily decoded: with the default check ("exists") a corrupt
    image is listed, and decoding it raises a ValueError / OSError naming it
    (what the input pipeline reports and skips).

The seeded fuzzer (`_text_mutations`, `_binary_mutations`, `_image_damage`)
mutates one file at a time, runs the reader and restores the file.
Not covered here: "synthetic" (reads no files) and "tfds:<name>" (a set
built by data.prepare; its files are array_record shards written by tfds,
whose image loader is wrapped to raise ValueError naming the set).
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
from typing import Callable, Dict, List, Optional
import zlib

import h5py
import numpy as np
from PIL import Image
import pytest
import scipy.io

from data import readers
from data.readers import common
from data.readers import pts as pts_lib
from tests.test_readers_aflw_r import make_aflw_r
from tests.test_readers_celeba import make_celeba
from tests.test_readers_cofw import make_cofw
from tests.test_readers_common import upright
from tests.test_readers_ibug_300w import make_300w
from tests.test_readers_vw300 import make_300vw
from tests.test_readers_wflw import make_wflw
from training import errors

HOSTILE_NUMBERS = ("nan", "inf", "-inf", "1e30", "-1e30", "1e400", "NaN",
                   "abc", "0x10", "1e", "--1", "9" * 5000, "\u0661", "")


# ------------------------------------------------------------- cases ----

@dataclasses.dataclass
class Case:
  """A small valid set of one reader, and how to break its first face.

  Attributes:
    name, root, split, options: the `read_dataset` call.
    faces: how many faces the valid set lists.
    texts: line-based annotation files (fuzzed line by line).
    binaries: annotation files in a binary or structured format (.mat,
      HDF5, JSON).
    images: the image files of the faces.
    set_coordinate: writes a value (text) as the first coordinate of face 0.
    drop_field: removes one field from face 0's annotation (None: the
      format has no fields to drop).
    bad_file: the file the report of face 0 names; bad_line: its line.
    nan_is_missing: the format reads NaN as "not annotated" (menpo, COCO
      null), so a NaN coordinate leaves the face listed.
    knows_size: the reader knows each image's size while listing (from the
      annotation), so far-out points are judged against it.
  """
  name: str
  root: str
  split: str
  faces: int
  texts: List[str]
  binaries: List[str]
  images: List[str]
  set_coordinate: Callable[[str], None]
  drop_field: Optional[Callable[[], None]]
  bad_file: str
  bad_line: Optional[int] = None
  options: Dict[str, object] = dataclasses.field(default_factory=dict)
  nan_is_missing: bool = False
  knows_size: bool = False


def _edit_line(path, line, sep, field, edit):
  """Applies `edit(fields, field)` to 1-based `line` of a text file."""
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  fields = lines[line - 1].split(sep) if sep else lines[line - 1].split()
  edit(fields, field)
  lines[line - 1] = (sep or " ").join(fields)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def _set_field(path, line, sep, field):
  def setter(value):
    def edit(fields, i):
      if sep == "\t" and "," in fields[i]:      # adnet: "x1,y1,x2,..."
        items = fields[i].split(",")
        items[0] = value
        fields[i] = ",".join(items)
      else:
        fields[i] = value
    _edit_line(path, line, sep, field, edit)
  return setter


def _drop_field(path, line, sep, field):
  def dropper():
    def edit(fields, i):
      if sep == "\t" and "," in fields[i]:
        fields[i] = ",".join(fields[i].split(",")[1:])
      else:
        del fields[i]
    _edit_line(path, line, sep, field, edit)
  return dropper


def _image(path, size=(40, 48), seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3),
                               dtype=np.uint8)).save(path)


def _points(num, size, seed):
  rng = np.random.default_rng(seed)
  return upright(np.round(rng.uniform(4, np.array(size) - 4, (num, 2)), 2))


def case_wflw(root):
  make_wflw(root, num_faces=3)
  ann = os.path.join(root, "WFLW_annotations",
                     "list_98pt_rect_attr_train_test",
                     "list_98pt_rect_attr_train.txt")
  images = [os.path.join(root, "WFLW_images", f"{i % 2}--Event",
                         f"train_{i}.png") for i in range(3)]
  return Case("wflw", root, "train", 3, [ann], [], images,
              _set_field(ann, 1, None, 0), _drop_field(ann, 1, None, 5), ann,
              1)


def case_300w(root):
  make_300w(root, with_boxes=False)
  folder = os.path.join(root, "ibug")
  pts = sorted(os.path.join(folder, f) for f in os.listdir(folder)
               if f.endswith(".pts"))
  images = [p[:-4] + ".jpg" for p in pts]
  return Case("300w", root, "challenge", 2, pts, [], images,
              _set_field(pts[0], 4, None, 0), _drop_field(pts[0], 4, None, 1),
              pts[0])


def case_pts(root):
  os.makedirs(root)
  paths = []
  for i in range(3):
    stem = os.path.join(root, f"face{i}")
    _image(stem + ".png", seed=i)
    pts_lib.write_pts(stem + ".pts", _points(68, (40, 48), i))
    paths.append(stem + ".pts")
  ljson_path = os.path.join(root, "menpo.ljson")
  _image(os.path.join(root, "menpo.png"), seed=9)
  yx = _points(68, (40, 48), 9)[:, ::-1]
  with open(ljson_path, "w") as f:
    json.dump({"version": 2, "landmarks": {"points": yx.tolist()}}, f)
  images = [p[:-4] + ".png" for p in paths] + [os.path.join(root, "menpo.png")]
  return Case("pts", root, "all", 4, paths, [ljson_path], images,
              _set_field(paths[0], 4, None, 0),
              _drop_field(paths[0], 4, None, 1), paths[0],
              options={"num_points": 68})


def case_ljson(root):
  """The pts folder reader on menpo .ljson files."""
  os.makedirs(root)
  paths = []
  for i in range(3):
    stem = os.path.join(root, f"face{i}")
    _image(stem + ".png", seed=i)
    yx = _points(68, (40, 48), i)[:, ::-1]
    with open(stem + ".ljson", "w") as f:
      json.dump({"version": 3, "groups": {"face": {"landmarks": {
          "points": yx.tolist()}}}}, f)
    paths.append(stem + ".ljson")

  def set_coordinate(value):
    with open(paths[0]) as f:
      content = json.load(f)
    try:
      number = float(value)
    except ValueError:
      number = value
    content["groups"]["face"]["landmarks"]["points"][0][0] = number
    with open(paths[0], "w") as f:
      json.dump(content, f)

  def drop_field():
    with open(paths[0]) as f:
      content = json.load(f)
    content["groups"]["face"]["landmarks"]["points"][0].pop()
    with open(paths[0], "w") as f:
      json.dump(content, f)

  return Case("pts", root, "all", 3, [], paths,
              [p[:-6] + ".png" for p in paths], set_coordinate, drop_field,
              paths[0], nan_is_missing=True)


def case_cofw(root):
  os.makedirs(root)
  make_cofw(root)
  path = os.path.join(root, "COFW_train_color.mat")

  def set_coordinate(value):
    with h5py.File(path, "r+") as f:
      f["phisTr"][0, 0] = float(value)

  return Case("cofw", root, "train", 3, [], [path], [], set_coordinate, None,
              path, knows_size=True)


def case_aflw_r(root):
  os.makedirs(root)
  make_aflw_r(root)
  names = os.path.join(root, "aflw_test_images.txt")
  mat = os.path.join(root, "aflw_test_keypoints.mat")

  def set_coordinate(value):
    content = scipy.io.loadmat(mat)
    content["gt"][0, 0, 1] = float(value)
    scipy.io.savemat(mat, {"gt": content["gt"], "hw": content["hw"]})

  images = [os.path.join(root, "output", f"img{i}.jpg") for i in range(3)]
  return Case("aflw_r", root, "test", 3, [names], [mat], images,
              set_coordinate, None, names, 1)


def case_aflw2000_3d(root):
  os.makedirs(root)
  mats = []
  for i in range(3):
    stem = os.path.join(root, f"image{i:05d}")
    _image(stem + ".jpg", seed=i)
    xy = _points(68, (40, 48), i)
    scipy.io.savemat(stem + ".mat", {"pt3d_68": np.concatenate(
        [xy.T, np.zeros((1, 68))])})
    mats.append(stem + ".mat")

  def set_coordinate(value):
    content = scipy.io.loadmat(mats[0])
    content["pt3d_68"][0, 0] = float(value)
    scipy.io.savemat(mats[0], {"pt3d_68": content["pt3d_68"]})

  return Case("aflw2000_3d", root, "test", 3, [], mats,
              [m[:-4] + ".jpg" for m in mats], set_coordinate, None, mats[0])


def case_celeba(root):
  os.makedirs(root)
  names, _ = make_celeba(root, partition=(0, 0, 0))
  ann = os.path.join(root, "Anno", "list_landmarks_align_celeba.txt")
  part = os.path.join(root, "Eval", "list_eval_partition.txt")
  images = [os.path.join(root, "Img", "img_align_celeba", n) for n in names]
  return Case("celeba", root, "train", 3, [ann, part], [], images,
              _set_field(ann, 3, None, 1), _drop_field(ann, 3, None, 2), ann,
              3)


def case_mafl(root):
  case = case_celeba(root)
  os.makedirs(os.path.join(root, "MAFL"))
  names = [os.path.basename(p) for p in case.images]
  mafl = os.path.join(root, "MAFL", "training.txt")
  with open(mafl, "w") as f:
    f.write("\n".join(names) + "\n")
  return dataclasses.replace(case, name="mafl", texts=case.texts[:1] + [mafl])


def _mtfl_tree(root):
  os.makedirs(root)
  lines = []
  for i in range(3):
    rel = f"lfw_5590\\face{i}.jpg"
    _image(os.path.join(root, "lfw_5590", f"face{i}.jpg"), (60, 60), i)
    p = _points(5, (60, 60), i)
    values = list(p[:, 0]) + list(p[:, 1])
    lines.append(" ".join([rel] + [f"{v:.2f}" for v in values] +
                          ["1", "2", "2", "3"]))
  ann = os.path.join(root, "training.txt")
  with open(ann, "w") as f:
    f.write("\n".join(lines) + "\n")
  images = [os.path.join(root, "lfw_5590", f"face{i}.jpg") for i in range(3)]
  return ann, images


def case_aflw_m(root):
  ann, images = _mtfl_tree(root)
  return Case("aflw_m", root, "train", 3, [ann], [], images,
              _set_field(ann, 1, None, 1), _drop_field(ann, 1, None, 3), ann,
              1)


def case_mtfl(root):
  return dataclasses.replace(case_aflw_m(root), name="mtfl")


def case_yt68(root):
  os.makedirs(os.path.join(root, "images"))
  rows = ["," + ",".join(str(i) for i in range(136))]
  images = []
  for i in range(3):
    name = f"clip_{i}.jpg"
    _image(os.path.join(root, "images", name), (64, 64), i)
    p = _points(68, (64, 64), i)
    rows.append(name + "," + ",".join(f"{v:.2f}" for v in p.reshape(-1)))
    images.append(os.path.join(root, "images", name))
  csv = os.path.join(root, "train.csv")
  with open(csv, "w") as f:
    f.write("\n".join(rows) + "\n")
  return Case("yt68", root, "train", 3, [csv], [], images,
              _set_field(csv, 2, ",", 1), _drop_field(csv, 2, ",", 7), csv, 2)


def case_adnet_tsv(root):
  os.makedirs(root)
  lines, images = [], []
  for i in range(3):
    name = f"img{i}.png"
    _image(os.path.join(root, name), seed=i)
    p = _points(68, (40, 48), i)
    five = p[[36, 45, 30, 48, 54]]
    lines.append("\t".join([
        name, ",".join(f"{v:.2f}" for v in five.reshape(-1)),
        ",".join(f"{v:.2f}" for v in p.reshape(-1)), "0.2", "20", "24"]))
    images.append(os.path.join(root, name))
  tsv = os.path.join(root, "train.tsv")
  with open(tsv, "w") as f:
    f.write("\n".join(lines) + "\n")
  return Case("adnet_tsv", root, "train", 3, [tsv], [], images,
              _set_field(tsv, 1, "\t", 2), _drop_field(tsv, 1, "\t", 2), tsv,
              1)


def case_300vw(root):
  os.makedirs(root)
  make_300vw(root, videos=("001",), frames=3)
  annot = os.path.join(root, "001", "annot")
  pts = [os.path.join(annot, f"{f:06d}.pts") for f in (1, 2, 3)]
  images = [os.path.join(root, "001", "frames", f"{f:06d}.png")
            for f in (1, 2, 3)]
  return Case("300vw", root, "all", 3, pts, [], images,
              _set_field(pts[0], 4, None, 0), _drop_field(pts[0], 4, None, 1),
              pts[0])


def case_coco_json(root):
  os.makedirs(root)
  images, annotations, paths = [], [], []
  for i in range(3):
    name = f"img{i}.png"
    _image(os.path.join(root, name), seed=i)
    p = _points(68, (40, 48), i)
    images.append({"id": i, "file_name": name, "width": 40, "height": 48})
    annotations.append({"id": 10 + i, "image_id": i, "bbox": [2, 3, 30, 40],
                        "keypoints": np.concatenate(
                            [p, np.ones((68, 1))], 1).reshape(-1).tolist()})
    paths.append(os.path.join(root, name))
  path = os.path.join(root, "faces.json")

  def write(content):
    with open(path, "w") as f:
      json.dump(content, f)

  write({"images": images, "annotations": annotations})

  def set_coordinate(value):
    with open(path) as f:
      content = json.load(f)
    try:
      number = float(value)
    except ValueError:
      number = value
    content["annotations"][0]["keypoints"][0] = number
    write(content)

  def drop_field():
    with open(path) as f:
      content = json.load(f)
    content["annotations"][0]["keypoints"].pop()
    write(content)

  return Case("coco_json", root, "faces", 3, [], [path], paths,
              set_coordinate, drop_field, path, nan_is_missing=True,
              knows_size=True)


CASES = {
    "wflw": case_wflw, "300w": case_300w, "pts": case_pts,
    "ljson": case_ljson, "cofw": case_cofw, "aflw_r": case_aflw_r,
    "aflw2000_3d": case_aflw2000_3d, "celeba": case_celeba,
    "mafl": case_mafl, "aflw_m": case_aflw_m, "mtfl": case_mtfl,
    "yt68": case_yt68, "adnet_tsv": case_adnet_tsv, "300vw": case_300vw,
    "coco_json": case_coco_json,
}


def test_every_file_reader_has_a_case():
  assert set(readers.NAMES) - set(readers.NO_FILES) <= set(CASES)


# ----------------------------------------------------------- helpers ----

def tree_state(root):
  """{relative path: (sha256, mtime_ns)} of every file; links by target."""
  state = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      rel = os.path.relpath(path, root)
      if os.path.islink(path):
        state[rel] = ("link", os.readlink(path))
      elif os.path.isfile(path):
        with open(path, "rb") as f:
          state[rel] = (hashlib.sha256(f.read()).hexdigest(),
                        os.stat(path).st_mtime_ns)
      else:
        state[rel] = ("folder",)
  return state


def _read(case, **options):
  """`read_dataset` that must return a listing or raise UserError; checks
  the listing's invariants and that nothing was written. Returns the listing
  or the UserError."""
  before = tree_state(case.root)
  try:
    result = readers.read_dataset(case.name, case.root, case.split,
                                  **dict(case.options, **options))
  except errors.UserError as e:
    result = e
    assert str(e).strip()
    str(e).encode("utf-8")
  else:
    for record in result:
      points = np.asarray(record.landmarks, np.float64)
      visible = np.asarray(record.visible, bool)
      assert np.all(np.isfinite(points[visible])), record.image_path
      finite = points[np.isfinite(points)]
      assert np.all(np.abs(finite) <= common.MAX_COORDINATE)
      if record.box is not None:
        assert np.all(np.isfinite(record.box))
    result.summary().encode("utf-8")    # printable: no lone surrogates.
  assert tree_state(case.root) == before, "the reader wrote to its input"
  return result


def _problems(listing) -> str:
  return "\n".join(str(p) for p in listing.problems)


def huge_png(path, width=100_000, height=100_000):
  """A PNG whose header claims `width` x `height` pixels (a few bytes)."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0,
                                       0)) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _remove(path):
  if os.path.islink(path) or os.path.isfile(path):
    os.remove(path)
  elif os.path.isdir(path):
    shutil.rmtree(path)


def _loop(path):
  """Replaces `path` by one end of a symbolic-link loop (path <-> path~)."""
  _remove(path)
  os.symlink(path + "~", path)
  os.symlink(path, path + "~")


def _damage_image(path, how, rng):
  data = open(path, "rb").read()
  if how == "loop":
    _loop(path)
    return
  _remove(path)
  if how == "random":
    open(path, "wb").write(rng.bytes(int(rng.randint(1, 2000))))
  elif how == "truncated":
    open(path, "wb").write(data[:len(data) // 2])
  elif how == "empty":
    open(path, "wb").close()
  elif how == "huge":
    huge_png(path)
  elif how == "folder":
    os.makedirs(path)
  elif how == "dangling":
    os.symlink(path + ".gone", path)
  else:
    raise ValueError(how)


IMAGE_DAMAGE = {
    # how: (reported with check_images="exists", with "verify")
    "random": (None, "corrupt image"),
    "empty": (None, "corrupt image"),
    "huge": (None, "image too large to decode"),
    "folder": ("is a folder", "is a folder"),
    "dangling": ("symbolic link that does not resolve",) * 2,
    "loop": ("symbolic link that does not resolve",) * 2,
}


@pytest.fixture(params=sorted(CASES))
def case(request, tmp_path):
  return CASES[request.param](str(tmp_path / "set"))


# ------------------------------------------------------ targeted tests ----

def test_valid_set_lists_every_face(case):
  listing = _read(case)
  assert len(listing) == case.faces, _problems(listing)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e30", "-1e30"])
def test_non_finite_or_absurd_coordinates_named_others_listed(case, value):
  case.set_coordinate(value)
  listing = _read(case)
  if value == "nan" and case.nan_is_missing:
    assert len(listing) == case.faces   # read as "not annotated".
    assert not listing[0].visible[0]
    return
  assert len(listing) == case.faces - 1, _problems(listing)
  [problem] = [p for p in listing.problems if "unusable landmarks" in
               p.message]
  assert problem.path == case.bad_file and problem.line == case.bad_line
  if "e30" not in value:
    expected = "non-finite coordinates (NaN or inf)"
  elif case.knows_size:
    expected = "lies more than 10 image sides outside"
  else:
    expected = "lies farther than 1e+06 px from the origin"
  assert expected in problem.message, problem.message


def test_a_field_too_few_is_named_others_listed(case):
  if case.drop_field is None:
    pytest.skip(f"{case.name}: no line fields (a MATLAB / HDF5 array)")
  case.drop_field()
  listing = _read(case)
  assert len(listing) == case.faces - 1, _problems(listing)
  [problem] = [p for p in listing.problems
               if (p.path, p.line) == (case.bad_file, case.bad_line)]
  assert re.search("malformed|landmarks, expected|keypoints must be|2D point",
                   problem.message), problem.message


def test_empty_annotation_is_named_and_list_faces_says_what_is_expected(
    case, capsys):
  path = (case.texts + case.binaries)[0]
  open(path, "wb").close()
  result = _read(case)
  if isinstance(result, errors.UserError):     # the one file of the set.
    assert path in str(result) and re.search("(?i)expected", str(result))
    return
  assert any(p.path == path for p in result.problems), _problems(result)
  one_per_file = case.name in ("300w", "pts", "300vw", "aflw2000_3d")
  assert len(result) == (case.faces - 1 if one_per_file else 0)
  if not one_per_file:          # nothing usable: the layout, and the file.
    with pytest.raises(errors.UserError, match="no usable faces.*Expected "
                       "layout"):
      readers.list_faces(case.name, case.root, case.split, **case.options)
    assert f"{path}: no " in capsys.readouterr().out


def test_annotation_replaced_by_a_symlink_loop_or_a_folder(case):
  path = (case.texts + case.binaries)[0]
  for how in ("loop", "folder"):
    original = open(path, "rb").read() if os.path.isfile(path) else None
    if how == "loop":
      _loop(path)
    else:
      _remove(path)
      os.makedirs(path)
    result = _read(case)
    if isinstance(result, errors.UserError):
      assert path in str(result) and re.search(
          "symbolic link|folder|does not exist", str(result)), str(result)
    else:
      assert len(result) == case.faces - 1
      assert any(p.path == path for p in result.problems), _problems(result)
    _remove(path)
    _remove(path + "~")
    open(path, "wb").write(original)


@pytest.mark.parametrize("how", sorted(IMAGE_DAMAGE))
def test_damaged_image_is_named_and_decoding_stays_lazy(case, how):
  if not case.images:
    pytest.skip(f"{case.name}: images are inside the annotation file")
  rng = np.random.RandomState(0)
  bad = case.images[0]
  _damage_image(bad, how, rng)
  on_exists, on_verify = IMAGE_DAMAGE[how]
  listing = _read(case)                     # check_images="exists"
  if on_exists is None:                     # listed; decoding names it.
    assert len(listing) == case.faces
    [record] = [r for r in listing if r.image_path == bad]
    with pytest.raises((ValueError, OSError), match=re.escape(
        os.path.basename(bad))):
      record.load_image()
  else:
    assert len(listing) == case.faces - 1
    [problem] = [p for p in listing.problems if bad in p.message or
                 p.path == bad]
    assert on_exists in problem.message
  listing = _read(case, check_images="verify")
  assert len(listing) == case.faces - 1, _problems(listing)
  [problem] = [p for p in listing.problems if bad in p.message or
               p.path == bad]
  assert on_verify in problem.message, problem.message


def test_binary_lines_are_named_and_the_others_read(tmp_path):
  case = case_wflw(str(tmp_path / "set"))
  path = case.texts[0]
  lines = open(path, "rb").read().split(b"\n")
  lines.insert(1, b"\xff\xfe\x00 garbage \x80")
  open(path, "wb").write(b"\n".join(lines))
  listing = _read(case)
  assert len(listing) == case.faces
  [problem] = listing.problems
  assert (problem.path, problem.line) == (path, 2)
  assert "not UTF-8 text" in problem.message
  # Line numbers after it are kept: a malformed line 4 is reported as 4.
  lines.insert(3, b"1 2 3")
  open(path, "wb").write(b"\n".join(lines))
  listing = _read(case)
  assert [p.line for p in listing.problems] == [2, 4]
  # A whole file of random bytes: reported in a bounded number of lines.
  open(path, "wb").write(np.random.RandomState(0).bytes(200_000))
  listing = _read(case)
  assert len(listing) == 0
  [problem] = listing.problems
  assert problem.path == path and "not a text file" in problem.message
  # Many binary lines in a mostly text file: the first ones one by one.
  lines = open(path, "rb").read().split(b"\n")
  good = [l for l in case_wflw(str(tmp_path / "again")).texts]
  text = open(good[0], "rb").read().split(b"\n")
  open(path, "wb").write(b"\n".join(text * 10 + [b"\xff"] * 12))
  listing = _read(case)
  assert len(listing) == case.faces * 10
  assert len(listing.problems) == common.MAX_BINARY_LINE_REPORTS + 1
  assert "2 more lines that are not UTF-8 text" in _problems(listing)


def test_one_wrong_point_count_skipped_a_wrong_set_raises(tmp_path):
  case = case_300w(str(tmp_path / "set"))
  pts_lib.write_pts(case.texts[0], np.ones((51, 2)) * 5)
  listing = _read(case)
  assert len(listing) == 1
  assert f"{case.texts[0]}: 51 landmarks, expected 68" in _problems(listing)
  pts_lib.write_pts(case.texts[1], np.ones((51, 2)) * 5)
  with pytest.raises(errors.UserError, match="no face has 68 landmarks"):
    readers.read_dataset("300w", case.root, "challenge")


def test_face_problem_bounds():
  points = np.array([[1.0, 2.0], [3.0, 4.0]])
  assert common.face_problem(points) is None
  assert common.face_problem(points, size=(4, 5)) is None
  # 10 image sides outside is still a label; farther is not.
  assert common.face_problem([[-40.0, 2.0], [44.0, 4.0]], size=(4, 5)) is None
  assert "10 image sides" in common.face_problem([[-40.1, 2.0]], size=(4, 5))
  assert "1e+06 px" in common.face_problem([[2e6, 1.0]])
  assert "NaN or inf" in common.face_problem([[np.nan, 1.0], [1.0, 1.0]])
  assert common.face_problem([[np.nan, 1.0], [1.0, 1.0]],
                             visible=[False, True]) is None
  assert "no finite" in common.face_problem([[np.nan, np.nan]],
                                            visible=[False])
  assert "box" in common.face_problem(points, box=[0, 0, np.inf, 1])
  assert "box has 3 values" in common.face_problem(points, box=[0, 0, 1])
  assert "scale" in common.face_problem(points, scale=-1.0)
  assert "scale" in common.face_problem(points, scale=float("nan"))
  assert "centre" in common.face_problem(points, center=[1e9, 0])
  assert "shape" in common.face_problem(np.zeros((0, 2)))


# -------------------------------------------------------------- fuzzer ----

def _text_mutations(data: bytes, rng: np.random.RandomState, count: int):
  """`count` seeded mutations of a text file: (kind, new bytes)."""
  kinds = ("random", "random_text", "empty", "truncate", "drop_token",
           "add_token", "bad_number", "binary_line", "drop_line",
           "duplicate_line", "swap_lines", "flip_bytes", "nul", "crlf", "cr",
           "bom", "latin1", "long_line")
  for k in range(count):
    kind = kinds[k % len(kinds)]
    lines = data.split(b"\n")
    full = [i for i, l in enumerate(lines) if l.strip()] or [0]
    i = full[rng.randint(len(full))]
    tokens = re.split(rb"([\s,]+)", lines[i])
    numeric = [j for j, t in enumerate(tokens)
               if re.fullmatch(rb"-?[0-9.]+(e-?[0-9]+)?", t)] or [0]
    if kind == "random":
      new = rng.bytes(int(rng.randint(1, 3000)))
    elif kind == "random_text":
      alphabet = np.array(list(b"0123456789.,- \t\nabcxyz{}:nainf"))
      new = bytes(alphabet[rng.randint(len(alphabet),
                                       size=int(rng.randint(1, 2000)))])
    elif kind == "empty":
      new = b""
    elif kind == "truncate":
      new = data[:int(rng.randint(0, max(len(data), 1)))]
    elif kind == "drop_token":
      j = numeric[rng.randint(len(numeric))]
      lines[i] = b"".join(tokens[:j] + tokens[j + 2:])
      new = b"\n".join(lines)
    elif kind == "add_token":
      lines[i] = lines[i] + (b"\t" if b"\t" in lines[i] else b" ") + b"7"
      new = b"\n".join(lines)
    elif kind == "bad_number":
      j = numeric[rng.randint(len(numeric))]
      tokens[j] = HOSTILE_NUMBERS[rng.randint(len(HOSTILE_NUMBERS))].encode()
      lines[i] = b"".join(tokens)
      new = b"\n".join(lines)
    elif kind == "binary_line":
      lines.insert(i, rng.bytes(60))
      new = b"\n".join(lines)
    elif kind == "drop_line":
      del lines[i]
      new = b"\n".join(lines)
    elif kind == "duplicate_line":
      lines.insert(i, lines[i])
      new = b"\n".join(lines)
    elif kind == "swap_lines":
      j = full[rng.randint(len(full))]
      lines[i], lines[j] = lines[j], lines[i]
      new = b"\n".join(lines)
    elif kind == "flip_bytes":
      buf = bytearray(data)
      for _ in range(int(rng.randint(1, 8))):
        if buf:
          buf[rng.randint(len(buf))] ^= 1 << int(rng.randint(8))
      new = bytes(buf)
    elif kind == "nul":
      at = int(rng.randint(0, len(data) + 1))
      new = data[:at] + b"\x00" + data[at:]
    elif kind == "crlf":
      new = data.replace(b"\n", b"\r\n")
    elif kind == "cr":
      new = data.replace(b"\n", b"\r")
    elif kind == "bom":
      new = b"\xef\xbb\xbf" + data
    elif kind == "latin1":
      lines[i] = lines[i] + b" caf\xe9"
      new = b"\n".join(lines)
    else:  # long_line
      lines.insert(i, b"9" * 100_000)
      new = b"\n".join(lines)
    yield kind, new


def _binary_mutations(data: bytes, rng: np.random.RandomState, count: int):
  """Seeded mutations of a binary / structured file: (kind, new bytes)."""
  kinds = ("random", "empty", "truncate", "flip_bytes", "zero_block",
           "header_only")
  for k in range(count):
    kind = kinds[k % len(kinds)]
    buf = bytearray(data)
    if kind == "random":
      new = rng.bytes(int(rng.randint(1, 5000)))
    elif kind == "empty":
      new = b""
    elif kind == "truncate":
      new = data[:int(rng.randint(0, max(len(data), 1)))]
    elif kind == "flip_bytes":
      for _ in range(int(rng.randint(1, 16))):
        buf[rng.randint(len(buf))] ^= 1 << int(rng.randint(8))
      new = bytes(buf)
    elif kind == "zero_block":
      at = int(rng.randint(len(buf)))
      buf[at:at + 256] = bytes(len(buf[at:at + 256]))
      new = bytes(buf)
    else:  # header_only
      new = data[:128]
    yield kind, new


def _json_mutations(rng: np.random.RandomState, count: int):
  """Values to put where a JSON file expects numbers or objects."""
  values = [None, "x", [], {}, [[]], [1, 2], True, 1e308, -1e308,
            float("nan"), float("inf"), "1e30", [None] * 3, [[1, 2, 3]] * 5,
            {"a": 1}, 10 ** 30]
  for k in range(count):
    yield values[(k + int(rng.randint(len(values)))) % len(values)]


def _mutate_json(path, value, rng):
  """Puts `value` at a random place of a JSON annotation."""
  with open(path) as f:
    content = json.load(f)

  def places(node, trail):
    yield trail
    if isinstance(node, dict):
      for key, child in node.items():
        yield from places(child, trail + [key])
    elif isinstance(node, list):
      for index, child in enumerate(node[:4]):
        yield from places(child, trail + [index])

  spots = list(places(content, []))[1:]
  trail = spots[rng.randint(len(spots))]
  node = content
  for key in trail[:-1]:
    node = node[key]
  node[trail[-1]] = value
  with open(path, "w") as f:
    json.dump(content, f)


def _check_run(case, options):
  """One fuzzed read: a listing (with every problem printable) or a
  UserError; with "exists", decoding a listed image raises only what the
  pipeline reports (ValueError / OSError)."""
  result = _read(case, **options)
  if isinstance(result, errors.UserError):
    return
  if options.get("check_images", "exists") == "exists":
    for record in result:
      try:
        record.load_image()
      except (ValueError, OSError) as e:
        assert (os.path.basename(record.image_path) in str(e) or
                record.image_path in str(e)), str(e)


def _restore(path, data):
  _remove(path)
  _remove(path + "~")
  with open(path, "wb") as f:
    f.write(data)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fuzzed_files_never_raise_out_of_a_reader(tmp_path, name):
  case = CASES[name](str(tmp_path / "set"))
  rng = np.random.RandomState(sorted(CASES).index(name))
  modes = ("exists", "verify", "decode")
  runs = 0
  files = ([(p, _text_mutations, 36) for p in case.texts] +
           [(p, _binary_mutations, 18) for p in case.binaries])
  for path, mutations, count in files:
    data = open(path, "rb").read()
    for _, new in mutations(data, rng, count):
      with open(path, "wb") as f:
        f.write(new)
      _check_run(case, {"check_images": modes[runs % 3]})
      runs += 1
    _restore(path, data)
  for path in case.binaries:
    data = open(path, "rb").read()
    if path.endswith((".json", ".ljson")):
      for value in _json_mutations(rng, 24):
        _mutate_json(path, value, rng)
        _check_run(case, {"check_images": modes[runs % 3]})
        runs += 1
        _restore(path, data)
    _restore(path, data)
  for image in case.images[:2]:
    data = open(image, "rb").read()
    for how in sorted(IMAGE_DAMAGE) + ["truncated"]:
      _damage_image(image, how, rng)
      for mode in modes:
        _check_run(case, {"check_images": mode})
        runs += 1
      _restore(image, data)
  # Everything restored: the set reads as before.
  assert len(_read(case)) == case.faces
  assert runs >= 18

"""Dataset readers: one module per on-disk format, one entry point.

  listing = read_dataset("wflw", "/data/WFLW", "test_pose")
  for record in listing: ...            # FaceRecords (data/records.py)
  print(listing.summary())              # counts + every skipped item
  listing.problems                      # [Problem(path, message, line)]

`list_faces(name, root, split, ...)` is what training and evaluation call: the
usable records of one split, skipped items printed by name, a UserError with
the expected layout when nothing is usable. `layout(name)` is that layout,
`resolve_root(path)` the one rule for dataset folders (`~` expanded, a
relative path taken from the working directory).

`read_dataset(name, root, split, **options) -> DatasetListing`. A
`DatasetListing` is a read-only sequence of `FaceRecord`s plus `problems`:
corrupt images (with `check_images="verify"` or `"decode"`), missing image
files, malformed annotation lines, faces with unusable numbers (a visible
point not finite, a coordinate absurdly far out: `common.check_face`) or
another landmark count than the set's are logged (logging.warning), listed
with file and line, and skipped. A missing folder raises FileNotFoundError
(`training.errors.MissingInputError`) naming the expected layout and the
official source; an annotation file that cannot be read, or a set where no
face has the set's landmark count, raises `training.errors.UserError`;
nothing else is raised for hostile files (tests/test_readers_fuzz.py). Input
files are only ever read.

Label sanity, option `sanity` (`SANITY_MODES`; checks in data/sanity.py):
  "skip" (default)  faces whose labels fail a check are listed in `problems`
                    (annotation file and line, image, reason) and left out;
  "keep"            listed in `problems` and kept in the listing;
  "off"             no check.
Every reader in `SANITY_READERS` runs the per-face checks (points finite and
inside the image, mouth below the eye line); the readers of pre-cropped sets
(`SET_CHECKED`) also run the per-set test (face position or scale a robust
outlier against the set's own median). Other readers do not check labels and
accept only `sanity="off"`; tfds sets were checked when they were built.

Names (module: what it reads; each module's docstring gives layout + source):
  wflw          wflw.py         list_98pt_rect_attr_*.txt + WFLW_images/
  300w          ibug_300w.py    iBUG .pts tree (+ bounding_boxes_*.mat)
  cofw          cofw.py         COFW_{train,test}_color.mat (HDF5)
  adnet_tsv     adnet_tsv.py    ADNet/STAR .tsv metadata (also written)
  300vw         vw300.py        <video>/annot/*.pts + extracted frames
  celeba        celeba.py       aligned CelebA + 5 landmarks
  mafl          mafl.py         MAFL lists over CelebA
  aflw_m        mtfl.py         MTFL training.txt / testing.txt
  aflw_r        aflw_r.py       DVE's recropped AFLW
  yt68          yt68.py         ../shared/data/yt68 csv
  mtfl          mtfl.py         ../shared/data/mtfl (training half only)
  pts           pts.py          a folder of images with .pts/.ljson sidecars
  aflw2000_3d   aflw2000_3d.py  AFLW2000-3D .mat (pt3d_68)
  coco_json     coco_json.py    mmpose COCO-style keypoint json
  synthetic     synthetic.py    procedural faces (data/synthetic), no files
  tfds:<name>   tfds_source.py  a set built by data.prepare (array_record),
                                root = the tfds data_dir
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, Dict, List, Optional, Tuple

from data.readers import common
from data.readers import tfds_source
from data.readers.common import DatasetListing  # pylint: disable=unused-import
from data.readers.common import IMAGE_CHECKS  # pylint: disable=unused-import
from data.readers.common import Problem  # pylint: disable=unused-import
from data.readers.common import SANITY_MODES  # pylint: disable=unused-import
from data.records import FaceRecord
from training import errors

# name -> (module, function); modules are imported on first use.
_READERS: Dict[str, Tuple[str, str]] = {
    "wflw": ("wflw", "read"),
    "300w": ("ibug_300w", "read"),
    "cofw": ("cofw", "read"),
    "adnet_tsv": ("adnet_tsv", "read"),
    "300vw": ("vw300", "read"),
    "celeba": ("celeba", "read"),
    "mafl": ("mafl", "read"),
    "aflw_m": ("mtfl", "read_aflw_m"),
    "aflw_r": ("aflw_r", "read"),
    "yt68": ("yt68", "read"),
    "mtfl": ("mtfl", "read_shared"),
    "pts": ("pts", "read_folder"),
    "aflw2000_3d": ("aflw2000_3d", "read"),
    "coco_json": ("coco_json", "read"),
    "synthetic": ("synthetic", "read"),
}

NAMES = tuple(_READERS)

# Readers with the `sanity` option; the second set also runs the set test.
SANITY_READERS = ("wflw", "300w", "cofw", "celeba", "mafl", "aflw_m", "yt68",
                  "mtfl")
SET_CHECKED = ("celeba", "mafl", "aflw_m", "yt68", "mtfl")
# Readers that generate their faces and read no folder.
NO_FILES = ("synthetic",)


def reader(name: str) -> Callable[..., DatasetListing]:
  """The read function registered as `name` (ValueError listing the names)."""
  if name not in _READERS:
    raise errors.UserError(
        f"unknown dataset {name!r}; expected one of {list(NAMES)} "
        "or 'tfds:<name>'")
  module, function = _READERS[name]
  return getattr(importlib.import_module(f"data.readers.{module}"), function)


def read_dataset(name: str, root: str, split: str, **options) -> DatasetListing:
  """Lists a dataset: `DatasetListing` (records + problems); see module doc.

  Args:
    name: a name of `NAMES`, or "tfds:<builder name>" for a set built with
      `python -m data.prepare` (then `root` is the tfds data_dir).
    root: the dataset folder (layout in the reader module's docstring).
    split: the split; each reader lists its own (ValueError otherwise).
    **options: reader options, e.g. `check_images` (`IMAGE_CHECKS`),
      `sanity` (`SANITY_MODES`, module doc).
  """
  if "check_images" in options:
    common.check_image_mode(options["check_images"])
  if "sanity" in options:
    common.check_sanity_mode(options["sanity"])
    if name not in SANITY_READERS:
      if options["sanity"] != "off":
        raise errors.UserError(
            f"{name}: the reader does not check labels; sanity="
            f"{options['sanity']!r} is available for {list(SANITY_READERS)}")
      options = {k: v for k, v in options.items() if k != "sanity"}
  if name.startswith("tfds:"):
    return tfds_source.read(name[len("tfds:"):], root, split, **options)
  return reader(name)(root, split, **options)


def layout(name: str) -> str:
  """The folder layout reader `name` expects (its module's LAYOUT)."""
  if name.startswith("tfds:"):
    return f"  {tfds_source.SOURCE}\n"
  if name not in _READERS:
    return f"(see data/readers; known datasets: {list(NAMES)})"
  module = importlib.import_module(f"data.readers.{_READERS[name][0]}")
  return getattr(module, "LAYOUT", "(see data/readers)")


def resolve_root(root: str) -> str:
  """A dataset folder with `~` expanded ("" stays "").

  A relative path is taken from the working directory, like every path
  argument (the configs' defaults, e.g. "../shared/data/yt68", are written
  for commands run from the repository root). It is not made absolute, so
  record paths, and what is keyed on them, do not depend on where the
  checkout lives.
  """
  return os.path.expanduser(root) if root else ""


def list_faces(name: str, root: str, split: str, *,
               num_points: Optional[int] = None,
               keep: Optional[Callable[[FaceRecord], bool]] = None,
               **options) -> List[FaceRecord]:
  """The usable faces of one split: what training and evaluation read.

  Skipped items (missing or corrupt images, malformed lines, implausible
  labels) are printed by name; the records left are returned.

  Args:
    name, root, split, **options: as `read_dataset`; `root` goes through
      `resolve_root`.
    num_points: the landmark count the caller's scheme expects, if any.
    keep: an optional filter over the listed records (e.g. a fixed split of
      one annotation file).

  Raises:
    UserError: `root` empty for a reader that reads files, no usable face
      left, or no face with `num_points` points (faces with another count
      among others are printed by name and skipped); each message gives the
      expected layout.
  """
  root = resolve_root(root)
  if not root and name not in NO_FILES:
    raise errors.UserError(
        f"config.data.root is empty: pass --config.data.root=/path/to/{name}."
        f" Expected layout:\n{layout(name)}")
  listing = read_dataset(name, root, split, **options)
  if listing.problems:
    print(listing.summary(), flush=True)
  records = [r for r in listing if keep is None or keep(r)]
  if not records:
    raise errors.UserError(
        f"{name} split {split!r} under {root or '(no folder)'} has no usable "
        f"faces (problems: {len(listing.problems)}). Expected layout:\n"
        f"{layout(name)}")
  if num_points is not None:
    other = [r for r in records if r.num_points != num_points]
    if len(other) == len(records):
      raise errors.UserError(
          f"{name} {split} has {records[0].num_points} points per face but "
          f"config.data.scheme has {num_points}")
    for r in other:
      print(f"skipped {r.image_path}: {r.num_points} landmarks, expected "
            f"{num_points}", flush=True)
    records = [r for r in records if r.num_points == num_points]
  return records

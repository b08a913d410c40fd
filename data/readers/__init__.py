"""Dataset readers: one module per on-disk format, one entry point.

  listing = read_dataset("wflw", "/data/WFLW", "test_pose")
  for record in listing: ...            # FaceRecords (data/records.py)
  print(listing.summary())              # counts + every skipped item
  listing.problems                      # [Problem(path, message, line)]

`read_dataset(name, root, split, **options) -> DatasetListing`. A
`DatasetListing` is a read-only sequence of `FaceRecord`s plus `problems`:
corrupt images (with `check_images="verify"` or `"decode"`), missing image
files, malformed annotation lines are logged (logging.warning), listed with
file and line, and skipped. A missing folder raises FileNotFoundError naming
the expected layout and the official source; a file with the wrong landmark
count for its set raises ValueError. Input files are only ever read.

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
  tfds:<name>   tfds_source.py  a set built by data.prepare (array_record),
                                root = the tfds data_dir
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple

from data.readers import common
from data.readers.common import DatasetListing  # pylint: disable=unused-import
from data.readers.common import IMAGE_CHECKS  # pylint: disable=unused-import
from data.readers.common import Problem  # pylint: disable=unused-import
from data.readers.common import SANITY_MODES  # pylint: disable=unused-import
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
}

NAMES = tuple(_READERS)

# Readers with the `sanity` option; the second set also runs the set test.
SANITY_READERS = ("wflw", "300w", "cofw", "celeba", "mafl", "aflw_m", "yt68",
                  "mtfl")
SET_CHECKED = ("celeba", "mafl", "aflw_m", "yt68", "mtfl")


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
    from data.readers import tfds_source  # pylint: disable=g-import-not-at-top
    return tfds_source.read(name[len("tfds:"):], root, split, **options)
  return reader(name)(root, split, **options)

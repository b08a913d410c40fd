"""300W (iBUG 300 Faces in-the-Wild): 68 points; registered as "300w".

Where the data comes from: https://ibug.doc.ic.ac.uk/resources/300-W/
(the afw, helen, lfpw and ibug archives with `.pts` files; the optional face
boxes are `bounding_boxes.zip` on
https://ibug.doc.ic.ac.uk/resources/facial-point-annotations/).

Expected layout under `root` (the iBUG folder tree):

  root/afw/<name>.jpg + <name>.pts
  root/helen/trainset/*.jpg + *.pts
  root/helen/testset/...
  root/lfpw/trainset/*.png + *.pts
  root/lfpw/testset/...
  root/ibug/*.jpg + *.pts
  root/Bounding Boxes/bounding_boxes_{afw,helen_trainset,helen_testset,
                       lfpw_trainset,lfpw_testset,ibug}.mat     (optional)

Splits (the usual protocol): "train" = afw + helen/trainset + lfpw/trainset
(3,148 faces), "common" = helen/testset + lfpw/testset (554), "challenge" =
ibug (135), "full" = common + challenge (689). A count that differs from these
is reported as a problem (an incomplete download), not raised.

Points: `.pts`, 1-based as written by iBUG; returned 0-based (see
`data/readers/pts.py`, option `one_based`, for the sources). Comparing with
public numbers: models trained and evaluated in one convention give the same
NME in the other (a common translation); but ground truth read here with the
default differs by exactly (1, 1) px from files that keep the values as
written (mmpose's json, PIPNet's lists), so mix predictions and ground truth
from the two only with `one_based=False`.

Boxes (`box_source`): "points" (default: the tight box of the 68 points, the
usual protocol), "ground_truth" or "detector" (from the iBUG bounding-box
files: a MATLAB struct array `bounding_boxes` with fields `imgName`,
`bb_detector`, `bb_ground_truth`, boxes `[x_min y_min x_max y_max]`, e.g.
`bb_detector: 396.5,444.5,684.5,708.5` for afw/823016568_2 as quoted in
trigeorgis/mdm issue #13; assumed to be in the points' 1-based frame (same
group, same tools; not stated by iBUG) and shifted like them).

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks of data/sanity.py (points inside the image, mouth below the eye line);
not the per-set position/scale test (faces anywhere in arbitrary photos).
"""

from __future__ import annotations

import glob
import os
from typing import Dict, Optional

import numpy as np

from data.readers import common
from data.readers import pts as pts_lib
from training import errors

NAME = "300w"
NUM_POINTS = 68
FOLDERS = {
    "train": ("afw", "helen/trainset", "lfpw/trainset"),
    "common": ("helen/testset", "lfpw/testset"),
    "challenge": ("ibug",),
    "full": ("helen/testset", "lfpw/testset", "ibug"),
}
OFFICIAL_COUNTS = {"train": 3148, "common": 554, "challenge": 135, "full": 689}
SPLITS = tuple(FOLDERS)
BOX_SOURCES = ("points", "ground_truth", "detector")
SOURCE = "https://ibug.doc.ic.ac.uk/resources/300-W/"
BOXES_SOURCE = "https://ibug.doc.ic.ac.uk/resources/facial-point-annotations/"
LAYOUT = """\
  root/afw/*.jpg + *.pts
  root/helen/{trainset,testset}/*.jpg + *.pts
  root/lfpw/{trainset,testset}/*.png + *.pts
  root/ibug/*.jpg + *.pts
  root/Bounding Boxes/bounding_boxes_*.mat   (only for box_source != "points")
"""


def bbox_file_name(folder: str) -> str:
  return "bounding_boxes_" + folder.replace("/", "_") + ".mat"


def read_bbox_file(path: str, one_based: bool = True) -> Dict[str, dict]:
  """Reads a bounding_boxes_*.mat: {image: {"detector", "ground_truth"}}."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    content = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
  except Exception as e:  # scipy raises MatReadError, OSError, ValueError...
    raise errors.UserError(f"{path}: not a readable MATLAB file "
                           f"({type(e).__name__}: {e})") from None
  if "bounding_boxes" not in content:
    raise errors.UserError(
        f"{path}: no variable 'bounding_boxes' "
        f"(has {[k for k in content if not k.startswith('__')]})")
  shift = 1.0 if one_based else 0.0
  boxes = {}
  try:
    for entry in np.atleast_1d(content["bounding_boxes"]):
      name = str(entry.imgName)
      boxes[name] = {
          key: np.asarray(getattr(entry, field), np.float64).reshape(4) - shift
          for key, field in (("detector", "bb_detector"),
                             ("ground_truth", "bb_ground_truth"))}
  except (AttributeError, TypeError, ValueError) as e:
    raise errors.UserError(
        f"{path}: expected a struct array 'bounding_boxes' with fields "
        f"imgName, bb_detector, bb_ground_truth (4 numbers each) "
        f"({type(e).__name__}: {e})") from None
  return boxes


def read(root: str, split: str, *, check_images: str = "exists",
         box_source: str = "points", bbox_dir: Optional[str] = None,
         one_based: bool = True,
         sanity: str = "skip") -> common.DatasetListing:
  """Lists 300W faces of `split` (see module docstring)."""
  common.check_split(NAME, split, SPLITS)
  common.check_sanity_mode(sanity)
  if box_source not in BOX_SOURCES:
    raise ValueError(f"box_source must be one of {BOX_SOURCES}, got "
                     f"{box_source!r}")
  common.require(root, NAME, LAYOUT, SOURCE)
  log = common.ProblemLog(NAME)
  counts = common.PointCount(NAME, NUM_POINTS)
  records, where = [], []
  for folder in FOLDERS[split]:
    folder_path = common.require(os.path.join(root, folder), NAME, LAYOUT,
                                 SOURCE)
    boxes = None
    if box_source != "points":
      bbox_path = os.path.join(bbox_dir or os.path.join(root, "Bounding Boxes"),
                               bbox_file_name(folder))
      common.require(bbox_path, NAME, LAYOUT, BOXES_SOURCE)
      boxes = read_bbox_file(bbox_path, one_based)
    subset = "ibug" if folder == "ibug" else folder.replace("/", "_")
    for path in sorted(glob.glob(os.path.join(folder_path, "*.pts"))):
      landmarks = pts_lib.read_pts_or_report(path, one_based, log)
      if landmarks is None:
        continue
      if not counts.accepts(landmarks, log, path):
        continue
      image_path = pts_lib.image_for(path)
      if image_path is None:
        log.add(path, "no image with the same name next to it")
        continue
      if not common.check_face(log, path, None, landmarks, image=image_path):
        continue
      if not common.check_image(image_path, check_images, log, None, path):
        continue
      if boxes is None:
        box = common.points_box(landmarks)
      else:
        entry = boxes.get(os.path.basename(image_path))
        if entry is None:
          log.add(path, f"no {box_source} box for "
                  f"{os.path.basename(image_path)!r} in "
                  f"{bbox_file_name(folder)}")
          continue
        box = entry[box_source]
        if not common.check_face(log, path, None, landmarks, image=image_path,
                                 box=box):
          continue
      records.append(common.make_record(
          image_path, landmarks, box=box, subset=subset))
      where.append((path, None))
  counts.check_some()
  records = common.apply_sanity(records, where, log, sanity, set_checks=False)
  expected = OFFICIAL_COUNTS[split]
  if len(records) + len(log.problems) != expected:
    log.add(root, f"split {split!r} has {len(records) + len(log.problems)} "
            f"annotated faces, the official 300W {split} has {expected} "
            "(incomplete download or a modified tree?)")
  return common.DatasetListing(records, log.problems, NAME, split)

"""The iBUG `.pts` landmark file (300W, 300VW, menpo), and folders of them.

Format (text):

  version: 1
  n_points: 68
  {
  x0 y0
  ...
  }

The iBUG annotations are written in MATLAB's 1-based pixel convention: menpo
(by the same group) assumes so and subtracts 1 on import (menpo/menpo
menpo/io/input/landmark.py, `pts_importer`), and an iBUG author confirms it
(trigeorgis/mdm issue #13: "the original *.pts were created by guys using
Matlab and thus 1-indexed"). We do the same by default (`one_based=True`):
returned points are `written - 1`, i.e. 0-based pixel centres as in
`data/records.py`.

Most public training code keeps the values as written: mmpose
(tools/dataset_converters/300vw2coco.py; its converted 300VW json equals the
.pts values, checked on the sample in ../shared/data/formats/mmpose/300vw)
and PIPNet (jhb86253817/PIPNet lib/preprocess.py). What the ADNet/STAR 300W
metadata did cannot be read from code (the .tsv files are downloads). Pass
`one_based=False` to keep the values as written. NME between predictions and
ground truth in the same convention is unaffected; comparing against
predictions or ground truth produced in the other convention adds a
(1, 1)-pixel offset to every point.

`read_folder` lists a folder of images that each have a `.pts` (or menpo
`.ljson`) file of the same stem, e.g. menpo's sample assets:

  root/einstein.jpg + root/einstein.pts
  root/lenna.png    + root/lenna.ljson
"""

from __future__ import annotations

import glob
import os
from typing import Optional

import numpy as np

from data.readers import common

NAME = "pts"
SOURCE = ("iBUG .pts files (https://ibug.doc.ic.ac.uk/resources/300-W/), "
          "menpo assets (https://github.com/menpo/menpo)")
LAYOUT = "  root/<name>.<jpg|png|...> next to root/<name>.pts or <name>.ljson\n"


def read_pts(path: str, one_based: bool = True) -> np.ndarray:
  """Reads a `.pts` file: float32 `[N, 2]` `(x, y)`; ValueError if malformed."""
  lines = [l.strip() for l in common.read_lines(path)]
  try:
    start = lines.index("{")
    end = lines.index("}", start)
  except ValueError:
    raise ValueError(
        f"{path}: not a .pts file (no '{{' ... '}}' block)") from None
  declared = None
  for line in lines[:start]:
    key, _, value = line.partition(":")
    if key.strip() == "n_points":
      try:
        declared = int(value)
      except ValueError:
        raise ValueError(f"{path}: bad n_points line {line!r}") from None
  points = []
  for number, line in enumerate(lines[start + 1:end], start=start + 2):
    if not line:
      continue
    fields = line.split()
    try:
      if len(fields) != 2:
        raise ValueError(f"expected 'x y', got {line!r}")
      points.append(common.parse_floats(fields))
    except ValueError as e:
      raise ValueError(f"{path}:{number}: {e}") from None
  points = np.array(points, np.float64).reshape(-1, 2)
  if declared is not None and declared != points.shape[0]:
    raise ValueError(f"{path}: n_points says {declared} but the file lists "
                     f"{points.shape[0]} points")
  if one_based:
    points = points - 1.0
  with np.errstate(over="ignore"):  # beyond float32: inf, rejected later.
    return points.astype(np.float32)


def read_pts_or_report(path: str, one_based: bool, log) -> Optional[np.ndarray]:
  """`read_pts`, or None after adding a "malformed annotation" problem to `log`."""
  try:
    return read_pts(path, one_based)
  except ValueError as e:
    log.add(path, f"malformed annotation: {e}")
    return None


def write_pts(path: str, landmarks: np.ndarray, one_based: bool = True) -> None:
  """Writes `[N, 2]` points as a `.pts` file (adds 1 back when `one_based`)."""
  points = np.asarray(landmarks, np.float64) + (1.0 if one_based else 0.0)
  with open(path, "w") as f:
    f.write(f"version: 1\nn_points: {points.shape[0]}\n{{\n")
    for x, y in points:
      f.write(f"{x:.6f} {y:.6f}\n")
    f.write("}\n")


def image_with_stem(stem: str) -> Optional[str]:
  """`stem + ext` for the first image extension there, or None.

  "There" includes a symbolic link that does not resolve, so that the
  reader's image check reports it by name (dangling, or a loop) instead of
  "no image".
  """
  for ext in common.IMAGE_EXTENSIONS:
    for candidate in (stem + ext, stem + ext.upper()):
      if os.path.lexists(candidate):
        return candidate
  return None


def image_for(annotation_path: str) -> Optional[str]:
  """The image with the same stem as an annotation file, or None."""
  return image_with_stem(os.path.splitext(annotation_path)[0])


def read_folder(root: str, split: str = "all", *, check_images: str = "exists",
                one_based: bool = True, num_points: Optional[int] = None,
                ljson_group: Optional[str] = None) -> common.DatasetListing:
  """Lists every image in `root` annotated by a `.pts` or `.ljson` sidecar.

  Boxes are the tight box of the points. `split` only labels the records.
  A file whose point count differs from `num_points` is reported and
  skipped; UserError when no file has `num_points` points.
  """
  from data.readers import ljson  # pylint: disable=g-import-not-at-top
  common.require(root, NAME, LAYOUT, SOURCE)
  log = common.ProblemLog(NAME)
  records = []
  paths = sorted(glob.glob(os.path.join(root, "*.pts")) +
                 glob.glob(os.path.join(root, "*.ljson")))
  counts = common.PointCount(NAME, num_points)
  for path in paths:
    try:
      if path.endswith(".pts"):
        landmarks = read_pts(path, one_based)
        visible = None
      else:
        landmarks, visible = ljson.read_ljson(path, ljson_group)
    except ValueError as e:
      log.add(path, f"malformed annotation: {e}")
      continue
    if not counts.accepts(landmarks, log, path):
      continue
    image_path = image_for(path)
    if image_path is None:
      log.add(path, "no image with the same name next to it")
      continue
    if not common.check_face(log, path, None, landmarks, image=image_path,
                             visible=visible):
      continue
    if not common.check_image(image_path, check_images, log, None, path):
      continue
    records.append(common.make_record(
        image_path, landmarks, visible=visible,
        box=common.points_box(landmarks, visible), subset=split))
  counts.check_some()
  return common.DatasetListing(records, log.problems, NAME, split)

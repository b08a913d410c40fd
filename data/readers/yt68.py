"""yt68: YouTube-Faces frames with 68 iBUG points (../shared/data/yt68).

Where the data comes from: udacity/P1_Facial_Keypoints (MIT licence; frames
from the YouTube Faces dataset, for research use); see
../shared/data/README.md.

Expected layout under `root`:

  root/train.csv     header `,0,1,...,135`, then `path,x0,y0,...,x67,y67`
  root/val.csv       (242 / 35 identities; 2,951 / 422 faces)
  root/images/<path>

Splits: "train", "val" (split by identity). Any other split name reads
`root/<split>.csv` in the same format, so a csv of your own (with its frames
under `root/images/`) is evaluated with `--config.data.root=DIR` and
`--config.data.eval_splits='("<split>",)'`. Points are 68 iBUG/300W points in
pixels of the frame, used as written. The set has no face boxes: each box is
the tight box of the 68 points (the usual 300W protocol), derived here.

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks and the per-set position/scale test of data/sanity.py (the frames are
loose crops around one face, so faces sit at similar places and scales).
"""

from __future__ import annotations

import os

from data.readers import common

NAME = "yt68"
NUM_POINTS = 68
SPLITS = ("train", "val")
SOURCE = ("../shared/data/yt68 (from udacity/P1_Facial_Keypoints; "
          "see ../shared/data/README.md)")
LAYOUT = """\
  root/train.csv, root/val.csv   (path,x0,y0,...,x67,y67 after a header row)
  root/images/<path>
"""


def parse_row(text: str):
  """`path,x0,y0,...` -> (path, float64 [68, 2]); ValueError if malformed."""
  fields = text.split(",")
  if len(fields) != 1 + 2 * NUM_POINTS:
    raise ValueError(f"expected a path and {2 * NUM_POINTS} numbers, got "
                     f"{len(fields)} fields")
  return fields[0], common.parse_floats(fields[1:]).reshape(NUM_POINTS, 2)


def read(root: str, split: str, *, check_images: str = "exists",
         sanity: str = "skip") -> common.DatasetListing:
  """Lists yt68 faces of `split`; boxes are derived from the points."""
  if not split or os.sep in split or split.endswith(".csv"):
    raise ValueError(f"{NAME}: split must be a csv file stem such as "
                     f"{list(SPLITS)} (reads root/<split>.csv); got {split!r}")
  common.require(root, NAME, LAYOUT, SOURCE)
  path = common.require(os.path.join(root, f"{split}.csv"), NAME, LAYOUT,
                        SOURCE)
  image_dir = common.require(os.path.join(root, "images"), NAME, LAYOUT, SOURCE)
  common.check_sanity_mode(sanity)
  log = common.ProblemLog(NAME)
  records, where = [], []
  rows = common.parsed_lines(common.read_lines(path, log), parse_row, log,
                             path, first_line=2)  # line 1: the header
  for number, (name, landmarks) in rows:
    image_path = os.path.join(image_dir, name)
    if not common.check_face(log, path, number, landmarks, image=image_path):
      continue
    if not common.check_image(image_path, check_images, log, number, path):
      continue
    records.append(common.make_record(
        image_path, landmarks, box=common.points_box(landmarks), subset=split))
    where.append((path, number))
  records = common.apply_sanity(records, where, log, sanity, set_checks=True)
  return common.DatasetListing(records, log.problems, NAME, split)

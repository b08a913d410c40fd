"""CelebA, aligned images with 5 landmarks (202,599 faces).

Where the data comes from: https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html
(`Img/img_align_celeba.zip`, `Anno/list_landmarks_align_celeba.txt`,
`Eval/list_eval_partition.txt`; Liu et al., ICCV 2015).

Expected layout under `root` (as the download's folders):

  root/Img/img_align_celeba/000001.jpg ...     (178 x 218 aligned images)
  root/Anno/list_landmarks_align_celeba.txt
  root/Eval/list_eval_partition.txt

(the two .txt files may also sit directly in `root`, and the images in
`root/img_align_celeba/`).

`list_landmarks_align_celeba.txt`: line 1 the face count, line 2 the column
names, then `name lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y
leftmouth_x leftmouth_y rightmouth_x rightmouth_y` (pixels of the aligned
image). `list_eval_partition.txt`: `name 0|1|2` (train / val / test).
Splits: "train", "val", "test", "all". No boxes (aligned images): the
SCE-MAE/DVE protocol crops a fixed window instead (data.transforms).

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks and the per-set position/scale test of data/sanity.py (aligned faces
sit at one place and scale); the image sizes come from the image headers.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np

from data.readers import common

NAME = "celeba"
NUM_POINTS = 5
SPLITS = ("train", "val", "test", "all")
PARTITION = {"train": 0, "val": 1, "test": 2}
SOURCE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
LAYOUT = """\
  root/Img/img_align_celeba/000001.jpg ...
  root/Anno/list_landmarks_align_celeba.txt
  root/Eval/list_eval_partition.txt
"""


def find(root: str, *relative_candidates: str) -> str:
  """The first existing `root/<candidate>`, else FileNotFoundError."""
  return common.find_first([os.path.join(root, c) for c in relative_candidates],
                           NAME, LAYOUT, SOURCE)


def landmarks_file(root: str) -> str:
  """`list_landmarks_align_celeba.txt` under `root/Anno/` or `root/`."""
  return find(root, os.path.join("Anno", "list_landmarks_align_celeba.txt"),
              "list_landmarks_align_celeba.txt")


def image_folder(root: str) -> str:
  """`root/Img/img_align_celeba/` or `root/img_align_celeba/`."""
  return find(root, os.path.join("Img", "img_align_celeba"),
              "img_align_celeba")


def read_landmarks(path: str, log: common.ProblemLog
                   ) -> Dict[str, Tuple[np.ndarray, int]]:
  """Parses list_landmarks_align_celeba.txt: {name: ([5, 2] points, line)}."""
  faces = {}
  # Line 1: the face count; line 2: the column names.
  for number, (name, points) in common.parsed_lines(
      common.read_lines(path, log), _parse_landmark_line, log, path,
      first_line=3,
      what="landmark line"):
    faces[name] = (points, number)
  return faces


def _parse_landmark_line(text: str):
  fields = text.split()
  if len(fields) != 1 + 2 * NUM_POINTS:
    raise ValueError(f"expected a name and {2 * NUM_POINTS} numbers, got "
                     f"{len(fields)} fields")
  return fields[0], common.parse_floats(fields[1:]).reshape(NUM_POINTS, 2)


def _parse_partition_line(text: str):
  fields = text.split()
  if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
    raise ValueError(f"expected 'name 0|1|2', got {text!r}")
  return fields[0], int(fields[1])


def read_partition(path: str, log: common.ProblemLog) -> Dict[str, int]:
  """Parses list_eval_partition.txt: {name: 0 train | 1 val | 2 test}."""
  return dict(value for _, value in common.parsed_lines(
      common.read_lines(path, log), _parse_partition_line, log, path,
      what="partition line"))


def listing_from_names(names, faces, landmarks_path: str, image_dir: str,
                       check_images: str, log: common.ProblemLog,
                       dataset: str, split: str,
                       sanity: str = "skip") -> common.DatasetListing:
  """Records for `names` (in order) from CelebA's aligned landmarks."""
  records, where = [], []
  for name in names:
    if name not in faces:
      log.add(landmarks_path, f"no landmarks for {name!r}")
      continue
    points, number = faces[name]
    image_path = os.path.join(image_dir, name)
    if not common.check_face(log, landmarks_path, number, points,
                             image=image_path):
      continue
    if not common.check_image(image_path, check_images, log, number,
                              landmarks_path):
      continue
    records.append(common.make_record(image_path, points, subset=split))
    where.append((landmarks_path, number))
  records = common.apply_sanity(records, where, log, sanity, set_checks=True)
  return common.DatasetListing(records, log.problems, dataset, split)


def read(root: str, split: str, *, check_images: str = "exists",
         image_dir: Optional[str] = None,
         sanity: str = "skip") -> common.DatasetListing:
  """Lists aligned CelebA faces of `split` (see module docstring)."""
  common.check_split(NAME, split, SPLITS)
  common.check_sanity_mode(sanity)
  common.require(root, NAME, LAYOUT, SOURCE)
  landmarks_path = landmarks_file(root)
  image_dir = image_dir or image_folder(root)
  log = common.ProblemLog(NAME)
  faces = read_landmarks(landmarks_path, log)
  if split == "all":
    names = list(faces)
  else:
    partition_path = find(root, os.path.join("Eval", "list_eval_partition.txt"),
                          "list_eval_partition.txt")
    partition = read_partition(partition_path, log)
    names = [n for n, p in partition.items() if p == PARTITION[split]]
  return listing_from_names(names, faces, landmarks_path, image_dir,
                            check_images, log, NAME, split, sanity)

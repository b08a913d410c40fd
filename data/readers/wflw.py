"""WFLW (Wider Facial Landmarks in the Wild): 98 points, 10,000 faces.

Where the data comes from: https://wywu.github.io/projects/LAB/WFLW.html
(`WFLW_images.tar.gz` and `WFLW_annotations.tar.gz`, Wu et al., CVPR 2018).

Expected layout under `root` (the two archives extracted side by side):

  root/
    WFLW_images/<event folder>/<image>.jpg       e.g. 0--Parade/0_Parade_...jpg
    WFLW_annotations/list_98pt_rect_attr_train_test/
      list_98pt_rect_attr_train.txt                 7,500 faces
      list_98pt_rect_attr_test.txt                  2,500 faces

(the two .txt files may also sit in `root/` or `root/WFLW_annotations/`).

Annotation line (whitespace separated, 207 fields): 196 coordinates
`x0 y0 ... x97 y97`, the face rectangle `x_min y_min x_max y_max`, six 0/1
attribute flags `pose expression illumination make-up occlusion blur`, and the
image path relative to `WFLW_images/`.

Coordinates are used as written (no shift). The public code does the same
and treats them as 0-based pixel centres, our convention (data/records.py):
STAR/ADNet flip WFLW and 300W points as `x -> w - 1 - x`
(ZhenglinZhou/STAR lib/dataset/augmentation.py, `Flip`, offset -1 for 68/98
points) and normalise crops with "[-0.5, SIZE-0.5] -> [-1, 1]"
(lib/dataset/alignmentDataset.py `_norm_points`); HRNet
(HRNet/HRNet-Facial-Landmark-Detection lib/datasets/wflw.py) adds 1 before its
1-based `transform_pixel` and subtracts it after; mmpose
(tools/dataset_converters/wflw2coco.py) copies the values unchanged. The WFLW
release itself does not state its pixel convention.

Splits: "train", "test", and the six test subsets the WFLW protocol reports,
selected by the attribute flags: "test_pose", "test_expression",
"test_illumination", "test_makeup", "test_occlusion", "test_blur". WFLW has no
per-point occlusion, so `visible` is all True (the occlusion flag is per face,
in `attributes`).

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks of data/sanity.py (points inside the image, mouth below the eye line);
not the per-set position/scale test (faces anywhere in arbitrary photos).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from data.readers import common

NAME = "wflw"
NUM_POINTS = 98
ATTRIBUTES = ("pose", "expression", "illumination", "makeup", "occlusion",
              "blur")
SPLITS = ("train", "test") + tuple(f"test_{a}" for a in ATTRIBUTES)
SOURCE = "https://wywu.github.io/projects/LAB/WFLW.html"
LAYOUT = """\
  root/WFLW_images/<event folder>/<image>.jpg
  root/WFLW_annotations/list_98pt_rect_attr_train_test/
      list_98pt_rect_attr_{train,test}.txt
"""
FIELDS_PER_LINE = 2 * NUM_POINTS + 4 + len(ATTRIBUTES) + 1


def annotation_file(root: str, part: str) -> str:
  """Finds `list_98pt_rect_attr_{part}.txt` under `root` or raises."""
  name = f"list_98pt_rect_attr_{part}.txt"
  candidates = [
      os.path.join(root, "WFLW_annotations", "list_98pt_rect_attr_train_test",
                   name),
      os.path.join(root, "WFLW_annotations", name),
      os.path.join(root, name),
  ]
  return common.find_first(candidates, NAME, LAYOUT, SOURCE)


def parse_line(text: str) -> dict:
  """Parses one annotation line; raises ValueError saying what is wrong."""
  fields = text.split()
  if len(fields) != FIELDS_PER_LINE:
    raise ValueError(
        f"expected {FIELDS_PER_LINE} fields (196 coordinates, 4 box values, "
        f"6 attribute flags, image path), got {len(fields)}")
  numbers = common.parse_floats(fields[:-1])
  flags = numbers[2 * NUM_POINTS + 4:]
  if not np.all((flags == 0) | (flags == 1)):
    raise ValueError(f"attribute flags must be 0 or 1, got {flags.tolist()}")
  return dict(
      landmarks=numbers[:2 * NUM_POINTS].reshape(NUM_POINTS, 2),
      box=numbers[2 * NUM_POINTS:2 * NUM_POINTS + 4],
      attributes={a: int(f) for a, f in zip(ATTRIBUTES, flags)},
      path=fields[-1])


def format_line(landmarks: np.ndarray, box, attributes, path: str) -> str:
  """Writes one annotation line in the official format (for fixtures/tools)."""
  numbers = list(np.asarray(landmarks, np.float64).reshape(-1)) + list(box)
  flags = [int(attributes[a]) for a in ATTRIBUTES]
  return " ".join([f"{v:.6f}" for v in numbers] + [str(f) for f in flags] +
                  [path])


def read(root: str, split: str, *, check_images: str = "exists",
         image_dir: Optional[str] = None,
         sanity: str = "skip") -> common.DatasetListing:
  """Lists WFLW faces of `split` (see module docstring).

  Args:
    root: the folder holding `WFLW_images/` and `WFLW_annotations/`.
    split: one of `SPLITS`.
    check_images: see `common.IMAGE_CHECKS`.
    image_dir: images folder if not `root/WFLW_images`.
    sanity: see `common.SANITY_MODES`.
  """
  common.check_split(NAME, split, SPLITS)
  common.require(root, NAME, LAYOUT, SOURCE)
  part = "train" if split == "train" else "test"
  path = annotation_file(root, part)
  image_dir = image_dir or os.path.join(root, "WFLW_images")
  common.require(image_dir, NAME, LAYOUT, SOURCE)
  subset_flag = split[len("test_"):] if split.startswith("test_") else None
  common.check_sanity_mode(sanity)
  log = common.ProblemLog(NAME)
  records, where = [], []
  for number, face in common.parsed_lines(common.read_lines(path, log),
                                          parse_line, log, path):
    if subset_flag is not None and not face["attributes"][subset_flag]:
      continue
    image_path = os.path.join(image_dir, face["path"])
    if not common.check_face(log, path, number, face["landmarks"],
                             image=image_path, box=face["box"]):
      continue
    if not common.check_image(image_path, check_images, log, number, path):
      continue
    records.append(common.make_record(
        image_path, face["landmarks"], box=face["box"],
        attributes=face["attributes"], subset=split))
    where.append((path, number))
  records = common.apply_sanity(records, where, log, sanity, set_checks=False)
  return common.DatasetListing(records, log.problems, NAME, split)

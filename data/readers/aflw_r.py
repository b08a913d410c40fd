"""AFLW_R: the recropped AFLW of the DVE / contrast-landmark papers, 5 points.

Where the data comes from: `aflw-recrop.tar.gz` released with DVE
(Thewlis et al., ICCV 2019),
http://www.robots.ox.ac.uk/~vgg/research/DVE/data/datasets/aflw-recrop.tar.gz
(described in github.com/jamt9000/DVE, misc/datasets/aflw-recrop/README.md);
also used by cvl-umass/contrast-landmark.

Expected layout under `root` (as the tar extracts), written from DVE's `AFLW`
loader (data_loader/data_loaders.py):

  root/aflw_train_images.txt        one image name per line
  root/aflw_test_images.txt
  root/aflw_train_keypoints.mat     `gt` [N, 5, 2] points in (y, x) order,
  root/aflw_test_keypoints.mat      `hw` [N, 2] image (height, width)
  root/output/<image name>          the recropped images

Points are returned as `(x, y)` (the loader swaps `gt[..., [1, 0]]`) in pixels
of the recropped image, as written (DVE then rescales them by
`width / hw`). Splits: "train" (10,122 faces in the DVE release) and "test"
(2,995). `hw` is kept in `attributes` as "height"/"width"; boxes: tight box
of the points.
"""

from __future__ import annotations

import os

import numpy as np

from data.readers import common
from training import errors

NAME = "aflw_r"
NUM_POINTS = 5
SPLITS = ("train", "test")
SOURCE = ("DVE's aflw-recrop.tar.gz: "
          "http://www.robots.ox.ac.uk/~vgg/research/DVE/data/datasets/"
          "aflw-recrop.tar.gz (github.com/jamt9000/DVE)")
LAYOUT = """\
  root/aflw_{train,test}_images.txt
  root/aflw_{train,test}_keypoints.mat   (gt [N, 5, 2] as (y, x); hw [N, 2])
  root/output/<image names>
"""


def read(root: str, split: str, *,
         check_images: str = "exists") -> common.DatasetListing:
  """Lists AFLW_R faces of `split` (see module docstring)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  common.check_split(NAME, split, SPLITS)
  common.require(root, NAME, LAYOUT, SOURCE)
  names_path = common.require(os.path.join(root, f"aflw_{split}_images.txt"),
                              NAME, LAYOUT, SOURCE)
  mat_path = common.require(os.path.join(root, f"aflw_{split}_keypoints.mat"),
                            NAME, LAYOUT, SOURCE)
  image_dir = common.require(os.path.join(root, "output"), NAME, LAYOUT, SOURCE)
  log = common.ProblemLog(NAME)
  names = [l.strip() for l in common.read_lines(names_path, log)]
  while names and not names[-1]:
    names.pop()
  problem = common.file_problem(mat_path)
  if problem is not None:
    raise errors.UserError(f"{NAME}: cannot read {mat_path!r}: it {problem}")
  try:
    content = scipy.io.loadmat(mat_path)
  except Exception as e:  # scipy raises MatReadError, OSError, ValueError...
    raise errors.UserError(f"{NAME}: cannot read {mat_path!r} as a MATLAB "
                           f"file ({type(e).__name__}: {e})") from None
  if "gt" not in content or "hw" not in content:
    raise errors.UserError(f"{NAME}: {mat_path!r} must hold 'gt' and 'hw'")
  try:
    gt = np.asarray(content["gt"], np.float64)
    hw = np.asarray(content["hw"], np.float64).reshape(-1, 2)
  except (TypeError, ValueError) as e:
    raise errors.UserError(f"{NAME}: {mat_path}: gt and hw must be numeric "
                           f"arrays ({e})") from None
  if gt.ndim != 3 or gt.shape[1:] != (NUM_POINTS, 2):
    raise errors.UserError(f"{NAME}: {mat_path}: gt has shape {gt.shape}, "
                           f"expected [N, {NUM_POINTS}, 2]")
  if not gt.shape[0] == hw.shape[0] == len(names):
    # The names and the arrays pair up by position: one missing line shifts
    # every face after it, so no pairing can be trusted.
    raise errors.UserError(
        f"{NAME}: {len(names)} names in {names_path} but {gt.shape[0]} faces "
        f"in gt and {hw.shape[0]} in hw of {mat_path}; expected one image "
        "name per line for each face (they pair up by position). Expected "
        f"layout:\n{LAYOUT}")
  records = []
  for number, (name, points_yx, (h, w)) in enumerate(zip(names, gt, hw),
                                                      start=1):
    if not name:
      log.add(names_path, "empty image name", number)
      continue
    landmarks = points_yx[:, ::-1]
    image_path = os.path.join(image_dir, name)
    if not (np.isfinite(h) and np.isfinite(w) and 0 < h <= common.MAX_COORDINATE
            and 0 < w <= common.MAX_COORDINATE):
      log.add(mat_path, f"image {image_path!r}: hw of face {number} is "
              f"({float(h):g}, {float(w):g}), expected a positive height "
              "and width")
      continue
    if not common.check_face(log, names_path, number, landmarks,
                             image=image_path):
      continue
    if not common.check_image(image_path, check_images, log, number,
                              names_path):
      continue
    records.append(common.make_record(
        image_path, landmarks, box=common.points_box(landmarks),
        attributes={"height": int(h), "width": int(w)}, subset=split))
  return common.DatasetListing(records, log.problems, NAME, split)

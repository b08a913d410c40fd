"""AFLW2000-3D `.mat` annotations (68 points fitted by 3DDFA), 2,000 faces.

Where the data comes from:
http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm
(`AFLW2000-3D.zip`; Zhu et al., CVPR 2016).

Expected layout under `root`: `root/imageNNNNN.jpg` next to
`root/imageNNNNN.mat`. Each .mat (MATLAB v5, scipy.io.loadmat) holds
`pt3d_68` [3, 68] (rows x, y, z in image pixels), `pt2d` [2, 21] (the
original AFLW 21 points, -1 where absent), `roi` and 3DMM parameters.
Landmarks: the x, y rows of `pt3d_68`, used as written; `attributes["z"]`
keeps the depth row ([68] float32). Boxes: tight box of the 68 points.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from data.readers import common

NAME = "aflw2000_3d"
NUM_POINTS = 68
SOURCE = ("http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm "
          "(AFLW2000-3D.zip)")
LAYOUT = "  root/imageNNNNN.jpg + root/imageNNNNN.mat (pt3d_68 [3, 68])\n"


def read_mat(path: str) -> np.ndarray:
  """Returns `pt3d_68` as float64 `[68, 3]` (x, y, z)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    content = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises MatReadError, OSError, ValueError...
    raise ValueError(f"{path}: not a readable MATLAB file "
                     f"({type(e).__name__}: {e})") from None
  if "pt3d_68" not in content:
    raise ValueError(f"{path}: no 'pt3d_68' variable")
  try:
    points = np.asarray(content["pt3d_68"], np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: pt3d_68 is not a numeric array ({e})") from None
  if points.shape != (3, NUM_POINTS):
    raise ValueError(f"{path}: pt3d_68 has shape {points.shape}, expected "
                     f"(3, {NUM_POINTS})")
  return points.T


def read(root: str, split: str = "test", *,
         check_images: str = "exists") -> common.DatasetListing:
  """Lists every annotated image in `root` (`split` only labels records)."""
  common.require(root, NAME, LAYOUT, SOURCE)
  log = common.ProblemLog(NAME)
  records = []
  for path in sorted(glob.glob(os.path.join(root, "*.mat"))):
    try:
      points = read_mat(path)
    except ValueError as e:
      log.add(path, f"malformed annotation: {e}")
      continue
    image_path = os.path.splitext(path)[0] + ".jpg"
    landmarks = points[:, :2]
    if not common.check_face(log, path, None, landmarks, image=image_path):
      continue
    if not common.check_image(image_path, check_images, log, None, path):
      continue
    records.append(common.make_record(
        image_path, landmarks, box=common.points_box(landmarks),
        attributes={"z": points[:, 2].astype(np.float32)}, subset=split))
  return common.DatasetListing(records, log.problems, NAME, split)

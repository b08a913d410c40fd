"""MAFL (Multi-Attribute Facial Landmark): a CelebA subset, 5 points.

Where the data comes from: the MAFL image lists of Zhang et al. (TCDCN,
http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html) over CelebA
(https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html); the unsupervised-landmark
papers (DVE, SCE-MAE) use the aligned CelebA images and landmarks for them.

Expected layout under `root` (a CelebA root, see celeba.py, plus):

  root/MAFL/training.txt    19,000 image names, one per line (e.g. 000001.jpg)
  root/MAFL/testing.txt      1,000 image names

Splits: "train", "test". Landmarks and images come from CelebA's aligned set.
Label sanity (`sanity`): as celeba.py.
"""

from __future__ import annotations

import os
from typing import Optional

from data.readers import celeba
from data.readers import common

NAME = "mafl"
SPLITS = ("train", "test")
FILES = {"train": "training.txt", "test": "testing.txt"}
SOURCE = ("MAFL lists (http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html) over "
          "CelebA (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html)")
LAYOUT = celeba.LAYOUT + "  root/MAFL/training.txt, root/MAFL/testing.txt\n"


def read(root: str, split: str, *, check_images: str = "exists",
         image_dir: Optional[str] = None,
         sanity: str = "skip") -> common.DatasetListing:
  """Lists MAFL faces of `split` with CelebA's aligned landmarks."""
  common.check_split(NAME, split, SPLITS)
  common.check_sanity_mode(sanity)
  common.require(root, NAME, LAYOUT, SOURCE)
  list_path = common.require(os.path.join(root, "MAFL", FILES[split]), NAME,
                             LAYOUT, SOURCE)
  landmarks_path = celeba.landmarks_file(root)
  image_dir = image_dir or celeba.image_folder(root)
  log = common.ProblemLog(NAME)
  names = [l.split()[0] for l in common.read_lines(list_path, log)
           if l.strip()]
  faces = celeba.read_landmarks(landmarks_path, log)
  return celeba.listing_from_names(names, faces, landmarks_path, image_dir,
                                   check_images, log, NAME, split, sanity)

"""COCO-style keypoint json, as mmpose ships its face sets (300W, WFLW, ...).

Where the data comes from: mmpose's converted annotations
(https://mmpose.readthedocs.io/en/latest/dataset_zoo/2d_face_keypoint.html).

Expected layout: `root/<annotation>.json` with image paths (`file_name`)
relative to `root` (or `image_dir`). The json holds `images` (`id`,
`file_name`, `width`, `height`) and `annotations` (`image_id`, `keypoints`
flattened `x, y, v` per point, `bbox` `[x, y, w, h]`, optional `center`,
`scale`). Points as written. mmpose's `scale` is in units of 200 px like
ADNet's, so it is kept as `scale`.

Visibility (`visibility` option): COCO's `v` is 0 unlabelled, 1 labelled but
not visible, 2 visible; mmpose's face files use either all 1 (300W, WFLW,
300VW: "labelled", no occlusion information) or 1/2 (COFW: 1 = occluded).
"auto" (default) applies COCO's meaning (`v == 2`) to an annotation that uses
the value 2 and `v > 0` otherwise; "coco" and "labelled" force one rule.
A `null` coordinate is read as NaN and that point is not visible.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from data.readers import common

NAME = "coco_json"
SOURCE = ("mmpose face keypoint annotations (https://mmpose.readthedocs.io/"
          "en/latest/dataset_zoo/2d_face_keypoint.html)")
LAYOUT = "  root/<split>.json (COCO keypoints) + root/<file_name of images>\n"


VISIBILITY = ("auto", "coco", "labelled")


def visible_from_v(v: np.ndarray, visibility: str = "auto") -> np.ndarray:
  """The visible flags of COCO `v` values under a `VISIBILITY` rule."""
  if visibility not in VISIBILITY:
    raise ValueError(f"visibility must be one of {VISIBILITY}, got "
                     f"{visibility!r}")
  if visibility == "coco" or (visibility == "auto" and np.any(v == 2)):
    return v == 2
  return v > 0


def read(root: str, split: str, *, image_dir: Optional[str] = None,
         num_points: Optional[int] = None, visibility: str = "auto",
         check_images: str = "exists") -> common.DatasetListing:
  """Lists the faces of `root/<split>` (`split` is the json file name).

  A face whose keypoint count differs from `num_points` (default: that of the
  first face) raises ValueError.
  """
  common.require(root, NAME, LAYOUT, SOURCE)
  name = split if split.endswith(".json") else split + ".json"
  path = common.require(os.path.join(root, name), NAME, LAYOUT, SOURCE)
  image_dir = image_dir or root
  with open(path, "r", encoding="utf-8") as f:
    try:
      content = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{NAME}: {path} is not valid JSON ({e})") from None
  images = {im["id"]: im for im in content.get("images", [])}
  log = common.ProblemLog(NAME)
  records = []
  for i, ann in enumerate(content.get("annotations", [])):
    where = f"annotation {i} (id {ann.get('id')})"
    try:
      keypoints = np.asarray(ann.get("keypoints", []), np.float64)
    except (TypeError, ValueError):
      keypoints = np.zeros(0)
    if keypoints.ndim != 1 or keypoints.size == 0 or keypoints.size % 3:
      log.add(path, f"{where}: keypoints must be a flat list of numbers, "
              "x, y, v triples")
      continue
    keypoints = keypoints.reshape(-1, 3)
    if num_points is None:
      num_points = keypoints.shape[0]
    common.check_num_points(keypoints, num_points, f"{path} {where}", NAME)
    image = images.get(ann.get("image_id"))
    if image is None or "file_name" not in image:
      log.add(path, f"{where}: no image with id {ann.get('image_id')} and a "
              "file_name")
      continue
    image_path = os.path.join(image_dir, image["file_name"])
    if not common.check_image(image_path, check_images, log, None, path):
      continue
    try:
      box = common.xywh_to_box(ann["bbox"]) if "bbox" in ann else None
      record = common.make_record(
          image_path, keypoints[:, :2],
          visible=(visible_from_v(keypoints[:, 2], visibility) &
                   np.all(np.isfinite(keypoints[:, :2]), axis=-1)), box=box,
          center=ann.get("center"), scale=ann.get("scale"),
          subset=os.path.splitext(name)[0], image_key=ann.get("id"))
    except (TypeError, ValueError) as e:
      log.add(path, f"{where}: bbox must be 4 numbers [x, y, w, h], center 2 "
              f"numbers, scale a number ({type(e).__name__}: {e})")
      continue
    records.append(record)
  return common.DatasetListing(records, log.problems, NAME, split)

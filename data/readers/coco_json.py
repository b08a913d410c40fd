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
A `null` coordinate is read as NaN and that point is not visible. A face
whose visible points are infinite (JSON 1e400, Infinity) or absurdly far
out, or whose bbox / center / scale are not finite, is reported and skipped
(`common.check_face`), as is an entry that is not COCO-shaped.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from data.readers import common
from training import errors

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


def _numbers(value, count: Optional[int] = None) -> Optional[np.ndarray]:
  """`value` as a flat float64 array (of `count` values), or None if not."""
  try:
    values = np.asarray(value, np.float64).reshape(-1)
  except (TypeError, ValueError, OverflowError):
    return None
  if count is not None and values.size != count:
    return None
  return values


def _image_size(image: dict) -> Optional[tuple]:
  """`(width, height)` of an `images` entry when both are numbers > 0."""
  size = _numbers([image.get("width"), image.get("height")], 2)
  if size is None or not np.all(np.isfinite(size)) or np.any(size <= 0):
    return None
  return float(size[0]), float(size[1])


def read(root: str, split: str, *, image_dir: Optional[str] = None,
         num_points: Optional[int] = None, visibility: str = "auto",
         check_images: str = "exists") -> common.DatasetListing:
  """Lists the faces of `root/<split>` (`split` is the json file name).

  A face whose keypoint count differs from `num_points` (default: the most
  common count in the file) is reported and skipped; UserError when no face
  has it. An entry of another shape than COCO's (not an object, no numbers
  where numbers belong) is reported with its index and skipped; a file that
  is not a JSON object with `images` and `annotations` lists raises
  UserError.
  """
  visible_from_v(np.zeros(0), visibility)  # Checks the option first.
  common.require(root, NAME, LAYOUT, SOURCE)
  name = split if split.endswith(".json") else split + ".json"
  path = common.require(os.path.join(root, name), NAME, LAYOUT, SOURCE)
  image_dir = image_dir or root
  content = common.read_json(path, "a COCO keypoint object with "
                             "'images' and 'annotations' lists")
  if not isinstance(content, dict):
    raise errors.UserError(f"{NAME}: {path} holds a JSON "
                           f"{type(content).__name__}, expected an object "
                           "with 'images' and 'annotations'")
  entries = {}
  for key in ("images", "annotations"):
    entries[key] = content.get(key, [])
    if not isinstance(entries[key], list):
      raise errors.UserError(f"{NAME}: {path}: {key!r} is a "
                             f"{type(entries[key]).__name__}, expected a list")
  log = common.ProblemLog(NAME)
  images = {}
  for i, im in enumerate(entries["images"]):
    if (not isinstance(im, dict) or not isinstance(im.get("id"), (int, str))
        or not isinstance(im.get("file_name"), str) or not im["file_name"]):
      log.add(path, f"images[{i}]: expected an object with an integer or "
              "string 'id' and a 'file_name'")
      continue
    images[im["id"]] = im

  def keypoints_of(ann) -> Optional[np.ndarray]:
    keypoints = _numbers(ann.get("keypoints", []))
    if keypoints is None or keypoints.size == 0 or keypoints.size % 3:
      return None
    return keypoints.reshape(-1, 3)

  annotations = entries["annotations"]
  if num_points is None:
    num_points = common.most_common_count(
        [k.shape[0] for k in (keypoints_of(a) for a in annotations
                              if isinstance(a, dict)) if k is not None])
  counts = common.PointCount(NAME, num_points)
  records = []
  for i, ann in enumerate(annotations):
    if not isinstance(ann, dict):
      log.add(path, f"annotation {i}: expected an object, got "
              f"{type(ann).__name__}")
      continue
    where = f"annotation {i} (id {ann.get('id')!r:.40})"
    keypoints = keypoints_of(ann)
    if keypoints is None:
      log.add(path, f"{where}: keypoints must be a flat list of numbers, "
              "x, y, v triples")
      continue
    if not counts.accepts(keypoints, log, path, what=where):
      continue
    image_id = ann.get("image_id")
    image = (images.get(image_id) if isinstance(image_id, (int, str))
             else None)
    if image is None:
      log.add(path, f"{where}: no image with id {image_id!r:.40} and a "
              "file_name")
      continue
    image_path = os.path.join(image_dir, image["file_name"])
    # null (NaN) = not annotated; an infinite value is a broken label and
    # stays "visible", so that check_face rejects the face by name.
    visible = (visible_from_v(keypoints[:, 2], visibility) &
               ~np.any(np.isnan(keypoints[:, :2]), axis=-1))
    box = None
    if "bbox" in ann:
      xywh = _numbers(ann["bbox"], 4)
      if xywh is None:
        log.add(path, f"{where}: bbox must be 4 numbers [x, y, w, h]")
        continue
      box = np.array([xywh[0], xywh[1], xywh[0] + xywh[2], xywh[1] + xywh[3]])
    center = ann.get("center")
    if center is not None and _numbers(center, 2) is None:
      log.add(path, f"{where}: center must be 2 numbers")
      continue
    problem = common.face_problem(
        keypoints[:, :2], visible=visible, box=box, center=center,
        scale=ann.get("scale"), size=_image_size(image))
    if problem is not None:
      log.add(path, f"{where}: image {image_path!r}: unusable landmarks: "
              f"{problem}")
      continue
    if not common.check_image(image_path, check_images, log, None, path):
      continue
    records.append(common.make_record(
        image_path, keypoints[:, :2], visible=visible, box=box,
        center=center, scale=ann.get("scale"),
        subset=os.path.splitext(name)[0], image_key=ann.get("id")))
  counts.check_some()
  return common.DatasetListing(records, log.problems, NAME, split)

"""Synthetic face records: the annotation of each face plus a lazy renderer."""

from __future__ import annotations

import math
from typing import List

import numpy as np

from data import records
from data.synthetic import geometry
from data.synthetic import render
from training import errors

SUBSET = "synthetic"


def make_records(num_faces: int, seed: int, image_size: int = 128,
                 contour_noise: float = 0.0,
                 point_noise: float = 0.0) -> List[records.FaceRecord]:
  """`num_faces` synthetic face records; images render on demand.

  Args:
    num_faces: number of records (record i is face `(seed, i)`).
    seed: data set seed.
    image_size: square image side in pixels (>= 32).
    contour_noise: std of the tangential annotation noise on the contour
      points 0-16, in units of the inter-ocular distance (0 = true points).
    point_noise: std of the isotropic annotation noise on all points, same
      units.

  Returns:
    `FaceRecord`s with `landmarks` = annotation (true + noise), `box` = the
    bounding box of the TRUE points, `subset` "synthetic", `image_key` = i,
    attributes `yaw`/`pitch`/`roll` (degrees, floats), and a picklable
    `SyntheticImageLoader` as `image_loader`.

  Raises:
    UserError: for a negative or non-integer `num_faces`, an `image_size`
      under 32 or a negative or non-finite noise std.
  """
  if not isinstance(num_faces, (int, np.integer)) or num_faces < 0:
    raise errors.UserError(
        f"num_faces must be an integer >= 0, got {num_faces!r}")
  geometry.check_image_size(image_size)
  for name, value in (("contour_noise", contour_noise),
                      ("point_noise", point_noise)):
    if not math.isfinite(value) or value < 0:
      raise errors.UserError(
          f"{name} is a standard deviation in inter-ocular units and must be "
          f"finite and >= 0, got {value!r}")
  loader = render.SyntheticImageLoader(seed=int(seed),
                                       image_size=int(image_size))
  out = []
  for i in range(int(num_faces)):
    g = geometry.face_geometry(seed, i, image_size)
    points = geometry.annotate(g.landmarks, seed, i, contour_noise,
                               point_noise)
    box = np.concatenate([g.landmarks.min(0), g.landmarks.max(0)])
    out.append(records.FaceRecord(
        image_path=f"synthetic://seed={int(seed)}/size={int(image_size)}/{i}",
        landmarks=points,
        visible=np.ones(geometry.NUM_POINTS, bool),
        box=box.astype(np.float32),
        attributes={"yaw": g.yaw, "pitch": g.pitch, "roll": g.roll},
        subset=SUBSET,
        image_key=i,
        image_loader=loader))
  return out

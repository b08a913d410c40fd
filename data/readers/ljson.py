"""menpo's landmark JSON (`.ljson`, versions 2 and 3; menpo/landmarker.io).

Version 3 layout (version 2 has the same `landmarks` block at top level):

  {"version": 3,
   "groups": {"<group>": {"landmarks": {"points": [[a, b], ...],
                                        "connectivity": [...]},
                          "labels": [{"label": "jaw", "mask": [0, ...]}, ...]}}}

Points are stored in menpo's own axis order `(y, x)` (row, column) and 0-based,
which the sample `lenna.ljson` confirms (its two pupils share the first
coordinate). `null` coordinates mean a missing point: returned as NaN with
`visible=False`. We return `(x, y)`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from data.readers import common


def read_ljson(path: str,
               group: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
  """Returns `(landmarks [N, 2] (x, y) float32, visible [N] bool)` of one group.

  Args:
    path: the .ljson file.
    group: group name (version 3); default the first group in the file.
  """
  content = common.read_json(path, "a menpo .ljson landmark object")
  if not isinstance(content, dict):
    raise ValueError(f"{path}: expected a JSON object")
  version = content.get("version")
  try:
    if version == 3:
      groups = content.get("groups", {})
      if not groups:
        raise ValueError(f"{path}: no landmark groups")
      if group is None:
        group = next(iter(groups))
      if group not in groups:
        raise ValueError(f"{path}: no group {group!r}; has {list(groups)}")
      points = groups[group]["landmarks"]["points"]
    elif version == 2:
      points = content["landmarks"]["points"]
    else:
      raise ValueError(f"{path}: unsupported ljson version {version!r} "
                       "(expected 2 or 3)")
    yx = np.array([[np.nan if v is None else float(v) for v in p]
                   for p in points], np.float64)
  except (KeyError, TypeError, ValueError, OverflowError) as e:
    raise ValueError(f"{path}: expected landmarks.points as a list of 2D "
                     f"points ({type(e).__name__}: {e})") from None
  if yx.ndim != 2 or yx.shape[1] != 2:
    raise ValueError(f"{path}: expected 2D points, got shape {yx.shape}")
  with np.errstate(over="ignore"):  # beyond float32: inf, rejected later.
    landmarks = yx[:, ::-1].astype(np.float32)
  # null (NaN) = not annotated; inf is a broken value, left "visible" so the
  # reader's check rejects the face by name.
  visible = ~np.any(np.isnan(landmarks), axis=-1)
  return landmarks, visible

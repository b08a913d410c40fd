"""Landmark schemes: point count, left/right flip permutation, edges, normalisers.

A scheme says what the N points of a dataset mean. The edge groups (the curves
the STAR/ADNet boundary maps are drawn along) and the flip pairs follow the
public STAR code (ZhenglinZhou/STAR, `conf/alignment.py`: `edge_info`,
`flip_mapping`), written here in our own representation:

  * `edges[e]` is the tuple of point indices of edge e, ordered along the curve;
    `edge_closed[e]` says whether the curve closes on itself (eyes, lips).
  * `flip_permutation[i]` is the index of the point that becomes point i after
    a horizontal flip (`flipped = points[perm]` with x mirrored). Points not in
    any public flip pair (on the symmetry axis) map to themselves.

Known quirk kept from the public code: COFW's "left eye" edge (9, 14, 11, 15) is
open while the right eye (8, 12, 10, 13) is closed.

Usage:
  scheme = get_scheme(68)
  scheme.edges               # 9 tuples of point indices
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np

from training import errors


@dataclasses.dataclass(frozen=True)
class LandmarkScheme:
  """What the points of one annotation format mean.

  Attributes:
    name: "wflw98", "300w68", "cofw29" or "five5".
    num_points: N.
    flip_permutation: `[N]` ints; after a horizontal flip point i is the mirror
      of old point `flip_permutation[i]`. An involution.
    edges: E tuples of point indices, each ordered along its curve.
    edge_closed: E bools, True where the curve is closed.
    edge_names: E names ("contour", "right_brow", ...), for plots and logs.
    ocular: `(a, b)` the outer-eye-corner indices (inter-ocular normaliser).
    pupils: `((...), (...))` the indices averaged into each pupil centre
      (inter-pupil normaliser; a single index where the set annotates pupils).
    default_norm: "ocular" or "pupil": the normaliser the papers report with.
  """

  name: str
  num_points: int
  flip_permutation: Tuple[int, ...]
  edges: Tuple[Tuple[int, ...], ...]
  edge_closed: Tuple[bool, ...]
  edge_names: Tuple[str, ...]
  ocular: Tuple[int, int]
  pupils: Tuple[Tuple[int, ...], Tuple[int, ...]]
  default_norm: str = "ocular"

  @property
  def num_edges(self) -> int:
    return len(self.edges)

  def flip_landmarks(self, landmarks: np.ndarray, width: float) -> np.ndarray:
    """Mirrors `[..., N, 2]` points of an image `width` px wide (pixel centres).

    x -> (width - 1) - x, then the left/right points are swapped with
    `flip_permutation`, so flipping twice is the identity.
    """
    landmarks = np.asarray(landmarks)
    out = landmarks[..., np.asarray(self.flip_permutation), :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def _permutation_from_pairs(num_points: int,
                            pairs: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
  perm = list(range(num_points))
  for i, j in pairs:
    if perm[i] != i or perm[j] != j:
      raise ValueError(f"point {i} or {j} appears in two flip pairs")
    perm[i], perm[j] = j, i
  return tuple(perm)


def _range(a: int, b: int) -> Tuple[int, ...]:
  return tuple(range(a, b))


# WFLW, 98 points. Pupils 96, 97.
_WFLW_FLIP_PAIRS = (
    [(i, 32 - i) for i in range(16)]  # contour
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42),
       (38, 50), (39, 49), (40, 48), (41, 47)]  # brows
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68),
       (65, 75), (66, 74), (67, 73)]  # eyes
    + [(55, 59), (56, 58)]  # nostrils
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84)]  # outer lip
    + [(88, 92), (89, 91), (95, 93), (96, 97)])  # inner lip, pupils

_WFLW = LandmarkScheme(
    name="wflw98",
    num_points=98,
    flip_permutation=_permutation_from_pairs(98, _WFLW_FLIP_PAIRS),
    edges=(_range(0, 33), _range(33, 42), _range(42, 51), _range(51, 55),
           _range(55, 60), _range(60, 68), _range(68, 76), _range(76, 88),
           _range(88, 96)),
    edge_closed=(False, True, True, False, False, True, True, True, True),
    edge_names=("contour", "right_brow", "left_brow", "nose_bridge",
                "nostrils", "right_eye", "left_eye", "outer_lip", "inner_lip"),
    ocular=(60, 72),
    pupils=((96,), (97,)),
    default_norm="ocular",
)

# 300W / iBUG, 68 points (also 300VW, yt68, menpo, AFLW2000-3D).
_IBUG_FLIP_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (61, 63), (60, 64), (67, 65),
       (58, 56), (59, 55)])  # lips

_IBUG = LandmarkScheme(
    name="300w68",
    num_points=68,
    flip_permutation=_permutation_from_pairs(68, _IBUG_FLIP_PAIRS),
    edges=(_range(0, 17), _range(17, 22), _range(22, 27), _range(27, 31),
           _range(31, 36), _range(36, 42), _range(42, 48), _range(48, 60),
           _range(60, 68)),
    edge_closed=(False, False, False, False, False, True, True, True, True),
    edge_names=("contour", "right_brow", "left_brow", "nose_bridge",
                "nostrils", "right_eye", "left_eye", "outer_lip", "inner_lip"),
    ocular=(36, 45),
    pupils=(_range(36, 42), _range(42, 48)),
    default_norm="ocular",
)

# COFW, 29 points. Pupils 16, 17; inter-ocular corners 8, 9.
_COFW_FLIP_PAIRS = ((0, 1), (4, 6), (2, 3), (5, 7), (8, 9), (10, 11), (12, 14),
                    (16, 17), (13, 15), (18, 19), (22, 23))

_COFW = LandmarkScheme(
    name="cofw29",
    num_points=29,
    flip_permutation=_permutation_from_pairs(29, _COFW_FLIP_PAIRS),
    edges=((0, 4, 2, 5), (1, 6, 3, 7), (8, 12, 10, 13), (9, 14, 11, 15),
           (18, 20, 19, 21), (22, 26, 23, 27), (22, 24, 23, 25)),
    edge_closed=(True, True, True, False, True, True, True),
    edge_names=("right_brow", "left_brow", "right_eye", "left_eye", "nose",
                "lower_lip", "upper_lip"),
    ocular=(8, 9),
    pupils=((16,), (17,)),
    default_norm="pupil",
)

# Five points, MTFL/CelebA order: left eye, right eye, nose, left mouth corner,
# right mouth corner. No edges (no boundary maps for 5-point sets).
_FIVE = LandmarkScheme(
    name="five5",
    num_points=5,
    flip_permutation=_permutation_from_pairs(5, ((0, 1), (3, 4))),
    edges=(),
    edge_closed=(),
    edge_names=(),
    ocular=(0, 1),
    pupils=((0,), (1,)),
    default_norm="ocular",
)

_SCHEMES = {s.num_points: s for s in (_WFLW, _IBUG, _COFW, _FIVE)}
_BY_NAME = {s.name: s for s in _SCHEMES.values()}
_BY_NAME.update({"wflw": _WFLW, "300w": _IBUG, "ibug": _IBUG, "cofw": _COFW,
                 "mtfl": _FIVE, "celeba": _FIVE, "yt68": _IBUG})


def get_scheme(num_points_or_name) -> LandmarkScheme:
  """Returns the scheme for 98, 68, 29 or 5 points (or a name like "wflw")."""
  if isinstance(num_points_or_name, str):
    key = num_points_or_name.lower()
    if key not in _BY_NAME:
      raise errors.UserError(f"unknown landmark scheme {num_points_or_name!r}; "
                             f"expected one of {sorted(_BY_NAME)}")
    return _BY_NAME[key]
  n = int(num_points_or_name)
  if n not in _SCHEMES:
    raise errors.UserError(
        f"no landmark scheme with {n} points; supported: "
        f"{sorted(_SCHEMES)} (WFLW 98, 300W 68, COFW 29, 5-point)")
  return _SCHEMES[n]


def normaliser_distance(scheme: LandmarkScheme, landmarks: np.ndarray,
                        kind: Optional[str] = None) -> np.ndarray:
  """Inter-ocular or inter-pupil distance of `[..., N, 2]` points -> `[...]`."""
  kind = kind or scheme.default_norm
  landmarks = np.asarray(landmarks, np.float64)
  if kind == "ocular":
    a, b = landmarks[..., scheme.ocular[0], :], landmarks[..., scheme.ocular[1], :]
  elif kind == "pupil":
    a = landmarks[..., list(scheme.pupils[0]), :].mean(axis=-2)
    b = landmarks[..., list(scheme.pupils[1]), :].mean(axis=-2)
  else:
    raise ValueError(f"normaliser kind must be 'ocular' or 'pupil', got {kind!r}")
  return np.linalg.norm(a - b, axis=-1)

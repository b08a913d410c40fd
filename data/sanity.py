"""Label sanity checks: catch broken copies of a landmark set while listing it.

Pure NumPy; the readers run it through `data.readers.common.apply_sanity` (the
`sanity` option of `read_dataset`). Two kinds of test:

Per face (`face_problems`, every set). Points marked not visible whose
coordinates are not finite count as "not annotated" (menpo .ljson writes them
so) and are ignored by every check.
  * finite: a visible point with a NaN/inf coordinate is a problem.
  * inside the image: every finite point must lie in the image, widened on
    each side by `tolerance` times that side (default 10 %: real sets
    annotate the hidden points of faces cut by the frame outside it). The
    image covers `[-0.5, W - 0.5] x [-0.5, H - 0.5]` (pixel centres at
    integers). Skipped when the image size is unknown.
  * eyes above the mouth, in the face's own frame: with `a`, `b` the centres of
    the eye on the image's left and on its right in an upright face (the
    scheme's `pupils`: 5-point 0/1, iBUG-68 36-41/42-47, WFLW 96/97, COFW
    16/17), `e = (a + b) / 2` and `m` the mouth centre (5-point 3, 4; iBUG-68
    48-67; WFLW 76-95; COFW 22-27), the cross product
    `(b - a) x (m - e) = (b - a).x (m - e).y - (b - a).y (m - e).x` must be
    positive in image coordinates (y down). It is invariant to in-plane
    rotation, so faces rolled by any angle pass; it fails when the mouth lies
    on the brow side of the eye line, or the eyes are swapped (a mirrored
    face whose points were not permuted). Skipped for unknown schemes, when a
    needed point is not finite, and for near-profile faces whose eye distance
    is under `min_eye_ratio` times the eye-to-mouth distance (the eye axis is
    then undefined).

Per set (`set_outliers`, sets of pre-cropped faces: MTFL, MAFL, CelebA
aligned, yt68 loose crops, where a face sits at a consistent place and scale
in its image). For each face, three numbers: the landmark centroid `x / W`
and `y / H`, and the log of the RMS distance of the points from their
centroid over `sqrt(W H)`. A face is an outlier in one of them when
`|v - median| > max(k * 1.4826 * MAD, floor)`: the robust z-score with a floor
that keeps the test from flagging the natural spread of a tight set (yawed
faces move the points' centroid, open mouths widen the spread). Floors: the
centroid may always move `position_floor` times the set's median RMS spread
(per axis, in image units); the scale may always differ by the factor
`scale_floor`. The floors also guard MAD = 0 (identical faces). Median and
MAD are then re-taken without the flagged faces, and the faces re-tested,
until the flags repeat (at most `rounds` rounds, and not once half the faces
are flagged): a block of broken faces widens the MAD and would otherwise hide
itself. The test assumes most faces are right. Faces are
compared with their own group (the reader passes e.g. the source folder when
a set mixes crops of two kinds), groups of fewer than `min_faces` faces are
not tested, and faces with per-face problems or an unknown image size are
left out of the statistics.

The test measures position and scale only, so it catches labels shifted or
scaled as a block (a broken conversion putting a quarter of the points on the
hair), not single misplaced points; in sets with a wide natural spread of
face positions (loose crops) only large shifts stand out.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import schemes as schemes_lib

# Mouth points per scheme name (the eyes are the scheme's `pupils`).
MOUTH = {
    "five5": (3, 4),
    "300w68": tuple(range(48, 68)),
    "wflw98": tuple(range(76, 96)),
    "cofw29": tuple(range(22, 28)),
}

OUTSIDE_TOLERANCE = 0.1
MIN_EYE_RATIO = 0.1
K = 8.0
MIN_FACES = 20
POSITION_FLOOR = 1.0
SCALE_FLOOR = 1.6
ROUNDS = 10
# MAD of a normal sample times this estimates its standard deviation.
MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True)
class Flag:
  """One face that fails a check: its index in the input, image, reasons."""
  index: int
  path: str
  reasons: Tuple[str, ...]

  @property
  def reason(self) -> str:
    return "; ".join(self.reasons)


@dataclasses.dataclass(frozen=True)
class SanityResult:
  """What `check_records` found: the flagged faces and the indices to keep."""
  flags: List[Flag]
  keep: List[int]

  @property
  def problems(self) -> List[Tuple[str, str]]:
    """`(image file, reason)` per flagged face."""
    return [(f.path, f.reason) for f in self.flags]


def scheme_for(num_points: int) -> Optional[schemes_lib.LandmarkScheme]:
  """The landmark scheme with `num_points` points, or None if unknown."""
  try:
    return schemes_lib.get_scheme(num_points)
  except ValueError:
    return None


def _finite(points: np.ndarray) -> np.ndarray:
  """`[N]` mask of the points with finite coordinates."""
  return np.all(np.isfinite(points), axis=-1)


def finite_problems(landmarks: np.ndarray,
                    visible: Optional[np.ndarray]) -> List[str]:
  """Reason if a point marked visible has a NaN/inf coordinate."""
  marked = np.ones(len(landmarks), bool) if visible is None else visible
  bad = np.flatnonzero(~_finite(landmarks) & marked)
  if bad.size:
    return [f"non-finite coordinates at visible points {bad.tolist()}"]
  return []


def outside_problems(landmarks: np.ndarray, size: Tuple[float, float],
                     tolerance: float = OUTSIDE_TOLERANCE) -> List[str]:
  """Reason if a finite point lies outside the image widened by `tolerance`."""
  width, height = (float(v) for v in size)
  slack = tolerance * np.array([width, height])
  low = -0.5 - slack
  high = np.array([width, height]) - 0.5 + slack
  points = np.asarray(landmarks, np.float64)
  finite = _finite(points)
  outside = finite & np.any((points < low) | (points > high), axis=-1)
  if not np.any(outside):
    return []
  first = int(np.flatnonzero(outside)[0])
  x, y = points[first]
  return [f"{int(outside.sum())} point(s) outside the {width:g}x{height:g} "
          f"image by more than {100 * tolerance:g}% of its side (point "
          f"{first} at ({x:.1f}, {y:.1f}))"]


def eye_mouth_problems(landmarks: np.ndarray,
                       scheme: Optional[schemes_lib.LandmarkScheme],
                       min_eye_ratio: float = MIN_EYE_RATIO) -> List[str]:
  """Reason if the mouth is not below the eye line (module doc: exact test)."""
  if scheme is None or scheme.name not in MOUTH:
    return []
  points = np.asarray(landmarks, np.float64)
  groups = (scheme.pupils[0], scheme.pupils[1], MOUTH[scheme.name])
  if not all(np.all(np.isfinite(points[list(g)])) for g in groups):
    return []
  left, right, mouth = (points[list(g)].mean(axis=0) for g in groups)
  eye_axis = right - left
  centre = (left + right) / 2
  down = mouth - centre
  if np.linalg.norm(eye_axis) < min_eye_ratio * np.linalg.norm(down):
    return []
  cross = eye_axis[0] * down[1] - eye_axis[1] * down[0]
  if cross > 0:
    return []
  return [f"mouth ({mouth[0]:.1f}, {mouth[1]:.1f}) is not below the eye line "
          f"({left[0]:.1f}, {left[1]:.1f}) -> ({right[0]:.1f}, "
          f"{right[1]:.1f}): eyes and mouth or left and right eye swapped?"]


def face_problems(landmarks, size: Optional[Tuple[float, float]] = None, *,
                  visible=None,
                  scheme: Optional[schemes_lib.LandmarkScheme] = None,
                  tolerance: float = OUTSIDE_TOLERANCE,
                  min_eye_ratio: float = MIN_EYE_RATIO) -> List[str]:
  """Every per-face reason (empty list: the face passes); see module doc.

  Args:
    landmarks: `[N, 2]` `(x, y)` pixels.
    size: `(width, height)` of the image, or None (then the inside-image test
      is skipped).
    visible: `[N]` bools or None (all visible).
    scheme: the landmark scheme, or None for "look it up by N".
    tolerance: how far outside the image a point may lie, as a fraction of the
      image side.
    min_eye_ratio: below this eye distance over eye-to-mouth distance the
      eye-line test is skipped.
  """
  points = np.asarray(landmarks, np.float64).reshape(-1, 2)
  if not np.any(_finite(points)):
    return ["no finite landmark"]
  visible = None if visible is None else np.asarray(visible, bool)
  reasons = finite_problems(points, visible)
  if size is not None:
    reasons += outside_problems(points, size, tolerance)
  scheme = scheme if scheme is not None else scheme_for(len(points))
  reasons += eye_mouth_problems(points, scheme, min_eye_ratio)
  return reasons


def face_measures(landmarks: np.ndarray,
                  size: Tuple[float, float]) -> np.ndarray:
  """`[centroid x / W, centroid y / H, log(RMS spread / sqrt(W H)), spread]`.

  The last entry, the RMS spread in pixels, is used for the position floor.
  """
  points = np.asarray(landmarks, np.float64)
  points = points[_finite(points)]
  width, height = (float(v) for v in size)
  centroid = points.mean(axis=0)
  spread = np.sqrt(np.mean(np.sum((points - centroid) ** 2, axis=-1)))
  return np.array([centroid[0] / width, centroid[1] / height,
                   np.log(max(spread, 1e-9) / np.sqrt(width * height)),
                   spread])


def robust_outliers(values: np.ndarray, k: float, floor: float,
                    reference: Optional[np.ndarray] = None
                    ) -> Tuple[np.ndarray, float, float]:
  """`|v - median| > max(k * 1.4826 * MAD, floor)`: mask, median, threshold.

  Median and MAD are taken over `values[reference]` (all values if None);
  every value is tested.
  """
  values = np.asarray(values, np.float64)
  ref = values if reference is None else values[reference]
  median = float(np.median(ref))
  mad = float(np.median(np.abs(ref - median)))
  threshold = max(k * MAD_TO_SIGMA * mad, floor)
  return np.abs(values - median) > threshold, median, threshold


def _group_tests(measures: np.ndarray, sizes: np.ndarray, reference: np.ndarray,
                 k: float, position_floor: float, scale_floor: float):
  """The three `robust_outliers` results (x, y, scale) for one group."""
  spread = measures[reference, 3]
  floors = (position_floor * np.median(spread / sizes[reference, 0]),
            position_floor * np.median(spread / sizes[reference, 1]),
            np.log(scale_floor))
  return [robust_outliers(measures[:, j], k, floors[j], reference)
          for j in range(3)]


def _group_outliers(measures: np.ndarray, sizes: np.ndarray, k: float,
                    position_floor: float, scale_floor: float,
                    rounds: int) -> Dict[int, List[str]]:
  """Outlier reasons for the faces of one group (rows of `measures`).

  Re-takes the statistics without the flagged faces (module doc) until the
  flags repeat, `rounds` rounds have run, or half the group is flagged.
  """
  def union(tests):
    return tests[0][0] | tests[1][0] | tests[2][0]

  everyone = np.ones(len(measures), bool)
  tests = _group_tests(measures, sizes, everyone, k, position_floor,
                       scale_floor)
  for _ in range(rounds - 1):
    flagged = union(tests)
    if 2 * np.count_nonzero(flagged) >= len(flagged):
      break
    again = _group_tests(measures, sizes, ~flagged, k, position_floor,
                         scale_floor)
    if np.array_equal(union(again), flagged):
      break
    tests = again
  (bad_x, mx, tx), (bad_y, my, ty), (bad_s, ms, ts) = tests
  reasons: Dict[int, List[str]] = {}
  for i in np.flatnonzero(bad_x | bad_y):
    x, y = measures[i, :2]
    reasons.setdefault(int(i), []).append(
        f"landmark centroid is a robust outlier (x={x:.3f}, y={y:.3f} of the "
        f"image; set median x={mx:.3f}, y={my:.3f}; allowed deviation "
        f"{tx:.3f}, {ty:.3f})")
  for i in np.flatnonzero(bad_s):
    reasons.setdefault(int(i), []).append(
        f"landmark scale is a robust outlier (RMS spread "
        f"{np.exp(measures[i, 2]):.3f} of the image side; set median "
        f"{np.exp(ms):.3f}; allowed factor {np.exp(ts):.2f})")
  return reasons


def set_outliers(landmarks: Sequence[np.ndarray],
                 sizes: Sequence[Tuple[float, float]], *,
                 groups: Optional[Sequence] = None, k: float = K,
                 min_faces: int = MIN_FACES,
                 position_floor: float = POSITION_FLOOR,
                 scale_floor: float = SCALE_FLOOR,
                 rounds: int = ROUNDS) -> Dict[int, List[str]]:
  """Faces whose position or scale in the image is a robust outlier.

  Args:
    landmarks: per face `[N, 2]` pixels (each face with a finite point).
    sizes: per face `(width, height)` of its image.
    groups: per face a key; faces are compared within their group. None: one
      group.
    k: robust z-score threshold (in MAD-estimated standard deviations).
    min_faces: groups with fewer faces are not tested.
    position_floor: the centroid may always move this many median RMS spreads.
    scale_floor: the spread may always differ from the median by this factor.
    rounds: at most this many rounds of statistics (module doc).

  Returns:
    `{face index: [reasons]}` for the flagged faces only.
  """
  if len(landmarks) != len(sizes):
    raise ValueError(f"{len(landmarks)} faces but {len(sizes)} sizes")
  keys = [None] * len(landmarks) if groups is None else list(groups)
  if len(keys) != len(landmarks):
    raise ValueError(f"{len(landmarks)} faces but {len(keys)} group keys")
  members: Dict[object, List[int]] = {}
  for i, key in enumerate(keys):
    members.setdefault(key, []).append(i)
  reasons: Dict[int, List[str]] = {}
  for indices in members.values():
    if len(indices) < min_faces:
      continue
    group_sizes = np.array([sizes[i] for i in indices], np.float64)
    measures = np.stack([face_measures(landmarks[i], sizes[i])
                         for i in indices])
    found = _group_outliers(measures, group_sizes, k, position_floor,
                            scale_floor, rounds)
    for row, why in found.items():
      reasons[indices[row]] = why
  return reasons


def image_size(record) -> Optional[Tuple[int, int]]:
  """`(width, height)` of a record's image, or None if it cannot be read.

  Image files: Pillow reads only the header. Records with their own loader
  (images inside a container) are decoded.
  """
  try:
    if record.image_loader is not None:
      height, width = np.shape(record.load_image())[:2]
      return int(width), int(height)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with Image.open(record.image_path) as im:
      return tuple(int(v) for v in im.size)
  except Exception:  # pylint: disable=broad-except
    # Missing or corrupt images are `check_images`' business, not ours.
    return None


def check_records(records: Sequence, *,
                  sizes: Optional[Sequence[Optional[Tuple[float, float]]]]
                  = None,
                  set_checks: bool = True, groups: Optional[Sequence] = None,
                  tolerance: float = OUTSIDE_TOLERANCE, k: float = K,
                  min_faces: int = MIN_FACES,
                  position_floor: float = POSITION_FLOOR,
                  scale_floor: float = SCALE_FLOOR,
                  rounds: int = ROUNDS) -> SanityResult:
  """Runs the per-face checks and, with `set_checks`, the per-set test.

  Args:
    records: `FaceRecord`s (data/records.py).
    sizes: per record `(width, height)` or None where unknown; None: read
      each with `image_size`.
    set_checks: run `set_outliers` (pre-cropped sets only, module doc).
    groups: per record a group key for `set_outliers`.
    tolerance, k, min_faces, position_floor, scale_floor, rounds: see
      `face_problems` and `set_outliers`.

  Returns:
    `SanityResult`: flags in input order and the indices of the faces that
    pass every check.
  """
  if sizes is None:
    sizes = [image_size(r) for r in records]
  if len(sizes) != len(records):
    raise ValueError(f"{len(records)} records but {len(sizes)} sizes")
  reasons: Dict[int, List[str]] = {}
  for i, (record, size) in enumerate(zip(records, sizes)):
    found = face_problems(record.landmarks, size, visible=record.visible,
                          tolerance=tolerance)
    if found:
      reasons[i] = found
  if set_checks:
    tested = [i for i, s in enumerate(sizes) if s is not None
              and i not in reasons]
    found = set_outliers(
        [records[i].landmarks for i in tested], [sizes[i] for i in tested],
        groups=None if groups is None else [groups[i] for i in tested],
        k=k, min_faces=min_faces, position_floor=position_floor,
        scale_floor=scale_floor, rounds=rounds)
    for row, why in found.items():
      reasons[tested[row]] = why
  flags = [Flag(i, records[i].image_path, tuple(reasons[i]))
           for i in sorted(reasons)]
  keep = [i for i in range(len(records)) if i not in reasons]
  return SanityResult(flags, keep)

"""Per-detector box calibration: detector box -> the model's training crop.

A detector's box is not the crop a landmark model was trained on: Haar's
box includes the forehead, dlib's is tighter, and a model trained with
crop_mode "points" (yt68) saw boxes of its landmarks widened by 1.25. The
public rule (centre = box centre, side = 1.05 min(w, h)) ignores that. A
`BoxCalibration` is a small affine map, fitted on training faces, from a
detector's box to the training crop (centre, scale).

Parameterisation, in the box's own frame (so it does not depend on where
the face is or how large it is): for a detector box with centre (cx, cy),
width w, height h and size s = sqrt(w h), and the training crop of the same
face with centre (tx, ty) and side 200 * scale,

    dx = (tx - cx) / s,   dy = (ty - cy) / s,   log_side = log(side / s),

and each of the three is an affine function of the box's log aspect ratio
a = log(w / h):  f = c0 + c1 a. `apply(box)` inverts the frame:
centre = (cx + dx s, cy + dy s), scale = s exp(log_side) / 200. Detectors
with square boxes (Haar, dlib) have a = 0 on every face; the slope is then
not fitted (`use_aspect` False), and the map is three constants.

Fit (`fit`): robust by default, least absolute deviations, i.e. the
per-feature median when the map is three constants (IRLS when the aspect
slope is fitted). Why: the matched detections include a few partial or
misplaced boxes (a box on half the face, two faces merged) whose offsets
are far off; the median ignores them where a least-squares mean is pulled
towards them, and with hundreds of faces the median's lower efficiency on
clean Gaussian noise costs little. `robust=False` gives least squares.

Matching detections to annotated faces (`match_face`): a detection matches
a face when its box contains the centre of the face's landmark box (the
tight box of its points) and their IoU exceeds `MIN_IOU` = 0.3; of several,
the highest IoU wins. The centre test rules out a neighbouring face; the
IoU floor rules out a box much larger or smaller than the face (a detector
box and a landmark box of the same face differ, the forehead is in one and
not the other, so the floor is well below 0.5). A face without a match is
"missed" and listed by file (`collect_matches`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data.readers import common as readers_common
from training import errors

FORMAT = "box_calibration/1"
FEATURES = ("dx", "dy", "log_side")
MIN_IOU = 0.3
# Below this spread of log(w / h) over the fitted faces the aspect slope is
# not identifiable (square detector boxes) and is not fitted.
MIN_ASPECT_SPREAD = 0.01


# ------------------------------------------------------------ box frame ----

def box_frame(boxes) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """`[M, 4]` x1, y1, x2, y2 -> (centres [M, 2], w [M], h [M], s [M]).

  s = sqrt(w h), the box's size. ValueError for empty or inverted boxes.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  if not (np.all(np.isfinite(boxes)) and np.all(w > 0) and np.all(h > 0)):
    bad = np.flatnonzero(~(np.isfinite(boxes).all(1) & (w > 0) & (h > 0)))
    raise ValueError(f"boxes {bad.tolist()} are not x1 < x2, y1 < y2 finite "
                     f"boxes: {boxes[bad[:3]].tolist()}")
  centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2,
                      (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
  return centres, w, h, np.sqrt(w * h)


def crop_features(det_boxes, target_centers, target_scales) -> np.ndarray:
  """`[M, 3]` (dx, dy, log_side) of each target crop in its box's frame."""
  centres, _, _, s = box_frame(det_boxes)
  t = np.asarray(target_centers, np.float64).reshape(-1, 2)
  scales = np.asarray(target_scales, np.float64).reshape(-1)
  if t.shape[0] != centres.shape[0] or scales.shape[0] != centres.shape[0]:
    raise ValueError(f"{centres.shape[0]} boxes, {t.shape[0]} centres and "
                     f"{scales.shape[0]} scales: one of each per face")
  if not np.all(scales > 0):
    raise ValueError("target scales must be > 0")
  return np.stack([(t[:, 0] - centres[:, 0]) / s, (t[:, 1] - centres[:, 1]) / s,
                   np.log(200.0 * scales / s)], axis=1)


def _design(boxes, use_aspect: bool) -> np.ndarray:
  _, w, h, _ = box_frame(boxes)
  ones = np.ones_like(w)
  return np.stack([ones, np.log(w / h)], 1) if use_aspect else ones[:, None]


# ----------------------------------------------------------- the map -------

@dataclasses.dataclass(frozen=True)
class BoxCalibration:
  """Detector box -> (centre, scale) of the model's training crop.

  Attributes:
    coefficients: float64 `[3, 2]`: for dx, dy, log_side the intercept c0
      and the slope c1 on log(w / h) (0 when `use_aspect` is False).
    use_aspect: whether the slope was fitted.
    method: "lad" (least absolute deviations; the median for constants) or
      "lstsq".
    detector: the detector's name (landmarks.detection.make_detector).
    detector_options: its options (to rebuild the same detector).
    num_faces: faces the map was fitted on.
    residuals: per feature, the fit's residual statistics (units of s).
    target: what the target crop was (e.g. crop_mode, points_margin, data).
    extra: anything else the fitting run reports (detection rate, misses).
  """
  coefficients: np.ndarray
  use_aspect: bool = False
  method: str = "lad"
  detector: str = ""
  detector_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  num_faces: int = 0
  residuals: Dict[str, Dict[str, float]] = dataclasses.field(
      default_factory=dict)
  target: Dict[str, Any] = dataclasses.field(default_factory=dict)
  extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    c = np.asarray(self.coefficients, np.float64)
    if c.shape != (3, 2) or not np.all(np.isfinite(c)):
      raise ValueError(f"coefficients must be finite [3, 2] (dx, dy, log_side "
                       f"x intercept, aspect slope), got {c.tolist()}")
    object.__setattr__(self, "coefficients", c)

  def features(self, boxes) -> np.ndarray:
    """`[M, 3]` predicted (dx, dy, log_side) for `[M, 4]` boxes."""
    x = _design(boxes, True)
    return x @ self.coefficients.T

  def apply_many(self, boxes) -> Tuple[np.ndarray, np.ndarray]:
    """`[M, 4]` boxes -> (centres float64 [M, 2], scales float64 [M])."""
    centres, _, _, s = box_frame(boxes)
    f = self.features(boxes)
    return centres + f[:, :2] * s[:, None], s * np.exp(f[:, 2]) / 200.0

  def apply(self, box) -> Tuple[np.ndarray, float]:
    """One box x1, y1, x2, y2 -> (centre float64 [2], scale)."""
    centres, scales = self.apply_many(np.asarray(box).reshape(1, 4))
    return centres[0], float(scales[0])

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-serialisable dict (`from_dict` reads it back)."""
    return {
        "format": FORMAT,
        "detector": self.detector,
        "detector_options": dict(self.detector_options),
        "parameterisation": (
            "box (cx, cy, w, h), s = sqrt(w h), a = log(w / h); "
            "dx = (tx - cx) / s, dy = (ty - cy) / s, log_side = log(200 "
            "scale / s); each = c0 + c1 a; centre = (cx + dx s, cy + dy s), "
            "scale = s exp(log_side) / 200"),
        "coefficients": {name: [float(v) for v in row]
                         for name, row in zip(FEATURES, self.coefficients)},
        "use_aspect": bool(self.use_aspect),
        "method": self.method,
        "num_faces": int(self.num_faces),
        "residuals": self.residuals,
        "target": dict(self.target),
        **({"extra": self.extra} if self.extra else {}),
    }

  @classmethod
  def from_dict(cls, d: Dict[str, Any], source: str = "calibration"
                ) -> "BoxCalibration":
    """Reads `to_dict`'s output; UserError naming `source` if malformed."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
      found = d.get("format") if isinstance(d, dict) else type(d).__name__
      raise errors.UserError(
          f"{source}: not a box calibration (expected format {FORMAT!r}, "
          f"found {found!r}); write one with python -m "
          "star_jax.calibrate_detector")
    try:
      coefficients = np.array([d["coefficients"][name] for name in FEATURES],
                              np.float64)
      return cls(coefficients, use_aspect=bool(d.get("use_aspect", False)),
                 method=str(d.get("method", "")),
                 detector=str(d.get("detector", "")),
                 detector_options=dict(d.get("detector_options", {})),
                 num_faces=int(d.get("num_faces", 0)),
                 residuals=dict(d.get("residuals", {})),
                 target=dict(d.get("target", {})),
                 extra=dict(d.get("extra", {})))
    except (KeyError, TypeError, ValueError) as e:
      raise errors.UserError(f"{source}: malformed box calibration ({e!r}); "
                             f"expected coefficients {list(FEATURES)} of two "
                             "numbers each") from None

  def save(self, path: str) -> None:
    """Writes `to_dict` as JSON."""
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=1)
      f.write("\n")


def load(path: str) -> BoxCalibration:
  """A calibration JSON file; UserError if missing or malformed."""
  if not os.path.isfile(path):
    raise errors.MissingInputError(
        f"box calibration {path} does not exist; write one with python -m "
        "star_jax.calibrate_detector --out PATH")
  try:
    with open(path) as f:
      d = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f"box calibration {path} is not readable JSON "
                           f"({e})") from None
  return BoxCalibration.from_dict(d, source=path)


# --------------------------------------------------------------- fitting ---

def _lad(x: np.ndarray, y: np.ndarray, iterations: int = 200,
         tol: float = 1e-12) -> np.ndarray:
  """Least absolute deviations of y [M] on x [M, K]; the median if K = 1."""
  if x.shape[1] == 1:
    return np.array([np.median(y)])
  beta = np.linalg.lstsq(x, y, rcond=None)[0]
  for _ in range(iterations):
    r = np.abs(y - x @ beta)
    w = 1.0 / np.maximum(r, 1e-9)
    new = np.linalg.solve(x.T @ (x * w[:, None]), x.T @ (w * y))
    if np.max(np.abs(new - beta)) < tol:
      return new
    beta = new
  return beta


def _residual_stats(r: np.ndarray) -> Dict[str, Dict[str, float]]:
  return {name: {"median_abs": float(np.median(np.abs(col))),
                 "p90_abs": float(np.percentile(np.abs(col), 90)),
                 "rms": float(np.sqrt(np.mean(col ** 2)))}
          for name, col in zip(FEATURES, r.T)}


def fit(det_boxes, target_centers, target_scales, *, aspect="auto",
        robust: bool = True, detector: str = "",
        detector_options: Optional[Dict[str, Any]] = None,
        target: Optional[Dict[str, Any]] = None,
        extra: Optional[Dict[str, Any]] = None) -> BoxCalibration:
  """Fits the map from `[M, 4]` detector boxes to the faces' training crops.

  Args:
    det_boxes: matched detector boxes, one per face.
    target_centers: `[M, 2]` the training crop centres of the same faces.
    target_scales: `[M]` their scales (crop side / 200).
    aspect: fit the slope on log(w / h): True, False, or "auto" (when the
      boxes' log aspect ratios spread by more than MIN_ASPECT_SPREAD).
    robust: least absolute deviations (default; module docstring) or, if
      False, least squares.
    detector, detector_options, target, extra: stored with the map.

  Raises:
    UserError: no face to fit.
  """
  boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
  if boxes.shape[0] == 0:
    raise errors.UserError("no matched face to fit a box calibration on: the "
                           "detector found none of the faces (see the list "
                           "of misses)")
  y = crop_features(boxes, target_centers, target_scales)
  _, w, h, _ = box_frame(boxes)
  spread = float(np.std(np.log(w / h)))
  if aspect == "auto":
    use_aspect = spread > MIN_ASPECT_SPREAD and boxes.shape[0] >= 3
  elif aspect in (True, False):
    use_aspect = bool(aspect)
    if use_aspect and spread < 1e-6:
      raise errors.UserError("aspect=True needs boxes of different aspect "
                             "ratios; these are all the same (square?)")
  else:
    raise errors.UserError(f"aspect must be True, False or 'auto', got "
                           f"{aspect!r}")
  x = _design(boxes, use_aspect)
  if robust:
    coef = np.stack([_lad(x, y[:, k]) for k in range(3)])
  else:
    coef = np.stack([np.linalg.lstsq(x, y[:, k], rcond=None)[0]
                     for k in range(3)])
  if not use_aspect:
    coef = np.concatenate([coef, np.zeros((3, 1))], axis=1)
  calibration = BoxCalibration(
      coef, use_aspect=use_aspect, method="lad" if robust else "lstsq",
      detector=detector, detector_options=dict(detector_options or {}),
      num_faces=int(boxes.shape[0]), target=dict(target or {}),
      extra=dict(extra or {}))
  residuals = _residual_stats(y - calibration.features(boxes))
  return dataclasses.replace(calibration, residuals=residuals)


# -------------------------------------------------------------- matching ---

def iou(a, b) -> float:
  """Intersection over union of two x1, y1, x2, y2 boxes."""
  a = np.asarray(a, np.float64).reshape(4)
  b = np.asarray(b, np.float64).reshape(4)
  iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return float(inter / union) if union > 0 else 0.0


def match_face(detections: Sequence[Any], landmark_box,
               min_iou: float = MIN_IOU) -> Optional[int]:
  """Index of the detection matching a face, or None (module docstring).

  Args:
    detections: objects with `.box` (landmarks.detection.Detection), or
      `[4]` boxes, in the detector's order.
    landmark_box: the face's landmark box x1, y1, x2, y2.
    min_iou: IoU the match must exceed.
  """
  lb = np.asarray(landmark_box, np.float64).reshape(4)
  cx, cy = (lb[0] + lb[2]) / 2, (lb[1] + lb[3]) / 2
  best, best_iou = None, float(min_iou)
  for i, d in enumerate(detections):
    box = np.asarray(getattr(d, "box", d), np.float64).reshape(4)
    if not (box[0] <= cx <= box[2] and box[1] <= cy <= box[3]):
      continue
    overlap = iou(box, lb)
    if overlap > best_iou:
      best, best_iou = i, overlap
  return best


@dataclasses.dataclass
class Matches:
  """A detector run over annotated faces.

  Attributes:
    indices: indices (into the records) of the matched faces.
    boxes: float64 `[M, 4]` their matched detector boxes.
    scores: float64 `[M]` the matched detections' scores.
    missed: one dict per missed face: "image", "index", "reason",
      "face_size" (landmark box's longer side, px), "detections".
    num_faces: faces looked at.
    num_images: distinct images the detector ran on.
    seconds: detector time over those images (decoding excluded).
  """
  indices: List[int]
  boxes: np.ndarray
  scores: np.ndarray
  missed: List[Dict[str, Any]]
  num_faces: int
  num_images: int
  seconds: float

  @property
  def detection_rate(self) -> float:
    return len(self.indices) / self.num_faces if self.num_faces else 0.0

  @property
  def ms_per_image(self) -> float:
    return 1000.0 * self.seconds / self.num_images if self.num_images else 0.0


def _miss_reason(detections, landmark_box, min_face_size: float,
                 face_size: float) -> str:
  if face_size < min_face_size:
    return (f"face {face_size:.0f} px (landmark box side) < the detector's "
            f"minimum {min_face_size:.0f} px")
  if not detections:
    return "no detection in the image"
  best = max(iou(getattr(d, "box", d), landmark_box) for d in detections)
  return (f"{len(detections)} detection(s), none contains the face centre "
          f"with IoU > threshold (best IoU {best:.2f})")


def collect_matches(detector: Callable[[np.ndarray], Sequence[Any]],
                    records: Sequence[Any], *, min_iou: float = MIN_IOU,
                    progress_every: int = 0) -> Matches:
  """Runs `detector` on each record's image, matches the record's face.

  The detector runs once per distinct image (records sharing an image share
  its detections). Landmark boxes are the tight boxes of the visible points.

  Args:
    detector: image -> detections (landmarks.detection).
    records: data.records.FaceRecord (image + landmarks).
    min_iou: the matching IoU floor.
    progress_every: print a progress line every that many images (0: never).
  """
  cache: Dict[Tuple[str, Any], List[Any]] = {}
  indices, boxes, scores, missed = [], [], [], []
  seconds = 0.0
  min_face = float(getattr(detector, "min_face_size", 0.0))
  for i, record in enumerate(records):
    key = (record.image_path, record.image_key)
    if key not in cache:
      image = record.load_image()
      start = time.perf_counter()
      cache[key] = list(detector(image))
      seconds += time.perf_counter() - start
      if progress_every and len(cache) % progress_every == 0:
        print(f"  {len(cache)} images, {len(indices)} faces matched",
              flush=True)
    detections = cache[key]
    lb = readers_common.points_box(record.landmarks, record.visible)
    j = match_face(detections, lb, min_iou)
    if j is None:
      face_size = float(max(lb[2] - lb[0], lb[3] - lb[1]))
      missed.append({"image": record.image_path, "index": i,
                     "reason": _miss_reason(detections, lb, min_face,
                                            face_size),
                     "face_size": round(face_size, 1),
                     "detections": len(detections)})
      continue
    indices.append(i)
    boxes.append(np.asarray(detections[j].box, np.float64))
    scores.append(float(getattr(detections[j], "score", math.nan)))
  return Matches(indices, np.asarray(boxes, np.float64).reshape(-1, 4),
                 np.asarray(scores, np.float64), missed, len(records),
                 len(cache), seconds)

"""Landmarks through a video: detect once, track from the previous points.

The tracker needs no model of its own: it is given two callables.

  predict_fn(image, box=None, points=None) -> {"landmarks": float64 [N, 2]
      original pixels, "spread": float (optional)}
    landmarks of the face in `box` (x1, y1, x2, y2, a detector's box) or in
    the crop defined by `points` (the previous frame's landmarks, `[N, 2]`).
    "spread" is the predicted landmark spread as a fraction of the face crop
    (larger = less confident); None or absent = unknown (never a reason to
    drop the track). Raises ValueError when the box / points are unusable
    (e.g. outside the image).
  detect_fn(image) -> [(box [4] x1, y1, x2, y2, score), ...]
    face boxes (any order, may be empty).

Per frame (`Tracker.step`):
  1. With a track: predict from the previous frame's RAW (unsmoothed)
     landmarks, so the crop follows the face and the filter never feeds back
     into the model's input. The track is lost when predict_fn raises
     ValueError, when spread > max_spread, or when more than half of the
     landmarks fall outside the image ([0, W-1] x [0, H-1], pixel centres at
     integers); then step 2 runs on the same frame.
  2. Without a track: detect; take the best box (highest score; ties: larger
     area, then smaller x1, i.e. leftmost) and predict from it. No box (or a
     prediction from it that fails the checks of step 1) = "no_face".
  3. Smoothing (`TrackerSettings.smooth`): a One-Euro filter
     (landmarks/one_euro.py) over the landmarks, its speed measured in face
     sizes per second, face size = the longer side of the previous frame's
     raw landmark box (the current one on a detected frame), so one setting
     works at any resolution. The filter restarts on every detection and
     after a frame without a face.

Result of a frame (a dict):
  frame (index), time (s), status ("tracked" | "detected" | "no_face"),
  landmarks_raw (float64 [N, 2] or None), landmarks (smoothed, = raw when
  smoothing is off; None without a face), spread (float or None),
  box_source ("previous_landmarks" | "detector" | None), box (the detector
  box, or the previous landmarks' box; None without a face), face_size
  (pixels, or None), lost (why the track was lost on this frame, or None),
  reason (why there is no face, or None).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import (Any, Callable, Dict, Iterable, Iterator, Mapping, Optional,
                    Sequence, Tuple)

import numpy as np

from landmarks import one_euro
from training import errors

PredictFn = Callable[..., Mapping[str, Any]]
DetectFn = Callable[[np.ndarray], Sequence[Tuple[Any, float]]]

TRACKED, DETECTED, NO_FACE = "tracked", "detected", "no_face"
STATUSES = (TRACKED, DETECTED, NO_FACE)


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  """How the tracker decides a track is lost and how it smooths.

  Attributes:
    max_spread: the track is lost when predict_fn's "spread" (fraction of the
      face crop) exceeds this. Default math.inf: no spread test, because the
      spread's scale is the model's own (a heatmap model's spread depends on
      its heatmap resolution and training; on a good face it can be larger
      than another model's on a miss), so the threshold must be calibrated
      per model on faces and non-faces (bench/video_jitter.py prints the
      spreads it sees).
    one_euro: the filter's parameters (landmarks/one_euro.py).
    smooth: False = report the raw landmarks.
  """

  max_spread: float = math.inf
  one_euro: one_euro.OneEuroSettings = dataclasses.field(
      default_factory=one_euro.OneEuroSettings)
  smooth: bool = True

  def __post_init__(self):
    v = self.max_spread
    if (isinstance(v, bool) or not isinstance(v, numbers.Real)
        or math.isnan(v) or v <= 0):
      raise errors.UserError(
          f"max_spread must be a number > 0 (a fraction of the face crop; "
          f"inf = never lose the track on spread), got {v!r}")
    if not isinstance(self.one_euro, one_euro.OneEuroSettings):
      raise errors.UserError(
          f"one_euro must be OneEuroSettings, got {type(self.one_euro)}")
    if not isinstance(self.smooth, bool):
      raise errors.UserError(f"smooth must be True or False, got "
                             f"{self.smooth!r}")
    object.__setattr__(self, "max_spread", float(v))

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "TrackerSettings":
    """From a dict; "one_euro" may be a dict. UserError on bad values."""
    values = dict(values)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise errors.UserError(f"unknown tracker setting(s) {unknown}; "
                             f"expected some of {sorted(names)}")
    if isinstance(values.get("one_euro"), Mapping):
      values["one_euro"] = one_euro.OneEuroSettings.from_mapping(
          values["one_euro"])
    return cls(**values)


def points_box(points: np.ndarray) -> np.ndarray:
  """Tight box x1, y1, x2, y2 of `[N, 2]` points (finite ones)."""
  p = np.asarray(points, np.float64).reshape(-1, 2)
  p = p[np.all(np.isfinite(p), axis=-1)]
  return np.concatenate([p.min(0), p.max(0)])


def face_size(points: np.ndarray) -> float:
  """The longer side of the points' box, pixels (>= 1, so never 0)."""
  x1, y1, x2, y2 = points_box(points)
  return max(float(x2 - x1), float(y2 - y1), 1.0)


def best_detection(detections: Sequence[Tuple[Any, float]]
                   ) -> Optional[Tuple[np.ndarray, float]]:
  """The best (box, score): highest score, then larger area, then leftmost."""
  best, best_key = None, None
  for box, score in detections:
    box = np.asarray(box, np.float64).reshape(4)
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    key = (-float(score), -area, float(box[0]))
    if best_key is None or key < best_key:
      best, best_key = (box, float(score)), key
  return best


def fraction_outside(points: np.ndarray, width: int, height: int) -> float:
  """Fraction of points outside [0, W-1] x [0, H-1] (non-finite = outside)."""
  p = np.asarray(points, np.float64).reshape(-1, 2)
  with np.errstate(invalid="ignore"):
    inside = ((p[:, 0] >= 0) & (p[:, 0] <= width - 1)
              & (p[:, 1] >= 0) & (p[:, 1] <= height - 1))
  return float(1.0 - inside.mean()) if len(p) else 1.0


class Tracker:
  """Per-frame landmarks of one face: detect, track, smooth (module doc).

  Args:
    predict_fn, detect_fn: the model callables (module docstring).
    settings: TrackerSettings.
    fps: frame rate used for frames given without a time.
  """

  def __init__(self, predict_fn: PredictFn, detect_fn: DetectFn,
               settings: Optional[TrackerSettings] = None,
               fps: float = 25.0):
    if not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
      raise errors.UserError(f"fps must be a number > 0, got {fps!r}")
    self.predict_fn = predict_fn
    self.detect_fn = detect_fn
    self.settings = settings or TrackerSettings()
    self.fps = float(fps)
    self._filter = self.settings.one_euro.make_filter(self.fps)
    self.reset()

  def reset(self) -> None:
    """Starts a new sequence: no track, fresh filter, counts at zero."""
    self._raw: Optional[np.ndarray] = None
    self._filter.reset()
    self._next_index = 0
    # lost: frames whose track was lost; re_detected: detections after the
    # first one (after a loss or frames without a face).
    self.counts = {TRACKED: 0, DETECTED: 0, NO_FACE: 0, "lost": 0,
                   "re_detected": 0, "detector_calls": 0}

  @property
  def has_track(self) -> bool:
    return self._raw is not None

  def _check(self, pred: Mapping[str, Any], image: np.ndarray
             ) -> Tuple[Optional[np.ndarray], Optional[float], Optional[str]]:
    """(landmarks, spread, None) or (None, spread, why it is unusable).

    A malformed prediction is a programming error (ValueError, raised
    outside the lost-track handling)."""
    points = np.asarray(pred["landmarks"], np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points):
      raise ValueError(f"predict_fn returned landmarks of shape {points.shape};"
                       " expected [N, 2]")
    spread = pred.get("spread")
    spread = None if spread is None else float(spread)
    if spread is not None and not spread <= self.settings.max_spread:
      return None, spread, (f"spread {spread:.3g} > max_spread "
                            f"{self.settings.max_spread:.3g}")
    h, w = image.shape[:2]
    outside = fraction_outside(points, w, h)
    if outside > 0.5:
      return None, spread, f"{outside:.0%} of the landmarks outside the image"
    return points, spread, None

  def step(self, image: np.ndarray, t: Optional[float] = None,
           index: Optional[int] = None) -> Dict[str, Any]:
    """Landmarks of one frame (uint8 [H, W, 3]); the result dict of the
    module docstring. `t` (s) defaults to index / fps, `index` to the count
    of frames seen."""
    index = self._next_index if index is None else int(index)
    self._next_index = index + 1
    t = index / self.fps if t is None else float(t)
    result = {"frame": index, "time": t, "status": NO_FACE,
              "landmarks_raw": None, "landmarks": None, "spread": None,
              "box_source": None, "box": None, "face_size": None,
              "lost": None, "reason": None}
    points = spread = None
    if self._raw is not None:
      previous = self._raw
      try:
        pred = self.predict_fn(image, points=previous)
      except ValueError as e:
        pred, lost = None, f"predict_fn: {e}"
      if pred is not None:
        points, spread, lost = self._check(pred, image)
      if points is not None:
        result.update(status=TRACKED, box_source="previous_landmarks",
                      box=points_box(previous))
        size = face_size(previous)
      else:
        result["lost"] = lost
        self.counts["lost"] += 1
    if points is None:
      self._raw = None
      self._filter.reset()
      self.counts["detector_calls"] += 1
      best = best_detection(self.detect_fn(image))
      if best is None:
        result["reason"] = "no face detected"
      else:
        try:
          pred = self.predict_fn(image, box=best[0])
        except ValueError as e:
          pred, why = None, f"predict_fn on the detected box: {e}"
        if pred is not None:
          points, spread, why = self._check(pred, image)
        if points is None:
          result["reason"] = f"detected face rejected: {why}"
        else:
          result.update(status=DETECTED, box_source="detector", box=best[0])
          size = face_size(points)
          if self.counts[DETECTED]:
            self.counts["re_detected"] += 1
    self.counts[result["status"]] += 1
    result["spread"] = spread
    if points is None:
      return result
    self._raw = points
    smooth = (self._filter(points, t, scale=size) if self.settings.smooth
              else points.copy())
    result.update(landmarks_raw=points.copy(), landmarks=smooth,
                  face_size=size)
    return result


def track(frames: Iterable[Any], predict_fn: PredictFn, detect_fn: DetectFn,
          settings: Optional[TrackerSettings] = None, fps: float = 25.0
          ) -> Iterator[Dict[str, Any]]:
  """Results of `Tracker.step` over `frames`.

  Args:
    frames: images, or (index, time_s, image) tuples as
      landmarks.video.read_frames yields.
    predict_fn, detect_fn, settings, fps: as Tracker.
  """
  tracker = Tracker(predict_fn, detect_fn, settings, fps)
  for item in frames:
    if isinstance(item, tuple) and len(item) == 3:
      index, t, image = item
      yield tracker.step(image, t, index)
    else:
      yield tracker.step(item)


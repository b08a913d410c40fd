r"""Landmarks through videos and frame folders: `star_jax.predict --video`.

  python -m star_jax.predict --video clip.mp4 --out preds/
  python -m star_jax.predict --frames frames_dir/ --fps 30 --out preds/ \
      [--detector haar|haar_alt2|dlib|yunet] [--no_smooth] \
      [--min_cutoff 0.5 --beta 20 --d_cutoff 1] [--max_spread 0.05]

One face per sequence (landmarks/tracking.py): the detector finds it on the
first frame (its box through the model's stored calibration, as for
images); on every next frame the previous frame's raw landmarks define the
crop (the evaluation's "points" crop), and the detector runs again when the
track is lost (landmarks mostly outside the frame, or the predicted spread
above `max_spread`). A One-Euro filter smooths the landmarks (its speed in
face sizes per second, so one setting fits every resolution). The settings
come from the model config's `predict` block (configs/common.py; an
artifact carries its training config), then the command-line flags.

Per input `<stem>` it writes into `--out` only (landmarks/video.py):
`<stem>.jsonl` (one JSON object per frame: status, raw and smoothed
landmarks in original pixels, spread, box), `<stem>.csv` (frame, time,
status, smoothed x0, y0, ...) and `<stem>_overlay.mp4` (unless
`--no_overlay`). A sequence where no frame has a face is a failure (the
outputs stay, every row says why).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

import numpy as np

from landmarks import one_euro
from landmarks import tracking
from landmarks import video
from training import errors

# config.predict key -> OneEuroSettings field.
_ONE_EURO_KEYS = {"one_euro_min_cutoff": "min_cutoff",
                  "one_euro_beta": "beta", "one_euro_d_cutoff": "d_cutoff"}


def tracker_settings(config_predict: Mapping[str, Any],
                     overrides: Optional[Mapping[str, Any]] = None
                     ) -> tracking.TrackerSettings:
  """TrackerSettings from a config's `predict` block and CLI overrides.

  Args:
    config_predict: {smooth, one_euro_min_cutoff, one_euro_beta,
      one_euro_d_cutoff, max_spread} (missing keys: the defaults of
      landmarks/one_euro.py and tracking.py; max_spread 0 = no spread test).
    overrides: the same keys; None values are ignored.

  Raises:
    UserError: an unknown key or a value out of range.
  """
  values = dict(config_predict or {})
  values.update({k: v for k, v in (overrides or {}).items() if v is not None})
  known = set(_ONE_EURO_KEYS) | {"smooth", "max_spread"}
  unknown = sorted(set(values) - known)
  if unknown:
    raise errors.UserError(f"unknown predict setting(s) {unknown}; expected "
                           f"some of {sorted(known)}")
  euro = one_euro.OneEuroSettings.from_mapping(
      {field: values[key] for key, field in _ONE_EURO_KEYS.items()
       if key in values})
  spread = values.get("max_spread", 0.0)
  if spread is not None and spread == 0:
    spread = math.inf
  return tracking.TrackerSettings(max_spread=spread, one_euro=euro,
                                  smooth=bool(values.get("smooth", True)))


def tracker_fns(predictor, detector, detector_name: str):
  """(predict_fn, detect_fn) for landmarks.tracking.Tracker.

  predict_fn(image, box=None, points=None): a detector box goes through
  `predictor.detector_prep` (calibrated crop), previous landmarks through
  the evaluation's points crop; one face per call (batch of one).
  """

  def predict_fn(image, box=None, points=None):
    if box is not None:
      prep = predictor.detector_prep(image, box, 1.0, detector_name)
    else:
      prep = predictor.prepare(image, points=np.asarray(points, np.float64),
                               source="previous_landmarks")
    face = predictor.finish([prep])[0]
    return {"landmarks": face["landmarks"], "spread": face.get("spread")}

  def detect_fn(image):
    return [(np.asarray(d.box, np.float64), float(d.score))
            for d in detector(image)]

  return predict_fn, detect_fn


def predict_video(predictor, path: str, out_dir: str, stem: str, *,
                  detector, detector_name: str,
                  settings: tracking.TrackerSettings,
                  fps: Optional[float] = None,
                  overlay: bool = True) -> Dict[str, Any]:
  """Tracks one video file / frame folder; writes its outputs (module doc).

  Returns:
    landmarks.video.process_video's summary.

  Raises:
    UserError: unreadable source, bad output folder, no readable frame, or
      no face in any frame (the outputs are written first).
  """
  if detector is None:
    raise errors.UserError(
        "a video needs a face detector (--detector haar|haar_alt2|dlib|yunet"
        "), not --detector none")
  source = video.open_frames(path, fps)
  predict_fn, detect_fn = tracker_fns(predictor, detector, detector_name)
  tracker = tracking.Tracker(predict_fn, detect_fn, settings, fps=source.fps)
  summary = video.process_video(source, tracker, out_dir, stem,
                                overlay=overlay)
  if not summary["faces"]:
    size = getattr(detector, "min_face_size", None)
    limit = f" (faces of at least {size:.0f} px)" if size else ""
    raise errors.UserError(
        f"no face found in any of the {summary['frames']} frames of {path} "
        f"by the {detector_name} detector{limit}; try --detector haar_alt2 "
        "/ dlib / yunet")
  return summary

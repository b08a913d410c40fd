"""Face detectors for the predict path: image -> face boxes, offline.

Every detector has one interface:

  detector = make_detector("haar")            # or "haar_alt2", "dlib", "yunet"
  detections = detector(image)                # uint8 RGB [H, W, 3] (or grey)
  detections[0].box, detections[0].score      # float64 [4] x1, y1, x2, y2

Boxes are in original pixels, `x2 = x1 + width` (the detector's window
covers pixels x1 ... x2 - 1), as the detectors report them: no half-pixel
correction is made, and none is needed, since a detector's box is not the
face's true extent anyway; `landmarks.box_calibration` learns the map from a
detector's boxes to the model's training crop (that map absorbs any
convention offset).

Order: score descending; ties by area descending, then x1, then y1
(`sort_detections`), so the same image always gives the same list.

Detectors (weights bundled with their packages, nothing is downloaded):
  HaarDetector      OpenCV's Viola-Jones cascades from `cv2.data.haarcascades`
                    (frontalface_default, or alt2); the default.
  DlibHogDetector   dlib's HOG + linear SVM frontal detector (optional
                    extra: `pip install dlib-bin`).
  YuNetDetector     a YuNet ONNX model the user supplies, run by
                    `cv2.FaceDetectorYN` (no YuNet model ships in any package
                    we depend on).

`min_face_size` (px, the side of the smallest face a detector can return) is
exposed so callers can explain a miss ("face 18 px < 24 px"): a face smaller
than the detector's window is never found; upsample the image (dlib's
`upsample`) or pass a box.

From a box to the model's crop: `box_center_scale` applies the public rule
(`data.transforms.center_scale_from_box`: centre = box centre, scale =
min(w, h) / 200 * 1.05) or a fitted calibration.

cv2 and dlib are imported inside the functions that use them, so importing
this module costs nothing and works without them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import transforms
from training import errors

DETECTOR_NAMES = ("haar", "haar_alt2", "dlib", "yunet", "none")
HAAR_CASCADES = {"default": "haarcascade_frontalface_default.xml",
                 "alt2": "haarcascade_frontalface_alt2.xml"}
DLIB_INSTALL = "pip install dlib-bin==20.0.1.post1"
OPENCV_INSTALL = "pip install 'opencv-python-headless>=4.8,<5'"
# dlib's frontal HOG detector scans an 80 x 80 px window (its documentation:
# faces of about 80 x 80 px and larger; each upsampling halves that).
DLIB_WINDOW = 80
# YuNet's smallest anchors (stride 8): faces of about 10 px and up, per the
# model's card; an approximate value, for explaining misses only.
YUNET_MIN_FACE = 10


@dataclasses.dataclass(frozen=True)
class Detection:
  """One detected face.

  Attributes:
    box: float64 `[4]` (x1, y1, x2, y2), original pixels.
    score: the detector's confidence, higher = more face-like; its meaning
      (and range) is the detector's own, see each class.
  """
  box: np.ndarray
  score: float

  @property
  def area(self) -> float:
    return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def sort_detections(detections: Sequence[Detection]) -> List[Detection]:
  """Score descending; ties: area descending, then x1, then y1 ascending."""
  return sorted(detections, key=lambda d: (-float(d.score), -d.area,
                                           float(d.box[0]), float(d.box[1])))


def _detections(boxes_xywh: np.ndarray, scores: np.ndarray) -> List[Detection]:
  boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  out = [Detection(np.array([x, y, x + w, y + h], np.float64), float(s))
         for (x, y, w, h), s in zip(boxes, scores)]
  return sort_detections(out)


def as_image(image: np.ndarray) -> np.ndarray:
  """uint8 `[H, W, 3]` RGB (a grey `[H, W]` image is repeated); ValueError."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"a detector expects a uint8 RGB image [H, W, 3] (or grey "
                     f"[H, W]), got {image.dtype} {image.shape}")
  return image


def _import_cv2():
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        f"the face detectors need OpenCV: {OPENCV_INSTALL} ({e})") from None
  return cv2


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise errors.UserError(message)


class FaceDetector:
  """Base class: `__call__(image) -> [Detection]`, plus what describes it.

  Attributes:
    name: the `make_detector` name.
    options: the options it was made with (JSON-serialisable; stored with a
      calibration so the same detector can be rebuilt).
    min_face_size: side in px of the smallest face it can return.
  """
  name: str = ""
  options: Dict[str, Any]
  min_face_size: float = 0.0

  def __call__(self, image: np.ndarray) -> List[Detection]:
    raise NotImplementedError

  def describe(self) -> Dict[str, Any]:
    """{"name", "options", "min_face_size"}: what a JSON report stores."""
    return {"name": self.name, "options": dict(self.options),
            "min_face_size": float(self.min_face_size)}


class HaarDetector(FaceDetector):
  """OpenCV's Viola-Jones frontal-face cascade (bundled with opencv-python).

  The image is converted to grey (cv2.COLOR_RGB2GRAY) and scanned at scales
  `scale_factor`^k; overlapping hits are grouped, and a group of fewer than
  `min_neighbors` + 1 raw hits is dropped.

  Score: OpenCV's "level weight" of the group, from
  `detectMultiScale3(..., outputRejectLevels=True)`: the summed
  weak-classifier votes of the cascade's last stage at the group's best
  window, a margin-like confidence (higher = more face-like; any real number,
  not a probability, not comparable between cascades). The boxes are those
  of the plain detectMultiScale (same scan, same grouping). Where this
  OpenCV lacks detectMultiScale3 the score is the group's count of raw hits
  (`detectMultiScale2`'s numDetections); `score_kind` ("level_weight" or
  "neighbours") says which is in use.

  Args:
    cascade: "default" (haarcascade_frontalface_default, 24 px window) or
      "alt2" (haarcascade_frontalface_alt2, 20 px window).
    scale_factor: pyramid step (> 1; smaller: slower, more faces found).
    min_neighbors: raw hits a group needs beyond the first (>= 0).
    min_size: smallest face side in px to search (0: the cascade window).
    max_size: largest face side in px to search (0: no limit).
  """

  def __init__(self, cascade: str = "default", scale_factor: float = 1.1,
               min_neighbors: int = 3, min_size: int = 0, max_size: int = 0):
    _check(cascade in HAAR_CASCADES, f"haar cascade must be one of "
           f"{sorted(HAAR_CASCADES)}, got {cascade!r}")
    _check(float(scale_factor) > 1.0, f"haar scale_factor must be > 1 (the "
           f"pyramid step, e.g. 1.1), got {scale_factor!r}")
    _check(int(min_neighbors) >= 0, f"haar min_neighbors must be >= 0, got "
           f"{min_neighbors!r}")
    _check(int(min_size) >= 0 and int(max_size) >= 0, "haar min_size / "
           f"max_size must be >= 0 px, got {min_size!r} / {max_size!r}")
    _check(not (min_size and max_size and int(max_size) < int(min_size)),
           f"haar max_size {max_size} < min_size {min_size}: nothing to find")
    cv2 = _import_cv2()
    path = os.path.join(cv2.data.haarcascades, HAAR_CASCADES[cascade])
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
      raise errors.UserError(f"OpenCV could not load its bundled cascade {path}"
                             f"; reinstall OpenCV: {OPENCV_INSTALL}")
    self._cv2 = cv2
    self._classifier = classifier
    self.name = "haar" if cascade == "default" else f"haar_{cascade}"
    self.options = {"cascade": cascade, "scale_factor": float(scale_factor),
                    "min_neighbors": int(min_neighbors),
                    "min_size": int(min_size), "max_size": int(max_size)}
    window = classifier.getOriginalWindowSize()
    self.window = (int(window[0]), int(window[1]))
    self.min_face_size = float(max(int(min_size), max(self.window)))
    self.score_kind = self._probe_score_kind()

  def _probe_score_kind(self) -> str:
    """"level_weight" if detectMultiScale3 with reject levels runs here."""
    try:
      self._classifier.detectMultiScale3(
          np.zeros((2 * self.window[1], 2 * self.window[0]), np.uint8),
          outputRejectLevels=True, **self._kwargs())
    except (AttributeError, self._cv2.error):
      return "neighbours"
    return "level_weight"

  def _kwargs(self) -> Dict[str, Any]:
    o = self.options
    return dict(scaleFactor=o["scale_factor"], minNeighbors=o["min_neighbors"],
                minSize=(o["min_size"], o["min_size"]),
                maxSize=(o["max_size"], o["max_size"]))

  def __call__(self, image: np.ndarray) -> List[Detection]:
    image = as_image(image)
    grey = self._cv2.cvtColor(np.ascontiguousarray(image),
                              self._cv2.COLOR_RGB2GRAY)
    if self.score_kind == "level_weight":
      boxes, _, weights = self._classifier.detectMultiScale3(
          grey, outputRejectLevels=True, **self._kwargs())
      return _detections(boxes, weights)
    boxes, counts = self._classifier.detectMultiScale2(grey, **self._kwargs())
    return _detections(boxes, counts)


class DlibHogDetector(FaceDetector):
  """dlib's frontal face detector (HOG features + linear SVM, 80 px window).

  Score: the SVM's detection score from `detector.run(image, upsample,
  adjust_threshold)` (higher = more face-like; 0 is dlib's own threshold;
  `adjust_threshold` < 0 returns weaker candidates too). dlib's box corners
  are inclusive pixels; we return `(left, top, right + 1, bottom + 1)` so
  x2 - x1 is the width, as for the other detectors.

  Args:
    upsample: times the image is doubled before scanning (0, 1, 2, ...): each
      halves the smallest face found (80 px at 0, 40 px at 1) and costs about
      4x the time.
    adjust_threshold: added to the SVM threshold.

  Raises:
    UserError: dlib is not installed (with the install command).
  """

  def __init__(self, upsample: int = 1, adjust_threshold: float = 0.0):
    _check(int(upsample) >= 0 and int(upsample) == upsample,
           f"dlib upsample must be an integer >= 0, got {upsample!r}")
    try:
      import dlib  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise errors.UserError(
          "detector 'dlib' needs the optional package dlib: "
          f"{DLIB_INSTALL} (a prebuilt wheel; or use --detector haar)"
      ) from None
    self._detector = dlib.get_frontal_face_detector()
    self.name = "dlib"
    self.version = str(getattr(dlib, "__version__", "?"))
    self.options = {"upsample": int(upsample),
                    "adjust_threshold": float(adjust_threshold)}
    self.min_face_size = DLIB_WINDOW / 2.0 ** int(upsample)

  def __call__(self, image: np.ndarray) -> List[Detection]:
    image = np.ascontiguousarray(as_image(image))
    rects, scores, _ = self._detector.run(image, self.options["upsample"],
                                          self.options["adjust_threshold"])
    boxes = [(r.left(), r.top(), r.right() - r.left() + 1,
              r.bottom() - r.top() + 1) for r in rects]
    return _detections(np.asarray(boxes, np.float64), np.asarray(scores))


class YuNetDetector(FaceDetector):
  """A YuNet ONNX model (libfacedetection / OpenCV zoo) via cv2.FaceDetectorYN.

  The model file is the user's (e.g. face_detection_yunet_2023mar.onnx from
  the OpenCV model zoo); nothing is downloaded. The network's input size is
  set to each image's size (OpenCV pads it to a multiple of 32), so boxes are
  in the image's pixels.

  Score: YuNet's face score sqrt(cls * obj) in [0, 1], after OpenCV's
  threshold and non-maximum suppression.

  Args:
    model_path: the .onnx file.
    score_threshold: faces scoring below are dropped (OpenCV's default 0.9).
    nms_threshold: IoU above which the weaker of two boxes is suppressed.
    top_k: candidates kept before NMS.

  Raises:
    UserError: the file is missing or OpenCV cannot read it as a YuNet model.
  """

  def __init__(self, model_path: str = "", score_threshold: float = 0.9,
               nms_threshold: float = 0.3, top_k: int = 5000):
    _check(bool(model_path), "detector 'yunet' needs model_path=<a YuNet .onnx "
           "file> (e.g. face_detection_yunet_2023mar.onnx from the OpenCV "
           "model zoo; no model is bundled)")
    model_path = os.path.expanduser(str(model_path))
    if not os.path.isfile(model_path):
      raise errors.MissingInputError(
          f"YuNet model {model_path} does not exist; pass the path of a YuNet "
          ".onnx file (e.g. face_detection_yunet_2023mar.onnx)")
    _check(0.0 <= float(score_threshold) <= 1.0, "yunet score_threshold must "
           f"be in [0, 1], got {score_threshold!r}")
    _check(0.0 <= float(nms_threshold) <= 1.0, "yunet nms_threshold must be in"
           f" [0, 1], got {nms_threshold!r}")
    _check(int(top_k) >= 1, f"yunet top_k must be >= 1, got {top_k!r}")
    cv2 = _import_cv2()
    if not hasattr(cv2, "FaceDetectorYN"):
      raise errors.UserError(f"this OpenCV ({cv2.__version__}) has no "
                             f"FaceDetectorYN; {OPENCV_INSTALL}")
    try:
      self._detector = cv2.FaceDetectorYN.create(
          model_path, "", (32, 32), float(score_threshold),
          float(nms_threshold), int(top_k))
      self._detector.setInputSize((32, 32))
      self._detector.detect(np.zeros((32, 32, 3), np.uint8))
    except cv2.error as e:
      message = str(e).strip().splitlines()
      raise errors.UserError(
          f"YuNet model {model_path} cannot be read or run by OpenCV "
          f"{cv2.__version__} as a YuNet face detector (expected outputs "
          f"cls_8..kps_32): {message[-1] if message else e}") from None
    self._cv2 = cv2
    self.name = "yunet"
    self.options = {"model_path": os.path.abspath(model_path),
                    "score_threshold": float(score_threshold),
                    "nms_threshold": float(nms_threshold), "top_k": int(top_k)}
    self.min_face_size = float(YUNET_MIN_FACE)

  def __call__(self, image: np.ndarray) -> List[Detection]:
    image = as_image(image)
    h, w = image.shape[:2]
    bgr = np.ascontiguousarray(image[..., ::-1])
    self._detector.setInputSize((w, h))
    _, faces = self._detector.detect(bgr)
    if faces is None:
      return []
    faces = np.asarray(faces, np.float64).reshape(-1, 15)
    return _detections(faces[:, :4], faces[:, 14])


_MAKERS: Dict[str, Callable[..., FaceDetector]] = {
    "haar": lambda **o: HaarDetector(cascade="default", **o),
    "haar_alt2": lambda **o: HaarDetector(cascade="alt2", **o),
    "dlib": DlibHogDetector,
    "yunet": YuNetDetector,
}


def make_detector(name: str, **options) -> Optional[FaceDetector]:
  """A detector by name (`DETECTOR_NAMES`); "none" returns None.

  None means no detector: callers crop the whole image (star_jax.predict's
  rule without a box). Options are the class's arguments (HaarDetector,
  DlibHogDetector, YuNetDetector); an unknown name or option is a UserError
  listing what is accepted.
  """
  if name not in DETECTOR_NAMES:
    raise errors.UserError(f"unknown detector {name!r}; expected one of "
                           f"{list(DETECTOR_NAMES)}")
  if name == "none":
    if options:
      raise errors.UserError(f"detector 'none' takes no options, got "
                             f"{sorted(options)}")
    return None
  maker = _MAKERS[name]
  if name.startswith("haar") and "cascade" in options:
    # describe()'s options name the cascade; accept it when it agrees.
    options = dict(options)
    cascade = options.pop("cascade")
    if f"haar_{cascade}" != name and not (cascade == "default" and
                                           name == "haar"):
      raise errors.UserError(f"detector {name!r} does not take cascade "
                             f"{cascade!r}; use detector 'haar' (default) or "
                             "'haar_alt2'")
  import inspect  # pylint: disable=g-import-not-at-top
  target = HaarDetector if name.startswith("haar") else maker
  accepted = [p for p in inspect.signature(target).parameters
              if p not in ("self", "cascade")]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise errors.UserError(f"detector {name!r}: unknown option(s) {unknown}; "
                           f"accepted: {accepted}")
  try:
    return maker(**options)
  except (TypeError, ValueError) as e:
    if isinstance(e, errors.UserError):
      raise
    raise errors.UserError(f"detector {name!r}: bad option value ({e}); "
                           f"accepted: {accepted}") from None


def parse_options(pairs: Sequence[str]) -> Dict[str, Any]:
  """`["key=value", ...]` (command line) -> options; numbers are converted."""
  out: Dict[str, Any] = {}
  for pair in pairs or ():
    key, sep, value = str(pair).partition("=")
    if not sep or not key.strip():
      raise errors.UserError(f"detector option {pair!r}: expected key=value, "
                             "e.g. min_neighbors=5")
    value = value.strip()
    for cast in (int, float):
      try:
        out[key.strip()] = cast(value)
        break
      except ValueError:
        continue
    else:
      out[key.strip()] = value
  return out


def box_center_scale(box, calibration=None) -> Tuple[np.ndarray, float]:
  """The model crop (centre [2], scale) of a detector box.

  Without a calibration: the public rule (data.transforms.center_scale_from_box:
  centre = box centre, scale = min(w, h) / 200 * 1.05). With one (an object
  with `apply(box) -> (center, scale)`, e.g. landmarks.box_calibration.
  BoxCalibration): the fitted map to the model's training crop.
  """
  if calibration is None:
    return transforms.center_scale_from_box(box)
  center, scale = calibration.apply(box)
  return np.asarray(center, np.float64), float(scale)

r"""Landmarks on image files in original pixels: JSON + overlay PNG per image.

  python -m star_jax.predict --image photo.jpg --out preds/      # ready model
  python -m star_jax.predict --image a.jpg --image b.png --out preds/ \
      [--detector haar|haar_alt2|dlib|yunet|none] [--yunet_model yunet.onnx]
  python -m star_jax.predict --checkpoint runs/yt68_star --image a.jpg \
      [--box x1,y1,x2,y2 | --landmarks a.pts] --out preds/
  python -m star_jax.predict --checkpoint yt68_star.zip --images frames/ \
      [--landmarks val.csv | --landmarks pts_folder/] --out preds/ \
      [--batch_size 16] [--which best|latest] [--params auto|ema|raw]

`--checkpoint` is a training workdir (`star_jax.inference.load_checkpoint`,
the live model) or an artifact file written by `star_jax.export` (run with
`star_jax.export.load`, no model code); default: the ready model
`models/yt68_photo.zip` (models/README.md). The decoder is the evaluation's,
with its horizontal-flip test when the checkpoint's config sets
`eval.flip_test` (an artifact carries its own choice, see star_jax.export).

For each input `<name>.<ext>` it writes `--out/<name>.json` and the overlay
`--out/<name>.png` (`landmarks.plots.faces_overlay`: points in green, face
boxes in orange, each point's 2-sigma uncertainty ellipse in blue, images
under 256 px upscaled by an integer factor; if two inputs share a stem,
`<name>_<ext>.*`); nothing is ever written anywhere else, and `--out` may
not be a folder holding inputs. The JSON holds the image size, the detector
and the model used, and "faces": one entry per face (detector order: score
descending) with "landmarks" `[N, 2]` in original pixels ((x, y), origin
top left, pixel centres at integers, README "Conventions"),
"landmarks_crop", "crop_to_image" (2x3), "box", "box_source" and, for
heatmap models, the uncertainty: "covariance" `[N, 2, 2]` (original pixels
squared: the covariance of each landmark's heatmap distribution, STAR eq. 4,
mapped by the crop's inverse), "std" `[N, 2]` (standard deviations along its
principal axes, minor then major: the square roots of the STAR PCA's
eigenvalues), "major_axis" `[N, 2]` (unit vector) and "spread" (mean major
std as a fraction of the crop side). Images are decoded with Pillow as
stored (EXIF orientation is not applied); grey and RGBA images are used as
RGB.

The face crop (the evaluation crop of `data/transforms.py`, no augmentation):
  * `--landmarks FILE`: the landmark box with the eval protocol of
    crop_mode "points": centre of the box, side = max(w, h) x points_margin
    (the checkpoint's `data.points_margin`, 1.25 by default). FILE is an iBUG
    `.pts` (read with data.readers.pts, 1-based -> 0-based), a yt68-style csv
    (`path,x0,y0,...` rows after an optional header; rows matched to images
    by relative path, then by file name), or, with --images, a folder of
    `.pts` files named like the images.
  * `--box x1,y1,x2,y2` (original pixels): read with the checkpoint's crop
    rule. A model trained with crop_mode "points" (yt68, the default config)
    saw landmark boxes, so the box is treated as a landmark box (side
    max(w, h) x points_margin); other models (WFLW / 300W / COFW, crop_mode
    "auto" / "box") use the public box rule (side min(w, h) x 1.05).
  * neither: every face the detector finds (`landmarks.detection`, default
    OpenCV's Haar cascade, bundled with opencv-python-headless: no download).
    Detector box -> crop: the model's calibration for that detector when it
    carries one (`landmarks.box_calibration`, fitted on training faces,
    stored in the artifact as extras/calibration_<detector>.json; box_source
    "detector_calibrated"), else the public rule (centre = box centre,
    scale = min(w, h) / 200 x 1.05; "detector"). `--detector none`: the whole
    image (its longer side fills the crop, the rest is black).
A box (given or from landmarks) must overlap the image, with at most half of
its area outside (faces cut by the border are fine, the crop is padded black
as in training); otherwise the image fails with a message, since such boxes
are usually in the wrong format (x, y, w, h) or for another image.

Errors: an unreadable image, a box outside it, missing landmarks for it or
no face found is reported on stderr by file name, the other images are
still processed, and the exit status is 1. Unreadable covers whatever a file
can be (`read_image`): missing, a folder, a dangling or looping symbolic
link, a device, random bytes, truncated, empty, a header claiming more
pixels than Pillow's decompression-bomb limit; landmarks (--landmarks)
that are not finite or lie absurdly far outside the image are refused the
same way. Inputs are only ever read. Bad arguments (box syntax,
missing checkpoint, unknown detector, --out among the inputs) exit with
status 2 before anything is written.

Predictions are batched (`--batch_size` crops per model call, last batch
padded, so one compiled shape); padding does not change the results
(tested: batched = one by one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import records as records_lib
from data import transforms
from data.readers import common as readers_common
from data.readers import pts as pts_reader
from training import errors

MAX_OUTSIDE_FRACTION = 0.5
# The ready model (models/README.md), relative to the repository root.
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "models", "yt68_photo.zip")


# ---------------------------------------------------------------- boxes ----

def parse_box(text: str) -> np.ndarray:
  """`"x1,y1,x2,y2"` -> float64 `[4]`; ValueError saying what is expected."""
  fields = [f.strip() for f in str(text).split(",")]
  try:
    if len(fields) != 4:
      raise ValueError(f"{len(fields)} fields")
    box = readers_common.parse_floats(fields)
  except ValueError as e:
    raise ValueError(
        f"--box {text!r}: expected four numbers x1,y1,x2,y2 (original pixels, "
        f"top-left and bottom-right corners), e.g. --box 10,20,110,140 "
        f"({e})") from None
  check_box_shape(box)
  return box


def check_box_shape(box) -> None:
  x1, y1, x2, y2 = (float(v) for v in box)
  if not all(np.isfinite([x1, y1, x2, y2])):
    raise ValueError(f"box {[x1, y1, x2, y2]} has non-finite values")
  if not (x2 > x1 and y2 > y1):
    raise ValueError(f"box {[x1, y1, x2, y2]}: expected x1 < x2 and y1 < y2 "
                     "(x1,y1,x2,y2 corners, not x,y,width,height?)")


def check_box_in_image(box, width: int, height: int) -> None:
  """ValueError unless `box` overlaps the image with <= half of it outside."""
  x1, y1, x2, y2 = (float(v) for v in box)
  check_box_shape(box)
  ix = max(0.0, min(x2, width - 1.0) - max(x1, 0.0))
  iy = max(0.0, min(y2, height - 1.0) - max(y1, 0.0))
  inside = ix * iy / ((x2 - x1) * (y2 - y1))
  if inside < 1.0 - MAX_OUTSIDE_FRACTION:
    where = "outside" if inside == 0 else f"{100 * (1 - inside):.0f} % outside"
    raise ValueError(
        f"box {[round(v, 2) for v in (x1, y1, x2, y2)]} lies {where} the image "
        f"({width} x {height} px); a box is x1,y1,x2,y2 in this image's pixels "
        f"(0 <= x <= {width - 1}, 0 <= y <= {height - 1}), at most "
        f"{MAX_OUTSIDE_FRACTION:.0%} of it outside")


def check_points(points, width: int, height: int) -> None:
  """ValueError unless `points` are usable landmarks of this image.

  The readers' check (`data.readers.common.face_problem`): some point is
  finite, and no point lies more than `FAR_OUTSIDE` image sides outside the
  image. Non-finite points are ignored, as by the crop
  (`transforms.center_scale_from_points`).
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  problem = readers_common.face_problem(
      points, visible=np.all(np.isfinite(points), axis=-1),
      size=(width, height))
  if problem is not None:
    raise ValueError(f"unusable --landmarks for this image: {problem}")


def face_crop_matrix(width: int, height: int, crop_size: int, *,
                     box=None, points=None, crop_mode: str = "points",
                     points_margin: float = transforms.POINTS_MARGIN
                     ) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
  """Image -> crop `[2, 3]` map, the face box used and where it came from.

  See the module docstring for the rules (points, box, whole image).
  Returns (image_to_crop float64 [2, 3], box [4] or None, source).
  """
  if points is not None:
    points = np.asarray(points, np.float64).reshape(-1, 2)
    used = readers_common.points_box(points).astype(np.float64)
    check_box_in_image(used, width, height)
    center, scale = transforms.center_scale_from_points(points, points_margin)
    source = "landmarks"
  elif box is not None:
    used = np.asarray(box, np.float64).reshape(4)
    check_box_in_image(used, width, height)
    if crop_mode == "points":
      center, scale = transforms.center_scale_from_points(
          used.reshape(2, 2), points_margin)
    else:
      center, scale = transforms.center_scale_from_box(used)
    source = "box"
  else:
    used = None
    center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    scale = max(width, height) / 200.0
    source = "whole_image"
  return transforms.crop_matrix(center, scale, crop_size), used, source


# ------------------------------------------------------------ landmarks ----

@dataclasses.dataclass
class LandmarkTable:
  """Landmarks to derive face boxes from, looked up by image path."""
  by_key: Dict[str, np.ndarray]
  by_name: Dict[str, List[np.ndarray]]
  source: str
  single: Optional[np.ndarray] = None   # one .pts for a single --image
  pts_dir: Optional[str] = None         # a folder of <stem>.pts

  def lookup(self, image_path: str, images_root: Optional[str]) -> np.ndarray:
    if self.single is not None:
      return self.single
    name = os.path.basename(image_path)
    if self.pts_dir is not None:
      path = os.path.join(self.pts_dir, os.path.splitext(name)[0] + ".pts")
      if not os.path.isfile(path):
        raise ValueError(f"no landmarks for {name}: {path} does not exist")
      return pts_reader.read_pts(path)
    if images_root:
      rel = os.path.relpath(image_path, images_root).replace(os.sep, "/")
      if rel in self.by_key:
        return self.by_key[rel]
    matches = self.by_name.get(name, [])
    if len(matches) == 1:
      return matches[0]
    if len(matches) > 1:
      raise ValueError(f"{self.source} has {len(matches)} rows named {name} "
                       "in different folders; make the csv paths relative to "
                       "--images")
    raise ValueError(f"no landmarks for {name} in {self.source}")


def _parse_csv_row(text: str):
  fields = text.split(",")
  if len(fields) < 5 or (len(fields) - 1) % 2:
    raise ValueError(f"expected 'path,x0,y0,x1,y1,...' (a path and an even "
                     f"count of numbers), got {len(fields)} fields")
  return fields[0].strip(), readers_common.parse_floats(fields[1:]).reshape(
      -1, 2)


def _is_header(line: str) -> bool:
  fields = line.split(",")
  if not fields[0].strip():      # yt68: ",0,1,...,135".
    return True
  try:
    readers_common.parse_floats(fields[1:2])
    return False
  except ValueError:
    return True


def read_landmarks(path: str, single_image: bool) -> LandmarkTable:
  """Reads `--landmarks` (.pts, yt68-style .csv, or a folder of .pts)."""
  if os.path.isdir(path):
    if single_image:
      raise ValueError(f"--landmarks {path} is a folder; with --image pass the "
                       "image's .pts file or a csv")
    return LandmarkTable({}, {}, path, pts_dir=path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--landmarks {path} does not exist")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".pts":
    if not single_image:
      raise ValueError(f"--landmarks {path}: one .pts file annotates one "
                       "image; with --images pass a folder of .pts files or a "
                       "csv")
    return LandmarkTable({}, {}, path, single=pts_reader.read_pts(path))
  if ext != ".csv":
    raise ValueError(f"--landmarks {path}: expected a .pts file, a .csv "
                     "(yt68 format: path,x0,y0,...) or a folder of .pts files")
  log = readers_common.ProblemLog("landmarks csv")
  lines = readers_common.read_lines(path, log)
  first = 2 if lines and _is_header(lines[0]) else 1
  by_key, by_name = {}, {}
  for _, (name, points) in readers_common.parsed_lines(
      lines, _parse_csv_row, log, path, first_line=first, what="csv row"):
    key = name.replace("\\", "/")
    by_key[key] = points
    by_name.setdefault(os.path.basename(key), []).append(points)
  for problem in log.problems:
    print(f"warning: {problem}", file=sys.stderr)
  if not by_key:
    raise ValueError(f"--landmarks {path}: no usable rows (expected "
                     "'path,x0,y0,...' lines)")
  return LandmarkTable(by_key, by_name, path)


# ------------------------------------------------------------ predictor ----

class Predictor:
  """Crops faces, runs a crop model in fixed-size batches, maps back.

  Args:
    crop_fn: uint8 `[B, S, S, 3]` crops -> `[B, N, 2]` landmarks in crop
      pixels (numpy or jax), or a dict with "landmarks_crop" and optionally
      "covariance_crop" `[B, N, 2, 2]` (crop pixels squared); B is always
      `batch_size`.
    crop_size: S.
    crop_mode, points_margin, antialias: the training crop rule
      (config.data).
    batch_size: images per model call (the last batch is padded).
    description: what the model is (stored in the JSON).
    calibrations: detector name -> `landmarks.box_calibration` dict (the
      detector box -> training crop map stored with the model).
    video_settings: the model config's `predict` block (One-Euro smoothing
      and the lost-track spread for videos; star_jax/predict_video.py).
  """

  def __init__(self, crop_fn: Callable[[np.ndarray], Any],
               crop_size: int, *, crop_mode: str = "points",
               points_margin: float = transforms.POINTS_MARGIN,
               antialias: bool = False,
               batch_size: int = 8, description: Optional[dict] = None,
               calibrations: Optional[Dict[str, dict]] = None,
               video_settings: Optional[dict] = None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.crop_fn = crop_fn
    self.crop_size = int(crop_size)
    self.crop_mode = crop_mode
    self.points_margin = float(points_margin)
    self.antialias = bool(antialias)
    self.batch_size = int(batch_size)
    self.description = dict(description or {})
    self.calibrations = dict(calibrations or {})
    self.video_settings = dict(video_settings or {})

  @classmethod
  def from_path(cls, path: str, which: str = "best",
                use_ema: Optional[bool] = None, batch_size: int = 8,
                uncertainty: bool = True) -> "Predictor":
    """A training workdir (live model) or a star_jax.export artifact file.

    uncertainty: the live model also returns each landmark's heatmap
    covariance (an artifact returns it when exported with it).
    Calibrations: an artifact's `extras/calibration_<detector>.json`, a
    workdir's `calibration_<detector>.json` files.
    """
    if os.path.isfile(path):
      from star_jax import export  # pylint: disable=g-import-not-at-top
      landmarker = export.load(path)
      data = landmarker.config.get("data", {})
      keys = ("landmarks_crop", "covariance_crop") if uncertainty else (
          "landmarks_crop",)
      return cls(lambda x: {k: v for k, v in landmarker(x).items()
                            if k in keys},
                 landmarker.crop_size, crop_mode=data.get("crop_mode", "auto"),
                 points_margin=data.get("points_margin",
                                        transforms.POINTS_MARGIN),
                 antialias=data.get("antialias", False),
                 batch_size=batch_size,
                 description={"artifact": os.path.abspath(path),
                              **landmarker.manifest.get("source", {})},
                 calibrations=_calibrations(landmarker.extras),
                 video_settings=landmarker.config.get("predict", {}))
    from star_jax import inference  # pylint: disable=g-import-not-at-top
    config, model, variables, info = inference.load_checkpoint(
        path, which, use_ema=use_ema, with_info=True)
    align = bool(config.loss.get("align_corners", False))
    flip = inference.flip_permutation_for(config)  # as config.eval.flip_test
    with_cov = bool(uncertainty) and (
        config.model.get("head", "heatmap") != "regression")

    def crop_fn(x):
      return inference.predict_crops(model, variables, x, align_corners=align,
                                     flip_permutation=flip,
                                     with_covariance=with_cov)
    return cls(crop_fn, int(config.data.crop_size),
               crop_mode=config.data.get("crop_mode", "auto"),
               points_margin=config.data.get("points_margin",
                                             transforms.POINTS_MARGIN),
               antialias=config.data.get("antialias", False),
               batch_size=batch_size, description=info,
               calibrations=_calibrations(_workdir_extras(path)),
               video_settings=config.get("predict", {}))

  def prepare(self, image: np.ndarray, box=None, points=None,
              center_scale=None, source: Optional[str] = None) -> dict:
    """Crop of one uint8 [H, W, 3] image and its maps (ValueError: bad box).

    center_scale: an explicit crop (centre [2], scale) for `box`, e.g. a
    detector box through its calibration; else the module docstring's rules.
    """
    h, w = image.shape[:2]
    if center_scale is not None:
      used = np.asarray(box, np.float64).reshape(4)
      check_box_in_image(used, w, h)
      m = transforms.crop_matrix(np.asarray(center_scale[0], np.float64),
                                 float(center_scale[1]), self.crop_size)
      source = source or "box"
    else:
      m, used, source0 = face_crop_matrix(
          w, h, self.crop_size, box=box, points=points,
          crop_mode=self.crop_mode, points_margin=self.points_margin)
      source = source or source0
    return {"crop": transforms.warp_affine(image, m, self.crop_size,
                                           self.antialias),
            "image_to_crop": m, "crop_to_image": transforms.invert_affine(m),
            "box": used, "box_source": source, "size": (w, h)}

  def run_crops_full(self, crops: np.ndarray) -> Dict[str, np.ndarray]:
    """uint8 `[M, S, S, 3]` -> float64 "landmarks_crop" `[M, N, 2]` (and
    "covariance_crop" `[M, N, 2, 2]` when the model gives it); padded batches.
    """
    out: Dict[str, list] = {}
    for start in range(0, len(crops), self.batch_size):
      chunk = crops[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate(
            [chunk, np.zeros((pad,) + chunk.shape[1:], np.uint8)])
      pred = self.crop_fn(chunk)
      if not isinstance(pred, dict):
        pred = {"landmarks_crop": pred}
      for k, v in pred.items():
        out.setdefault(k, []).append(
            np.asarray(v, np.float64)[:self.batch_size - pad])
    return {k: np.concatenate(v) for k, v in out.items()}

  def run_crops(self, crops: np.ndarray) -> np.ndarray:
    """uint8 `[M, S, S, 3]` -> float64 `[M, N, 2]` crop pixels (padded)."""
    return self.run_crops_full(crops)["landmarks_crop"]

  def predict(self, images: Sequence[np.ndarray], boxes=None, points=None
              ) -> List[dict]:
    """Landmarks of one face per image (uint8 [H, W, 3] each), original pixels.

    Args:
      images: the images.
      boxes: None or one box (or None) per image.
      points: None or one landmark array (or None) per image.

    Returns:
      One `face_result` dict per image ("landmarks" float64 `[N, 2]` original
      pixels, "landmarks_crop", "crop_to_image" `[2, 3]`, "box",
      "box_source", "size", and the uncertainty when the model gives it).
    """
    n = len(images)
    boxes = [None] * n if boxes is None else list(boxes)
    points = [None] * n if points is None else list(points)
    preps = [self.prepare(records_lib.as_rgb_uint8(im), b, p)
             for im, b, p in zip(images, boxes, points)]
    return self.finish(preps)

  def finish(self, preps: Sequence[dict]) -> List[dict]:
    """Runs the model on prepared crops -> one `face_result` per crop."""
    if not preps:
      return []
    out = self.run_crops_full(np.stack([p["crop"] for p in preps]))
    cov = out.get("covariance_crop")
    return [face_result(prep, out["landmarks_crop"][i],
                        None if cov is None else cov[i], self.crop_size)
            for i, prep in enumerate(preps)]

  def detector_crops(self, image: np.ndarray, detector,
                     detector_name: str) -> List[dict]:
    """One prepared crop per detected face (detector order), uint8 RGB image.

    The box -> crop map is the model's calibration for `detector_name` when
    it has one (box_source "detector_calibrated"), else the public rule
    (centre = box centre, scale = min(w, h) / 200 x 1.05; "detector").
    A face at the border is cropped as any other (the crop is zero-padded
    outside the image).
    """
    return [self.detector_prep(image, det.box, det.score, detector_name)
            for det in detector(image)]

  def detector_prep(self, image: np.ndarray, box, score: float,
                    detector_name: str) -> dict:
    """The prepared crop of one detector box (its calibration if stored)."""
    box = np.asarray(box, np.float64)
    calibration = self.calibration_for(detector_name)
    if calibration is not None:
      cs, source = calibration.apply(box), "detector_calibrated"
    else:
      cs, source = transforms.center_scale_from_box(box), "detector"
    prep = self.prepare(image, box=box, center_scale=cs, source=source)
    prep["score"] = float(score)
    return prep

  def calibration_for(self, detector_name: str):
    """The stored `BoxCalibration` for a detector, or None."""
    d = self.calibrations.get(detector_name)
    if d is None:
      return None
    from landmarks import box_calibration  # pylint: disable=g-import-not-at-top
    return box_calibration.BoxCalibration.from_dict(d)


def _calibrations(extras: Dict[str, dict]) -> Dict[str, dict]:
  """`calibration_<detector>` extras -> {detector: dict}."""
  prefix = "calibration_"
  return {k[len(prefix):]: v for k, v in extras.items()
          if k.startswith(prefix)}


def _workdir_extras(workdir: str) -> Dict[str, dict]:
  """`<workdir>/calibration_*.json` files, as the artifact's extras."""
  extras = {}
  if os.path.isdir(workdir):
    for name in sorted(os.listdir(workdir)):
      if name.startswith("calibration_") and name.endswith(".json"):
        with open(os.path.join(workdir, name)) as f:
          extras[name[:-len(".json")]] = json.load(f)
  return extras


def uncertainty_summary(covariance: np.ndarray) -> Dict[str, np.ndarray]:
  """Per landmark: std along the principal axes (minor, major) and the unit
  major axis, from `[N, 2, 2]` covariances (numpy float64 `eigh`)."""
  cov = np.asarray(covariance, np.float64)
  cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
  values, vectors = np.linalg.eigh(cov)          # ascending.
  major = vectors[..., :, 1]
  major = major * np.where(major[..., :1] < 0, -1.0, 1.0)  # x >= 0: unique.
  return {"std": np.sqrt(np.maximum(values, 0.0)), "major_axis": major}


def face_result(prep: dict, crop_points: np.ndarray,
                crop_covariance: Optional[np.ndarray], crop_size: int) -> dict:
  """A prediction: crop points mapped by the crop's inverse (float64).

  With a covariance: "covariance" `[N, 2, 2]` in original pixels squared
  (A C A^T, A the crop -> image linear part), its "std" (minor, major) and
  "major_axis", and "spread": the mean major std over the points as a
  fraction of the crop side (scale-free; larger = less sure).
  """
  c2i = prep["crop_to_image"]
  out = {"landmarks": transforms.apply_affine(c2i, crop_points),
         "landmarks_crop": crop_points,
         **{k: v for k, v in prep.items() if k != "crop"}}
  if crop_covariance is not None:
    a = np.asarray(c2i, np.float64)[:, :2]
    cov = np.einsum("ij,njk,lk->nil", a, crop_covariance, a)
    summary = uncertainty_summary(cov)
    out["covariance"] = cov
    out.update(summary)
    crop_std = uncertainty_summary(crop_covariance)["std"]
    out["spread"] = float(crop_std[:, 1].mean() / crop_size)
  return out


# ---------------------------------------------------------------- files ----

def read_image(path: str) -> np.ndarray:
  """Decodes one input image as uint8 RGB `[H, W, 3]` (grey, RGBA -> RGB).

  Raises:
    ValueError: saying what the file is instead of an image (not found, a
      folder, a symbolic link that does not resolve, a device or pipe),
      that it is too large (over Pillow's decompression-bomb limit,
      PIL.Image.MAX_IMAGE_PIXELS, checked from the header before any pixel
      is decoded), or that it cannot be decoded (random bytes, truncated,
      empty). The caller names the file.
  """
  problem = readers_common.file_problem(path)
  if problem is not None:
    raise ValueError(f"cannot read image: the path {problem}")
  if os.path.getsize(path) == 0:
    raise ValueError("cannot decode image: the file is empty (0 bytes)")
  try:
    image = records_lib.decode_image_file(path)
  except (OSError, ValueError) as e:
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    if readers_common.is_too_large(cause):
      raise ValueError(readers_common.image_error_message(cause)) from None
    raise ValueError(f"cannot decode image ({type(cause).__name__}: "
                     f"{cause})") from None
  return records_lib.as_rgb_uint8(image, path)


def list_images(folder: str) -> List[str]:
  """Entries directly in `folder` named like images (sorted; not recursive).

  An entry named like an image that is not a readable file (a folder, a
  dangling or looping symbolic link) is listed too, so that it is reported
  by name (`read_image`) rather than skipped silently.
  """
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--images {folder} is not a folder")
  names = sorted(f for f in os.listdir(folder)
                 if readers_common.is_image_file(f))
  paths = [os.path.join(folder, f) for f in names]
  if not paths:
    raise FileNotFoundError(
        f"--images {folder} holds no image files "
        f"({', '.join(readers_common.IMAGE_EXTENSIONS)})")
  return paths


def output_stems(paths: Sequence[str]) -> List[str]:
  """Output file stems: the input's stem, `<stem>_<ext>` where stems repeat."""
  names = [os.path.basename(os.path.normpath(p)) for p in paths]
  stems = [os.path.splitext(n)[0] for n in names]
  repeated = {s for s in stems if stems.count(s) > 1}
  out = []
  for n, s in zip(names, stems):
    if s in repeated:
      s = n.replace(".", "_")
    out.append(s)
  return out


def check_out_dir(out_dir: str, inputs: Sequence[str]) -> None:
  """ValueError if `out_dir` is a folder holding an input (never written)."""
  out = os.path.realpath(out_dir)
  for p in inputs:
    if os.path.realpath(os.path.dirname(os.path.abspath(p))) == out:
      raise ValueError(f"--out {out_dir} is the folder of the input {p}; "
                       "choose a separate output folder (inputs are never "
                       "written next to)")


def draw_overlay(image: np.ndarray, faces: Sequence[dict]):
  """The image with every face's points, box and 2-sigma ellipses (PIL).

  `landmarks.plots.faces_overlay`: images under 256 px are upscaled by an
  integer factor so the points stay visible.
  """
  from landmarks import plots  # pylint: disable=g-import-not-at-top
  return plots.faces_overlay(image, faces)


def _rounded(a, digits: int = 4):
  return None if a is None else np.asarray(a, np.float64).round(digits).tolist()


def face_json(face: dict) -> dict:
  """One face of the JSON file (see the module docstring)."""
  out = {
      "landmarks": _rounded(face["landmarks"]),
      "landmarks_crop": _rounded(face["landmarks_crop"]),
      "crop_to_image": (np.asarray(face["crop_to_image"]) + 0.0).tolist(),
      "box": _rounded(face["box"], 6),
      "box_source": face["box_source"],
  }
  if "score" in face:
    out["detector_score"] = round(float(face["score"]), 6)
  if "covariance" in face:
    out["covariance"] = _rounded(face["covariance"], 6)
    out["std"] = _rounded(face["std"])
    out["major_axis"] = _rounded(face["major_axis"])
    out["spread"] = round(float(face["spread"]), 6)
  return out


def _to_json(path: str, size, faces: Sequence[dict], model: dict,
             detector: Optional[str]) -> dict:
  w, h = size
  return {
      "image": os.path.abspath(path),
      "width": int(w), "height": int(h),
      "detector": detector,
      "faces": [face_json(f) for f in faces],
      "model": model,
      "coordinates": ("(x, y) pixels of the original image, origin top-left, "
                      "pixel centres at integers; covariance in pixels "
                      "squared, std along the principal axes (minor, major)"),
  }


def _dumps(record: dict) -> str:
  """JSON with one top-level key per line and compact arrays."""
  lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()]
  return "{\n" + ",\n".join(lines) + "\n}\n"


def no_face_message(detector_name: str, detector) -> str:
  size = getattr(detector, "min_face_size", None)
  limit = f" (it finds faces of at least {size} px)" if size else ""
  return (f"no face found by the {detector_name} detector{limit}; pass "
          "--box x1,y1,x2,y2 or --landmarks, try --detector haar_alt2 / dlib "
          "/ yunet, or --detector none to use the whole image")


def image_crops(predictor: Predictor, image: np.ndarray, *, box=None,
                points=None, detector=None, detector_name: str = "none"
                ) -> List[dict]:
  """The prepared face crops of one image by the CLI's rules (ValueError).

  Given landmarks or a box: that one face. Else the detector's faces (none
  found: ValueError with `no_face_message`), or the whole image when there
  is no detector.
  """
  if points is not None or box is not None or detector is None:
    return [predictor.prepare(image, box=box, points=points)]
  preps = predictor.detector_crops(image, detector, detector_name)
  if not preps:
    raise ValueError(no_face_message(detector_name, detector))
  return preps


def predict_files(predictor: Predictor, image_paths: Sequence[str],
                  out_dir: str, *, box=None,
                  landmarks: Optional[LandmarkTable] = None,
                  images_root: Optional[str] = None, overlay: bool = True,
                  detector=None, detector_name: str = "none"
                  ) -> Tuple[List[str], List[Tuple[str, str]]]:
  """Predicts every image file, writes `<stem>.json` (+ `.png`) to `out_dir`.

  Returns:
    (written JSON paths, failures as (image path, message)). A failing image
    (unreadable, bad box, no landmarks, no face found) does not stop the
    others.
  """
  check_out_dir(out_dir, image_paths)
  os.makedirs(out_dir, exist_ok=True)
  stems = output_stems(image_paths)
  written, failures = [], []
  step = predictor.batch_size
  for start in range(0, len(image_paths), step):
    chunk = []
    for path, stem in zip(image_paths[start:start + step],
                          stems[start:start + step]):
      try:
        image = read_image(path)
        points = (landmarks.lookup(path, images_root)
                  if landmarks is not None else None)
        if points is not None:
          check_points(points, image.shape[1], image.shape[0])
        preps = image_crops(predictor, image, box=box, points=points,
                            detector=detector, detector_name=detector_name)
      except (OSError, ValueError) as e:
        failures.append((path, str(e)))
        continue
      chunk.append((path, stem, image, preps))
    if not chunk:
      continue
    faces = predictor.finish([p for c in chunk for p in c[3]])
    for path, stem, image, preps in chunk:
      mine, faces = faces[:len(preps)], faces[len(preps):]
      json_path = os.path.join(out_dir, stem + ".json")
      with open(json_path, "w") as f:
        f.write(_dumps(_to_json(path, mine[0]["size"], mine,
                                predictor.description,
                                detector_name if detector else None)))
      if overlay:
        draw_overlay(image, mine).save(os.path.join(out_dir, stem + ".png"))
      written.append(json_path)
  return written, failures


# ------------------------------------------------------------------ CLI ----

def _parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m star_jax.predict",
      description="Predict facial landmarks (original pixels) on images.")
  p.add_argument("--checkpoint", default=DEFAULT_MODEL,
                 help="training workdir, or an artifact from star_jax.export "
                      f"(default: the ready model {DEFAULT_MODEL})")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--image", action="append",
                   help="an image file (repeat for several)")
  src.add_argument("--images", help="a folder of images (not recursive)")
  src.add_argument("--video", action="append",
                   help="a video file, tracked frame to frame (repeat for "
                        "several; star_jax/predict_video.py)")
  src.add_argument("--frames", action="append",
                   help="a folder of video frames in name order (repeat for "
                        "several)")
  p.add_argument("--box", help="face box x1,y1,x2,y2 in original pixels")
  p.add_argument("--landmarks",
                 help=".pts, yt68-style .csv, or a folder of .pts (face box "
                      "from the points)")
  p.add_argument("--detector", default="haar",
                 help="face detector when neither --box nor --landmarks is "
                      "given: haar (default, bundled with OpenCV), "
                      "haar_alt2, dlib (pip install dlib-bin), yunet (with "
                      "--yunet_model FILE.onnx), none (the whole image)")
  p.add_argument("--yunet_model", help="YuNet .onnx file for --detector yunet")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--which", default="best", choices=("best", "latest"))
  p.add_argument("--params", default="auto", choices=("auto", "ema", "raw"))
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--no_overlay", action="store_true",
                 help="write the JSON (and, for videos, CSV) files only")
  v = p.add_argument_group("video (--video / --frames); defaults: the model "
                           "config's predict block")
  v.add_argument("--fps", type=float,
                 help="frame rate of --frames (default 25; a video's own)")
  v.add_argument("--no_smooth", dest="smooth", action="store_const",
                 const=False, help="report the raw tracked landmarks")
  v.add_argument("--min_cutoff", type=float,
                 help="One-Euro cut-off of a still face, Hz")
  v.add_argument("--beta", type=float,
                 help="One-Euro speed coefficient, Hz per face size per s")
  v.add_argument("--d_cutoff", type=float,
                 help="One-Euro cut-off of the speed estimate, Hz")
  v.add_argument("--max_spread", type=float,
                 help="re-detect when the predicted spread (fraction of the "
                      "crop) exceeds this; 0 = never")
  return p.parse_args(argv)


def make_detector(name: str, yunet_model: Optional[str] = None):
  """`--detector` -> a detector (None for "none"); ValueError if unknown."""
  from landmarks import detection  # pylint: disable=g-import-not-at-top
  if name == "none":
    return None
  options = {"model_path": yunet_model} if name == "yunet" else {}
  return detection.make_detector(name, **options)


def main(argv=None) -> int:
  """Exit status: 0 all written, 1 some images failed, 2 bad arguments."""
  args = _parse_args(argv)
  try:
    if args.box is not None and args.landmarks is not None:
      raise ValueError("pass either --box or --landmarks, not both")
    box = parse_box(args.box) if args.box is not None else None
    videos = list(args.video or []) + list(args.frames or [])
    if videos and (box is not None or args.landmarks is not None):
      raise ValueError("--box / --landmarks are for images; a video's face "
                       "is found by --detector")
    if args.image is not None:
      paths, root = list(args.image), None
    elif args.images is not None:
      paths, root = list_images(args.images), args.images
    else:
      paths, root = videos, None
    check_out_dir(args.out, paths)
    table = (read_landmarks(args.landmarks, single_image=len(paths) == 1
                            and args.image is not None)
             if args.landmarks is not None else None)
    detector = (make_detector(args.detector, args.yunet_model)
                if box is None and table is None else None)
    predictor = Predictor.from_path(
        args.checkpoint, args.which,
        use_ema={"auto": None, "ema": True, "raw": False}[args.params],
        batch_size=args.batch_size)
    if videos:
      from star_jax import predict_video  # pylint: disable=g-import-not-at-top
      settings = predict_video.tracker_settings(
          predictor.video_settings,
          {"smooth": args.smooth, "one_euro_min_cutoff": args.min_cutoff,
           "one_euro_beta": args.beta, "one_euro_d_cutoff": args.d_cutoff,
           "max_spread": args.max_spread})
  except (FileNotFoundError, ValueError, errors.UserError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if videos:
    return _predict_videos(predictor, videos, args, detector, settings)
  written, failures = predict_files(predictor, paths, args.out, box=box,
                                    landmarks=table, images_root=root,
                                    overlay=not args.no_overlay,
                                    detector=detector,
                                    detector_name=args.detector)
  for path, message in failures:
    print(f"error: {os.path.basename(path)}: {message}", file=sys.stderr)
  print(f"wrote {len(written)} prediction(s) to {args.out}"
        + (f"; {len(failures)} image(s) failed" if failures else ""))
  return 1 if failures else 0


def _predict_videos(predictor, paths, args, detector, settings) -> int:
  """Each video / frame folder in turn; a failing one does not stop the rest."""
  from star_jax import predict_video  # pylint: disable=g-import-not-at-top
  failures = 0
  for path, stem in zip(paths, output_stems(paths)):
    try:
      summary = predict_video.predict_video(
          predictor, path, args.out, stem, detector=detector,
          detector_name=args.detector, settings=settings, fps=args.fps,
          overlay=not args.no_overlay)
    except (OSError, ValueError, errors.UserError) as e:
      print(f"error: {path}: {e}", file=sys.stderr)
      failures += 1
      continue
    print(f"{path}: {summary['frames']} frames, face in {summary['faces']} "
          f"({summary['tracked']} tracked, {summary['detected']} detected, "
          f"{summary['re_detected']} re-detections) -> "
          + ", ".join(sorted(summary["paths"].values())))
  if failures:
    print(f"{failures} of {len(paths)} video(s) failed", file=sys.stderr)
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())

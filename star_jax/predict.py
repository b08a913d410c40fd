r"""Landmarks on image files in original pixels: JSON + overlay PNG per image.

  python -m star_jax.predict --checkpoint runs/yt68_star --image a.jpg \
      [--box x1,y1,x2,y2 | --landmarks a.pts] --out preds/
  python -m star_jax.predict --checkpoint yt68_star.zip --images frames/ \
      [--landmarks val.csv | --landmarks pts_folder/] --out preds/ \
      [--batch_size 16] [--which best|latest] [--params auto|ema|raw]

`--checkpoint` is a training workdir (`star_jax.inference.load_checkpoint`,
the live model) or an artifact file written by `star_jax.export` (run with
`star_jax.export.load`, no model code). The decoder is the evaluation's,
with its horizontal-flip test when the checkpoint's config sets
`eval.flip_test` (an artifact carries its own choice, see star_jax.export).

For each input `<name>.<ext>` it writes `--out/<name>.json` and the overlay
`--out/<name>.png` (`landmarks.plots.landmark_overlay`: points in green, the
face box in orange, images under 256 px upscaled by an integer factor; if two
inputs share a stem, `<name>_<ext>.*`); nothing is
ever written anywhere else, and `--out` may not be a folder holding inputs.
The JSON holds "landmarks" `[N, 2]` in original pixels ((x, y), origin top
left, pixel centres at integers, README "Conventions"), "landmarks_crop",
"crop_to_image" (2x3), "box" and "box_source", the image size and the model
used. Images are decoded with Pillow as stored (EXIF orientation is not
applied).

The crop (the evaluation crop of `data/transforms.py`, no augmentation):
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
  * neither: the whole image (its longer side fills the crop, the rest is
    black). No face detector is used: none is a dependency of this project,
    so for images with a small face pass a box or landmarks.
A box (given or from landmarks) must overlap the image, with at most half of
its area outside (faces cut by the border are fine, the crop is padded black
as in training); otherwise the image fails with a message, since such boxes
are usually in the wrong format (x, y, w, h) or for another image.

Errors: an unreadable image, a box outside it or missing landmarks for it is
reported on stderr by file name, the other images are still processed, and
the exit status is 1. Bad arguments (box syntax, missing checkpoint, --out
among the inputs) exit with status 2 before anything is written.

Predictions are batched (`--batch_size`, last batch padded, so one compiled
shape); padding does not change the results (tested: batched = one by one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import records as records_lib
from data import transforms
from data.readers import common as readers_common
from data.readers import pts as pts_reader

MAX_OUTSIDE_FRACTION = 0.5


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
  lines = readers_common.read_lines(path)
  first = 2 if lines and _is_header(lines[0]) else 1
  log = readers_common.ProblemLog("landmarks csv")
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
      pixels (numpy or jax); B is always `batch_size`.
    crop_size: S.
    crop_mode, points_margin: the training crop rule (config.data).
    batch_size: images per model call (the last batch is padded).
    description: what the model is (stored in the JSON).
  """

  def __init__(self, crop_fn: Callable[[np.ndarray], np.ndarray],
               crop_size: int, *, crop_mode: str = "points",
               points_margin: float = transforms.POINTS_MARGIN,
               batch_size: int = 8, description: Optional[dict] = None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.crop_fn = crop_fn
    self.crop_size = int(crop_size)
    self.crop_mode = crop_mode
    self.points_margin = float(points_margin)
    self.batch_size = int(batch_size)
    self.description = dict(description or {})

  @classmethod
  def from_path(cls, path: str, which: str = "best",
                use_ema: Optional[bool] = None, batch_size: int = 8
                ) -> "Predictor":
    """A training workdir (live model) or a star_jax.export artifact file."""
    if os.path.isfile(path):
      from star_jax import export  # pylint: disable=g-import-not-at-top
      landmarker = export.load(path)
      data = landmarker.config.get("data", {})
      return cls(lambda x: landmarker(x)["landmarks_crop"],
                 landmarker.crop_size, crop_mode=data.get("crop_mode", "auto"),
                 points_margin=data.get("points_margin",
                                        transforms.POINTS_MARGIN),
                 batch_size=batch_size,
                 description={"artifact": os.path.abspath(path),
                              **landmarker.manifest.get("source", {})})
    from star_jax import inference  # pylint: disable=g-import-not-at-top
    config, model, variables, info = inference.load_checkpoint(
        path, which, use_ema=use_ema, with_info=True)
    align = bool(config.loss.get("align_corners", False))
    flip = inference.flip_permutation_for(config)  # as config.eval.flip_test

    def crop_fn(x):
      return inference.predict_crops(model, variables, x, align_corners=align,
                                     flip_permutation=flip)["landmarks_crop"]
    return cls(crop_fn, int(config.data.crop_size),
               crop_mode=config.data.get("crop_mode", "auto"),
               points_margin=config.data.get("points_margin",
                                             transforms.POINTS_MARGIN),
               batch_size=batch_size, description=info)

  def prepare(self, image: np.ndarray, box=None, points=None) -> dict:
    """Crop of one uint8 [H, W, 3] image and its maps (ValueError: bad box)."""
    h, w = image.shape[:2]
    m, used, source = face_crop_matrix(
        w, h, self.crop_size, box=box, points=points,
        crop_mode=self.crop_mode, points_margin=self.points_margin)
    return {"crop": transforms.warp_affine(image, m, self.crop_size,
                                           self.antialias),
            "image_to_crop": m, "crop_to_image": transforms.invert_affine(m),
            "box": used, "box_source": source, "size": (w, h)}

  def run_crops(self, crops: np.ndarray) -> np.ndarray:
    """uint8 `[M, S, S, 3]` -> float64 `[M, N, 2]` crop pixels (padded)."""
    out = []
    for start in range(0, len(crops), self.batch_size):
      chunk = crops[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate(
            [chunk, np.zeros((pad,) + chunk.shape[1:], np.uint8)])
      pred = np.asarray(self.crop_fn(chunk), np.float64)
      out.append(pred[:self.batch_size - pad])
    return np.concatenate(out)

  def predict(self, images: Sequence[np.ndarray], boxes=None, points=None
              ) -> List[dict]:
    """Landmarks of faces in images (uint8 [H, W, 3] each), original pixels.

    Args:
      images: the images.
      boxes: None or one box (or None) per image.
      points: None or one landmark array (or None) per image.

    Returns:
      One dict per image: "landmarks" float64 `[N, 2]` original pixels,
      "landmarks_crop", "crop_to_image" `[2, 3]`, "box", "box_source", "size".
    """
    n = len(images)
    boxes = [None] * n if boxes is None else list(boxes)
    points = [None] * n if points is None else list(points)
    preps = [self.prepare(records_lib.as_rgb_uint8(im), b, p)
             for im, b, p in zip(images, boxes, points)]
    if not preps:
      return []
    crop_points = self.run_crops(np.stack([p["crop"] for p in preps]))
    return [_result(prep, cp) for prep, cp in zip(preps, crop_points)]


def _result(prep: dict, crop_points: np.ndarray) -> dict:
  """A prediction: crop points mapped by the crop's inverse (float64)."""
  return {"landmarks": transforms.apply_affine(prep["crop_to_image"],
                                               crop_points),
          "landmarks_crop": crop_points,
          **{k: v for k, v in prep.items() if k != "crop"}}


# ---------------------------------------------------------------- files ----

def list_images(folder: str) -> List[str]:
  """Image files directly in `folder` (sorted; not recursive)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"--images {folder} is not a folder")
  names = sorted(f for f in os.listdir(folder)
                 if readers_common.is_image_file(f))
  paths = [os.path.join(folder, f) for f in names]
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise FileNotFoundError(
        f"--images {folder} holds no image files "
        f"({', '.join(readers_common.IMAGE_EXTENSIONS)})")
  return paths


def output_stems(paths: Sequence[str]) -> List[str]:
  """Output file stems: the input's stem, `<stem>_<ext>` where stems repeat."""
  stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
  repeated = {s for s in stems if stems.count(s) > 1}
  out = []
  for p, s in zip(paths, stems):
    if s in repeated:
      s = os.path.basename(p).replace(".", "_")
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


def draw_overlay(image: np.ndarray, points: np.ndarray, box=None):
  """The image with the points (and the face box) drawn, as a PIL image.

  `landmarks.plots.landmark_overlay`: images under 256 px are upscaled by
  an integer factor so the points stay visible.
  """
  from landmarks import plots  # pylint: disable=g-import-not-at-top
  return plots.landmark_overlay(
      image, points, box=None if box is None else [float(v) for v in box])


def _to_json(path: str, result: dict, model: dict) -> dict:
  w, h = result["size"]
  box = result["box"]
  return {
      "image": os.path.abspath(path),
      "width": int(w), "height": int(h),
      "landmarks": np.asarray(result["landmarks"]).round(4).tolist(),
      "landmarks_crop": np.asarray(result["landmarks_crop"]).round(4).tolist(),
      "crop_to_image": (np.asarray(result["crop_to_image"]) + 0.0).tolist(),
      "box": None if box is None else np.asarray(box, float).tolist(),
      "box_source": result["box_source"],
      "model": model,
      "coordinates": ("(x, y) pixels of the original image, origin top-left, "
                      "pixel centres at integers"),
  }


def _dumps(record: dict) -> str:
  """JSON with one top-level key per line and compact arrays."""
  lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in record.items()]
  return "{\n" + ",\n".join(lines) + "\n}\n"


def predict_files(predictor: Predictor, image_paths: Sequence[str],
                  out_dir: str, *, box=None,
                  landmarks: Optional[LandmarkTable] = None,
                  images_root: Optional[str] = None, overlay: bool = True
                  ) -> Tuple[List[str], List[Tuple[str, str]]]:
  """Predicts every image file, writes `<stem>.json` (+ `.png`) to `out_dir`.

  Returns:
    (written JSON paths, failures as (image path, message)). A failing image
    (unreadable, bad box, no landmarks) does not stop the others.
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
        image = records_lib.as_rgb_uint8(records_lib.decode_image_file(path),
                                         path)
        points = (landmarks.lookup(path, images_root)
                  if landmarks is not None else None)
        prep = predictor.prepare(image, box=box, points=points)
      except (OSError, ValueError) as e:
        failures.append((path, str(e)))
        continue
      chunk.append((path, stem, image, prep))
    if not chunk:
      continue
    crop_points = predictor.run_crops(np.stack([c[3]["crop"] for c in chunk]))
    for (path, stem, image, prep), cp in zip(chunk, crop_points):
      result = _result(prep, cp)
      json_path = os.path.join(out_dir, stem + ".json")
      with open(json_path, "w") as f:
        f.write(_dumps(_to_json(path, result, predictor.description)))
      if overlay:
        draw_overlay(image, result["landmarks"], result["box"]).save(
            os.path.join(out_dir, stem + ".png"))
      written.append(json_path)
  return written, failures


# ------------------------------------------------------------------ CLI ----

def _parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m star_jax.predict",
      description="Predict facial landmarks (original pixels) on images.")
  p.add_argument("--checkpoint", required=True,
                 help="training workdir, or an artifact from star_jax.export")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--image", help="one image file")
  src.add_argument("--images", help="a folder of images (not recursive)")
  p.add_argument("--box", help="face box x1,y1,x2,y2 in original pixels")
  p.add_argument("--landmarks",
                 help=".pts, yt68-style .csv, or a folder of .pts (face box "
                      "from the points)")
  p.add_argument("--out", required=True, help="output folder")
  p.add_argument("--which", default="best", choices=("best", "latest"))
  p.add_argument("--params", default="auto", choices=("auto", "ema", "raw"))
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--no_overlay", action="store_true",
                 help="write the JSON files only")
  return p.parse_args(argv)


def main(argv=None) -> int:
  """Exit status: 0 all written, 1 some images failed, 2 bad arguments."""
  args = _parse_args(argv)
  try:
    if args.box is not None and args.landmarks is not None:
      raise ValueError("pass either --box or --landmarks, not both")
    box = parse_box(args.box) if args.box is not None else None
    if args.image is not None:
      paths, root = [args.image], None
    else:
      paths, root = list_images(args.images), args.images
    check_out_dir(args.out, paths)
    table = (read_landmarks(args.landmarks, single_image=args.image is not None)
             if args.landmarks is not None else None)
    predictor = Predictor.from_path(
        args.checkpoint, args.which,
        use_ema={"auto": None, "ema": True, "raw": False}[args.params],
        batch_size=args.batch_size)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  written, failures = predict_files(predictor, paths, args.out, box=box,
                                    landmarks=table, images_root=root,
                                    overlay=not args.no_overlay)
  for path, message in failures:
    print(f"error: {os.path.basename(path)}: {message}", file=sys.stderr)
  print(f"wrote {len(written)} prediction(s) to {args.out}"
        + (f"; {len(failures)} image(s) failed" if failures else ""))
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())

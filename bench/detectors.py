r"""Face detectors on an annotated split: detection rate, speed, crop error, NME.

  python bench/detectors.py --data_root ../shared/data/yt68 --split val \
      --calib_dir CALIB_DIR [--detectors haar,haar_alt2,dlib] \
      [--checkpoint WORKDIR_OR_ARTIFACT] [--limit N] [--out results.json]

`CALIB_DIR/<detector>.json` are calibrations fitted on the TRAIN split with
`python -m star_jax.calibrate_detector` (the detector is rebuilt with the
options stored there); a detector without one gets no "calibrated" rows.
dlib is skipped, with a note, when it is not installed.

Per detector (Markdown tables on stdout):
  * detection: faces, matched (landmarks.box_calibration.match_face: the
    box contains the landmark-box centre, IoU > 0.3), rate, detector
    ms / image (decoding excluded), the detector's minimum face size; every
    missed face is listed by file with the reason.
  * crop error against the landmark crop (`data.transforms.
    record_center_scale(record, crop_mode, points_margin)`, the crop a
    model trained with that rule saw), on the matched faces: centre error /
    inter-ocular distance (outer eye corners 36, 45), the scale ratio
    (crop scale / landmark-crop scale: median, and the mean |log| ratio).
    Rules: "public" (centre = box centre, scale = min(w, h) / 200 * 1.05),
    "calibrated" (the fitted map), and, for crop_mode "points", "box as
    landmark box" (what star_jax.predict does today with --box for such a
    model: side = max(w, h) * points_margin).
  * with --checkpoint: NME (inter-ocular 36 / 45, landmarks.metrics) with
    the landmark crop vs each detector crop, on the matched faces, and on
    all faces with each missed face predicted from the whole-image crop
    (star_jax.predict's rule without a box); both columns give their face
    counts, so no face is dropped silently.

The crop rule (crop_mode, points_margin) is the checkpoint's when one is
given, else the calibrations' target, else "points" / 1.25 (yt68 models).
"""

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import readers  # pylint: disable=g-import-not-at-top,wrong-import-position
from data import transforms  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import box_calibration  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import detection  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position
from training import errors  # pylint: disable=g-import-not-at-top,wrong-import-position

EYES = (36, 45)  # 300W outer eye corners


# ------------------------------------------------------------ crop rules ----

def crop_rules(boxes: np.ndarray, calibration, crop_mode: str,
               points_margin: float) -> Dict[str, tuple]:
  """rule name -> (centres [M, 2], scales [M]) for matched detector boxes."""
  rules = {}
  pairs = [transforms.center_scale_from_box(b) for b in boxes]
  rules["public"] = (np.array([c for c, _ in pairs]).reshape(-1, 2),
                     np.array([s for _, s in pairs]))
  if calibration is not None:
    rules["calibrated"] = calibration.apply_many(boxes)
  if crop_mode == "points":
    pairs = [transforms.center_scale_from_points(b.reshape(2, 2), points_margin)
             for b in boxes]
    rules["box as landmark box"] = (
        np.array([c for c, _ in pairs]).reshape(-1, 2),
        np.array([s for _, s in pairs]))
  return rules


def crop_errors(centres, scales, true_centres, true_scales, iod) -> dict:
  """Centre error / inter-ocular and scale ratios of crops vs the truth."""
  e = np.linalg.norm(np.asarray(centres) - true_centres, axis=1) / iod
  ratio = np.asarray(scales) / true_scales
  return {"faces": int(len(e)),
          "centre_err_iod_mean": float(np.mean(e)),
          "centre_err_iod_median": float(np.median(e)),
          "centre_err_iod_p90": float(np.percentile(e, 90)),
          "scale_ratio_median": float(np.median(ratio)),
          "abs_log_scale_ratio_mean": float(np.mean(np.abs(np.log(ratio))))}


def inter_ocular(records) -> np.ndarray:
  return np.array([np.linalg.norm(r.landmarks[EYES[0]] - r.landmarks[EYES[1]])
                   for r in records], np.float64)


# ------------------------------------------------------------------- NME ----

class NmeRunner:
  """Predicts landmarks from explicit (centre, scale) crops with a Predictor."""

  def __init__(self, predictor, records):
    self.predictor = predictor
    self.records = records
    self.gt = np.stack([np.asarray(r.landmarks, np.float64) for r in records])
    self._images = {}

  def image(self, i: int) -> np.ndarray:
    if i not in self._images:
      self._images[i] = self.records[i].load_image()
    return self._images[i]

  def nmes(self, indices: List[int], matrices: List[np.ndarray]) -> np.ndarray:
    """Per-face NME (fraction) of faces `indices` cropped with `matrices`."""
    if not indices:
      return np.zeros((0,))
    p = self.predictor
    s = p.crop_size
    antialias = bool(getattr(p, "antialias", False))
    crops = np.stack([transforms.warp_affine(self.image(i), m, s, antialias)
                      for i, m in zip(indices, matrices)])
    crop_points = p.run_crops(crops)
    pred = np.stack([transforms.apply_affine(transforms.invert_affine(m), q)
                     for m, q in zip(matrices, crop_points)])
    return np.asarray(metrics.nme_named(pred, self.gt[indices], "300w"),
                      np.float64)

  def whole_image_matrix(self, i: int) -> np.ndarray:
    from star_jax import predict  # pylint: disable=g-import-not-at-top
    h, w = self.image(i).shape[:2]
    m, _, _ = predict.face_crop_matrix(w, h, self.predictor.crop_size)
    return m


# ---------------------------------------------------------------- tables ----

def md_table(header: List[str], rows: List[List[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def load_calibration(calib_dir: Optional[str], name: str):
  if not calib_dir:
    return None
  path = os.path.join(calib_dir, f"{name}.json")
  if not os.path.isfile(path):
    print(f"note: no calibration {path}: {name} gets no calibrated rows",
          flush=True)
    return None
  calibration = box_calibration.load(path)
  if calibration.detector != name:
    raise errors.UserError(f"{path} is a calibration of detector "
                           f"{calibration.detector!r}, not {name!r}")
  return calibration


def run(args) -> dict:
  records = readers.list_faces("yt68" if not args.reader else args.reader,
                               args.data_root, args.split)
  if args.limit:
    records = records[:args.limit]
  names = [n.strip() for n in args.detectors.split(",") if n.strip()]
  predictor = None
  if args.checkpoint:
    from star_jax import predict  # pylint: disable=g-import-not-at-top
    predictor = predict.Predictor.from_path(args.checkpoint,
                                            batch_size=args.batch_size)
    crop_mode, margin = predictor.crop_mode, predictor.points_margin
  else:
    crop_mode, margin = args.crop_mode, args.points_margin
  true_c, true_s = (np.array(v) for v in zip(
      *[transforms.record_center_scale(r, crop_mode, margin) for r in records]))
  iod = inter_ocular(records)
  results = {"data": {"reader": args.reader, "root": args.data_root,
                      "split": args.split, "faces": len(records)},
             "crop_rule": {"crop_mode": crop_mode, "points_margin": margin},
             "detectors": {}}
  runner = NmeRunner(predictor, records) if predictor is not None else None
  if runner is not None:
    gt_m = [transforms.crop_matrix(c, s, predictor.crop_size)
            for c, s in zip(true_c, true_s)]
    gt_nme = runner.nmes(list(range(len(records))), gt_m)
    results["nme_landmark_crop"] = {"faces": len(records),
                                    "nme": float(gt_nme.mean())}
  for name in names:
    calibration = load_calibration(args.calib_dir, name)
    options = dict(calibration.detector_options) if calibration else {}
    try:
      detector = detection.make_detector(name, **options)
    except errors.UserError as e:
      if name == "dlib":
        print(f"note: dlib skipped: {e}", flush=True)
        continue
      raise
    if calibration is not None:
      target = calibration.target
      if (target.get("crop_mode"), float(target.get("points_margin", margin))
          ) != (crop_mode, float(margin)):
        print(f"warning: {name} calibration fitted for crop "
              f"{target.get('crop_mode')} / {target.get('points_margin')}, "
              f"evaluated against {crop_mode} / {margin}", flush=True)
    print(f"{name}: running on {len(records)} faces ...", flush=True)
    matches = box_calibration.collect_matches(detector, records)
    idx = matches.indices
    entry = {"detector": detector.describe(),
             "faces": matches.num_faces, "matched": len(idx),
             "detection_rate": matches.detection_rate,
             "ms_per_image": matches.ms_per_image,
             "missed": matches.missed, "crop_error": {}, "nme": {}}
    rules = crop_rules(matches.boxes, calibration, crop_mode, margin)
    for rule, (c, s) in rules.items():
      entry["crop_error"][rule] = crop_errors(c, s, true_c[idx], true_s[idx],
                                              iod[idx])
    if runner is not None:
      missed_idx = [m["index"] for m in matches.missed]
      whole = runner.nmes(missed_idx,
                          [runner.whole_image_matrix(i) for i in missed_idx])
      for rule, (c, s) in rules.items():
        mats = [transforms.crop_matrix(ci, si, predictor.crop_size)
                for ci, si in zip(c, s)]
        matched_nme = runner.nmes(idx, mats)
        entry["nme"][rule] = {
            "matched_faces": len(idx),
            "nme_matched": float(matched_nme.mean()) if len(idx) else None,
            "nme_landmark_crop_matched": (float(gt_nme[idx].mean())
                                          if len(idx) else None),
            "all_faces": len(records),
            "nme_all_misses_whole_image": float(
                np.concatenate([matched_nme, whole]).mean()),
            "misses_whole_image": len(missed_idx)}
    results["detectors"][name] = entry
  return results


def report(results: dict) -> str:
  out = []
  data = results["data"]
  rule = results["crop_rule"]
  out.append(f"{data['reader']} {data['split']}: {data['faces']} faces; "
             f"target crop {rule['crop_mode']} (margin "
             f"{rule['points_margin']})\n")
  rows = []
  for name, e in results["detectors"].items():
    d = e["detector"]
    rows.append([name, json.dumps(d["options"]), e["faces"], e["matched"],
                 f"{100 * e['detection_rate']:.1f} %",
                 f"{e['ms_per_image']:.1f}", f"{d['min_face_size']:.0f}"])
  out.append(md_table(["detector", "options", "faces", "matched", "rate",
                       "ms / image", "min face px"], rows))
  rows = []
  for name, e in results["detectors"].items():
    for rule_name, c in e["crop_error"].items():
      rows.append([name, rule_name, c["faces"],
                   f"{100 * c['centre_err_iod_mean']:.1f}",
                   f"{100 * c['centre_err_iod_median']:.1f}",
                   f"{100 * c['centre_err_iod_p90']:.1f}",
                   f"{c['scale_ratio_median']:.3f}",
                   f"{100 * c['abs_log_scale_ratio_mean']:.1f}"])
  out.append("\nCrop vs the landmark crop (matched faces):\n")
  out.append(md_table(["detector", "rule", "faces", "centre err % IOD (mean)",
                       "median", "p90", "scale ratio (median)",
                       "mean abs log scale ratio %"], rows))
  if "nme_landmark_crop" in results:
    g = results["nme_landmark_crop"]
    rows = [["landmark crop", "-", g["faces"], "-", f"{100 * g['nme']:.2f}",
             "-"]]
    for name, e in results["detectors"].items():
      for rule_name, n in e["nme"].items():
        rows.append([
            name, rule_name, n["matched_faces"],
            ("-" if n["nme_matched"] is None else
             f"{100 * n['nme_matched']:.2f} (landmark crop "
             f"{100 * n['nme_landmark_crop_matched']:.2f})"),
            f"{100 * n['nme_all_misses_whole_image']:.2f}",
            n["misses_whole_image"]])
    out.append("\nNME % (inter-ocular 36/45):\n")
    out.append(md_table(["crop", "rule", "matched faces",
                         "NME matched (same faces, landmark crop)",
                         "NME all faces (misses: whole-image crop)",
                         "misses"], rows))
  for name, e in results["detectors"].items():
    if e["missed"]:
      out.append(f"\n{name}: {len(e['missed'])} missed face(s):")
      out += [f"  {m['image']}: {m['reason']}" for m in e["missed"]]
    else:
      out.append(f"\n{name}: no missed face")
  return "\n".join(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data_root", required=True)
  p.add_argument("--reader", default="yt68")
  p.add_argument("--split", default="val")
  p.add_argument("--detectors", default="haar,haar_alt2,dlib")
  p.add_argument("--calib_dir", default="",
                 help="folder of <detector>.json calibrations (train split)")
  p.add_argument("--checkpoint", default="",
                 help="training workdir or exported artifact (NME columns)")
  p.add_argument("--crop_mode", default="points",
                 help="target crop rule without --checkpoint")
  p.add_argument("--points_margin", type=float,
                 default=transforms.POINTS_MARGIN)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--limit", type=int, default=0)
  p.add_argument("--out", default="", help="also write the results as JSON")
  args = p.parse_args(argv)
  try:
    results = run(args)
  except errors.UserError as e:
    print(errors.format_user_error(e), file=sys.stderr)
    return 2
  print(report(results))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())

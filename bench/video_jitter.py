r"""Jitter, error and lag of video landmarks with and without One-Euro smoothing.

  python bench/video_jitter.py --checkpoint /tmp/star_default \
      [--frames 120] [--fps 25] [--noise 4] [--sweep] \
      [--yt68 ../shared/data/yt68] [--out /tmp/video_jitter]

Sequences (a): one procedural face (data/synthetic: identity and appearance of
face `--index` of `--seed`, rendered with data.synthetic.render) posed along
a smooth trajectory, with the true landmarks of every frame known:
  * "moving": translation on a Lissajous path (+-12 % / +-8 % of the image),
    yaw +-15, pitch +-6, roll +-8 degrees and scale +-12 %, all sinusoids
    between 0.15 and 0.3 Hz;
  * "still": the same face at a fixed pose.
Every frame gets its own pixel noise N(0, noise^2) (grey levels) on top of
the renderer's, as a camera would; background and face appearance stay fixed.

The model runs through `landmarks.tracking.Tracker` exactly as on a video:
the first frame is cropped from a detector box, every later frame from the
previous frame's raw landmarks. Detector: an oracle lambda returning the
ground-truth landmark box of the frame being processed (no detector module
yet); it is only called when the track is lost, the "det" column counts the
calls. predict_fn = star_jax.predict.Predictor (prepare -> run_crops ->
crop_to_image, or Predictor.finish where it exists, which also gives the
model's "spread"); without a spread from the model it is 0.0, so the tracker
never drops a track on spread. The model's raw points do
not depend on the smoothing (the crop follows the raw points), so one
tracked pass gives every smoothing row (the predictions are cached and the
tracker re-run per setting). "gt crop" = each frame cropped from its
ground-truth box (no tracking), as a reference.

Metrics, per frame t, error e_t = pred_t - gt_t `[N, 2]`, normalised by the
inter-ocular distance d_t (outer eye corners 36, 45, the 300W NME normaliser):
  * NME: mean over frames and points of |e_t| / d_t, %.
  * jitter: the frame-to-frame change of the error, j_t = (e_t - e_{t-1}) /
    d_t; per point and axis its std over frames, then the root of the mean
    over points of (std_x^2 + std_y^2), %: how much the points shake around
    the true motion (a constant bias or a smooth lag does not count).
  * lag: the delay that best explains the error by the motion,
    -sum <e_t - mean(e), v_t> / sum |v_t|^2 with v_t the true velocity
    (central difference, px / frame), in ms (positive = behind the face);
    "-" on the still sequence.

(b) yt68 (`--yt68 ROOT`): its file names are `<identity>_<video><frame>.jpg`
with three labelled frames per video clip; the bench measures how far the
labelled landmarks move between a clip's frames (median, in inter-ocular
distances) and compares it with one frame step of the moving sequence, to
tell whether they are consecutive video frames (tracking needs them to be).

`--out DIR` also writes the moving sequence as an mp4 (DIR/input/) and runs
landmarks.video.process_video on it (DIR/tracked/: jsonl, csv, overlay), an
end-to-end check of the video path (its numbers include mp4 compression).
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import hashlib
import math
import os
import sys
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import transforms  # pylint: disable=g-import-not-at-top,wrong-import-position
from data.synthetic import geometry  # pylint: disable=g-import-not-at-top,wrong-import-position
from data.synthetic import render  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import one_euro  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import tracking  # pylint: disable=g-import-not-at-top,wrong-import-position


# --------------------------------------------------------------- sequence --

def posed_face(params: dict, yaw: float, pitch: float, roll: float,
               units_to_pixels: float, translation) -> geometry.FaceGeometry:
  """The face of `params` at a given pose, scale and position.

  The same construction as data.synthetic.geometry.face_geometry (contour on
  the silhouette), with the pose given instead of drawn.
  """
  rotation = geometry.rotation_matrix(yaw, pitch, roll)
  pts3 = geometry.face_points_3d(params)
  projected = pts3 @ rotation[:2].T
  outline = geometry.silhouette(
      geometry._frontal_outline(params), rotation)  # pylint: disable=protected-access
  projected[:17] = outline[:17]
  t = np.asarray(translation, np.float64)
  return geometry.FaceGeometry(
      landmarks=(projected * units_to_pixels + t).astype(np.float32),
      outline=(outline * units_to_pixels + t).astype(np.float32),
      depth=(pts3 @ rotation[2]).astype(np.float32),
      yaw=float(yaw), pitch=float(pitch), roll=float(roll),
      units_to_pixels=float(units_to_pixels),
      rotation=rotation.astype(np.float32),
      translation=t.astype(np.float32), params=params)


def trajectory(k: int, fps: float, size: int, moving: bool) -> dict:
  """Pose, scale and translation of frame k (smooth sinusoids)."""
  s = k / fps
  a = 1.0 if moving else 0.0

  def wave(freq, phase=0.0):
    return math.sin(2 * math.pi * freq * s + phase)
  scale = 0.28 * size * (1.0 + a * 0.12 * wave(0.15))
  # Face units: the landmarks' centre is about 0.55 units below the origin.
  centre = np.array([size / 2 + a * 0.12 * size * wave(0.2),
                     size / 2 + a * 0.08 * size * wave(0.3, 0.7)])
  return dict(yaw=8.0 + a * 15.0 * wave(0.25), pitch=a * 6.0 * wave(0.17, 1.0),
              roll=a * 8.0 * wave(0.2, 0.5), units_to_pixels=scale,
              translation=centre - np.array([0.0, 0.55 * scale]))


@dataclasses.dataclass
class Sequence:
  name: str
  frames: List[np.ndarray]   # uint8 [S, S, 3]
  truth: np.ndarray          # float64 [T, 68, 2]


def procedural_sequence(name: str, moving: bool, num_frames: int, fps: float,
                        size: int, seed: int, index: int,
                        noise: float) -> Sequence:
  params = geometry.face_geometry(seed, index, size).params
  frames, truth = [], []
  for k in range(num_frames):
    g = posed_face(params, **trajectory(k, fps, size, moving))
    image = render.render_geometry(g, seed, index, size).astype(np.float32)
    rng = np.random.default_rng([seed, index, 1000 + k])
    image += rng.standard_normal(image.shape, np.float32) * np.float32(noise)
    frames.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    truth.append(g.landmarks.astype(np.float64))
  return Sequence(name, frames, np.stack(truth))


# ---------------------------------------------------------------- metrics --

def metrics(pred: np.ndarray, truth: np.ndarray, fps: float) -> Dict:
  """NME %, jitter %, lag ms of `[T, N, 2]` predictions (module docstring);
  frames without a face (NaN) are left out."""
  iod = np.array([geometry.inter_ocular(g) for g in truth])
  err = pred - truth
  nme = np.nanmean(np.linalg.norm(err, axis=-1) / iod[:, None])
  jumps = np.diff(err, axis=0) / iod[1:, None, None]
  jitter = math.sqrt(np.nanmean(np.sum(np.nanvar(jumps, axis=0), axis=-1)))
  v = (truth[2:] - truth[:-2]) / 2.0
  centred = err[1:-1] - np.nanmean(err, axis=0)
  ok = np.all(np.isfinite(centred), axis=(1, 2))
  motion = np.sum(v[ok] * v[ok])
  mean_speed = np.mean(np.linalg.norm(v, axis=-1) / iod[1:-1, None])
  lag = (-np.sum(centred[ok] * v[ok]) / motion / fps * 1000.0
         if mean_speed > 1e-3 else float("nan"))
  return {"nme": 100 * nme, "jitter": 100 * jitter, "lag_ms": lag,
          "faces": int(np.all(np.isfinite(pred), axis=(1, 2)).sum())}


def per_frame_motion(truth: np.ndarray) -> float:
  """Median landmark displacement between frames, inter-ocular units."""
  iod = np.array([geometry.inter_ocular(g) for g in truth])
  step = np.linalg.norm(np.diff(truth, axis=0), axis=-1).mean(-1) / iod[1:]
  return float(np.median(step))


# ------------------------------------------------------------------ model --

class CachedPredictor:
  """predict_fn over a star_jax.predict.Predictor, memoised per input."""

  def __init__(self, predictor):
    self.predictor = predictor
    self.cache = {}
    self.calls = 0
    self.spreads = []   # The model's spreads (when it gives them).

  def __call__(self, image, box=None, points=None):
    key = (hashlib.sha1(np.ascontiguousarray(image)).hexdigest(),
           None if box is None else
           np.asarray(box, np.float64).tobytes(),
           None if points is None else np.asarray(points,
                                                  np.float64).tobytes())
    if key not in self.cache:
      self.calls += 1
      prep = self.predictor.prepare(image, box=box, points=points)
      if hasattr(self.predictor, "finish"):   # Predictor with uncertainty.
        res = self.predictor.finish([prep])[0]
        landmarks, spread = res["landmarks"], res.get("spread")
      else:
        crop_pts = self.predictor.run_crops(prep["crop"][None])[0]
        landmarks = transforms.apply_affine(prep["crop_to_image"], crop_pts)
        spread = None
      if spread is not None:
        self.spreads.append(float(spread))
      # No uncertainty from the model: 0.0 (never drops the track).
      self.cache[key] = {"landmarks": landmarks,
                         "spread": 0.0 if spread is None else spread}
    return self.cache[key]


def load_predictor(path: str):
  from star_jax import predict  # pylint: disable=g-import-not-at-top
  predictor = predict.Predictor.from_path(path, batch_size=1)
  if not hasattr(predictor, "antialias"):
    # Older star_jax.predict.Predictor.prepare read self.antialias without
    # __init__ setting it; the default config trains without it.
    predictor.antialias = False
  return predictor


def oracle_detector(seq: Sequence):
  """detect_fn: the ground-truth landmark box of the frame being processed."""
  index_of = {id(f): k for k, f in enumerate(seq.frames)}

  def detect_fn(image):
    k = index_of[id(image)]
    return [(tracking.points_box(seq.truth[k]), 1.0)]
  return detect_fn


def track_sequence(seq: Sequence, predict_fn, settings, fps):
  tracker = tracking.Tracker(predict_fn, oracle_detector(seq), settings, fps)
  results = [tracker.step(f, k / fps, k) for k, f in enumerate(seq.frames)]
  return results, tracker.counts


def stack(results, key):
  """`[T, N, 2]` of a result field, NaN on frames without a face."""
  n = next(len(r[key]) for r in results if r[key] is not None)
  return np.stack([np.full((n, 2), np.nan) if r[key] is None else r[key]
                   for r in results])


# -------------------------------------------------------------------- yt68 --

def yt68_clips(root: str) -> Dict:
  """Landmark motion between the labelled frames of each yt68 clip."""
  rows = {}
  for split in ("train", "val"):
    path = os.path.join(root, f"{split}.csv")
    with open(path, newline="") as f:
      for row in list(csv.reader(f))[1:]:
        rows[row[0]] = np.asarray(row[1:], np.float64).reshape(-1, 2)
  clips = collections.defaultdict(dict)
  for name, pts in rows.items():
    stem, digits = os.path.splitext(name)[0].rsplit("_", 1)
    clips[(stem, digits[:-1])][int(digits[-1])] = pts
  steps = []
  for frames in clips.values():
    for j in sorted(frames):
      if j + 1 in frames:
        a, b = frames[j], frames[j + 1]
        steps.append(np.linalg.norm(a - b, axis=-1).mean()
                     / geometry.inter_ocular(a))
  sizes = collections.Counter(len(v) for v in clips.values())
  return {"faces": len(rows), "clips": len(clips),
          "clip_sizes": dict(sorted(sizes.items())),
          "median_step": float(np.median(steps)),
          "p10_step": float(np.percentile(steps, 10)),
          "pairs": len(steps)}


# -------------------------------------------------------------------- main --

def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True,
                 help="training workdir or exported .zip (a model for "
                      "procedural faces, e.g. configs/default.py's)")
  p.add_argument("--frames", type=int, default=120)
  p.add_argument("--fps", type=float, default=25.0)
  p.add_argument("--image_size", type=int, default=128)
  p.add_argument("--noise", type=float, default=4.0,
                 help="per-frame pixel noise std (grey levels)")
  p.add_argument("--seed", type=int, default=7)
  p.add_argument("--index", type=int, default=0)
  p.add_argument("--min_cutoff", type=float, default=None)
  p.add_argument("--beta", type=float, default=None)
  p.add_argument("--d_cutoff", type=float, default=None)
  p.add_argument("--max_spread", type=float, default=math.inf,
                 help="the tracker's max_spread (default: no spread test)")
  p.add_argument("--sweep", action="store_true",
                 help="also a few other One-Euro settings")
  p.add_argument("--yt68", default=None, help="yt68 root (train/val.csv)")
  p.add_argument("--out", default=None,
                 help="write the moving sequence as mp4 + tracker outputs")
  args = p.parse_args(argv)

  given = {k: getattr(args, k) for k in ("min_cutoff", "beta", "d_cutoff")
           if getattr(args, k) is not None}
  default = one_euro.OneEuroSettings.from_mapping(given)
  ms = args.max_spread
  settings = [("off", tracking.TrackerSettings(ms, smooth=False)),
              (f"on {default.min_cutoff:g}/{default.beta:g}/"
               f"{default.d_cutoff:g}",
               tracking.TrackerSettings(ms, one_euro=default))]
  if args.sweep:
    for mc, beta in ((0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (0.5, 5.0),
                     (0.5, 10.0), (1.0, 20.0), (0.5, 40.0), (0.5, 80.0)):
      s = one_euro.OneEuroSettings(mc, beta, default.d_cutoff)
      if s != default:
        settings.append((f"on {mc:g}/{beta:g}/{s.d_cutoff:g}",
                         tracking.TrackerSettings(ms, one_euro=s)))

  predictor = load_predictor(args.checkpoint)
  print(f"model: {args.checkpoint} (crop {predictor.crop_size}, "
        f"{predictor.crop_mode})")
  rows = []
  motion = None
  for name, moving in (("procedural moving", True),
                       ("procedural still", False)):
    seq = procedural_sequence(name, moving, args.frames, args.fps,
                              args.image_size, args.seed, args.index,
                              args.noise)
    if moving:
      motion = per_frame_motion(seq.truth)
    predict_fn = CachedPredictor(predictor)
    # Reference: every frame cropped from its ground-truth box.
    gt = np.stack([predict_fn(f, box=tracking.points_box(t))["landmarks"]
                   for f, t in zip(seq.frames, seq.truth)])
    rows.append((name, "gt crop, off", metrics(gt, seq.truth, args.fps),
                 "-"))
    for label, s in settings:
      results, counts = track_sequence(seq, predict_fn, s, args.fps)
      pred = stack(results, "landmarks")
      rows.append((name, label, metrics(pred, seq.truth, args.fps),
                   f"{counts['detector_calls']}"
                   + (f" ({counts['no_face']} no face)" if counts["no_face"]
                      else "")))
    print(f"{name}: {args.frames} frames at {args.fps:g} fps, "
          f"{args.image_size} px, model calls {predict_fn.calls}, "
          f"median landmark motion {per_frame_motion(seq.truth):.4f} IOD / "
          f"frame, spread {_spread_text(predict_fn.spreads)}")

  print("\nSmoothing 'on a/b/c' = One-Euro min_cutoff Hz / beta per face "
        "size / d_cutoff Hz.\n")
  print("| sequence | smoothing | NME % | jitter % | lag ms | det |")
  print("|---|---|---|---|---|---|")
  for seq_name, label, m, det in rows:
    lag = "-" if math.isnan(m["lag_ms"]) else f"{m['lag_ms']:.1f}"
    print(f"| {seq_name} | {label} | {m['nme']:.2f} | {m['jitter']:.3f} | "
          f"{lag} | {det} |")

  if args.yt68:
    y = yt68_clips(args.yt68)
    print(f"\nyt68 ({args.yt68}): {y['faces']} labelled faces in "
          f"{y['clips']} clips (labelled frames per clip: {y['clip_sizes']}); "
          f"landmark motion between a clip's labelled frames: median "
          f"{y['median_step']:.3f} IOD (10th percentile "
          f"{y['p10_step']:.3f}, {y['pairs']} pairs) vs "
          f"{motion:.4f} IOD per frame on the moving sequence at "
          f"{args.fps:g} fps: "
          + ("consecutive frames" if y["median_step"] < 5 * motion else
             "NOT consecutive video frames (samples of a clip far apart in "
             "time), so no jitter is measured on them"))

  if args.out:
    write_video_check(args, predictor, default)


def _spread_text(spreads) -> str:
  if not spreads:
    return "not given by the model (0.0 used)"
  return (f"min {np.min(spreads):.4f} median {np.median(spreads):.4f} max "
          f"{np.max(spreads):.4f} of the crop")


def write_video_check(args, predictor, settings):
  """The moving sequence as mp4 -> landmarks.video.process_video."""
  from landmarks import video  # pylint: disable=g-import-not-at-top
  cv2 = video.import_cv2()
  seq = procedural_sequence("moving", True, args.frames, args.fps,
                            args.image_size, args.seed, args.index,
                            args.noise)
  os.makedirs(os.path.join(args.out, "input"), exist_ok=True)
  path = os.path.join(args.out, "input", "procedural_moving.mp4")
  size = (args.image_size, args.image_size)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), args.fps,
                           size)
  for f in seq.frames:
    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  writer.release()
  box0 = tracking.points_box(seq.truth[0])
  tracker = tracking.Tracker(
      CachedPredictor(predictor), lambda image: [(box0, 1.0)],
      tracking.TrackerSettings(args.max_spread, one_euro=settings), args.fps)
  summary = video.process_video(path, tracker,
                                os.path.join(args.out, "tracked"),
                                "procedural_moving")
  back = video.read_csv(summary["paths"]["csv"])
  m = metrics(back["landmarks"], seq.truth, args.fps)
  print(f"\nvideo check: {path} -> {summary['paths']}; frames "
        f"{summary['frames']}, faces {summary['faces']}, lost "
        f"{summary['lost']}; from the csv (mp4-compressed frames): NME "
        f"{m['nme']:.2f} %, jitter {m['jitter']:.3f} %")


if __name__ == "__main__":
  main()

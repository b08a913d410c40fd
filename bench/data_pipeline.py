r"""Host input pipeline throughput: decoded + augmented samples/s at 256 px.

Rows:
  * per-sample stages in this process (no grain): JPEG decode only; decode +
    crop (evaluation path); decode + STAR augmentation (training path);
  * `data.pipeline.make_landmark_loader(train=True)` batches through grain
    with `--workers` worker processes (default 0, 1, 2): samples/s over
    `--batches` batches after `--warmup` batches (worker start-up excluded);
  * with `--with_targets`: the jnp point + edge map targets of one batch
    (`data.targets`, jitted, on the default JAX backend), for comparison with
    the host rate (they normally run inside the training step).

Real images: yt68 frames (../shared/data/yt68, about 150-350 px JPEGs), the
68-point scheme, crop mode "points".

  python bench/data_pipeline.py
  python bench/data_pipeline.py --workers 0,2 --batches 20 --with_targets
"""

import argparse
import csv
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from data import augment as augment_lib
from data import pipeline
from data import records as records_lib
from data import schemes
from data import transforms


def yt68_records(root, split, limit):
  path = os.path.join(root, f"{split}.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"yt68 not found at {path}; pass --root")
  with open(path) as f:
    rows = list(csv.reader(f))[1:limit + 1]
  return [records_lib.FaceRecord(
      os.path.join(root, "images", r[0]),
      np.array([float(v) for v in r[1:]], np.float32).reshape(68, 2))
          for r in rows]


def stage_rates(recs, crop_size, seconds):
  """Samples/s of decode, decode+crop, decode+augment in this process."""
  scheme = schemes.get_scheme(68)
  config = augment_lib.AugmentConfig()
  rng = np.random.default_rng(0)

  def decode(r):
    r.load_image()

  def crop(r):
    c, s = transforms.record_center_scale(r, "points")
    transforms.crop_face(r.load_image(), r.landmarks, c, s, crop_size)

  def aug(r):
    c, s = transforms.record_center_scale(r, "points")
    m = transforms.crop_matrix(c, s, crop_size)
    augment_lib.augment(r.load_image(), r.landmarks, np.ones(68, bool), m,
                        crop_size, scheme, rng, config)

  out = []
  for name, fn in (("decode", decode), ("decode + crop (eval)", crop),
                   ("decode + augment (train)", aug)):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
      fn(recs[n % len(recs)])
      n += 1
    out.append((name, n / (time.perf_counter() - t0)))
  return out


def loader_rate(recs, crop_size, batch_size, workers, warmup, batches):
  loader = pipeline.make_landmark_loader(
      recs, crop_size=crop_size, train=True, batch_size=batch_size, seed=0,
      num_workers=workers, crop_mode="points", shard_index=0, shard_count=1)
  it = iter(loader)
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  dt = time.perf_counter() - t0
  return batches * batch_size / dt


def targets_time(recs, crop_size, batch_size, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  from data import targets  # pylint: disable=g-import-not-at-top
  scheme = schemes.get_scheme(68)
  batch = next(iter(pipeline.make_landmark_loader(
      recs, crop_size=crop_size, train=True, batch_size=batch_size, seed=0,
      crop_mode="points", shard_index=0, shard_count=1)))
  h = crop_size // 4
  fn = jax.jit(lambda l: (targets.point_heatmaps(l, crop_size, h),
                          targets.edge_maps(l, scheme, crop_size, h)))
  jax.block_until_ready(fn(batch["landmarks"]))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(batch["landmarks"]))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), jax.default_backend()


def main():
  here = os.path.dirname(os.path.abspath(__file__))
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--root", default=os.path.join(here, "..", "..", "shared",
                                                "data", "yt68"))
  p.add_argument("--split", default="train")
  p.add_argument("--records", type=int, default=512)
  p.add_argument("--crop_size", type=int, default=256)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--batches", type=int, default=10)
  p.add_argument("--stage_seconds", type=float, default=3.0)
  p.add_argument("--with_targets", action="store_true")
  args = p.parse_args()

  recs = yt68_records(args.root, args.split, args.records)
  print(f"yt68 {args.split}: {len(recs)} records, crop {args.crop_size} px, "
        f"batch {args.batch_size}, {os.cpu_count()} CPUs visible")
  print(f"{'what':<44} {'samples/s':>10}")
  print("-" * 55)
  for name, rate in stage_rates(recs, args.crop_size, args.stage_seconds):
    print(f"{'1 process, ' + name:<44} {rate:>10.1f}")
  for w in (int(x) for x in args.workers.split(",")):
    rate = loader_rate(recs, args.crop_size, args.batch_size, w, args.warmup,
                       args.batches)
    print(f"{f'grain loader, train, {w} worker(s)':<44} {rate:>10.1f}")
  if args.with_targets:
    t, backend = targets_time(recs, args.crop_size, args.batch_size, 5)
    print(f"{f'targets (point+edge maps) jnp on {backend}':<44} "
          f"{args.batch_size / t:>10.1f}")


if __name__ == "__main__":
  main()

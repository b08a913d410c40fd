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

`--augment_on_table` (issue #18) prints instead the host cost of the two
training modes of `config.data.augment_on` and what an accelerator chip
would need:
  * host samples/s PER CORE (CPU seconds of this process, `time.process_time`,
    so the two background jobs of a shared machine do not count): "host"
    mode = decode + crop + full NumPy/PIL STAR augmentation; "device" mode =
    decode (JPEG at 1/2, 1/4, 1/8 where the face is > 2x the crop) + pre-crop
    only, each per sample (what a grain worker does) and through the grain
    loader in this process (0 workers: + batching);
  * the device-side cost of the jitted augmentation (data/device_augment.py,
    flip + warp + texture, batch `--batch_size`) on this CPU, per image;
  * the paper model's train-step FLOPs per image (XLA cost analysis of the
    lowered 4-stack, 256 px, 98-point step, not compiled; `--stated_flops`
    skips it) and, at `--mfu` (40 %) of an H100 (989 TFLOP/s dense bf16) and
    a TPU v5e chip (197 TFLOP/s bf16), the images/s a chip consumes and the
    host cores each mode needs to feed it (from the "one worker" rows: the
    per-sample work + batching a grain worker process does per core; the
    grain rows in this process also count grain's prefetch threads);
  * `--cache`: reading the pre-crops from their array_record cache
    (data/precrop_cache.py) instead of decoding; `--upscale 4`: the same on
    JPEG copies 4x larger (faces as large as in WFLW-like photos, so the
    reduced decode and the cache have something to save).

Real images: yt68 frames (../shared/data/yt68, about 150-350 px JPEGs), the
68-point scheme, crop mode "points".

  python bench/data_pipeline.py
  python bench/data_pipeline.py --workers 0,2 --batches 20 --with_targets
  python bench/data_pipeline.py --augment_on_table --cache
  python bench/data_pipeline.py --augment_on_table --cache --upscale 4
  python bench/data_pipeline.py --cache_breakdown 600 --records 128

`--cache_breakdown READS`: only the cost of one cached sample, split into
the array_record read, tfds' read + tf.Example parse (what the loader
calls) and np.stack into a batch, for the cache as built (tfds' default
compression) and an uncompressed copy of the same records.
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
from data import device_augment
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


def _cpu_rate(fn, items, seconds, warmup=8):
  """(samples per CPU second, per wall second) of `fn` over `items`, after
  `warmup` calls (lazy imports, first-touch allocations)."""
  for i in range(warmup):
    fn(items[i % len(items)])
  n, c0, w0 = 0, time.process_time(), time.perf_counter()
  while time.perf_counter() - w0 < seconds or n < 8:
    fn(items[n % len(items)])
    n += 1
  return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def _star_make(crop_size, augment_on):
  """The grain worker's per-sample function of make_landmark_loader."""
  config = pipeline.CropConfig(
      crop_size=crop_size, num_points=68, train=True, crop_mode="points",
      augment_on=augment_on,
      precrop_size=device_augment.precrop_size(crop_size))
  return pipeline._StarMake(config)  # pylint: disable=protected-access


def mode_rates(recs, crop_size, seconds):
  """Rows (name, per core, per wall s) of the per-sample host work."""
  rng = np.random.default_rng(0)
  rows = [("decode only (full size)",) + _cpu_rate(
      lambda r: r.load_image(), recs, seconds)]
  for mode, what in (("host", "decode + crop + augment"),
                     ("device", "decode + pre-crop")):
    make = _star_make(crop_size, mode)
    rows.append((f'"{mode}": {what}',) + _cpu_rate(
        lambda r, make=make: make(r, make.load(r), 0, rng), recs, seconds))
  return rows


def worker_rate(recs, crop_size, batch_size, augment_on, seconds):
  """(per core, per wall s) of what one grain worker does: the per-sample
  function of make_landmark_loader for a batch, then `np.stack` per key
  (grain.Batch), without grain's threads and shared-memory hand-over."""
  make = _star_make(crop_size, augment_on)
  rng = np.random.default_rng(0)
  chunks = [recs[i:i + batch_size]
            for i in range(0, len(recs) - batch_size + 1, batch_size)]

  def one_batch(chunk):
    samples = [make(r, make.load(r), i, rng) for i, r in enumerate(chunk)]
    return {k: np.stack([x[k] for x in samples]) for k in samples[0]}
  core, wall = _cpu_rate(one_batch, chunks, seconds)
  return core * batch_size, wall * batch_size


def cached_worker_rate(recs, crop_size, batch_size, cache_dir, seconds):
  """(per core, per wall s, build s) of a grain worker reading device-mode
  pre-crops from the array_record cache (data/precrop_cache.py) + batching;
  the build (once per set and settings) is timed apart."""
  from data import precrop_cache  # pylint: disable=g-import-not-at-top
  config = _star_make(crop_size, "device").config
  t0 = time.perf_counter()
  key = precrop_cache.build(recs, config, cache_dir)
  build_s = time.perf_counter() - t0
  read = precrop_cache.CachedPrecrops(cache_dir, key, len(recs))
  read(0)  # opens the source
  chunks = [range(i, i + batch_size)
            for i in range(0, len(recs) - batch_size + 1, batch_size)]

  def one_batch(chunk):
    samples = [read(i) for i in chunk]
    return {k: np.stack([x[k] for x in samples]) for k in samples[0]}
  core, wall = _cpu_rate(one_batch, chunks, seconds)
  return core * batch_size, wall * batch_size, build_s


def _uncompressed_copy(folder, dest):
  """`folder` (a built tfds dataset version folder) copied to `dest` with
  its array_record files re-written uncompressed (same records, same
  dataset_info: tfds reads either)."""
  import shutil  # pylint: disable=g-import-not-at-top
  from array_record.python import array_record_module as ar  # pylint: disable=g-import-not-at-top
  shutil.copytree(folder, dest)
  for name in os.listdir(folder):
    if ".array_record-" not in name:
      continue
    reader = ar.ArrayRecordReader(os.path.join(folder, name))
    writer = ar.ArrayRecordWriter(os.path.join(dest, name),
                                  "group_size:1,uncompressed")
    for i in range(reader.num_records()):
      writer.write(reader.read([i])[0])
    writer.close()
    reader.close()


def cache_breakdown(recs, crop_size, batch_size, cache_dir, samples):
  """Rows (store, kB per record, CPU ms per sample of: the array_record
  read, tfds' read + parse, np.stack into a batch) of the pre-crop cache as
  built (tfds' default compression) and of an uncompressed copy."""
  from array_record.python import array_record_module as ar  # pylint: disable=g-import-not-at-top
  from data import precrop_cache  # pylint: disable=g-import-not-at-top
  config = _star_make(crop_size, "device").config
  key = precrop_cache.build(recs, config, cache_dir)
  sub = os.path.join(precrop_cache.BUILDER_NAME, key, precrop_cache.VERSION)
  plain = os.path.join(cache_dir, "uncompressed")
  _uncompressed_copy(os.path.join(cache_dir, sub), os.path.join(plain, sub))

  def ms(fn):
    t = time.process_time()
    for i in range(samples):
      fn(i % len(recs))
    return (time.process_time() - t) / samples * 1e3

  rows = []
  for store, data_dir in (("as built (compressed)", cache_dir),
                          ("uncompressed copy", plain)):
    folder = os.path.join(data_dir, sub)
    files = [os.path.join(folder, n) for n in sorted(os.listdir(folder))
             if ".array_record-" in n]
    reader = ar.ArrayRecordReader(files[0])
    n0 = reader.num_records()
    read = precrop_cache.CachedPrecrops(data_dir, key, len(recs))
    read(0)
    batch = [read(i) for i in range(batch_size)]
    stack_ms = ms(lambda i: {k: np.stack([x[k] for x in batch])
                             for k in batch[0]}) / batch_size
    rows.append((store, sum(os.path.getsize(f) for f in files) / len(recs)
                 / 1e3, ms(lambda i: reader.read([i % n0])), ms(read),
                 stack_ms))
    reader.close()
  return rows


def upscaled_records(recs, factor, folder):
  """JPEG copies of `recs` `factor` x larger (PIL bicubic, quality 90) with
  their points mapped (pixel centres: x -> factor x + (factor - 1) / 2):
  faces as large as in WFLW-like photos, to time decoding large JPEGs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  out = []
  for i, r in enumerate(recs):
    path = os.path.join(folder, f"{i:05d}.jpg")
    if not os.path.exists(path):
      im = Image.open(r.image_path).convert("RGB")
      im.resize((im.width * factor, im.height * factor),
                Image.Resampling.BICUBIC).save(path, quality=90)
    out.append(records_lib.FaceRecord(
        path, r.landmarks * factor + (factor - 1) / 2.0))
  return out


def loader_cpu_rate(recs, crop_size, batch_size, augment_on, warmup, batches):
  """(per core, per wall s) of the grain loader, 0 workers (+ batching)."""
  loader = pipeline.make_landmark_loader(
      recs, crop_size=crop_size, train=True, batch_size=batch_size, seed=0,
      num_workers=0, crop_mode="points", shard_index=0, shard_count=1,
      augment_on=augment_on)
  it = iter(loader)
  for _ in range(warmup):
    next(it)
  c0, w0 = time.process_time(), time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  n = batches * batch_size
  return (n / (time.process_time() - c0), n / (time.perf_counter() - w0),
          batch)


def device_augment_cost(batch, crop_size, repeats):
  """(CPU s, wall s) per image of the jitted DeviceAugment on `batch`."""
  import jax  # pylint: disable=g-import-not-at-top
  da = device_augment.DeviceAugment(
      crop_size, device_augment.precrop_size(crop_size),
      augment_lib.AugmentConfig(),
      tuple(int(i) for i in schemes.get_scheme(68).flip_permutation))
  fn = jax.jit(da.__call__)
  batch = jax.device_put(batch)
  jax.block_until_ready(fn(batch, jax.random.PRNGKey(0)))
  c0, w0 = time.process_time(), time.perf_counter()
  for i in range(repeats):
    jax.block_until_ready(fn(batch, jax.random.PRNGKey(i + 1)))
  n = repeats * batch["image"].shape[0]
  return ((time.process_time() - c0) / n, (time.perf_counter() - w0) / n,
          jax.default_backend())


def train_step_flops(augment_on="device"):
  """FLOPs per image of the paper model's train step (4-stack hourglass,
  256 px, WFLW 98 points, AAM, 3x3 convolutions as lax.conv), from XLA's
  cost analysis of the lowered (not compiled) step at batch 1."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import common  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  c = common.star()
  c.data.scheme, c.model.conv3x3, c.batch_size = "wflw", "xla", 1
  c.data.augment_on = augment_on
  c.compilation_cache_dir = ""

  class _NoData:
    def num_train_examples(self):
      return 1
  method = star_method.StarMethod(c, data=_NoData())
  trainer = loop.Trainer(method, c)
  state = jax.eval_shape(trainer.init_state)
  cost = jax.jit(trainer._train_step).lower(  # pylint: disable=protected-access
      state, trainer.abstract_batch).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost["flops"])


CHIPS = (("H100 (989 TFLOP/s bf16)", 989e12), ("TPU v5e (197 TFLOP/s bf16)",
                                                197e12))


def augment_on_table(args, recs):
  """The issue #18 table: host cost per core of both modes, the device
  cost, and host cores per accelerator chip."""
  s = args.crop_size
  print(f"yt68 {args.split}: {len(recs)} records, crop {s} px (pre-crop "
        f"{device_augment.precrop_size(s)} px), batch {args.batch_size}, "
        f"{os.cpu_count()} CPUs visible; per core = samples per CPU second "
        "of this process")
  print(f"{'host work per sample':<46} {'/s per core':>11} {'/s wall':>9}")
  print("-" * 68)
  per_core = {}
  for name, core, wall in mode_rates(recs, s, args.stage_seconds):
    print(f"{name:<46} {core:>11.1f} {wall:>9.1f}")
  for mode in ("host", "device"):
    core, wall = worker_rate(recs, s, args.batch_size, mode,
                             args.stage_seconds)
    per_core[mode] = core
    print(f"{f'{mode!r} mode, one worker: samples + batching':<46} "
          f"{core:>11.1f} {wall:>9.1f}")
  if args.cache:
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory(dir=args.cache_parent) as cache_dir:
      core, wall, build_s = cached_worker_rate(
          recs, s, args.batch_size, cache_dir, args.stage_seconds)
    per_core["cache"] = core
    name = "'device' mode, one worker, pre-crop cache"
    print(f"{name:<46} {core:>11.1f} {wall:>9.1f}   (built once in "
          f"{build_s:.1f} s)")
  batch = None
  for mode in ("host", "device"):
    core, wall, b = loader_cpu_rate(recs, s, args.batch_size, mode,
                                    args.warmup, args.batches)
    batch = b if mode == "device" else batch
    print(f"{f'grain loader, 0 workers (threads), {mode!r}':<46} "
          f"{core:>11.1f} {wall:>9.1f}")
  cpu, wall, backend = device_augment_cost(batch, s, args.device_repeats)
  print(f"{f'device side: jitted augmentation on {backend}':<46} "
        f"{1 / cpu:>11.1f} {1 / wall:>9.1f}   ({cpu * 1e3:.1f} ms CPU, "
        f"{wall * 1e3:.1f} ms wall per image)")
  if args.stated_flops:
    flops, how = args.stated_flops, "stated"
  else:
    flops, how = train_step_flops(), "XLA cost analysis, lowered step"
  print(f"\npaper model train step: {flops / 1e9:.1f} GFLOP per image ({how}"
        f"; 4 stacks, 256 px, 98 points, AAM)")
  cache = "cache" in per_core
  print(f"{'chip at ' + format(args.mfu, '.0%') + ' MFU':<28} {'images/s':>9}"
        f" {'host cores: host mode':>22} {'device mode':>12}"
        + (f" {'device + cache':>15}" if cache else ""))
  print("-" * (74 + 16 * cache))
  for name, peak in CHIPS:
    rate = args.mfu * peak / flops
    print(f"{name:<28} {rate:>9.0f} {rate / per_core['host']:>22.1f} "
          f"{rate / per_core['device']:>12.1f}"
          + (f" {rate / per_core['cache']:>15.1f}" if cache else ""))


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
  p.add_argument("--augment_on_table", action="store_true",
                 help="the host / device augmentation table (issue #18)")
  p.add_argument("--device_repeats", type=int, default=5)
  p.add_argument("--mfu", type=float, default=0.4)
  p.add_argument("--stated_flops", type=float, default=0.0,
                 help="train-step FLOPs per image instead of XLA's count")
  p.add_argument("--cache", action="store_true",
                 help="also time reads of the array_record pre-crop cache")
  p.add_argument("--cache_breakdown", type=int, default=0, metavar="READS",
                 help="only: where a cached sample's CPU time goes (record "
                 "read, tfds parse, batching), compressed vs uncompressed")
  p.add_argument("--cache_parent", default=None,
                 help="where the temporary cache (and --upscale copies) go")
  p.add_argument("--upscale", type=int, default=1,
                 help="time JPEGs upscaled this many times (large faces)")
  args = p.parse_args()

  recs = yt68_records(args.root, args.split, args.records)
  if args.upscale > 1:
    folder = os.path.join(args.cache_parent or "/tmp",
                          f"yt68_x{args.upscale}_{args.split}")
    recs = upscaled_records(recs, args.upscale, folder)
    print(f"(yt68 frames upscaled {args.upscale}x to JPEGs in {folder})")
  if args.augment_on_table:
    augment_on_table(args, recs)
    return
  if args.cache_breakdown:
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory(dir=args.cache_parent) as cache_dir:
      rows = cache_breakdown(recs, args.crop_size, args.batch_size,
                             cache_dir, args.cache_breakdown)
    print(f"pre-crop cache, {len(recs)} records, crop {args.crop_size} px "
          f"(pre-crop {device_augment.precrop_size(args.crop_size)} px); CPU "
          f"ms per sample over {args.cache_breakdown} reads")
    print(f"{'store':<24} {'kB/record':>10} {'record read':>12} "
          f"{'tfds read+parse':>16} {'np.stack':>9}")
    for store, kb, raw, tfds_ms, stack in rows:
      print(f"{store:<24} {kb:>10.0f} {raw:>12.3f} {tfds_ms:>16.3f} "
            f"{stack:>9.3f}")
    return
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

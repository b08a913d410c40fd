r"""Training speed, FLOP/s, MFU and memory on an accelerator, plus a loss check.

  python bench/accelerator.py           # on a GPU / TPU host, < 5 min
  python bench/accelerator.py --small   # tiny shapes on CPU, < 1 min (CI)
  python bench/accelerator.py --star_batches=32 --dtypes=bfloat16 --no_mae

What runs (full mode):
  * STAR, the paper model (`configs/wflw_star.py`: 98 points, 256 px,
    4 stacks of depth 4, width 256, AAM, STAR loss + 10 x AWing, Adam, EMA,
    the non-finite guard) at batch 32 and 128, bfloat16 and float32;
  * MAE pretraining (SCE-MAE stage 1, `configs/celeba_mae.py`: 96 px,
    patch 8, mask 0.75, norm-pix loss, AdamW) with DeiT-S/8 and DeiT-B/8
    encoders (MAE's 512 x 8 decoder), batch 512, bfloat16 and float32;
  * a training check: 200 steps of the wflw_star-sized model on procedural
    faces (data/synthetic, 68 points, the configs' host augmentation, the
    loop's data pipeline), printing the first and last losses; the script
    exits with status 1 when the loss did not fall.

Order: the training check first (it sets the exit status), then the rows,
bfloat16 before float32, STAR before MAE; no row starts after `--budget_s`
(270 s: the whole run stays under 5 minutes; the rest are listed as
skipped; 0 = no limit). In full mode the check and every row run in their
own process (the allocator's peak is per process, and a process that held
the GPU would keep its memory from the next).

Every step is `training.loop.Trainer`'s jitted train step, the one `run.py`
trains with, built from the method (`star_jax.method.StarMethod`,
`sce_mae_jax.pretrain.MaePretrainMethod`) and its config; each throughput
row compiles it once (`lower(...).compile()`, timed: "compile s"), runs
`--warmup` steps, then times `--steps` steps on one fixed batch already on
the device (no input pipeline) and reports
  img/s      batch / step time;
  step ms    wall time per step (all timed steps, one sync at the end);
  TFLOP/s    FLOPs per step / step time, FLOPs from XLA's cost analysis of
             the compiled step (`compiled.cost_analysis()["flops"]`: the
             whole step, forward + backward + optimiser, as XLA counts it:
             2 per multiply-add);
  MFU        TFLOP/s / the device's peak (`PEAKS`, matched on
             `jax.devices()[0].device_kind`; "n/a" for unknown kinds). The
             peak for bfloat16 rows is the dense bf16 tensor peak; for
             float32 rows it is what XLA's default precision runs float32
             matmuls / convolutions on: TF32 tensor cores on A100 / H100 /
             H200 (jax.lax.Precision.DEFAULT), single bf16 passes on TPU.
             `--f32_peak=fp32` uses the non-tensor FP32 peak instead
             (67 TFLOP/s on H100 SXM, 19.5 on A100);
  peak MiB   `device.memory_stats()["peak_bytes_in_use"]` (GPU / TPU: the
             allocator's peak of the process so far, hence one process per
             row, `--in_process` to skip that), else (CPU) the compiled
             step's `memory_analysis()`: argument + output + temp - alias.

Parameters come from the method's own initialisers (`Trainer.init_state`),
so the training check starts where a user's run starts. Batches for the
throughput rows are random images with the dummy batch's labels; their
values do not change the speed.

`--small` (CPU, CI): a 1-stack, depth-1, width-16 hourglass at 32 px and a
2-block ViT-MAE, batch 8, a few timed steps, and a 30-step check on 8
procedural faces repeated every step (no augmentation, so the loss can
only fall by learning; with `--learning_rate=0` the check fails).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

MiB = 2**20

# Dense peak TFLOP/s by device kind. Matched in order on the lower-cased
# `device_kind` (first pattern found wins), so specific names come first.
# "float32": what XLA's default precision runs f32 matmuls / convs on (TF32
# tensor cores on NVIDIA Ampere / Hopper, bf16 passes on TPU); "fp32": the
# non-tensor FP32 peak (NVIDIA only). Sources: NVIDIA H100 / H200 / A100
# data sheets (dense, without sparsity), Google Cloud TPU system pages.
PEAKS = (
    # pattern, name, {dtype: TFLOP/s}
    ("h100 pcie", "H100 PCIe", {"bfloat16": 756.0, "float32": 378.0,
                                "fp32": 51.0}),
    ("h100", "H100 SXM", {"bfloat16": 989.0, "float32": 494.0,
                          "fp32": 67.0}),
    ("h200", "H200 (as H100 SXM)", {"bfloat16": 989.0, "float32": 494.0,
                                    "fp32": 67.0}),
    ("a100", "A100", {"bfloat16": 312.0, "float32": 156.0, "fp32": 19.5}),
    ("tpu v5 lite", "TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("tpu v5e", "TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("tpu v5p", "TPU v5p", {"bfloat16": 459.0, "float32": 459.0}),
    ("tpu v5", "TPU v5p", {"bfloat16": 459.0, "float32": 459.0}),
    ("tpu v4", "TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
    ("tpu v6 lite", "TPU v6e", {"bfloat16": 918.0, "float32": 918.0}),
)


def peak_tflops(device_kind: str, dtype: str, f32_peak: str = "default"):
  """(name, dense peak TFLOP/s) for a device kind and dtype, or (None, None).

  `f32_peak="fp32"`: float32 rows use the non-tensor FP32 peak where the
  table has one.
  """
  kind = (device_kind or "").lower()
  for pattern, name, peaks in PEAKS:
    if pattern in kind:
      key = dtype
      if dtype == "float32" and f32_peak == "fp32" and "fp32" in peaks:
        key = "fp32"
      return name, peaks.get(key)
  return None, None


def mfu(achieved_flops_per_s: float, peak_tflops_value) -> float | None:
  """Model FLOPs utilisation: achieved / peak (None for an unknown peak)."""
  if not peak_tflops_value or not math.isfinite(achieved_flops_per_s):
    return None
  return achieved_flops_per_s / (peak_tflops_value * 1e12)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled program (XLA cost analysis)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def compiled_bytes(compiled) -> int | None:
  """argument + output + temp - alias bytes of a compiled program."""
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes +
             mem.temp_size_in_bytes - mem.alias_size_in_bytes)


def device_peak_bytes() -> int | None:
  """The first device's allocator peak (GPU / TPU), None where unknown."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats()
  if not stats or "peak_bytes_in_use" not in stats:
    return None
  return int(stats["peak_bytes_in_use"])


# ---------------------------------------------------------------- configs ---

SMALL_STAR = {"model.num_stacks": 1, "model.depth": 1, "model.width": 16,
              "data.crop_size": 32}
SMALL_MAE = {"model.preset": "deit_tiny", "model.decoder": "custom",
             "model.decoder_width": 32, "model.decoder_depth": 1,
             "model.decoder_heads": 2}
SMALL_MAE_ENCODER = {"width": 32, "depth": 2, "num_heads": 2}
NO_AUGMENT = {"flip_prob": 0.0, "shift_sigma": 0.0, "rotate_sigma_deg": 0.0,
              "scale_sigma": 0.0, "occlusion_prob": 0.0, "blur_prob": 0.0,
              "gamma_prob": 0.0, "noise_prob": 0.0, "gray_prob": 0.0}


def star_config(batch: int, dtype: str, small: bool = False,
                synthetic: bool = False, num_faces: int = 0,
                learning_rate: float | None = None, augment: bool = True):
  """configs/wflw_star.py (or `SMALL_STAR`) at `batch` / `dtype`.

  `synthetic`: the procedural 68-point faces of data/synthetic instead of
  WFLW (300W scheme and normaliser), `num_faces` of them for training.
  """
  from configs import wflw_star  # pylint: disable=g-import-not-at-top
  c = wflw_star.get_config()
  c.batch_size = int(batch)
  c.model.dtype = dtype
  c.compilation_cache_dir = ""
  if small:
    c.update_from_flattened_dict(SMALL_STAR)
  if synthetic:
    c.data.name = "synthetic"
    c.data.scheme = "300w"
    c.data.crop_mode = "points"
    c.data.check_images = "none"
    c.data.eval_splits = ("test",)
    c.data.synthetic.num_train = int(num_faces)
    c.data.synthetic.num_eval = 8
    c.data.synthetic.image_size = max(64, int(c.data.crop_size))
    c.eval.normaliser = "300w"
    c.best_metric = "test_ema/nme"
    if not augment:
      for k, v in NO_AUGMENT.items():
        c.data.augment[k] = v
  if learning_rate is not None:
    c.optimizer.learning_rate = float(learning_rate)
  return c


def mae_config(preset: str, batch: int, dtype: str, small: bool = False):
  """configs/celeba_mae.py with `preset` (or `SMALL_MAE`) at batch / dtype."""
  from configs import celeba_mae  # pylint: disable=g-import-not-at-top
  c = celeba_mae.get_config()
  c.batch_size = int(batch)
  c.model.preset = preset
  c.model.dtype = dtype
  c.compilation_cache_dir = ""
  if small:
    c.update_from_flattened_dict(SMALL_MAE)
    for k, v in SMALL_MAE_ENCODER.items():
      c.model.encoder_overrides[k] = v
  return c


def star_trainer(config, train: bool = False):
  """The loop's Trainer for STAR (`model.remat` applied if the method's
  model_from_config does not pass it yet)."""
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  method = star_method.StarMethod(config)
  remat = bool(config.model.get("remat", False))
  if getattr(method.model, "remat", False) != remat:
    method.model = method.model.clone(remat=remat)
  return loop.Trainer(method, config, train=train)


def mae_trainer(config):
  from sce_mae_jax import pretrain  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  return loop.Trainer(pretrain.MaePretrainMethod(config), config, train=False)


def random_batch(trainer, seed: int = 0):
  """The method's dummy batch with random uint8 images, on the mesh."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  local = trainer.method.dummy_batch(trainer.local_batch_size)
  rng = np.random.RandomState(seed)
  local = dict(local)
  local["image"] = rng.randint(0, 256, np.shape(local["image"])).astype(
      np.uint8)
  return mesh_lib.global_batch(trainer.mesh, local)


# ------------------------------------------------------------- measuring ---

def compile_step(trainer, state, batch):
  """(compiled train step, compile seconds)."""
  t0 = time.perf_counter()
  compiled = trainer.train_step.lower(state, batch).compile()
  return compiled, time.perf_counter() - t0


def time_steps(compiled, state, batch, warmup: int, steps: int):
  """Runs `warmup` then `steps` steps; (state, seconds per timed step,
  last loss). One host sync after the warm-up and one at the end."""
  import jax  # pylint: disable=g-import-not-at-top
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  if metrics is not None:
    jax.block_until_ready(metrics["loss"])
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  loss = float(jax.block_until_ready(metrics["loss"]))
  return state, (time.perf_counter() - t0) / steps, loss


def throughput_row(trainer, name: str, batch_size: int, dtype: str,
                   warmup: int, steps: int, f32_peak: str = "default",
                   state=None, compiled=None, compile_s=None,
                   batch=None, device_kind=None) -> dict:
  """Compiles and times `trainer`'s train step; one table row.

  `state` / `compiled` / `compile_s` / `batch`: reuse a state, a compiled
  step and a batch of its shapes (--small reuses the training check's).
  `device_kind`: the kind the peak is looked up for (default: the first
  device's).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if batch is None:
    batch = random_batch(trainer)
  if state is None:
    state = trainer.init_state()
  if compiled is None:
    compiled, compile_s = compile_step(trainer, state, batch)
  flops = compiled_flops(compiled)
  state, step_s, loss = time_steps(compiled, state, batch, warmup, steps)
  kind = device_kind or jax.devices()[0].device_kind
  peak_name, peak = peak_tflops(kind, dtype, f32_peak)
  achieved = flops / step_s
  peak_bytes = device_peak_bytes()
  mem_source = "device peak"
  if peak_bytes is None:
    peak_bytes, mem_source = compiled_bytes(compiled), "memory_analysis"
  return dict(model=name, batch=int(batch_size), dtype=dtype,
              img_s=batch_size / step_s, step_ms=1e3 * step_s,
              flops_per_step=flops, tflops_s=achieved / 1e12,
              peak_tflops=peak, peak_name=peak_name,
              mfu=mfu(achieved, peak), peak_bytes=peak_bytes,
              memory_source=mem_source, compile_s=compile_s, loss=loss,
              steps=steps, device_kind=kind)


def star_row(batch: int, dtype: str, small: bool, warmup: int, steps: int,
             f32_peak: str = "default") -> dict:
  name = "STAR tiny" if small else "STAR 4-stack 256 px (WFLW 98 pt)"
  return throughput_row(star_trainer(star_config(batch, dtype, small)), name,
                        batch, dtype, warmup, steps, f32_peak)


def mae_row(preset: str, batch: int, dtype: str, small: bool, warmup: int,
            steps: int, f32_peak: str = "default") -> dict:
  name = {"deit_small": "MAE DeiT-S/8", "deit_base": "MAE DeiT-B/8",
          "deit_tiny": "MAE DeiT-T/8"}.get(preset, preset)
  if small:
    name = "MAE tiny ViT"
  return throughput_row(mae_trainer(mae_config(preset, batch, dtype, small)),
                        name, batch, dtype, warmup, steps, f32_peak)


# --------------------------------------------------------- training check ---

def loss_fell(losses, min_drop: float = 0.1, window: int | None = None):
  """(fell, first mean, last mean): the mean of the last `window` losses is
  below (1 - min_drop) x the mean of the first `window` (default: a tenth of
  the steps, at least 1). Any non-finite loss counts as not falling."""
  losses = [float(x) for x in losses]
  if not losses:
    return False, float("nan"), float("nan")
  k = window or max(1, len(losses) // 10)
  first = statistics.fmean(losses[:k])
  last = statistics.fmean(losses[-k:])
  finite = all(math.isfinite(x) for x in losses)
  return (finite and last < (1.0 - min_drop) * first), first, last


def train_check(steps: int, batch: int, dtype: str, small: bool,
                learning_rate: float | None = None, num_faces: int = 0,
                num_workers: int | None = None, log=None) -> dict:
  """Trains `steps` steps on procedural faces; the per-step losses.

  The loop's Trainer and the method's own data iterator (the loop's
  pipeline, augmentation as configured; `--small`: `batch` faces, no
  augmentation) feed `Trainer.train_step`; no checkpoints, no evaluation.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  faces = num_faces or (batch if small else 16 * batch)
  config = star_config(batch, dtype, small, synthetic=True, num_faces=faces,
                       learning_rate=learning_rate, augment=not small)
  config.max_steps = int(steps)
  if num_workers is not None:
    config.data.num_workers = int(num_workers)
  trainer = star_trainer(config, train=True)
  state = trainer.init_state()
  iterator = trainer.method.train_iterator(trainer.local_batch_size)
  losses = []
  t0 = time.perf_counter()
  compiled = None
  try:
    for i in range(steps):
      batch_arrays = mesh_lib.global_batch(trainer.mesh, next(iterator))
      if compiled is None:
        compiled, compile_s = compile_step(trainer, state, batch_arrays)
      state, metrics = compiled(state, batch_arrays)
      losses.append(metrics["loss"])
      if log and (i + 1) % max(1, steps // 4) == 0:
        log(f"  training check: step {i + 1}/{steps}, loss "
            f"{float(metrics['loss']):.4g}")
    losses = [float(x) for x in jax.device_get(losses)]
  finally:
    loop.close_iterator(iterator)
  wall = time.perf_counter() - t0
  return dict(losses=losses, steps=steps, batch=batch, dtype=dtype,
              faces=faces, compile_s=compile_s, wall_s=wall,
              img_s=batch * steps / max(wall - compile_s, 1e-9),
              learning_rate=float(config.optimizer.learning_rate),
              reuse=dict(trainer=trainer, state=state, compiled=compiled,
                         compile_s=compile_s, batch=batch_arrays))


# ------------------------------------------------------------------ output ---

def format_rows(rows) -> str:
  lines = ["| model | batch | dtype | img/s | step ms | GFLOP / step | "
           "TFLOP/s | MFU | peak MiB | compile s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "failed" in r:
      lines.append(f"| {r['model']} | {r['batch']} | {r['dtype']} | "
                   f"{r['failed']} | | | | | | |")
      continue
    m = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
    mem = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / MiB:,.0f}"
    lines.append(
        f"| {r['model']} | {r['batch']} | {r['dtype']} | {r['img_s']:,.1f} | "
        f"{r['step_ms']:,.1f} | {r['flops_per_step'] / 1e9:,.1f} | "
        f"{r['tflops_s']:,.2f} | {m} | {mem} | {r['compile_s']:.1f} |")
  return "\n".join(lines)


def _check_from_args(args, small: bool, log=None) -> dict:
  """`train_check` with the command line's settings, and its verdict."""
  workers = args.num_workers
  if workers is None:
    workers = 0 if small else max(0, min(8, (os.cpu_count() or 1) - 1))
  result = train_check(args.train_steps, args.train_batch, args.train_dtype,
                       small, args.learning_rate, num_workers=workers,
                       log=log)
  fell, first, last = loss_fell(result["losses"], args.min_drop)
  result.update(fell=fell, first_mean=first, last_mean=last)
  return result


def _worker_cmd(args, kind, **kw):
  cmd = [sys.executable, os.path.abspath(__file__), f"--_worker={kind}",
         f"--warmup={args.warmup}", f"--steps={args.steps}",
         f"--f32_peak={args.f32_peak}"]
  if args.small:
    cmd.append("--small")
  cmd += [f"--{k}={v}" for k, v in kw.items()]
  return cmd


def run_row(args, kind, **kw) -> dict:
  """One row, in this process (`--in_process`, --small) or a fresh one."""
  if args.in_process:
    if kind == "star":
      return star_row(kw["batch"], kw["dtype"], args.small, args.warmup,
                      args.steps, args.f32_peak)
    return mae_row(kw["preset"], kw["batch"], kw["dtype"], args.small,
                   args.warmup, args.steps, args.f32_peak)
  proc = subprocess.run(_worker_cmd(args, kind, **kw), capture_output=True,
                        text=True, check=False)
  if proc.returncode == 0:
    return json.loads(proc.stdout.strip().splitlines()[-1])
  text = proc.stderr
  if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
    need = re.search(r"allocat\w* (\d+) bytes", text)
    return {"failed": "out of memory" + (
        f" ({int(need.group(1)) / 2**30:.1f} GiB buffer)" if need else "")}
  raise RuntimeError(f"{kind} worker failed:\n{text[-3000:]}")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--small", action="store_true",
                  help="tiny shapes, a few steps: the CPU / CI smoke run")
  ap.add_argument("--star_batches", default=None,
                  help="default 32,128 (--small: 8)")
  ap.add_argument("--dtypes", default=None,
                  help="default bfloat16,float32 (--small: float32)")
  ap.add_argument("--mae_presets", default="deit_small,deit_base")
  ap.add_argument("--mae_batch", type=int, default=None,
                  help="default 512 (--small: 8)")
  ap.add_argument("--no_mae", action="store_true")
  ap.add_argument("--warmup", type=int, default=None,
                  help="untimed steps per row after compiling (default 3, "
                  "--small 1)")
  ap.add_argument("--steps", type=int, default=None,
                  help="timed steps per row (default 20, --small 2)")
  ap.add_argument("--f32_peak", choices=("default", "fp32"),
                  default="default")
  ap.add_argument("--in_process", action="store_true",
                  help="every row in this process (the device's peak memory "
                  "then only grows from row to row); the default with "
                  "--small")
  ap.add_argument("--subprocesses", action="store_true",
                  help="with --small: one process per row anyway (checks "
                  "the full mode's plumbing on CPU)")
  ap.add_argument("--train_steps", type=int, default=None,
                  help="training-check steps (default 200, --small 30; 0: "
                  "no check)")
  ap.add_argument("--train_batch", type=int, default=None,
                  help="training-check batch (default 32, --small 8)")
  ap.add_argument("--train_dtype", default="float32")
  ap.add_argument("--learning_rate", type=float, default=None,
                  help="training-check learning rate (default: the config's "
                  "1e-3; 0 must fail the check)")
  ap.add_argument("--min_drop", type=float, default=0.1,
                  help="the last tenth's mean loss must be below (1 - "
                  "min_drop) x the first tenth's")
  ap.add_argument("--num_workers", type=int, default=None,
                  help="training-check data workers (default: "
                  "min(8, cores - 1); --small 0)")
  ap.add_argument("--budget_s", type=float, default=270.0,
                  help="start no throughput row after this many seconds "
                  "(the rest are listed as skipped); 0: no limit")
  ap.add_argument("--json", default="", help="also write the results here")
  ap.add_argument("--_worker", choices=("star", "mae", "check"), default=None,
                  help=argparse.SUPPRESS)
  ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
  ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
  ap.add_argument("--preset", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  small = args.small
  if small and not args.subprocesses:
    args.in_process = True
  args.warmup = args.warmup if args.warmup is not None else (1 if small
                                                             else 3)
  args.steps = args.steps if args.steps is not None else (2 if small else 20)

  if args._worker == "check":  # pylint: disable=protected-access
    result = _check_from_args(args, small)
    result.pop("reuse", None)
    print(json.dumps(result))
    return 0
  if args._worker:  # pylint: disable=protected-access
    row = (star_row(args.batch, args.dtype, small, args.warmup, args.steps,
                    args.f32_peak) if args._worker == "star" else  # pylint: disable=protected-access
           mae_row(args.preset, args.batch, args.dtype, small, args.warmup,
                   args.steps, args.f32_peak))
    print(json.dumps(row))
    return 0

  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  log = lambda m: print(m, file=sys.stderr, flush=True)
  batches = [int(b) for b in (args.star_batches or
                              ("8" if small else "32,128")).split(",")]
  dtypes = (args.dtypes or ("float32" if small else
                            "bfloat16,float32")).split(",")
  mae_batch = args.mae_batch or (8 if small else 512)
  presets = [] if args.no_mae else (["deit_tiny"] if small else
                                    args.mae_presets.split(","))
  train_steps = (args.train_steps if args.train_steps is not None else
                 (30 if small else 200))
  train_batch = args.train_batch or (8 if small else 32)

  args.train_steps, args.train_batch = train_steps, train_batch

  def run_check():
    return _check_from_args(args, small, log)

  # The training check first (it decides the exit status), then the rows
  # in order of priority (bfloat16 first, STAR before MAE) while the
  # budget lasts.
  check = None
  if train_steps and args.in_process:
    check = run_check()
  elif train_steps:
    # A fresh process, as every full-mode row: this one never allocates on
    # the device (GPU memory would stay held for the rows' processes).
    proc = subprocess.run(
        _worker_cmd(args, "check", train_steps=train_steps,
                    train_batch=train_batch, train_dtype=args.train_dtype,
                    min_drop=args.min_drop,
                    **({} if args.learning_rate is None else
                       {"learning_rate": args.learning_rate}),
                    **({} if args.num_workers is None else
                       {"num_workers": args.num_workers})),
        capture_output=True, text=True, check=False)
    if proc.returncode:
      raise RuntimeError(f"training check failed:\n{proc.stderr[-3000:]}")
    check = json.loads(proc.stdout.strip().splitlines()[-1])
  rows = []
  jobs = ([("star", dict(batch=b, dtype=d)) for d in dtypes for b in batches]
          + [("mae", dict(preset=p, batch=mae_batch, dtype=d))
             for d in dtypes for p in presets])
  jobs.sort(key=lambda j: dtypes.index(j[1]["dtype"]))  # stable.
  if small and check is not None and "reuse" in check:
    # One tiny STAR program for both: the check's trainer, state and
    # compiled step time the STAR row too (the synthetic faces' 68-point
    # model instead of WFLW's 98; same code path).
    reuse = check["reuse"]
    job = ("star", dict(batch=train_batch, dtype=args.train_dtype))
    if job in jobs:
      jobs.remove(job)
      rows.append(throughput_row(reuse["trainer"], "STAR tiny (68 pt)",
                                 train_batch, args.train_dtype, args.warmup,
                                 args.steps, args.f32_peak,
                                 state=reuse["state"],
                                 compiled=reuse["compiled"],
                                 compile_s=reuse["compile_s"],
                                 batch=reuse["batch"]))
  if check is not None:
    check.pop("reuse", None)
  for kind, kw in jobs:
    label = ("STAR" if kind == "star" else kw["preset"])
    if args.budget_s and time.perf_counter() - start > args.budget_s:
      rows.append({"model": label, "batch": kw["batch"], "dtype": kw["dtype"],
                   "failed": f"skipped (--budget_s={args.budget_s:g})"})
      continue
    row = run_row(args, kind, **kw)
    row.setdefault("model", label)
    row.setdefault("batch", kw["batch"])
    row.setdefault("dtype", kw["dtype"])
    rows.append(row)
    log(f"  done {label} b{kw['batch']} {kw['dtype']} "
        f"({time.perf_counter() - start:.0f} s)")

  dev = jax.devices()[0]
  print(f"\n{dev.platform} {dev.device_kind} x {jax.device_count()}, jax "
        f"{jax.__version__}; step = training.loop.Trainer.train_step "
        f"(fwd + bwd + optimiser + EMA where configured); {args.warmup} "
        f"warm-up + {args.steps} timed steps per row")
  name, _ = peak_tflops(dev.device_kind, "bfloat16")
  print(f"peak: {name or 'unknown device kind: MFU n/a'}; float32 rows vs "
        + ("the FP32 non-tensor peak" if args.f32_peak == "fp32" else
           "XLA's default-precision path (TF32 on NVIDIA, bf16 on TPU)"))
  print(format_rows(rows))
  status = 0
  if check is not None:
    losses = check["losses"]
    print(f"\ntraining check: {check['steps']} steps, batch {check['batch']} "
          f"{check['dtype']}, {check['faces']} procedural faces, lr "
          f"{check['learning_rate']:g}: first loss {losses[0]:.4f}, last "
          f"{losses[-1]:.4f}; mean of the first / last tenth "
          f"{check['first_mean']:.4f} / {check['last_mean']:.4f} -> "
          f"{'falls' if check['fell'] else 'DID NOT FALL'} (needs a "
          f"{100 * args.min_drop:.0f} % drop); {check['img_s']:.1f} img/s "
          f"with the data pipeline, compile {check['compile_s']:.1f} s")
    if not check["fell"]:
      status = 1
  print(f"total {time.perf_counter() - start:.0f} s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"rows": rows, "check": check}, f, indent=1)
  return status


if __name__ == "__main__":
  sys.exit(main())

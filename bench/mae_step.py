r"""MAE pretraining step throughput and memory (SCE-MAE stage 1).

  python bench/mae_step.py                       # default grid, < 5 min
  python bench/mae_step.py --presets=deit_tiny --batches=64 --dtypes=float32
  python bench/mae_step.py --budget_s=1200       # let the big rows run

What is timed: one full training step as the loop runs it: masking + ViT
encoder on the kept 25% of the 144 patches (96 px, patch 8) + decoder + the
norm_pix loss + backward + AdamW update (weight decay 0.05), jitted, on a
fixed batch already on the device (the input pipeline is timed separately,
last row). images/s = batch * steps / wall time of the timed steps, after
one untimed warm-up step (compilation is reported on its own).

Peak memory, two measures:
  * "XLA step": the compiled step's buffer assignment from
    `compiled.memory_analysis()`: arguments + outputs + temporaries - aliased
    (donated) bytes; what the step needs on the device, exact for its
    program.
  * "RSS": the process's peak resident set (`ru_maxrss`) after the row; it
    only grows, so rows run from small to large and each value includes
    everything before it (JAX runtime, compiled code, earlier rows).

Decoders: DeiT-T gets the "small" decoder (256 x 4), DeiT-S MAE's 512 x 8
(sce_mae_jax/mae.py DEFAULT_DECODER). bfloat16 is the compute dtype
(parameters and optimizer state stay float32). On a CPU without native bf16
matrix units bf16 is usually not faster.

Rows that would not fit in `--budget_s` (estimated from the FLOPs of the
compiled step and the throughput of the rows already measured) are printed
as "skipped (budget)", never estimated.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sce_mae_jax import mae as mae_lib  # pylint: disable=wrong-import-position
from sce_mae_jax import pretrain  # pylint: disable=wrong-import-position


def make_step(model, tx):
  def step(params, opt_state, images, rng):
    def loss_fn(p):
      return model.apply({"params": p}, images, rngs={"masking": rng})["loss"]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


def bench_row(preset, batch, dtype, min_time_s, max_steps, budget_left_s,
              rate_flops):
  model = mae_lib.mae_model(preset, dtype=dtype)
  rng = jax.random.PRNGKey(0)
  images = jax.random.normal(rng, (batch, 96, 96, 3), jnp.float32)
  params = jax.jit(model.init)({"params": rng, "masking": rng},
                               images[:1])["params"]
  tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05,
                   mask=pretrain.weight_decay_mask(params))
  opt_state = tx.init(params)
  step = make_step(model, tx)
  t0 = time.perf_counter()
  compiled = step.lower(params, opt_state, images, rng).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  xla_bytes = None
  if mem is not None:
    xla_bytes = (mem.argument_size_in_bytes + mem.output_size_in_bytes +
                 mem.temp_size_in_bytes - mem.alias_size_in_bytes)
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", float("nan")))
  row = dict(compile_s=compile_s, xla_bytes=xla_bytes, flops=flops)
  if rate_flops and np.isfinite(flops):
    estimate = 2 * flops / rate_flops   # warm-up + one timed step.
    if estimate > budget_left_s:
      row["skipped"] = f"skipped (budget: ~{estimate:.0f} s needed)"
      return row
  keys = jax.random.split(rng, max_steps + 1)
  params, opt_state, loss = compiled(params, opt_state, images, keys[0])
  jax.block_until_ready(loss)
  n, t0 = 0, time.perf_counter()
  while n < max_steps and (n == 0 or time.perf_counter() - t0 < min_time_s):
    params, opt_state, loss = compiled(params, opt_state, images, keys[n + 1])
    jax.block_until_ready(loss)
    n += 1
  dt = time.perf_counter() - t0
  row.update(steps=n, step_s=dt / n, images_s=batch * n / dt,
             gflops_s=flops * n / dt / 1e9, loss=float(loss))
  return row


def bench_pipeline(batch, steps):
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  shared = os.path.join(here, "..", "shared", "data")
  if not os.path.isdir(os.path.join(shared, "yt68")):
    return None
  from data import pipeline  # pylint: disable=g-import-not-at-top
  train, _ = pretrain.faces_paths(os.path.join(shared, "yt68"),
                                  os.path.join(shared, "mtfl"))
  it = iter(pipeline.make_pretrain_loader(pipeline.image_records(train),
                                          batch_size=batch, seed=0))
  next(it)
  t0 = time.perf_counter()
  for _ in range(steps):
    next(it)
  return batch * steps / (time.perf_counter() - t0)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--presets", default="deit_tiny,deit_small")
  ap.add_argument("--batches", default="64,256")
  ap.add_argument("--dtypes", default="float32,bfloat16")
  ap.add_argument("--min_time_s", type=float, default=5.0)
  ap.add_argument("--max_steps", type=int, default=3)
  ap.add_argument("--budget_s", type=float, default=200.0)
  args = ap.parse_args()
  start = time.perf_counter()
  rows = []
  rate = None
  configs = [(p, int(b), d) for p in args.presets.split(",")
             for b in args.batches.split(",") for d in args.dtypes.split(",")]
  for preset, batch, dtype in configs:
    left = args.budget_s - (time.perf_counter() - start)
    if left <= 0:
      rows.append((preset, batch, dtype, {"skipped": "skipped (budget)"}))
      continue
    try:
      r = bench_row(preset, batch, {"float32": jnp.float32,
                                    "bfloat16": jnp.bfloat16}[dtype],
                    args.min_time_s, args.max_steps, left, rate)
    except jax.errors.JaxRuntimeError as e:  # a row that does not fit.
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      need = re.search(r"allocating (\d+) bytes", str(e))
      r = {"skipped": "out of memory" + (
          f" (one {int(need.group(1)) / 2**30:.1f} GiB buffer)" if need
          else "")}
    r["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if "gflops_s" in r:
      rate = r["gflops_s"] * 1e9 if rate is None else min(rate,
                                                          r["gflops_s"] * 1e9)
    rows.append((preset, batch, dtype, r))
    print(f"  done {preset} b{batch} {dtype} "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
  pipe = bench_pipeline(64, 5)

  print(f"\nMAE train step, 96 px, patch 8, mask 0.75; {jax.devices()[0].platform}"
        f" ({platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores visible), jax {jax.__version__}")
  print("| encoder | decoder | batch | dtype | images/s | s/step | steps | "
        "GFLOP/step | compile s | XLA step MiB | RSS MiB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for preset, batch, dtype, r in rows:
    dec = mae_lib.DEFAULT_DECODER[preset]
    name = {"deit_tiny": "DeiT-T/8", "deit_small": "DeiT-S/8"}.get(preset,
                                                                  preset)
    mib = lambda b: f"{b / 2**20:.0f}" if b else "-"
    if "images_s" in r:
      print(f"| {name} | {dec} | {batch} | {dtype} | {r['images_s']:.1f} | "
            f"{r['step_s']:.2f} | {r['steps']} | {r['flops'] / 1e9:.0f} | "
            f"{r['compile_s']:.0f} | {mib(r['xla_bytes'])} | "
            f"{mib(r['rss'])} |")
    else:
      flops = r.get("flops")
      print(f"| {name} | {dec} | {batch} | {dtype} | {r['skipped']} | - | 0 | "
            f"{flops / 1e9 if flops else float('nan'):.0f} | "
            f"{r.get('compile_s', float('nan')):.0f} | "
            f"{mib(r.get('xla_bytes'))} | {mib(r.get('rss'))} |")
  if pipe is not None:
    print(f"\ninput pipeline (faces, center crop + RRC + flip, num_workers=0, "
          f"batch 64): {pipe:.0f} images/s")
  print(f"total bench time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  main()

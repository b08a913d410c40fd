r"""Compile-only memory of the paper STAR train step: batch, FSDP, remat.

Nothing runs and nothing is allocated: the step `training.loop.Trainer`
builds for `configs/wflw_star.py` (98 points, 256 px, 4 stacks of depth 4,
width 256, AAM, STAR loss + AWing, Adam, EMA, the non-finite guard) is
lowered on abstract inputs (`jax.ShapeDtypeStruct`s with their shardings)
and compiled; `compiled.memory_analysis()` gives what XLA's buffer
assignment needs per device:

  argument  the inputs (train state shard + batch shard),
  output    the new state + metrics,
  temp      every intermediate (activations kept for the backward pass,
            gradients, collectives' buffers),
  alias     outputs written into donated inputs (the state is donated),
  total     argument + output + temp - alias: the step's peak, per device.

and, without compiling, the autodiff residuals: what `jax.vjp` of the loss
keeps from the forward for the backward (activations; the parameters and
the batch, already inputs, not counted), from the jaxpr, per device (global
/ devices). That column is the same for every backend; the XLA columns are
XLA:CPU's.

Layouts, over `--devices` (default 8) fake CPU devices
(`--xla_force_host_platform_device_count`, set here before jax is imported):
"replicated" (data parallel, parameters / optimiser state / EMA on every
device: `config.fsdp=False`) and "fsdp" (`config.fsdp=True`: every array of
>= `fsdp_min_size` elements sharded along its largest divisible dimension,
`training/mesh.py`); each with and without `model.remat` (each hourglass
recomputed in the backward pass, star_jax/model.py). The global batch is
split over the devices, so per device it is batch / devices.

  python bench/compile_memory.py                       # full grid (slow on CPU)
  python bench/compile_memory.py --quick               # batches 8, 32
  python bench/compile_memory.py --batches=32,128 --layouts=fsdp --remat=on
  python bench/compile_memory.py --no_cache_timing     # skip cold vs cached
  python bench/compile_memory.py --tiny --batches=8    # a tiny model (tests)

Caveats: these are XLA:CPU's buffer assignments. GPU and TPU compilers fuse
and schedule differently, so the table is an estimate of accelerator
memory, not a measurement; `bench/accelerator.py` measures the peak on a
device. XLA:CPU drops jax.checkpoint's optimisation barriers early and may
merge a recomputation with the forward it repeats (jax-ml/jax#19822; a toy
of 4 checkpointed tanh-matmul blocks needs 132 MiB without and 144 MiB with
checkpointing here), so it understates what remat saves on GPU / TPU; the
residual column shows what remat removes before any compiler.
3x3 convolutions are compiled as `lax.conv` (`--conv3x3=xla`, what "auto"
picks on GPU / TPU) rather than XLA:CPU's Winograd default. Per-device
batches smaller than 1 are not possible (batch must divide by --devices).

Compile time, cold vs cached (`--cache_batch`, replicated, no remat): two
fresh processes compile the same step with JAX's persistent compilation
cache in a new temporary folder; the first compiles (and writes the cache),
the second loads it. Both times are wall seconds of `lower` + `compile` on
this machine; CPU seconds are printed beside them because the cores here are
shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

PAPER_BATCHES = (8, 16, 32, 64, 128, 256)
LAYOUTS = ("replicated", "fsdp")
MiB = 2**20
GiB = 2**30
# Memory per chip the summary sizes batches for: 80 GiB (H100 / A100 80GB,
# H200 has 141 GB) and 16 GiB (TPU v5e).
CHIP_MEMORY = {"80 GiB": 80 * GiB, "16 GiB": 16 * GiB}

# A tiny model for tests and smoke runs: same code path, seconds to compile.
TINY = {"model.num_stacks": 2, "model.depth": 1, "model.width": 16,
        "data.crop_size": 32, "fsdp_min_size": 256}


FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def force_host_devices(n: int) -> None:
  """Asks XLA:CPU for `n` devices; must run before jax is imported."""
  if "jax" in sys.modules:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={n}").strip()


def paper_config(batch: int, fsdp: bool, remat: bool, dtype: str = "float32",
                 conv3x3: str = "xla", overrides=None):
  """configs/wflw_star.py with the bench's batch / layout / remat / dtype."""
  from configs import wflw_star  # pylint: disable=g-import-not-at-top
  c = wflw_star.get_config()
  c.batch_size = int(batch)
  c.fsdp = bool(fsdp)
  c.model.remat = bool(remat)
  c.model.dtype = dtype
  c.model.conv3x3 = conv3x3
  c.update_from_flattened_dict(overrides or {})
  return c


def star_trainer(config, mesh=None):
  """The loop's Trainer for STAR on `config` (train=False: no data listed).

  `model.remat` reaches the model through `star_jax.method.model_from_config`
  once it passes the field on; until then (or if it does not) the built
  model is cloned with the config's value, so the bench always compiles
  what the config asks for.
  """
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  method = star_method.StarMethod(config)
  remat = bool(config.model.get("remat", False))
  if getattr(method.model, "remat", False) != remat:
    method.model = method.model.clone(remat=remat)
  return loop.Trainer(method, config, mesh=mesh, train=False)


def abstract_step_args(trainer):
  """(state, batch) ShapeDtypeStructs with the trainer's shardings."""
  import jax  # pylint: disable=g-import-not-at-top
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                   sharding=trainer.batch_sharding)
           for k, v in trainer.abstract_batch.items()}
  return trainer.abstract_state, batch


def memory_of(compiled) -> dict:
  """Per-device bytes of a compiled program (`memory_analysis()`)."""
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  out = {k: int(getattr(mem, f"{k}_size_in_bytes"))
         for k in ("argument", "output", "temp", "alias", "generated_code")}
  out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  return out


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def residual_bytes(trainer, state, batch) -> int:
  """Bytes the loss's backward keeps from its forward (autodiff residuals).

  What `jax.vjp` of the method's loss (w.r.t. the parameters) saves, from
  its jaxpr (`jax.make_jaxpr`, abstract inputs, no compile), minus the
  residuals that are the step's own inputs (parameters, batch: already in
  memory). Backend-independent: it is what autodiff asks every compiler to
  keep, before XLA fuses or reschedules anything; `nn.remat` lowers it to
  each hourglass's input. For the whole global batch (divide by the devices
  for a data-parallel share).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.extend import core as jax_core  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  method = trainer.method

  def vjp_of(params, model_state, batch, rng, step):
    def loss(p):
      return method.loss_fn(p, model_state, batch, rng, step)[0]
    return jax.vjp(loss, params)

  closed, shape = jax.make_jaxpr(vjp_of, return_shape=True)(
      state.params, state.model_state, batch, state.rng, state.step)
  num_res = len(jax.tree_util.tree_leaves(shape[1]))
  jaxpr = closed.jaxpr
  inputs = set(jaxpr.invars)
  total = 0
  for v in jaxpr.outvars[len(jaxpr.outvars) - num_res:]:
    if isinstance(v, jax_core.Literal) or v in inputs:
      continue
    total += int(np.prod(v.aval.shape, dtype=np.int64)) * v.aval.dtype.itemsize
  return total


def compile_row(batch: int, layout: str, remat: bool, dtype: str = "float32",
                conv3x3: str = "xla", overrides=None,
                compile_step: bool = True) -> dict:
  """Lowers and compiles one step; its memory, FLOPs and compile times.

  `compile_step=False`: only the autodiff residuals (no compile).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if layout not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  config = paper_config(batch, layout == "fsdp", remat, dtype, conv3x3,
                        overrides)
  trainer = star_trainer(config)
  state, batch_args = abstract_step_args(trainer)
  n = jax.device_count()
  residual = residual_bytes(trainer, state, batch_args)
  row = dict(batch=int(batch), devices=n, per_device_batch=int(batch) // n,
             layout=layout, remat=bool(remat), dtype=dtype,
             residual=residual // n)
  if not compile_step:
    return row
  t0, c0 = time.perf_counter(), time.process_time()
  lowered = trainer.train_step.lower(state, batch_args)
  t1, c1 = time.perf_counter(), time.process_time()
  compiled = lowered.compile()
  t2, c2 = time.perf_counter(), time.process_time()
  row.update(lower_s=t1 - t0, compile_s=t2 - t1, lower_cpu_s=c1 - c0,
             compile_cpu_s=c2 - c1, flops_per_device=flops_of(compiled))
  row.update(memory_of(compiled))
  return row


def memory_table(batches, layouts=LAYOUTS, remats=(False, True),
                 dtype="float32", conv3x3="xla", overrides=None,
                 budget_s=None, log=None, compile_step=True,
                 on_row=None, configs=None) -> list:
  """One `compile_row` per (batch, layout, remat), smallest batches first.

  `compile_step=False`: autodiff residuals only (seconds a row, no compile).
  `on_row(rows)` is called after each row (e.g. to save partial results).
  `configs`: an explicit list of (batch, layout, remat) to run in that order
  instead of the grid.

  Rows that would start after `budget_s` seconds are returned as
  {"skipped": "budget"} (with their keys), never estimated.
  """
  import jax  # pylint: disable=g-import-not-at-top
  # A row is a real compile: never a persistent-cache hit (a deserialised
  # executable's analysis is not what this bench is about).
  jax.config.update("jax_enable_compilation_cache", False)
  start = time.perf_counter()
  rows = []
  if configs is None:
    configs = [(b, l, r) for b in batches for l in layouts for r in remats]
  for batch, layout, remat in configs:
    key = dict(batch=int(batch), layout=layout, remat=bool(remat),
               dtype=dtype)
    if budget_s is not None and time.perf_counter() - start > budget_s:
      rows.append({**key, "skipped": "budget"})
      continue
    row = compile_row(batch, layout, remat, dtype, conv3x3, overrides,
                      compile_step)
    rows.append(row)
    if on_row:
      on_row(rows)
    if log and compile_step:
      log(f"  b{batch} {layout} remat={'on' if remat else 'off'}: "
          f"{row.get('total', 0) / MiB:.0f} MiB/device, compile "
          f"{row['compile_s']:.0f} s ({row['compile_cpu_s']:.0f} CPU s); "
          f"{time.perf_counter() - start:.0f} s so far")
  return rows


def fit_per_example(rows) -> dict:
  """Least-squares total bytes = fixed + per_example * per-device batch,
  per (layout, remat); needs 2 batch sizes."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  groups = {}
  for r in rows:
    if "total" in r:
      groups.setdefault((r["layout"], r["remat"]), []).append(
          (r["per_device_batch"], r["total"]))
  fits = {}
  for key, points in groups.items():
    if len({b for b, _ in points}) < 2:
      continue
    b, t = np.array(points, np.float64).T
    slope, fixed = np.polyfit(b, t, 1)
    fits[key] = dict(fixed=float(fixed), per_example=float(slope))
  return fits


def largest_batch(fit: dict, capacity: int) -> int:
  """The largest per-device batch whose fitted total fits `capacity`."""
  if fit["per_example"] <= 0:
    return 0
  return max(0, int((capacity - fit["fixed"]) // fit["per_example"]))


def format_table(rows) -> str:
  lines = [
      "| global batch | per device | layout | remat | argument MiB | "
      "output MiB | temp MiB | alias MiB | total MiB / device | "
      "autodiff residuals MiB / device | GFLOP / device | "
      "compile s (CPU s) |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    remat = "on" if r["remat"] else "off"
    res = (f"{r['residual'] / MiB:,.0f}" if "residual" in r else "-")
    if "total" not in r:
      lines.append(f"| {r['batch']} | {r.get('per_device_batch', '-')} | "
                   f"{r['layout']} | {remat} | "
                   f"{r.get('skipped', 'not compiled')} | | | | | {res} | | |")
      continue
    mib = lambda k: f"{r[k] / MiB:,.0f}"  # pylint: disable=cell-var-from-loop
    lines.append(
        f"| {r['batch']} | {r['per_device_batch']} | {r['layout']} | "
        f"{remat} | {mib('argument')} | {mib('output')} | {mib('temp')} | "
        f"{mib('alias')} | {mib('total')} | {res} | "
        f"{r['flops_per_device'] / 1e9:,.0f} | {r['compile_s']:.0f} "
        f"({r['compile_cpu_s']:.0f}) |")
  return "\n".join(lines)


def format_summary(rows) -> str:
  """Savings of remat / FSDP at each batch and the fitted largest batches."""
  lines = []
  by_key = {(r["batch"], r["layout"], r["remat"]): r for r in rows
            if "total" in r}
  for (batch, layout, remat), r in sorted(by_key.items()):
    if not remat and (batch, layout, True) in by_key:
      on = by_key[(batch, layout, True)]
      lines.append(
          f"remat saves {(r['total'] - on['total']) / MiB:,.0f} MiB / device "
          f"({100 * (1 - on['total'] / r['total']):.0f} %) at batch {batch}, "
          f"{layout}; temp {r['temp'] / MiB:,.0f} -> "
          f"{on['temp'] / MiB:,.0f} MiB; FLOPs x"
          f"{on['flops_per_device'] / r['flops_per_device']:.2f}")
    if layout == "replicated" and (batch, "fsdp", remat) in by_key:
      f = by_key[(batch, "fsdp", remat)]
      lines.append(f"fsdp saves {(r['total'] - f['total']) / MiB:,.0f} MiB "
                   f"/ device at batch {batch}, remat "
                   f"{'on' if remat else 'off'}; argument "
                   f"{r['argument'] / MiB:,.0f} -> {f['argument'] / MiB:,.0f} "
                   "MiB")
  res = {(r["batch"], r["layout"], r["remat"]): r["residual"] for r in rows
         if "residual" in r}
  for (batch, layout, remat), value in sorted(res.items()):
    if not remat and (batch, layout, True) in res:
      on = res[(batch, layout, True)]
      lines.append(f"remat: autodiff residuals {value / MiB:,.0f} -> "
                   f"{on / MiB:,.0f} MiB / device "
                   f"(-{100 * (1 - on / value):.0f} %) at batch {batch}, "
                   f"{layout}")
  fits = fit_per_example(rows)
  for (layout, remat), fit in sorted(fits.items()):
    sizes = ", ".join(f"{name}: {largest_batch(fit, cap)}"
                      for name, cap in CHIP_MEMORY.items())
    lines.append(
        f"{layout}, remat {'on' if remat else 'off'}: "
        f"{fit['per_example'] / MiB:,.1f} MiB per example + "
        f"{fit['fixed'] / MiB:,.0f} MiB fixed (linear fit of the total over "
        f"the rows) -> largest per-device batch {sizes} (extrapolated from "
        "XLA:CPU's buffer assignment)")
  return "\n".join(lines)


# ---------------------------------------------------- cold vs cached ----

def _compile_once(args) -> dict:
  """In a fresh process: lower + compile one step with the persistent cache."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", args.cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  hits = []
  jax.monitoring.register_event_listener(
      lambda event, **kw: hits.append(event)
      if event == "/jax/compilation_cache/cache_hits" else None)
  overrides = json.loads(args.overrides) if args.overrides else None
  config = paper_config(args.cache_batch, False, False, args.dtype,
                        args.conv3x3, overrides)
  t0, c0 = time.perf_counter(), time.process_time()
  trainer = star_trainer(config)
  state, batch = abstract_step_args(trainer)
  lowered = trainer.train_step.lower(state, batch)
  t1, c1 = time.perf_counter(), time.process_time()
  lowered.compile()
  t2, c2 = time.perf_counter(), time.process_time()
  return dict(lower_s=t1 - t0, compile_s=t2 - t1, lower_cpu_s=c1 - c0,
              compile_cpu_s=c2 - c1, cache_hit=bool(hits),
              cache_files=sum(len(f) for _, _, f in os.walk(args.cache_dir)))


def cache_timing(batch: int, dtype: str = "float32", conv3x3: str = "xla",
                 overrides=None, devices: int = 8) -> list:
  """Cold and cached compile of the same step in two fresh processes."""
  results = []
  with tempfile.TemporaryDirectory(prefix="star_jax_cache_") as cache_dir:
    for _ in range(2):
      cmd = [sys.executable, os.path.abspath(__file__), "--_compile_once",
             f"--cache_dir={cache_dir}", f"--cache_batch={batch}",
             f"--dtype={dtype}", f"--conv3x3={conv3x3}",
             f"--devices={devices}",
             f"--overrides={json.dumps(overrides or {})}"]
      env = dict(os.environ)
      env.pop("JAX_COMPILATION_CACHE_DIR", None)
      env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAG,
                                                          "").strip()
      proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                            check=False)
      if proc.returncode:
        raise RuntimeError(f"compile worker failed:\n{proc.stderr[-3000:]}")
      results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  return results


def format_cache(results, batch) -> str:
  lines = [f"compile time, batch {batch}, replicated, remat off (two fresh "
           "processes, persistent cache in a new temp folder):",
           "| process | cache | lower s (CPU s) | compile s (CPU s) |",
           "|---|---|---|---|"]
  for name, r in zip(("first", "second"), results):
    lines.append(f"| {name} | {'hit' if r['cache_hit'] else 'miss (written)'}"
                 f" | {r['lower_s']:.1f} ({r['lower_cpu_s']:.1f}) | "
                 f"{r['compile_s']:.1f} ({r['compile_cpu_s']:.1f}) |")
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--batches", default=",".join(map(str, PAPER_BATCHES)))
  ap.add_argument("--quick", action="store_true",
                  help="batches 8 and 32 only (overrides --batches)")
  ap.add_argument("--layouts", default=",".join(LAYOUTS))
  ap.add_argument("--rows", default="",
                  help="explicit rows in this order instead of the grid, "
                  "e.g. 128/replicated/off,128/fsdp/on")
  ap.add_argument("--remat", default="off,on")
  ap.add_argument("--dtype", default="float32",
                  choices=("float32", "bfloat16"))
  ap.add_argument("--conv3x3", default="xla",
                  choices=("xla", "auto", "winograd"))
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--tiny", action="store_true",
                  help="a tiny model (2 stacks, depth 1, width 16, 32 px)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="override a config field (repeatable), e.g. "
                  "--set=model.num_stacks=2; VALUE is read as JSON when it "
                  "parses, else as a string")
  ap.add_argument("--fast_compile", action="store_true",
                  help="table rows with LLVM at -O0 "
                  "(--xla_backend_optimization_level=0): ~40 %% less compile "
                  "time, the same buffer assignment (memory columns); their "
                  "compile s are then not a normal compile's. The cold vs "
                  "cached timing always uses the normal flags.")
  ap.add_argument("--budget_s", type=float, default=None,
                  help="start no new row after this many seconds")
  ap.add_argument("--no_cache_timing", action="store_true")
  ap.add_argument("--residuals_only", action="store_true",
                  help="no compile: only the autodiff residuals per row")
  ap.add_argument("--cache_batch", type=int, default=32)
  ap.add_argument("--json", default="", help="also write the rows here")
  ap.add_argument("--_compile_once", action="store_true",
                  help=argparse.SUPPRESS)
  ap.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)
  ap.add_argument("--overrides", default="", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  force_host_devices(args.devices)
  if args.fast_compile and "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] += " " + FAST_COMPILE_FLAG
  if args._compile_once:  # pylint: disable=protected-access
    print(json.dumps(_compile_once(args)))
    return 0

  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() != args.devices:
    print(f"warning: {jax.device_count()} devices, not {args.devices} (jax "
          "was imported before XLA_FLAGS could be set)", file=sys.stderr)
  overrides = dict(TINY) if args.tiny else {}
  for item in args.set:
    key, _, value = item.partition("=")
    try:
      overrides[key] = json.loads(value)
    except json.JSONDecodeError:
      overrides[key] = value
  overrides = overrides or None
  batches = [8, 32] if args.quick else [int(b) for b in
                                        args.batches.split(",")]
  remats = [{"off": False, "on": True}[r] for r in args.remat.split(",")]
  start = time.perf_counter()
  cpu0 = time.process_time()
  log = lambda m: print(m, file=sys.stderr, flush=True)
  def save(rows, cache=None):
    if args.json:
      with open(args.json, "w") as f:
        json.dump({"rows": rows, "cache": cache, "overrides": overrides,
                   "table_s": time.perf_counter() - start,
                   "table_cpu_s": time.process_time() - cpu0}, f, indent=1)

  configs = None
  if args.rows:
    configs = []
    for item in args.rows.split(","):
      b, layout, remat = item.split("/")
      configs.append((int(b), layout, {"off": False, "on": True}[remat]))
  rows = memory_table(batches, args.layouts.split(","), remats, args.dtype,
                      args.conv3x3, overrides, args.budget_s, log,
                      compile_step=not args.residuals_only, on_row=save,
                      configs=configs)
  table_s, table_cpu = time.perf_counter() - start, time.process_time() - cpu0
  cache = None
  if not (args.no_cache_timing or args.residuals_only):
    cache = cache_timing(args.cache_batch, args.dtype, args.conv3x3,
                         overrides, args.devices)
  model = ("configs/wflw_star.py: 98 points, 256 px, 4 stacks, depth 4, "
           "width 256, AAM")
  if overrides:
    model += ", overridden: " + json.dumps(overrides)
  print(f"\nSTAR train step (fwd + bwd + Adam + EMA), {model}, "
        f"{args.dtype}, conv3x3={args.conv3x3}; compile only"
        f"{' (LLVM -O0: --fast_compile)' if args.fast_compile else ''}, "
        f"memory_analysis() per device over {jax.device_count()} fake "
        f"{jax.devices()[0].platform} devices; jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs")
  print(format_table(rows))
  summary = format_summary(rows)
  if summary:
    print("\n" + summary)
  if cache is not None:
    print("\n" + format_cache(cache, args.cache_batch))
  print(f"\ntable: {table_s:.0f} s wall, {table_cpu:.0f} CPU s of this "
        f"process; total {time.perf_counter() - start:.0f} s")
  save(rows, cache)
  return 0


if __name__ == "__main__":
  sys.exit(main())

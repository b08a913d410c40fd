r"""Training-step speed of the 4-stack STAR hourglass: JAX vs PyTorch.

One step = forward + backward + Adam update of `star_jax.model.StackedHourglass`
(98 points, AAM, 256 px, width 256, depth 4) with a stand-in loss: the mean
squared error of every stack's fused heatmaps to random targets (or, with
`--loss=star`, the STAR objective from `star_jax.loss`: STAR on the fused
heatmaps + 10 * AWing on point and edge maps, stack weights 2^i / 2^3, random
targets; JAX only). The PyTorch side (`bench/torch_hourglass.py`, our own code
for the same architecture, same parameter count) runs the MSE loss with
channels-last tensors; bfloat16 there is `torch.autocast` (float32 params).

Each (framework, batch, dtype) runs in a fresh subprocess, JAX and PyTorch back
to back with the same thread count, `--repeats` times; the table shows medians
over repeats of the median timed step. Peak memory: "xla MB" is the compiled
step's `memory_analysis()` (temporaries + arguments + outputs - aliased);
"rss MB" is the increase of the process's max RSS (resource.getrusage) over
its RSS just before the first step, i.e. what the steps allocate beyond the
live parameters / optimiser state / batch.

  pip install torch==2.13.0   # bench only: the CPU build
  python bench/hourglass_step.py                      # b8 and b32, f32 + bf16
  python bench/hourglass_step.py --batch_sizes=8 --dtypes=float32 --repeats=3
  python bench/hourglass_step.py --xla_flags="--xla_cpu_use_onednn=true"
  python bench/hourglass_step.py --frameworks=jax --host_devices=2
      # batch split over 2 XLA:CPU host devices (data parallel, one
      # program per core): 9.19 -> 7.00 s/step at b8 f32 on 2 cores
      # (PyTorch 7.21 s in the same session; README "Measured")
  python bench/hourglass_step.py --frameworks=jax --conv3x3=xla --profile
      # 3x3 convs as lax.conv instead of Winograd (default auto), and where
      # the step's CPU time goes by kind of op (jax.profiler, one step)

Compilations are cached in `--cache_dir` (JAX persistent compilation cache), so
later runs skip the compile (the key includes source line numbers: editing
the model invalidates it). Parameters are drawn from their shapes with NumPy
(`jax.eval_shape`) to skip compiling `init`; values do not change the speed.
`--threads=N` below the core count pins each worker to N cores
(sched_setaffinity) and sets torch.set_num_threads(N).

Where the JAX/XLA:CPU time goes, and what was tried (2-core x86 Xeon with
AVX-512 + AMX, shared with ~5 other jobs, 1 pinned thread; process CPU ms of
one fwd+bwd at batch 2, 64x64 maps, medians of 5; JAX 0.10.2, torch 2.13.0):

  op (fwd + bwd)                   JAX           PyTorch (channels-last)
  ResBlock 256 (train BN)          206           119
  3x3 conv 128->128                126 (XLA)     51
                                    95 (custom VJP, below; not kept)
  1x1 conv 256->128 as matmul       25           21
  1x1 conv 128->128: lax.conv       35, as matmul 18 (why Conv1x1 is a matmul)
  BatchNorm + ReLU, 256 ch           5           23

  * The 3x3 kernel gradient is the main cost: XLA's transpose of the conv
    (~80-90 ms here) runs at ~30 GFLOP/s against ~130 for the forward conv.
    A custom VJP computing it as 3 matmuls over width-shifted copies of the
    input took it to ~53 ms (a full 9x im2col matmul: 67-81 ms; 9 per-tap
    matmuls: 90-105; channel-major copies behind optimisation barriers to get
    plain NN matmuls: 105-124; batch chunking: slower). In the full 4-stack
    b8 step it gave no measurable gain (17.9 and 19.1 CPU-s vs 17.6 with
    XLA's gradient) and raised XLA's peak memory from 4.5 to 6.5 GB, so the
    model keeps XLA's convolution gradient. The input gradient as a forward
    conv with the flipped kernel was no faster than XLA's.
  * Winograd F(2x2, 3x3) (`star_jax/winograd.py`, the model's default on
    XLA:CPU in float32 for 128-channel convs on maps >= 32 x 32) removes the
    slow convolution kernels altogether: the 3x3 conv becomes 16 matmuls
    [tiles, 128] @ [128, 128] plus additions, 2.25x fewer multiplications,
    and its gradients are matmuls too. One conv, fwd + bwd, batch 8, 1
    pinned thread on the quiet machine (process CPU ms, median of 7;
    `taskset -c 0 python bench/conv3x3.py`):

      map, channels   lax.conv   Winograd
      64 x 64, 128       386        274   (used)
      32 x 32, 128        89         72   (used)
      16 x 16, 128        11         15   (not used)
       8 x 8,  128       2.7        6.2   (not used)
      128 x 128, 64      400        531   (not used: the stem's block)
      64 x 64, 64         83        118   (not used)

    Full 4-stack b8 f32 step, 1 pinned thread (`--threads=1`, the other
    core busy): 22.2 -> 19.2 s; 2 threads on the quiet machine: 10.51 ->
    9.19 s. The step gains less than the
    convolutions cost because the Winograd transforms are memory-bound
    elementwise work (`--profile`, 2 threads: with lax.conv, kernel-gradient
    convs 25 % of the step's CPU time, other convs 13 %, matmuls 20 %,
    elementwise 17 %, transposes 12 %; with Winograd, convs 10 %, matmuls
    31 %, elementwise 39 %).
  * BatchNorm is not the gap: replacing every BN of a ResBlock by a scale
    changes its time by < 2%.
  * XLA flags (each in a fresh process): --xla_cpu_use_onednn=true (+
    --xla_cpu_experimental_onednn_custom_call=true),
    --xla_cpu_experimental_{onednn,xnn,ynn}_fusion_type=
    individual_dot,individual_convolution, --xla_cpu_multi_thread_eigen=false:
    no change beyond noise (+-10%) on the 3x3 conv, its gradients or the
    matmuls in this jaxlib build.
  * bfloat16: XLA:CPU does not use AMX/bf16 instructions here (the bf16 step
    costs as much CPU as f32), while PyTorch's oneDNN does (~2.7x faster than
    its f32), so on this CPU bf16 widens the gap; use it on GPU/TPU.
  * Thread oversubscription: with 2 threads per process on the shared 2
    cores, PyTorch's OpenMP spin-waits (b8 f32: 86-105 s wall, 32 CPU-s per
    step vs 12 CPU-s pinned to 1 thread), so timings here use 1 pinned thread.
  * Peak memory: XLA's step needs ~4.5 GB at b8 f32 against PyTorch's
    ~3.7 GB RSS increase; `nn.remat` per ResBlock would trade compute for it.
"""

import argparse
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def current_rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def max_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_steps(step, steps: int):
  """Runs `step()` (blocking) once to warm up, then `steps` timed times.

  Returns:
    (wall seconds, process CPU seconds of all threads) per timed step.
  """
  step()
  wall, cpu = [], []
  for _ in range(steps):
    t, c = time.perf_counter(), time.process_time()
    step()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
  return wall, cpu


# ---------------------------------------------------------------- JAX side --


def _fusion_kinds(hlo_text: str) -> dict:
  """Optimised HLO text -> {instruction name: what it computes}.

  Categories: "3x3 conv (fwd / input grad)", "3x3 kernel grad (conv)",
  "other conv", "dot (matmul)", "reduce", "transpose / copy",
  "elementwise"; a fusion counts under the first of these kinds (in this
  order) that its body contains.
  """
  calls = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ "
                       r"(fusion|convolution|dot|transpose|copy)\((.*)$",
                       hlo_text, re.M):
    name, op, rest = m.groups()
    callee = re.search(r"calls=%?([\w.\-]+)", rest)
    calls[name] = (op, callee.group(1) if callee else None, rest)
  bodies = dict(re.findall(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo_text,
                           re.M | re.S))
  kinds = {}
  for name, (op, callee, rest) in calls.items():
    body = bodies.get(callee, "") if op == "fusion" else f"= x {op}({rest}"
    ops = set(re.findall(r"= \S+ ([a-z\-]+)\(", body))
    if "convolution" in ops:
      window = re.search(r"window=\{size=(\d+)x(\d+)", body)
      size = window and (int(window.group(1)), int(window.group(2)))
      # The kernel gradient of a stride-1, pad-1 3x3 conv is a conv whose
      # window is the whole feature map, with the same padding.
      kinds[name] = ("3x3 conv (fwd / input grad)" if size == (3, 3) else
                     "3x3 kernel grad (conv)" if "pad=1_1x1_1" in body else
                     "other conv")
    elif "dot" in ops:
      kinds[name] = "dot (matmul)"
    elif "reduce" in ops:
      kinds[name] = "reduce"
    elif ops & {"transpose", "copy"}:
      kinds[name] = "transpose / copy"
    else:
      kinds[name] = "elementwise"
  return kinds


def profile_step(step, hlo_text: str, trace_dir: str) -> dict:
  """Runs `step()` once under the JAX profiler; CPU ms per kind of op.

  The trace's per-thunk events (XLA:CPU's Eigen thread pool) are summed by
  `_fusion_kinds` of their instruction; unmatched names go to "other".
  """
  import jax  # pylint: disable=g-import-not-at-top
  with jax.profiler.trace(trace_dir):
    step()
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"),
                          recursive=True))[-1]
  kinds = _fusion_kinds(hlo_text)
  totals = {}
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if "XLAEigen" not in line.name:
        continue
      for event in line.events:
        if event.name.startswith("ThunkExecutor"):
          continue
        kind = kinds.get(event.name, "other")
        totals[kind] = totals.get(kind, 0.0) + event.duration_ns / 1e6
  return totals


def jax_worker(args) -> dict:
  """Measures the JAX step in this process; returns a result dict."""
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " +
                               args.xla_flags)
  if args.host_devices > 1:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") +
        f" --xla_force_host_platform_device_count={args.host_devices}")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO_ROOT)
  from star_jax import model as model_lib  # pylint: disable=g-import-not-at-top

  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  net = model_lib.from_scheme(98, dtype=dtype, num_stacks=args.num_stacks,
                              conv3x3=args.conv3x3)
  b, s = args.batch, args.image_size
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (b, s, s, 3)).astype(np.uint8)
  n, e = 98, len(net.edges)
  h = s // 4
  targets = rng.rand(b, n, h, h).astype(np.float32)

  shapes = jax.eval_shape(lambda im: net.init(jax.random.PRNGKey(0), im,
                                              train=False), images)

  def fill(path, x):
    name = path[-1].key
    if name == "kernel":
      bound = 1 / np.sqrt(np.prod(x.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, x.shape), jnp.float32)
    if name in ("bias", "mean"):
      return jnp.zeros(x.shape, jnp.float32)
    return jnp.ones(x.shape, jnp.float32)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  params, batch_stats = variables["params"], variables["batch_stats"]
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  if args.loss == "star":
    from star_jax import loss as loss_lib  # pylint: disable=g-import-not-at-top
    landmarks = rng.uniform(-0.9, 0.9, (b, n, 2)).astype(np.float32)
    point_t = rng.rand(b, n, h, h).astype(np.float32)
    edge_t = rng.rand(b, e, h, h).astype(np.float32)

    def objective(outs):
      total = 0.0
      for i, o in enumerate(outs):
        term = (loss_lib.star_loss(o["heatmaps"], landmarks)
                + 10 * loss_lib.awing_heatmap_loss(o["pointmaps"], point_t)
                + 10 * loss_lib.awing_heatmap_loss(o["edgemaps"], edge_t))
        total = total + 2.0**i / 2.0**(len(outs) - 1) * term
      return total
  else:
    def objective(outs):
      return sum(jnp.mean(jnp.square(o["heatmaps"] - targets)) for o in outs)

  def loss_fn(params, batch_stats, images):
    outs, updates = net.apply({"params": params, "batch_stats": batch_stats},
                              images, train=True, mutable=["batch_stats"])
    return objective(outs), updates["batch_stats"]

  def train_step(params, batch_stats, opt_state, images):
    (loss, batch_stats), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params, batch_stats, images)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  shardings = {}
  if args.host_devices > 1:
    # Data parallel over host "devices": the batch split on the mesh's data
    # axis, parameters / BN statistics / Adam state replicated (the
    # training spine's layout, training/mesh.py).
    from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    mesh = mesh_lib.make_mesh()
    if b % mesh.size:
      raise ValueError(f"batch {b} is not divisible by {mesh.size} devices")
    rep = mesh_lib.replicated(mesh)
    params, batch_stats, opt_state = jax.device_put(
        (params, batch_stats, opt_state), rep)
    images = jax.device_put(images, mesh_lib.batch_sharding(mesh))
    shardings = dict(out_shardings=(rep, rep, rep, rep))
  t = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0, 1, 2), **shardings).lower(
      params, batch_stats, opt_state, images).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  xla_mb = float("nan")
  if mem is not None:
    xla_mb = (mem.temp_size_in_bytes + mem.argument_size_in_bytes +
              mem.output_size_in_bytes - mem.alias_size_in_bytes) / 2**20
  state = [params, batch_stats, opt_state]
  images_dev = jax.device_put(images)  # keeps the data sharding if any.
  rss_before = current_rss_mb()

  def step():
    state[0], state[1], state[2], loss = compiled(*state, images_dev)
    loss.block_until_ready()
    if not np.isfinite(float(loss)):
      raise FloatingPointError(f"non-finite loss {float(loss)}")

  wall, cpu = timed_steps(step, args.steps)
  result = {"step_s": wall, "cpu_s": cpu, "compile_s": compile_s,
            "xla_mb": xla_mb, "rss_mb": max_rss_mb() - rss_before}
  if args.profile:
    import tempfile  # pylint: disable=g-import-not-at-top
    with tempfile.TemporaryDirectory() as trace_dir:
      result["profile_ms"] = profile_step(step, compiled.as_text(), trace_dir)
  return result


# ------------------------------------------------------------ PyTorch side --


def torch_worker(args) -> dict:
  """Measures the PyTorch step in this process; returns a result dict."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO_ROOT)
  from bench import torch_hourglass  # pylint: disable=g-import-not-at-top
  from data import schemes  # pylint: disable=g-import-not-at-top
  from star_jax import aam  # pylint: disable=g-import-not-at-top

  if args.loss != "mse":
    raise ValueError("The PyTorch side implements only --loss=mse.")
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  scheme = schemes.get_scheme(98)
  e2p = torch.from_numpy(
      aam.edge_to_point_matrix(scheme.edges, scheme.num_points))
  net = torch_hourglass.StackedHourglass(98, e2p, num_stacks=args.num_stacks)
  net = net.to(memory_format=torch.channels_last).train()
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)
  b, s = args.batch, args.image_size
  rng = np.random.RandomState(0)
  images = torch.from_numpy(
      rng.randint(0, 256, (b, 3, s, s)).astype(np.float32))
  targets = torch.from_numpy(rng.rand(b, 98, s // 4, s // 4).astype(np.float32))
  rss_before = current_rss_mb()

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16,
                        enabled=args.dtype == "bfloat16"):
      outs = net(images)
    loss = sum(torch.mean(torch.square(o.float() - targets)) for o in outs)
    loss.backward()
    opt.step()
    if not np.isfinite(loss.item()):
      raise FloatingPointError(f"non-finite loss {loss.item()}")

  wall, cpu = timed_steps(step, args.steps)
  return {"step_s": wall, "cpu_s": cpu, "compile_s": 0.0, "xla_mb": float("nan"),
          "rss_mb": max_rss_mb() - rss_before}


# ------------------------------------------------------------------ driver --


def run_worker(framework: str, batch: int, dtype: str, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={framework}",
         f"--batch={batch}", f"--dtype={dtype}", f"--steps={args.steps}",
         f"--threads={args.threads}", f"--loss={args.loss}",
         f"--num_stacks={args.num_stacks}",
         f"--image_size={args.image_size}", f"--cache_dir={args.cache_dir}",
         f"--xla_flags={args.xla_flags}",
         f"--host_devices={args.host_devices}", f"--conv3x3={args.conv3x3}"]
  if args.profile and framework == "jax":
    cmd.append("--profile")
  env = dict(os.environ)
  if framework == "torch":
    env["OMP_NUM_THREADS"] = str(args.threads)
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  if proc.returncode == 0:
    return json.loads(proc.stdout.strip().splitlines()[-1])
  # A row that does not fit is a result (reported in the table), anything
  # else is a bug in the bench: stop with the worker's error.
  if "RESOURCE_EXHAUSTED" in proc.stderr or "out of memory" in proc.stderr:
    return {"failed": "out of memory"}
  if proc.returncode == -9:
    return {"failed": "killed (SIGKILL: the kernel's OOM killer?)"}
  raise RuntimeError(f"{framework} worker failed:\n{proc.stderr[-3000:]}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="8,32")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--frameworks", default="jax,torch")
  parser.add_argument("--steps", type=int, default=3,
                      help="timed steps per process (after 1 warm-up step)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="processes per (framework, batch, dtype)")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="cores for each worker (pinned when < all)")
  parser.add_argument("--loss", choices=("mse", "star"), default="mse")
  parser.add_argument("--num_stacks", type=int, default=4)
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--cache_dir", default=os.path.join(
      REPO_ROOT, "bench", "results", "jax_cache"))
  parser.add_argument("--xla_flags", default="",
                      help="extra XLA_FLAGS for the JAX worker")
  parser.add_argument("--host_devices", type=int, default=1,
                      help="JAX only: split the batch over this many XLA:CPU "
                      "host devices (data parallel on one machine).")
  parser.add_argument("--conv3x3", choices=("auto", "xla", "winograd"),
                      default="auto",
                      help="JAX only: how the 3x3 convolutions compute "
                      "(StackedHourglass.conv3x3).")
  parser.add_argument("--profile", action="store_true",
                      help="JAX only: one more step under jax.profiler; "
                      "prints where its CPU time goes by kind of op.")
  parser.add_argument("--worker", choices=("jax", "torch"), default=None)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()

  if args.worker:
    if args.threads < os.cpu_count():
      # Pin to `threads` cores before jax / torch start their thread pools
      # (XLA sizes its pool from the affinity mask; torch gets set_num_threads).
      os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.threads]))
    worker = jax_worker if args.worker == "jax" else torch_worker
    print(json.dumps(worker(args)))
    return

  frameworks = args.frameworks.split(",")
  rows = []
  for batch in [int(x) for x in args.batch_sizes.split(",")]:
    for dtype in args.dtypes.split(","):
      results = {f: [] for f in frameworks}
      for _ in range(args.repeats):
        for f in frameworks:  # back to back, same thread count
          results[f].append(run_worker(f, batch, dtype, args))
      row = {"batch": batch, "dtype": dtype}
      for f in frameworks:
        failed = [r["failed"] for r in results[f] if "failed" in r]
        if failed:
          row[f] = {"failed": failed[0]}
          continue
        step = statistics.median(
            statistics.median(r["step_s"]) for r in results[f])
        cpu = statistics.median(
            statistics.median(r["cpu_s"]) for r in results[f])
        profiles = [r["profile_ms"] for r in results[f] if "profile_ms" in r]
        if profiles:
          row[f + "_profile_ms"] = profiles[0]
        row[f] = {"step_s": step, "cpu_s": cpu, "img_s": batch / step,
                  "rss_mb": statistics.median(r["rss_mb"] for r in results[f]),
                  "xla_mb": statistics.median(r["xla_mb"] for r in results[f]),
                  "compile_s": max(r["compile_s"] for r in results[f])}
      rows.append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)

  print("Speed ratio > 1: JAX faster. 'cpu s' = process CPU seconds per step "
        "(all threads); on a shared machine it is steadier than wall time.")
  print(f"\n{args.num_stacks}-stack hourglass training step (fwd + bwd + Adam), "
        f"{args.image_size} px, loss={args.loss}, threads={args.threads}, "
        f"{os.cpu_count()} CPUs, repeats={args.repeats}, steps={args.steps}")
  if args.xla_flags:
    print(f"XLA_FLAGS (JAX): {args.xla_flags}")
  if args.host_devices > 1:
    print(f"JAX: batch split over {args.host_devices} XLA:CPU host devices")
  print(f"JAX: conv3x3={args.conv3x3}")
  header = f"{'batch':>5} {'dtype':>8}"
  for f in frameworks:
    header += (f" | {f + ' s/step':>13} {'cpu s':>6} {'img/s':>6}"
               f" {'rss MB':>7}")
    if f == "jax":
      header += f" {'xla MB':>7}"
  if set(frameworks) == {"jax", "torch"}:
    header += f" | {'jax/torch (wall, cpu)':>21}"
  print(header)
  print("-" * len(header))
  for row in rows:
    line = f"{row['batch']:>5} {row['dtype']:>8}"
    for f in frameworks:
      r = row[f]
      if "failed" in r:
        line += f" | {r['failed']}"
        continue
      line += (f" | {r['step_s']:>13.2f} {r['cpu_s']:>6.2f} {r['img_s']:>6.2f}"
               f" {r['rss_mb']:>7.0f}")
      if f == "jax":
        line += f" {r['xla_mb']:>7.0f}"
    profile = row.get("jax_profile_ms")
    if profile:
      total = sum(profile.values())
      line += "\n      JAX step CPU time by kind of op (one profiled step): " + (
          ", ".join(f"{k} {v / 1000:.2f} s ({100 * v / total:.0f}%)"
                    for k, v in sorted(profile.items(), key=lambda kv: -kv[1])))
    if set(frameworks) == {"jax", "torch"} and not any(
        "failed" in row[f] for f in frameworks):
      speed = row["torch"]["step_s"] / row["jax"]["step_s"]
      speed_cpu = row["torch"]["cpu_s"] / row["jax"]["cpu_s"]
      line += f" | {speed:>13.2f}, {speed_cpu:>5.2f}"
    print(line)


if __name__ == "__main__":
  main()

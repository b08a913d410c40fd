r"""Cost of the STAR loss: forward + backward, and its share of a training step.

Rows (each: median wall time of `--repeats` timed calls after one compile
call, `jax.block_until_ready`, on whatever backend JAX picks):
  * STAR loss (smooth-l1, value restriction) forward + backward w.r.t. the
    heatmaps, `[B, N, H, W]` = `[128, 98, 64, 64]` by default;
  * the eq. 2 baseline on the same heatmaps: soft-argmax + smooth-l1
    coordinate loss, forward + backward;
  * AWing heatmap loss (with weight map) on maps of the same shape, for scale;
  * with `--with_model`: a full training step (forward + backward + Adam) of
    the 4-stack `star_jax.model` hourglass (98 points, AAM, 256 px) in three
    variants: 10 * AWing on point and edge maps per stack only (weights
    2^i / 2^3, public composition); plus the soft-argmax + smooth-L1
    coordinate loss on each stack's fused heatmaps (the eq. 2 baseline's
    step); plus STAR on them instead. Any loss on the fused heatmaps makes the
    backward pass run through the heatmap heads and the AAM fusion, which
    the AWing-only step skips; STAR's own cost is the difference to the
    coordinate-loss step. Random images and targets (values do not change
    the speed).
    If `star_jax.model` cannot be imported the row says so and is not
    measured.

  python bench/star_loss.py
  python bench/star_loss.py --with_model --model_batch=8
"""

import argparse
import importlib
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from landmarks import distribution
from star_jax import loss


def time_call(fn, args, repeats):
  """(compile+first call seconds, median seconds, min seconds) of fn(*args)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times), min(times)


def random_heatmaps(rng, b, n, h, w):
  """Non-negative maps with a blob per landmark plus ReLU'd noise."""
  xs = np.linspace(-1, 1, w, dtype=np.float32)
  ys = np.linspace(-1, 1, h, dtype=np.float32)
  centre = rng.uniform(-0.6, 0.6, (b, n, 2)).astype(np.float32)
  gx = np.exp(-((xs - centre[..., :1]) / 0.1) ** 2)
  gy = np.exp(-((ys - centre[..., 1:]) / 0.15) ** 2)
  maps = gy[..., :, None] * gx[..., None, :]
  maps += np.maximum(rng.normal(0, 0.05, maps.shape), 0).astype(np.float32)
  return jnp.asarray(maps), jnp.asarray(
      centre + rng.normal(0, 0.02, centre.shape).astype(np.float32))


def loss_rows(args):
  rng = np.random.default_rng(0)
  b, n, s = args.batch, args.points, args.size
  maps, landmarks = random_heatmaps(rng, b, n, s, s)
  targets = jnp.asarray(rng.random((b, n, s, s), np.float32) ** 8)

  # Targets are arguments, not closed-over constants (XLA would constant-fold
  # the weight map's max-pool at compile time).
  star = jax.jit(jax.value_and_grad(
      lambda h, t: loss.star_loss(h, t)))
  coord = jax.jit(jax.value_and_grad(
      lambda h, t: loss.coordinate_loss(distribution.soft_argmax(h), t)))
  awing = jax.jit(jax.value_and_grad(
      lambda h, t: loss.awing_heatmap_loss(h, t)))
  rows = []
  for name, fn, target in [
      ("STAR (smooth-l1, value) fwd+bwd", star, landmarks),
      ("soft-argmax + smooth-l1 fwd+bwd", coord, landmarks),
      ("AWing heatmap loss fwd+bwd", awing, targets)]:
    first, med, best = time_call(fn, (maps, target), args.repeats)
    rows.append((name, f"[{b}, {n}, {s}, {s}]", first, med, best))
  return rows


def model_rows(args):
  """Training-step rows, a note why they were not measured (or None), and
  the paired per-round increases of the STAR step."""
  try:
    model_lib = importlib.import_module("star_jax.model")
  except ImportError as e:
    return [], f"training-step rows not measured: star_jax.model ({e})", {}
  import optax  # pylint: disable=g-import-not-at-top

  n, bsz = args.points, args.model_batch
  if hasattr(model_lib, "from_scheme"):
    net = model_lib.from_scheme(n, num_stacks=args.stacks)
  else:
    net = model_lib.StackedHourglass(num_points=n, num_stacks=args.stacks)
  rng = np.random.default_rng(1)
  images = jnp.asarray(rng.integers(0, 256, (bsz, 256, 256, 3), np.uint8))
  shapes = jax.eval_shape(
      lambda im: net.init(jax.random.PRNGKey(0), im, train=False), images)

  def fill(path, leaf):  # Parameters drawn from shapes: skips compiling init.
    name = jax.tree_util.keystr(path)
    if "var" in name or "scale" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    if "mean" in name or "bias" in name:
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
    return jnp.asarray(rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape),
                       leaf.dtype)

  variables = jax.tree_util.tree_map_with_path(fill, shapes)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  outs = jax.eval_shape(lambda v, im: net.apply(v, im, train=False),
                        variables, images)
  h = outs[0]["heatmaps"].shape[-1]
  num_edges = outs[0]["edgemaps"].shape[1] if "edgemaps" in outs[0] else 0
  point_t = jnp.asarray(rng.random((bsz, n, h, h), np.float32) ** 8)
  edge_t = jnp.asarray(rng.random((bsz, num_edges, h, h), np.float32) ** 8)
  landmarks = jnp.asarray(rng.uniform(-0.8, 0.8, (bsz, n, 2)), jnp.float32)
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def make_step(head_loss):
    """head_loss: None (AWing only), "star" or "coord" (soft-argmax +
    smooth-L1 on the same fused heatmaps: the eq. 2 baseline's step)."""
    def objective(p, bs, images, point_t, edge_t, landmarks):
      outputs, updates = net.apply({"params": p, "batch_stats": bs}, images,
                                   train=True, mutable=["batch_stats"])
      total = 0.0
      for i, out in enumerate(outputs):
        weight = 2.0 ** i / 2.0 ** (len(outputs) - 1)
        term = 0.0
        if "pointmaps" in out:
          term += 10 * loss.awing_heatmap_loss(out["pointmaps"], point_t)
          term += 10 * loss.awing_heatmap_loss(out["edgemaps"], edge_t)
        if head_loss == "star":
          term += loss.star_loss(out["heatmaps"], landmarks)
        elif head_loss == "coord":
          term += loss.coordinate_loss(distribution.soft_argmax(out["heatmaps"]),
                                       landmarks)
        total += weight * term
      return total, updates["batch_stats"]

    @jax.jit
    def step(p, bs, o, *batch):
      (value, new_bs), grads = jax.value_and_grad(objective, has_aux=True)(
          p, bs, *batch)
      upd, o = tx.update(grads, o, p)
      return optax.apply_updates(p, upd), new_bs, o, value
    return step

  batch = (params, batch_stats, opt_state, images, point_t, edge_t, landmarks)
  variants = (None, "coord", "star")
  labels = {None: "AWing only", "coord": "AWing + smooth-L1 coordinate loss",
            "star": "AWing + STAR"}
  compiled, costs, first = {}, {}, {}
  for v in variants:
    t0 = time.perf_counter()
    compiled[v] = make_step(v).lower(*batch).compile()
    jax.block_until_ready(compiled[v](*batch))
    first[v] = time.perf_counter() - t0
    cost = compiled[v].cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    costs[v] = (cost or {}).get("flops", float("nan"))
  # Alternate the steps so that load changes on a shared machine hit all
  # alike.
  times = {v: [] for v in variants}
  for _ in range(args.model_repeats):
    for v in variants:
      t0 = time.perf_counter()
      jax.block_until_ready(compiled[v](*batch))
      times[v].append(time.perf_counter() - t0)
  rows = []
  for v in variants:
    name = (f"{args.stacks}-stack step, {labels[v]}"
            f" ({costs[v] / 1e9:.1f} GFLOP by XLA)")
    rows.append((name, f"images [{bsz}, 256, 256, 3]", first[v],
                 statistics.median(times[v]), min(times[v])))
  paired = {
      "STAR vs AWing only": paired_increase(times["star"], times[None]),
      "STAR vs coordinate loss": paired_increase(times["star"],
                                                 times["coord"]),
  }
  return rows, None, paired


def paired_increase(times, base_times, resamples=10000, seed=0):
  """Median over rounds of the per-round increase times[r] / base[r] - 1.

  Each round ran the variants back to back, so a round's ratio is immune to
  load drift between rounds. Returns (median %, 95 % bootstrap interval of
  that median in %, number of rounds).
  """
  ratios = np.asarray(times) / np.asarray(base_times) - 1.0
  rng = np.random.default_rng(seed)
  draws = rng.choice(ratios, (resamples, len(ratios)), replace=True)
  lo, hi = np.percentile(np.median(draws, axis=1), [2.5, 97.5])
  return float(np.median(ratios)) * 100, (lo * 100, hi * 100), len(ratios)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--points", type=int, default=98)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--with_model", action="store_true")
  parser.add_argument("--model_batch", type=int, default=8)
  parser.add_argument("--model_repeats", type=int, default=3)
  parser.add_argument("--stacks", type=int, default=4)
  args = parser.parse_args(argv)

  dev = jax.devices()[0]
  print(f"backend {jax.default_backend()} ({dev.device_kind}), "
        f"{os.cpu_count()} CPUs visible, jax {jax.__version__}")
  rows = loss_rows(args)
  note, paired = None, {}
  if args.with_model:
    extra, note, paired = model_rows(args)
    rows += extra
  header = ("what", "shape", "compile+1st s", "median ms", "min ms")
  print(f"| {' | '.join(header)} |")
  print("|" + "---|" * len(header))
  for name, shape, first, med, best in rows:
    print(f"| {name} | {shape} | {first:.2f} | {med * 1e3:.1f} | "
          f"{best * 1e3:.1f} |")
  star_ms, coord_ms = rows[0][3], rows[1][3]
  print(f"\nSTAR / coordinate loss (median): {star_ms / coord_ms:.2f}x")
  if note:
    print(note)
  elif args.with_model:
    base, with_coord, with_star = rows[3][3], rows[4][3], rows[5][3]
    print(f"STAR share of the {args.stacks}-stack training step at batch "
          f"{args.model_batch}: {(with_star - base) / with_star * 100:.1f}% "
          f"(step {base * 1e3:.0f} ms -> {with_star * 1e3:.0f} ms); "
          f"STAR instead of the coordinate loss adds "
          f"{(with_star - with_coord) / with_coord * 100:.1f}% "
          f"({with_coord * 1e3:.0f} ms -> {with_star * 1e3:.0f} ms)")
    loss_args = argparse.Namespace(**{**vars(args), "batch": args.model_batch,
                                      "size": 64, "repeats": 30})
    star_alone = loss_rows(loss_args)[0][3] * args.stacks
    print(f"STAR loss alone (fwd+bwd) at the step's heatmap shape "
          f"[{args.model_batch}, {args.points}, 64, 64] x {args.stacks} stacks:"
          f" {star_alone * 1e3:.1f} ms = {star_alone / with_star * 100:.2f}% "
          f"of the STAR step (an upper bound: in the step it is fused)")
    print("Paired per-round increase (median over rounds, 95 % bootstrap "
          "interval of the median):")
    for name, (med, (lo, hi), rounds) in paired.items():
      print(f"  {name}: {med:+.2f} % [{lo:+.2f}, {hi:+.2f}] "
            f"({rounds} rounds)")


if __name__ == "__main__":
  main()

r"""What the non-finite guard costs in the STAR train step (training/nonfinite.py).

  taskset -c 0 python bench/guard_cost.py
  taskset -c 0 python bench/guard_cost.py --models=default --steps=10

For each model, the jitted train step of `training.loop.Trainer` (STAR loss,
Adam, EMA: the real step of `run.py`) is compiled twice, with the guard
(`max_nonfinite_steps` 10, the default) and without (0), and timed on the
same fixed batch: `--steps` timed steps after 2 warm-up steps, the two
variants alternating in `--rounds` rounds, medians over everything. Also
printed: XLA's FLOP count of each compiled step (cost analysis) and whether
the two variants' parameters after the timed steps are bit-identical (they
should be: the guard is a `lax.cond` around the unchanged update).

Models (procedural faces, configs/default.py's data, so nothing is read):
  default   configs/default.py: 2 stacks, width 32, 64 px, batch 32.
  ready     the ready model's architecture (configs/yt68_photo.py: 2 stacks,
            depth 3, width 64, 96 px), batch 16.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def model_config(name: str):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.synthetic.num_train = 64
  c.compilation_cache_dir = ""
  if name == "ready":
    from configs import yt68_photo  # pylint: disable=g-import-not-at-top
    ready = yt68_photo.get_config()
    c.model = ready.model
    c.data.crop_size = ready.data.crop_size
    c.batch_size = 16
  return c


def build(name: str, guard: bool):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  c = model_config(name)
  c.max_nonfinite_steps = 10 if guard else 0
  method = star_method.make_method(c)
  trainer = loop.Trainer(method, c)
  it = method.train_iterator(trainer.local_batch_size)
  # A copy out of grain's shared memory, so that the loader can be closed.
  local = {k: np.array(v) for k, v in next(it).items()}
  loop.close_iterator(it)
  batch = mesh_lib.global_batch(trainer.mesh, local)
  state = trainer.init_state()
  compiled = trainer.train_step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return trainer, state, batch, float((cost or {}).get("flops", float("nan")))


def main():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="default,ready")
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.FLAGS(sys.argv[:1])  # grain workers read absl flags.
  rows = []
  for name in args.models.split(","):
    runs = {}
    for guard in (False, True):
      trainer, state, batch, flops = build(name, guard)
      for _ in range(2):
        state, _ = trainer.train_step(state, batch)
      jax.block_until_ready(state)
      runs[guard] = dict(trainer=trainer, state=state, batch=batch,
                         flops=flops, times=[])
    for _ in range(args.rounds):
      for guard in (False, True):
        r = runs[guard]
        for _ in range(args.steps):
          t = time.perf_counter()
          r["state"], m = r["trainer"].train_step(r["state"], r["batch"])
          jax.block_until_ready((r["state"], m))
          r["times"].append(time.perf_counter() - t)
    off, on = (statistics.median(runs[g]["times"]) * 1e3 for g in (False, True))
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree.leaves(runs[False]["state"].params),
        jax.tree.leaves(runs[True]["state"].params)))
    rows.append((name, f"{runs[False]['trainer'].global_batch_size}",
                 f"{off:.1f}", f"{on:.1f}", f"{on / off:.3f}",
                 f"{runs[False]['flops'] / 1e9:.2f}",
                 f"{runs[True]['flops'] / 1e9:.2f}",
                 "yes" if same else "no"))
    print(" | ".join(rows[-1]), flush=True)
  header = ("model", "batch", "no guard ms", "guard ms", "ratio",
            "GFLOP no guard", "GFLOP guard", "params bit-identical")
  print()
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for r in rows:
    print("| " + " | ".join(r) + " |")
  print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} cores visible, "
        f"affinity {len(os.sched_getaffinity(0))} core(s); medians of "
        f"{args.rounds} x {args.steps} steps per variant")


if __name__ == "__main__":
  main()

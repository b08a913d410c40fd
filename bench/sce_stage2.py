r"""Benchmark: SCE-MAE stage-2 step vs a hypercolumn baseline; dense inference.

  python bench/sce_stage2.py [--preset deit_tiny] [--batch 16] [--reps 5]

Measures, on whatever device JAX uses (jit-compiled, warm, median of --reps
calls, `block_until_ready`):
  1. one stage-2 training step (frozen encoder forward + CARB + projector +
     LCR loss + Adam on the projector) vs the hypercolumn baseline of CL/LEAD
     at the same resolution: the same frozen encoder, the tokens of layers
     (3, 6, 9, 12) concatenated per patch (4C channels), a 1x1 projector and
     the same eq.-4-7 loss over ALL N patch tokens (no CARB selection);
  2. XLA's memory estimate of each compiled step (`memory_analysis`:
     arguments + outputs + temporaries, bytes);
  3. cover-and-stride inference per image for strides 8 (plain), 4, 2:
     time and XLA FLOPs (`cost_analysis`).
Prints one table. The CPU of the development machine is shared with other
jobs: times there are indicative only (state the machine when quoting).
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sce_mae_jax import backbone
from sce_mae_jax import carb
from sce_mae_jax import dense
from sce_mae_jax import lcr
from sce_mae_jax import projector as projector_lib
from sce_mae_jax import vit

HYPERCOLUMN_LAYERS = (3, 6, 9, 12)


def timed(fn, *args, reps=5):
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def memory_bytes(compiled):
  m = compiled.memory_analysis()
  if m is None:
    return float("nan")
  return (m.argument_size_in_bytes + m.output_size_in_bytes +
          m.temp_size_in_bytes)


def flops(compiled):
  c = compiled.cost_analysis()
  if isinstance(c, (list, tuple)):
    c = c[0] if c else {}
  return float((c or {}).get("flops", float("nan")))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="deit_tiny")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("--dim", type=int, default=64)
  args = ap.parse_args()

  enc = vit.vit_encoder(args.preset)
  enc_params = backbone.init_encoder_params(enc, 0)
  n = enc.num_patches
  images = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (args.batch, 96, 96, 3)), jnp.uint8)
  proj = projector_lib.LightProjector(args.dim)
  eta = 0.1 if args.preset != "deit_base" else 0.25
  grid = (enc.grid_size, enc.grid_size)
  tx = optax.adam(1e-3)

  def sce_loss(p, imgs, key):
    x = backbone.normalise_images(imgs)
    out = enc.apply({"params": enc_params}, x, return_layers=(3,),
                    return_attention_layers=(3,))
    out = jax.lax.stop_gradient(out)
    sim = carb.cls_attention_from_map(out.attentions[3])
    sel = carb.carb_select_batch(sim, out.layers[3][:, 1:], key,
                                 output_tokens=out.tokens[:, 1:], eta=eta,
                                 num_clusters=4, knn=5, grid_shape=grid)
    phi = proj.apply({"params": p}, sel.kept_features)
    return lcr.lcr_loss(phi, sel.kept_positions, sel.kept_is_attentive)

  def hyper_loss(p, imgs, key):
    del key
    x = backbone.normalise_images(imgs)
    out = enc.apply({"params": enc_params}, x,
                    return_layers=HYPERCOLUMN_LAYERS)
    feats = jnp.concatenate([out.layers[l][:, 1:] for l in HYPERCOLUMN_LAYERS],
                            axis=-1)
    feats = jax.lax.stop_gradient(feats)
    phi = proj.apply({"params": p}, feats)
    pos = carb.patch_positions(jnp.arange(n), grid)
    pos = jnp.broadcast_to(pos, (imgs.shape[0], n, 2))
    return lcr.lcr_loss(phi, pos, jnp.ones((imgs.shape[0], n), bool))

  rows = []
  key = jax.random.PRNGKey(0)
  for name, loss_fn, in_dim in (
      ("SCE-MAE stage 2 (CARB + LCR)", sce_loss, enc.width),
      ("hypercolumn L3,6,9,12 + dense loss", hyper_loss,
       enc.width * len(HYPERCOLUMN_LAYERS))):
    p = proj.init(jax.random.PRNGKey(1), jnp.zeros((1, in_dim)))["params"]
    o = tx.init(p)

    def step(p, o, imgs, key, loss_fn=loss_fn):
      loss, g = jax.value_and_grad(loss_fn)(p, imgs, key)
      up, o = tx.update(g, o, p)
      return optax.apply_updates(p, up), o, loss

    jstep = jax.jit(step)
    compiled = jstep.lower(p, o, images, key).compile()
    t = timed(jstep, p, o, images, key, reps=args.reps)
    rows.append((f"train step, batch {args.batch}: {name}",
                 f"{t * 1e3:.1f} ms", f"{memory_bytes(compiled) / 2**20:.1f} MiB",
                 f"{flops(compiled) / 1e9:.2f} GFLOP"))

  def encode(imgs):
    x = backbone.normalise_images(imgs)
    return enc.apply({"params": enc_params}, x).tokens[:, 1:]

  for s in (8, 4, 2):
    fn = jax.jit(lambda im, s=s: dense.cover_and_stride(
        encode, im.astype(jnp.float32), enc.patch_size, s))
    compiled = fn.lower(images).compile()
    t = timed(fn, images, reps=args.reps)
    rows.append((f"cover-and-stride inference, stride {s} "
                 f"({96 // s}x{96 // s} map)",
                 f"{t / args.batch * 1e3:.2f} ms/image",
                 f"{memory_bytes(compiled) / 2**20:.1f} MiB",
                 f"{flops(compiled) / args.batch / 1e9:.2f} GFLOP/image"))

  print(f"\nSCE-MAE stage 2 benchmark: {args.preset}, 96 px, patch 8, "
        f"projector {args.dim}, device {jax.devices()[0].device_kind}, "
        f"median of {args.reps}")
  print("| what | time | XLA memory (args+out+temp) | XLA FLOPs |")
  print("|---|---|---|---|")
  for r in rows:
    print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
  main()

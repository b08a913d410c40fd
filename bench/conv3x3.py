r"""One 3x3 convolution, fwd + bwd: `lax.conv` vs Winograd F(2x2, 3x3).

The measurement behind `star_jax.winograd.use_winograd`'s rule: process CPU
ms of `grad(sum(conv(x, k) * ct))` with respect to x and k (median of
`--repeats` calls after compiling), for the shapes of the STAR hourglass's
3x3 convolutions at 256 px, batch 8 (128 channels at 64 x 64 .. 8 x 8; the
stem's 64-channel block at 128 x 128 and 64 x 64), plus the largest
difference of the two outputs.

  taskset -c 0 python bench/conv3x3.py           # one pinned core
  python bench/conv3x3.py --batch=2 --shapes=64x128
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from star_jax import winograd  # pylint: disable=g-import-not-at-top,wrong-import-position


def xla_conv3x3(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fwd_bwd_ms(conv, x, kernel, cotangent, repeats: int) -> float:
  grad = jax.jit(jax.grad(lambda x, k, ct: jnp.sum(conv(x, k) * ct),
                          argnums=(0, 1)))
  jax.block_until_ready(grad(x, kernel, cotangent))
  times = []
  for _ in range(repeats):
    t = time.process_time()
    jax.block_until_ready(grad(x, kernel, cotangent))
    times.append(time.process_time() - t)
  return 1000 * float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--shapes", default="64x128,32x128,16x128,8x128,"
                      "128x64,64x64", help="SIZExCHANNELS, comma-separated")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f"3x3 conv fwd + bwd, batch {args.batch}, float32, "
        f"{jax.default_backend()}, {os.cpu_count()} CPUs visible, "
        f"process CPU ms (median of {args.repeats})")
  print("| map | channels | lax.conv ms | Winograd ms | speed-up | auto uses "
        "Winograd | max abs difference / max abs output |")
  print("|---|---|---|---|---|---|---|")
  for shape in args.shapes.split(","):
    size, channels = (int(v) for v in shape.split("x"))
    x = jnp.asarray(rng.standard_normal((args.batch, size, size, channels)),
                    jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((3, 3, channels, channels)) /
                         np.sqrt(9 * channels), jnp.float32)
    cotangent = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    ms_xla = fwd_bwd_ms(xla_conv3x3, x, kernel, cotangent, args.repeats)
    ms_wino = fwd_bwd_ms(winograd.conv3x3, x, kernel, cotangent, args.repeats)
    ref = xla_conv3x3(x, kernel)
    diff = float(jnp.max(jnp.abs(winograd.conv3x3(x, kernel) - ref)) /
                 jnp.max(jnp.abs(ref)))
    auto = winograd.use_winograd(x.shape, kernel.shape, jnp.float32)
    print(f"| {size} x {size} | {channels} | {ms_xla:.1f} | {ms_wino:.1f} | "
          f"{ms_xla / ms_wino:.2f}x | {'yes' if auto else 'no'} | "
          f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
  main()

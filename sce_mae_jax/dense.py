"""Dense inference features by cover-and-stride (SCE-MAE paper Sec. 3.3).

At inference SCE-MAE skips the clustering and expands the `H/P x W/P` patch
grid of the ViT (patch size P) to a finer grid by cover-and-stride: the input
is shifted by sub-patch offsets `0, s, 2s, ..., P - s` (stride s, `P % s == 0`)
in x and y, the encoder runs on each of the `(P/s)^2` shifted inputs, and the
token grids are interleaved into an `H/s x W/s` grid.

Exact geometry. The image is padded by `pad_before` pixels at the top/left and
`pad_after = P - s - pad_before` at the bottom/right, so every shifted input is
an `H x W` window of the padded image: window `(i, j)` (offsets `i s, j s`)
starts at padded pixel `(i s, j s)`. Token `(r, c)` of window `(i, j)` becomes
output feature `(R, C) = (r P/s + i, c P/s + j)` and covers the original
pixels `[R s - pad_before, R s - pad_before + P)` in y (likewise x); its centre
is at pixel

  y_R = R s - pad_before + (P - 1) / 2   (same for x with C)

(`dense_feature_centres`). Two alignments:
  * `align="centre"` (default): `pad_before = (P - s) // 2`; when `P - s` is
    even, `y_R = R s + (s - 1) / 2`, the centre of the R-th `s x s` cell, so the
    `H/s` grid lines up with the image as an align_corners=False resize
    (half a pixel off when `P - s` is odd, e.g. s = 1 with even P).
  * `align="corner"`: `pad_before = 0`, all padding at the bottom/right;
    shift (0, 0) is the plain input and `y_R = R s + (P - 1) / 2`.
Border pixels are filled by `padding` ("edge" replicate, default; "reflect";
"zeros"), applied to the images exactly as passed to `encode` (normalise
before calling if zero padding should mean the mean colour).
"""

from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

ALIGNMENTS = ("centre", "corner")
PADDINGS = {"edge": "edge", "reflect": "reflect", "zeros": "constant"}
SHIFT_BATCHING = ("vmap", "batch", "map")

Encoder = Callable[[jax.Array], jax.Array]


def _check(patch_size: int, stride: int, align: str) -> None:
  if patch_size <= 0 or stride <= 0 or patch_size % stride:
    raise ValueError(f"stride ({stride}) must be a positive divisor of the "
                     f"patch size ({patch_size}).")
  if align not in ALIGNMENTS:
    raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}.")


def padding_amounts(patch_size: int, stride: int,
                    align: str = "centre") -> Tuple[int, int]:
  """`(pad_before, pad_after)` pixels per spatial axis (sum `P - s`)."""
  _check(patch_size, stride, align)
  total = patch_size - stride
  before = total // 2 if align == "centre" else 0
  return before, total - before


def dense_feature_centres(image_size: Tuple[int, int], patch_size: int,
                          stride: int, align: str = "centre") -> np.ndarray:
  """`[H/s, W/s, 2]` `(x, y)` pixel centre of each cover-and-stride feature."""
  h, w = image_size
  before, _ = padding_amounts(patch_size, stride, align)
  off = -before + (patch_size - 1) / 2.0
  ys = np.arange(h // stride) * stride + off
  xs = np.arange(w // stride) * stride + off
  yy, xx = np.meshgrid(ys, xs, indexing="ij")
  return np.stack([xx, yy], axis=-1).astype(np.float32)


def shifted_inputs(images: jax.Array, patch_size: int, stride: int,
                   padding: str = "edge", align: str = "centre") -> jax.Array:
  """`[B, H, W, C]` -> `[(P/s)^2, B, H, W, C]` shifted windows, row-major in
  (y offset, x offset)."""
  if padding not in PADDINGS:
    raise ValueError(f"padding must be one of {tuple(PADDINGS)}, got "
                     f"{padding!r}.")
  _, h, w, _ = images.shape
  before, after = padding_amounts(patch_size, stride, align)
  padded = jnp.pad(images, ((0, 0), (before, after), (before, after), (0, 0)),
                   mode=PADDINGS[padding])
  n = patch_size // stride
  windows = [padded[:, i * stride:i * stride + h, j * stride:j * stride + w]
             for i in range(n) for j in range(n)]
  return jnp.stack(windows)


def interleave_tokens(tokens: jax.Array, grid_shape: Tuple[int, int],
                      shifts_per_axis: int) -> jax.Array:
  """`[(P/s)^2, B, Hp * Wp, D]` -> `[B, Hp P/s, Wp P/s, D]`.

  Token `(r, c)` of shift `(i, j)` lands at `(r P/s + i, c P/s + j)`.
  """
  n = shifts_per_axis
  hp, wp = grid_shape
  _, b, _, d = tokens.shape
  t = tokens.reshape(n, n, b, hp, wp, d)
  t = jnp.transpose(t, (2, 3, 0, 4, 1, 5))  # [B, Hp, i, Wp, j, D]
  return t.reshape(b, hp * n, wp * n, d)


def cover_and_stride(encode: Encoder,
                     images: jax.Array,
                     patch_size: int,
                     stride: int,
                     padding: str = "edge",
                     align: str = "centre",
                     shift_batching: str = "vmap") -> jax.Array:
  """Dense features `[B, H/s, W/s, D]` from a patch-token encoder.

  Args:
    encode: `images [B, H, W, C] -> tokens [B, (H/P) (W/P), D]` on the patch
      grid, row-major, without the CLS token (e.g. the frozen ViT, optionally
      followed by the projector).
    images: `[B, H, W, C]` with `H % P == W % P == 0`.
    patch_size: P.
    stride: s, a divisor of P (s = P: plain encoder output).
    padding: border fill, "edge" | "reflect" | "zeros".
    align: "centre" | "corner" (see the module docstring for the geometry).
    shift_batching: how the `(P/s)^2` shifted inputs are encoded: "vmap"
      (`jax.vmap(encode)`), "batch" (one call on `(P/s)^2 B` images) or "map"
      (`jax.lax.map`, one shift at a time, least memory).

  Returns:
    `[B, H/s, W/s, D]`; feature `(R, C)` is centred at the pixel given by
    `dense_feature_centres`.
  """
  _check(patch_size, stride, align)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got {images.shape}.")
  b, h, w, c = images.shape
  if h % patch_size or w % patch_size:
    raise ValueError(f"image size {h}x{w} is not a multiple of the patch "
                     f"size {patch_size}.")
  if shift_batching not in SHIFT_BATCHING:
    raise ValueError(f"shift_batching must be one of {SHIFT_BATCHING}, got "
                     f"{shift_batching!r}.")
  n = patch_size // stride
  grid = (h // patch_size, w // patch_size)
  shifted = shifted_inputs(images, patch_size, stride, padding, align)
  if shift_batching == "vmap":
    tokens = jax.vmap(encode)(shifted)
  elif shift_batching == "map":
    tokens = jax.lax.map(encode, shifted)
  else:
    tokens = encode(shifted.reshape(n * n * b, h, w, c))
    tokens = tokens.reshape((n * n, b) + tokens.shape[1:])
  if tokens.ndim != 4 or tokens.shape[2] != grid[0] * grid[1]:
    raise ValueError(f"encode must return [B, {grid[0] * grid[1]}, D] patch "
                     f"tokens, got {tokens.shape[1:]} per shift.")
  return interleave_tokens(tokens, grid, n)

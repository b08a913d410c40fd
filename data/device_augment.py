"""STAR training augmentation in the jitted train step (augment_on="device").

The host path (data/augment.py) warps every face from its decoded image with
one NumPy/PIL warp and then changes its texture, per sample, on the CPU. Here
the host only decodes and cuts a *pre-crop* (data/pipeline.py, `make_sample`
with `CropConfig.augment_on == "device"`); this module does the rest on the
accelerator, batched, with static shapes, so `jit` / `vmap` / a sharded batch
all work:

  1. draw each sample's parameters (`sample_params`),
  2. flip + similarity: one bilinear warp from the uint8 pre-crop to the
     S x S crop (`warp_bilinear`), the points mapped with the same matrix and
     re-indexed with the scheme's flip permutation,
  3. texture: occlusion, box blur, gamma, noise blend, grey (`apply_texture`),
     each with the host's probability and magnitude.

What the host sends (per sample, `P = precrop_size(S, margin)`):
  * `image` uint8 `[P, P, 3]`: the pre-crop;
  * `landmarks` float32 `[N, 2]` in pre-crop pixels;
  * `crop_to_image` float32 `[2, 3]`: pre-crop pixels -> original pixels (the
    map of the image in the batch, as in host mode);
  * `precrop_to_crop` float32 `[2, 3]`: pre-crop pixels -> the plain
    (un-augmented) S x S crop's pixels, i.e. the host's crop matrix C with
    the pre-crop map taken out (`C = precrop_to_crop o image_to_precrop`);
  * `precrop_box` float32 `[4]` `(x_min, y_min, x_max, y_max)`: the pre-crop
    pixels that hold image content (inclusive, pixel centres); outside it the
    warp returns black and bilinear taps are clamped to it, which is PIL's
    border rule at the image edge (see `warp_bilinear`);
  * `visible`, `landmarks_original`, `valid`, `index` as in host mode.
`DeviceAugment.__call__` returns the host-mode batch: `image` `[S, S, 3]`,
`landmarks` in crop pixels, `crop_to_image` crop -> original,
`landmarks_original` / `visible` flip-permuted, the two pre-crop keys gone.

Geometry (the host's, `augment.sample_geometry`): with c = (S - 1) / 2,

    pre-crop -> augmented crop:  M = G o F o precrop_to_crop
    F = x -> S - 1 - x with probability flip_prob (else identity),
    G = zoom R(angle) (p - (c, c)) + (c, c) + shift,
    angle ~ N(0, rotate_sigma_deg), zoom ~ N(1, scale_sigma),
    shift ~ N(0, shift_sigma (S - 1)) per axis,
so the augmented crop is the host's `G o F o C` crop of the same image, and
`crop_to_image = precrop_to_image o M^-1` is the host's `(G o F o C)^-1`.

Pixel-centre convention of the warp: pixel (i, j) of either image is at
integer coordinates (x = j, y = i), as everywhere in this project. An output
pixel at integer (x, y) samples the source at `q = M^-1 (x, y)`; the source is
read as PIL's BILINEAR transform reads it (transforms.warp_affine, checked
against PIL in tests/test_device_augment.py): q inside
`[x_min - 0.5, x_max + 0.5) x [y_min - 0.5, y_max + 0.5)` or black, the four
taps `floor(q) + {0, 1}` clamped to the box, interpolated along x then y
(`a + (b - a) d`), and truncated to uint8 (PIL casts, it does not round).
PIL computes in float64, we in float32, so a value that lands within ~1e-3
of an integer can truncate one grey level differently.

Pre-crop margin. The pre-crop is the plain crop widened about its centre to
`P = ceil(margin * S)` pixels at the crop's own pixel scale (or, for a face
that the crop enlarges, P original pixels: data/pipeline.py). The region the
augmented crop reads is `M^-1` of the S x S square: for the default magnitudes
its half-side (max over the four corners) has quantiles 0.65 S (median),
0.91 S (99 %), 0.97 S (99.7 %) and 1.03 S (99.9 %) in a Monte Carlo of 2e5
draws. `DEFAULT_PRECROP_MARGIN = 2.0` (half-side S) holds the whole region for
99.8 % of the draws, i.e. the geometric augmentation at ~3 sigma; the rest
see black where the host would still show image (a sliver of their
corners). 1.75 would hold 97.8 %, 1.5 83 %.

Pixels: equal to the host's, or one resampling more. Two cases, by the crop's
scale k (crop px per original px, data/pipeline.py `precrop_sample`):
  * k >= (P - 1) / (P - 4) (the crop enlarges the face; yt68 at 256 px: all
    faces, k = 1.1 ... 5.9): the pre-crop is a copy of original pixels and
    the device warp reads them as PIL reads the original: the host's crop
    within 1 grey level (tests/test_device_augment.py);
  * smaller k: the pre-crop is resampled at crop scale on the host and the
    device warp interpolates once more. The geometry stays exact (points,
    matrices; on an affine image the values agree within the truncations),
    but real crops are softer: on yt68 at 64 px (k = 0.28 ... 1.46, geometry
    only) the mean |gradient| is 0.89 of the host's and the mean absolute
    difference to the host crop of the same draw 1.8 grey levels, 1.9 / 0.87
    with the reduced JPEG decode of faces > 2x the crop (its DCT scaling
    averages where the host's warp, without `data.antialias`, point-samples).
    The texture augmentation's box blur (probability 0.3, up to 5 % of S)
    is a far larger softening than this.

Randomness and its key derivation. `DeviceAugment.__call__` takes one key
per step (StarMethod.loss_fn passes the `rng` the loop gives it,
`fold_in(state.rng, state.step)`); sample i of the *global* batch uses
`fold_in(rng, i)`, i = its position 0 ... B - 1 in the global batch.
Positions are unique within a step (record indices are not: a batch that
straddles an epoch, or a replaced undecodable image, can repeat a record),
and they, not the device a sample lands on, fix every draw: the same seed
gives the same crops on 1 or 8 devices (tested), and a resumed run draws
what the uninterrupted run drew (the step is in the key). From that
sample key, `split(key, 3)` gives a uniform vector (14 slots, `_U_*`), a
normal vector (4 slots, `_N_*`) and the noise image's key.

Texture (data/augment.py's order and magnitudes; all five ops are computed
for every sample and selected per sample with `where`, the price of static
shapes):
  * occlusion 0.4: black rectangle, rh ~ U(0.2, 0.8), rw = rh - 0.2 + U(0,
    0.4), sides `floor(S / 2 * ratio)`, centre `floor((S - 1) U)`;
  * box blur 0.3: k = floor(S * blur_max_ratio * U), applied when k > 1:
    window sums from prefix sums (cumulative sums along x, then y) of the
    image padded by reflect-101 to the largest possible k, so k is dynamic
    and the shapes are not; exact integer sums, rounded half to even as the
    host (cv2.blur's rule): equal to the host bit for bit;
  * gamma 0.2: g ~ U(0.25, 1) or U(1, 4) with equal chance,
    `floor(255 (x / 255)^g)` (float32 here, float64 on the host: within one
    grey level);
  * noise 0.2: `floor((1 - a) x + a n)`, n uniform uint8 noise
    (`jax.random.bits`), a ~ U(0, noise_max_alpha) (float32 vs float64:
    within one grey level);
  * grey 0.2: ITU-R 601 luma `0.299 R + 0.587 G + 0.114 B`, computed exactly
    in integers (`299 R + 587 G + 114 B` over 1000, rounded half to even);
    the host rounds the float64 value, so the two can differ by one level
    only at exact ties (~0.1 % of random pixels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from data import augment as augment_lib
from training import errors

AUGMENT_ON = ("host", "device")
DEFAULT_PRECROP_MARGIN = 2.0
PRECROP_KEYS = ("precrop_to_crop", "precrop_box")

# Slots of the per-sample uniform and normal vectors.
(_U_FLIP, _U_OCC, _U_OCC_RH, _U_OCC_RW, _U_OCC_CX, _U_OCC_CY, _U_BLUR,
 _U_BLUR_K, _U_GAMMA, _U_GAMMA_LOW, _U_GAMMA_VALUE, _U_NOISE, _U_NOISE_ALPHA,
 _U_GREY) = range(14)
_NUM_UNIFORMS = 14
_N_SHIFT_X, _N_SHIFT_Y, _N_ANGLE, _N_ZOOM = range(4)
_NUM_NORMALS = 4


def check_augment_on(value: Any) -> str:
  """`value` if it is "host" or "device", else a UserError naming both."""
  if value not in AUGMENT_ON:
    raise errors.UserError(
        f"config.data.augment_on must be one of {AUGMENT_ON}; got {value!r}")
  return value


def precrop_size(crop_size: int,
                 margin: float = DEFAULT_PRECROP_MARGIN) -> int:
  """P = ceil(margin * S), the side of the host's pre-crop (margin >= 1)."""
  margin = float(margin)
  if not margin >= 1.0 or not math.isfinite(margin):
    raise errors.UserError(
        f"config.data.precrop_margin must be a number >= 1 (the pre-crop "
        f"must hold the crop); got {margin!r}")
  return int(math.ceil(margin * int(crop_size) - 1e-9))


# ----------------------------------------------------------------- matrices --


def _to_3x3(m: jax.Array) -> jax.Array:
  bottom = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], m.dtype),
                            m.shape[:-2] + (1, 3))
  return jnp.concatenate([m, bottom], axis=-2)


def compose(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a o b` of `[..., 2, 3]` affine maps (b applied first)."""
  return (_to_3x3(a) @ _to_3x3(b))[..., :2, :]


def invert(m: jax.Array) -> jax.Array:
  """Inverse of `[..., 2, 3]` affine maps (closed-form 2 x 2 inverse)."""
  a, b, tx = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
  c, d, ty = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
  det = a * d - b * c
  ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
  row0 = jnp.stack([ia, ib, -(ia * tx + ib * ty)], axis=-1)
  row1 = jnp.stack([ic, id_, -(ic * tx + id_ * ty)], axis=-1)
  return jnp.stack([row0, row1], axis=-2)


def apply(m: jax.Array, points: jax.Array) -> jax.Array:
  """`[..., N, 2]` points through `[..., 2, 3]` maps."""
  return (jnp.einsum("...ij,...nj->...ni", m[..., :, :2], points)
          + m[..., None, :, 2])


def geometry_matrix(flip: jax.Array, angle: jax.Array, zoom: jax.Array,
                    shift: jax.Array, crop_size: int) -> jax.Array:
  """`G o F` `[..., 2, 3]`: crop -> augmented crop (augment.sample_geometry).

  F mirrors x -> S - 1 - x where `flip`; G rotates by `angle` (rad) and
  zooms by `zoom` about the crop centre ((S - 1) / 2, (S - 1) / 2), then
  shifts by `shift` px (transforms.similarity_about).
  """
  c = (crop_size - 1) / 2.0
  cos, sin = jnp.cos(angle) * zoom, jnp.sin(angle) * zoom
  # G's linear part and translation.
  tx = c - (cos * c - sin * c) + shift[..., 0]
  ty = c - (sin * c + cos * c) + shift[..., 1]
  # F = [[s, 0, f], [0, 1, 0]] with s = -1, f = S - 1 when flipped.
  s = jnp.where(flip, -1.0, 1.0).astype(cos.dtype)
  f = jnp.where(flip, crop_size - 1.0, 0.0).astype(cos.dtype)
  row0 = jnp.stack([cos * s, -sin, cos * f + tx], axis=-1)
  row1 = jnp.stack([sin * s, cos, sin * f + ty], axis=-1)
  return jnp.stack([row0, row1], axis=-2)


# ------------------------------------------------------------------- warping --


def warp_bilinear(image: jax.Array, out_to_src: jax.Array, out_size: int,
                  box: Optional[jax.Array] = None) -> jax.Array:
  """Bilinear warp of uint8 `[H, W, C]` into `[out, out, C]`, PIL's rules.

  Args:
    image: uint8 `[H, W, C]` source.
    out_to_src: `[2, 3]` map from output pixels to source pixels (integer
      pixel centres on both sides, README "Conventions").
    out_size: the output side (static).
    box: `[4]` `(x_min, y_min, x_max, y_max)` source pixels with content
      (default the whole image). A sample point q is black unless
      `x_min - 0.5 <= q_x < x_max + 0.5` and the same in y (PIL's test
      `0 <= q + 0.5 < W`); its taps are clamped to the box (PIL clamps to the
      image), and the result is truncated to uint8 as PIL does.

  Returns:
    uint8 `[out_size, out_size, C]`.
  """
  h, w, ch = image.shape
  m = out_to_src.astype(jnp.float32)
  if box is None:
    box = jnp.array([0.0, 0.0, w - 1.0, h - 1.0], jnp.float32)
  box = box.astype(jnp.float32)
  grid = jnp.arange(out_size, dtype=jnp.float32)
  xs, ys = grid[None, :], grid[:, None]
  u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
  v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
  inside = ((u >= box[0] - 0.5) & (u < box[2] + 0.5) &
            (v >= box[1] - 0.5) & (v < box[3] + 0.5))
  x0 = jnp.floor(u)
  y0 = jnp.floor(v)
  dx = (u - x0)[..., None]
  dy = (v - y0)[..., None]
  lo = box.astype(jnp.int32)

  def clamp(i, a, b, n):
    return jnp.clip(jnp.clip(i, a, b), 0, n - 1)

  xa = clamp(x0.astype(jnp.int32), lo[0], lo[2], w)
  xb = clamp(x0.astype(jnp.int32) + 1, lo[0], lo[2], w)
  ya = clamp(y0.astype(jnp.int32), lo[1], lo[3], h)
  yb = clamp(y0.astype(jnp.int32) + 1, lo[1], lo[3], h)
  flat = image.reshape(h * w, ch)

  def tap(yi, xi):
    return jnp.take(flat, yi * w + xi, axis=0,
                    mode="clip").astype(jnp.float32)

  p00, p01, p10, p11 = tap(ya, xa), tap(ya, xb), tap(yb, xa), tap(yb, xb)
  top = p00 + (p01 - p00) * dx
  bottom = p10 + (p11 - p10) * dx
  value = top + (bottom - top) * dy
  value = jnp.clip(jnp.floor(value), 0.0, 255.0)
  return jnp.where(inside[..., None], value, 0.0).astype(jnp.uint8)


# ------------------------------------------------------------------- texture --


def occlusion_box(u_rh, u_rw, u_cx, u_cy, height: int, width: int
                  ) -> jax.Array:
  """The black rectangle `(x0, y0, x1, y1)` (inclusive, int32) of
  augment.occlude from its four uniforms (same formulas, same order)."""
  rh = 0.2 + 0.6 * u_rh
  rw = rh - 0.2 + 0.4 * u_rw
  cx = jnp.floor((width - 1) * u_cx).astype(jnp.int32)
  cy = jnp.floor((height - 1) * u_cy).astype(jnp.int32)
  dh = jnp.floor(height / 2 * rh).astype(jnp.int32)
  dw = jnp.floor(width / 2 * rw).astype(jnp.int32)
  x0 = jnp.maximum(0, cx - dw // 2)
  y0 = jnp.maximum(0, cy - dh // 2)
  x1 = jnp.minimum(width - 1, cx + dw // 2)
  y1 = jnp.minimum(height - 1, cy + dh // 2)
  return jnp.stack([x0, y0, x1, y1], axis=-1)


def occlude(image: jax.Array, box: jax.Array) -> jax.Array:
  """Blacks out the inclusive rectangle `box` = (x0, y0, x1, y1)."""
  h, w = image.shape[:2]
  ys = jnp.arange(h)[:, None]
  xs = jnp.arange(w)[None, :]
  hole = (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])
  return jnp.where(hole[..., None], jnp.zeros((), image.dtype), image)


def max_blur_kernel(crop_size: int, max_ratio: float) -> int:
  """The largest k that `floor(S * max_ratio * U)`, U in [0, 1), can give."""
  top = crop_size * float(max_ratio)
  k = int(math.floor(top))
  return k - 1 if k == top and k > 0 else k


def box_blur(image: jax.Array, k: jax.Array, k_max: int) -> jax.Array:
  """k x k mean filter, anchor k // 2, reflect-101 borders, rounded half to
  even (augment.box_blur / cv2.blur), for a dynamic `k <= k_max`.

  The image is padded by reflect-101 to `k_max` on every side (static), so
  every window of every k fits; window sums are differences of prefix sums
  at offsets that depend on k (`lax.dynamic_slice`), first along x, then
  along y, in int32 (exact). k <= 1 returns the image unchanged.
  """
  if k_max <= 1:
    return image
  h, w = image.shape[:2]
  k = jnp.clip(jnp.asarray(k, jnp.int32), 1, k_max)
  pad = k_max
  x = jnp.pad(image.astype(jnp.int32), ((pad, pad), (pad, pad), (0, 0)),
              mode="reflect")
  start = pad - k // 2
  zero_col = jnp.zeros((x.shape[0], 1, x.shape[2]), jnp.int32)
  cx = jnp.concatenate([zero_col, jnp.cumsum(x, axis=1)], axis=1)
  rows = (jax.lax.dynamic_slice_in_dim(cx, start + k, w, axis=1) -
          jax.lax.dynamic_slice_in_dim(cx, start, w, axis=1))
  zero_row = jnp.zeros((1, w, x.shape[2]), jnp.int32)
  cy = jnp.concatenate([zero_row, jnp.cumsum(rows, axis=0)], axis=0)
  total = (jax.lax.dynamic_slice_in_dim(cy, start + k, h, axis=0) -
           jax.lax.dynamic_slice_in_dim(cy, start, h, axis=0))
  area = (k * k).astype(jnp.float32)
  out = jnp.rint(total.astype(jnp.float32) / area).astype(jnp.uint8)
  return jnp.where(k > 1, out, image)


def gamma(image: jax.Array, g: jax.Array) -> jax.Array:
  """`floor(255 (x / 255)^g)` (augment.gamma's table, in float32)."""
  x = image.astype(jnp.float32) / 255.0
  return jnp.clip(jnp.floor(jnp.power(x, g) * 255.0), 0, 255).astype(
      jnp.uint8)


def noise_blend(image: jax.Array, noise: jax.Array,
                alpha: jax.Array) -> jax.Array:
  """`floor((1 - alpha) x + alpha n)` (augment.noise_blend, float32)."""
  out = ((1.0 - alpha) * image.astype(jnp.float32) +
         alpha * noise.astype(jnp.float32))
  return jnp.clip(jnp.floor(out), 0, 255).astype(jnp.uint8)


def to_gray(image: jax.Array) -> jax.Array:
  """ITU-R 601 luma, rounded half to even, as 3 equal channels (exact:
  `(299 R + 587 G + 114 B) / 1000` in integers)."""
  x = image.astype(jnp.int32)
  n = 299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2]
  q, r = n // 1000, n % 1000
  y = q + ((r > 500) | ((r == 500) & (q % 2 == 1))).astype(jnp.int32)
  y = jnp.clip(y, 0, 255).astype(jnp.uint8)
  return jnp.repeat(y[..., None], image.shape[-1], axis=-1)


# ------------------------------------------------------------------ sampling --


def sample_params(key: jax.Array, crop_size: int,
                  config: augment_lib.AugmentConfig,
                  can_flip: bool = True) -> Dict[str, jax.Array]:
  """One sample's augmentation parameters (the host's distributions).

  Returns a dict of scalars / small arrays: `flip` bool, `angle` (rad),
  `zoom`, `shift` `[2]` px; `occlude` bool + `occlusion_box` int32 `[4]`;
  `blur` bool + `blur_k` int32 (the op changes pixels only when k > 1, as the
  host's); `gamma` bool + `gamma_value`; `noise` bool + `noise_alpha` +
  `noise_key` (the noise image is drawn from it in `apply_texture`);
  `grey` bool.
  """
  k_u, k_n, k_noise = jax.random.split(key, 3)
  u = jax.random.uniform(k_u, (_NUM_UNIFORMS,), jnp.float32)
  n = jax.random.normal(k_n, (_NUM_NORMALS,), jnp.float32)
  s = int(crop_size)
  c = config
  flip = (u[_U_FLIP] < c.flip_prob) & bool(can_flip)
  shift = jnp.stack([n[_N_SHIFT_X], n[_N_SHIFT_Y]]) * (c.shift_sigma * (s - 1))
  angle = n[_N_ANGLE] * np.deg2rad(c.rotate_sigma_deg)
  zoom = 1.0 + n[_N_ZOOM] * c.scale_sigma
  gamma_value = jnp.where(u[_U_GAMMA_LOW] < 0.5,
                          0.25 + 0.75 * u[_U_GAMMA_VALUE],
                          1.0 + 3.0 * u[_U_GAMMA_VALUE])
  return dict(
      flip=flip, angle=angle, zoom=zoom, shift=shift,
      occlude=u[_U_OCC] < c.occlusion_prob,
      occlusion_box=occlusion_box(u[_U_OCC_RH], u[_U_OCC_RW], u[_U_OCC_CX],
                                  u[_U_OCC_CY], s, s),
      blur=u[_U_BLUR] < c.blur_prob,
      blur_k=jnp.floor(s * c.blur_max_ratio * u[_U_BLUR_K]).astype(jnp.int32),
      gamma=u[_U_GAMMA] < c.gamma_prob,
      gamma_value=gamma_value,
      noise=u[_U_NOISE] < c.noise_prob,
      noise_alpha=c.noise_max_alpha * u[_U_NOISE_ALPHA],
      noise_key=k_noise,
      grey=u[_U_GREY] < c.gray_prob)


def sample_keys(rng: jax.Array, batch_size: int) -> jax.Array:
  """`[B]` keys: sample i of the global batch gets `fold_in(rng, i)`."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(
      jnp.arange(batch_size, dtype=jnp.uint32))


def sample_batch_params(rng: jax.Array, batch_size: int, crop_size: int,
                        config: augment_lib.AugmentConfig,
                        can_flip: bool = True) -> Dict[str, jax.Array]:
  """`sample_params` for each position of a global batch (leading axis B)."""
  return jax.vmap(lambda k: sample_params(k, crop_size, config, can_flip))(
      sample_keys(rng, batch_size))


def apply_texture(image: jax.Array, params: Mapping[str, jax.Array],
                  config: augment_lib.AugmentConfig) -> jax.Array:
  """Occlusion, blur, gamma, noise, grey of one `[S, S, 3]` uint8 crop, each
  where its flag in `params` (one sample's, `sample_params`) is set."""
  image = jnp.where(params["occlude"],
                    occlude(image, params["occlusion_box"]), image)
  k_max = max_blur_kernel(max(image.shape[:2]), config.blur_max_ratio)
  if k_max > 1:
    image = jnp.where(params["blur"],
                      box_blur(image, params["blur_k"], k_max), image)
  image = jnp.where(params["gamma"], gamma(image, params["gamma_value"]),
                    image)
  noise = jax.random.bits(params["noise_key"], image.shape, jnp.uint8)
  image = jnp.where(params["noise"],
                    noise_blend(image, noise, params["noise_alpha"]), image)
  return jnp.where(params["grey"], to_gray(image), image)


# --------------------------------------------------------------------- batch --


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """The device augmentation of one training setup (static settings).

  `DeviceAugment(...)(batch, rng)` turns a host pre-crop batch into the
  host-mode training batch (module docstring); `base_crop(batch)` gives the
  plain crop (no augmentation), for initialisation and --mode=summary.
  """
  crop_size: int
  precrop_size: int
  config: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
  flip_permutation: Optional[Tuple[int, ...]] = None

  @classmethod
  def from_config(cls, data_config, scheme) -> "DeviceAugment":
    """From `config.data` (crop_size, augment, precrop_margin) and a scheme."""
    s = int(data_config.crop_size)
    margin = float(data_config.get("precrop_margin", DEFAULT_PRECROP_MARGIN))
    augment = data_config.get("augment", None)
    return cls(crop_size=s, precrop_size=precrop_size(s, margin),
               config=augment_lib.AugmentConfig.from_mapping(
                   dict(augment) if augment is not None else None),
               flip_permutation=tuple(int(i) for i in scheme.flip_permutation))

  def sample(self, rng: jax.Array, batch_size: int) -> Dict[str, jax.Array]:
    """`sample_batch_params` with this setup's crop size and config."""
    return sample_batch_params(rng, batch_size, self.crop_size, self.config,
                               self.flip_permutation is not None)

  def __call__(self, batch: Mapping[str, jax.Array], rng: jax.Array
               ) -> Dict[str, jax.Array]:
    """The augmented host-mode batch of a pre-crop batch; sample i of the
    batch draws from `fold_in(rng, i)` (module docstring)."""
    self._check(batch)
    return self.apply(batch, self.sample(rng, batch["image"].shape[0]))

  def _check(self, batch):
    """UserError unless `batch` is a pre-crop batch of the right size."""
    missing = [k for k in PRECROP_KEYS if k not in batch]
    if missing:
      raise errors.UserError(
          f"augment_on='device' needs the host's pre-crop batch (keys "
          f"{PRECROP_KEYS}); missing {missing}: build the training loader "
          "with augment_on='device' (data.pipeline.make_landmark_loader)")
    p = batch["image"].shape[1]
    if tuple(batch["image"].shape[1:3]) != (self.precrop_size,) * 2:
      raise errors.UserError(
          f"pre-crop images are {p} px, expected {self.precrop_size} (crop "
          f"{self.crop_size} x config.data.precrop_margin): build the "
          "loader and the method from the same config.data")

  def apply(self, batch: Mapping[str, jax.Array],
            params: Mapping[str, jax.Array],
            texture: bool = True) -> Dict[str, jax.Array]:
    """Warps, re-indexes and re-textures a pre-crop batch with `params`
    (leading axis B, as `sample`'s); the host-mode batch dict."""
    self._check(batch)
    s = self.crop_size
    geo = geometry_matrix(params["flip"], params["angle"], params["zoom"],
                          params["shift"], s)
    m = compose(geo, batch["precrop_to_crop"].astype(jnp.float32))
    m_inv = invert(m)
    crops = jax.vmap(lambda im, mi, box: warp_bilinear(im, mi, s, box))(
        batch["image"], m_inv, batch["precrop_box"])
    if texture:
      crops = jax.vmap(lambda im, p: apply_texture(im, p, self.config))(
          crops, params)
    points = apply(m, batch["landmarks"].astype(jnp.float32))
    visible = batch["visible"]
    original = batch["landmarks_original"]
    if self.flip_permutation is not None:
      perm = jnp.asarray(self.flip_permutation, jnp.int32)
      flip = params["flip"]
      points = jnp.where(flip[:, None, None], points[:, perm], points)
      visible = jnp.where(flip[:, None], visible[:, perm], visible)
      original = jnp.where(flip[:, None, None], original[:, perm], original)
    out = {k: v for k, v in batch.items() if k not in PRECROP_KEYS}
    out.update(image=crops, landmarks=points, visible=visible,
               landmarks_original=original,
               crop_to_image=compose(
                   batch["crop_to_image"].astype(jnp.float32), m_inv))
    return out

  def base_crop(self, batch: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
    """The plain crop of a pre-crop batch (identity geometry, no texture)."""
    b = batch["image"].shape[0]
    params = dict(flip=jnp.zeros((b,), bool), angle=jnp.zeros((b,)),
                  zoom=jnp.ones((b,)), shift=jnp.zeros((b, 2)))
    return self.apply(batch, params, texture=False)

  def dummy_batch(self, batch_size: int, num_points: int
                  ) -> Dict[str, np.ndarray]:
    """A host pre-crop batch of the right shapes (the loop builds its
    shardings from it): empty pre-crops, a diagonal of points."""
    s, p = self.crop_size, self.precrop_size
    d = (p - s) / 2.0
    grid = np.linspace(0.25 * s, 0.75 * s, num_points, dtype=np.float32)
    points = np.tile(np.stack([grid, grid[::-1]], -1), (batch_size, 1, 1))
    to_crop = np.tile(np.array([[1, 0, -d], [0, 1, -d]], np.float32),
                      (batch_size, 1, 1))
    box = np.tile(np.array([0, 0, p - 1, p - 1], np.float32), (batch_size, 1))
    return {"image": np.zeros((batch_size, p, p, 3), np.uint8),
            "landmarks": points + np.float32(d),
            "landmarks_original": points.copy(),
            "visible": np.ones((batch_size, num_points), bool),
            "crop_to_image": to_crop.copy(),
            "precrop_to_crop": to_crop,
            "precrop_box": box,
            "valid": np.ones((batch_size,), bool),
            "index": np.arange(batch_size, dtype=np.int32)}


def stack_samples(samples: Sequence[Mapping[str, np.ndarray]]
                  ) -> Dict[str, np.ndarray]:
  """Host sample dicts -> one batch dict (as grain's Batch does)."""
  return {k: np.stack([np.asarray(s[k]) for s in samples])
          for k in samples[0]}

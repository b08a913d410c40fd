"""Thin-plate-spline warps for the landmark-matching protocol (DVE / CL style).

A warp is defined by a regular grid of control points `c_k` in normalised
coordinates `[-1, 1]^2` and their displaced positions `d_k = A(c_k) + e_k`
(an optional random similarity `A` plus Gaussian jitter `e_k`). The warped
image `J` is the original image `I` seen through the deformation that moves
`c_k` to `d_k`:

  * image warping uses backward mapping: the *sampling map* `G` is the TPS
    fitted from the displaced points to the regular ones (`G(d_k) = c_k`
    exactly), and `J(y) = I(G(y))` with bilinear sampling;
  * landmarks move forward: the warped landmark of an original landmark `x` is
    the point `y` with `G(y) = x`. We obtain it by Newton's method on `G`
    (2x2 Jacobians by autodiff), started from the forward TPS `F` fitted from
    `c_k` to `d_k` (close to `G^-1`, but not its exact inverse). So
    `J(y) = I(G(y)) = I(x)` holds up to the Newton residual, which
    `warp_points` can return: at float32 precision about 1e-6 normalised units
    for a 5x5 grid and 2e-5 for 10x10 (1e-3 px at 96 px). DVE/CL instead
    snap landmarks to the nearest warped pixel (`snap_points`, up to half a
    pixel off); `warp_landmarks` falls back to that where Newton fails.

Coordinates: pixels are `(x, y)`, origin top-left, pixel centres at integers
(the repository convention); the normalised coordinate is
`u = 2 x / (W - 1) - 1` (align_corners=True, as the DVE/CL warps), so pixel
centres 0 and W - 1 map to -1 and 1. TPS kernel: `U(r) = r^2 log r^2`.

Two random warp families:

  * `random_tps_warp`: a similarity plus jitter of the control points; the TPS
    is fitted to the displaced points (`make_tps_warp`).
  * `random_dve_warp`: DVE's own parameterisation (`utils/tps.py`,
    `random_tps_weights` and `Warper`): the sampling map `G` is drawn directly
    as kernel weights and an affine part on a 10 x 10 control grid, without
    fitting and without the TPS side conditions. Its landmarks move by the
    same Newton inversion, started from the inverse of the affine part.

All functions are jnp and jittable (the random warps, `warp_image`,
`warp_points`, `snap_points` and `warp_landmarks` are jitted already); batch
with `jax.vmap`.
"""

from __future__ import annotations

import functools
import math
from typing import Tuple

import flax
import jax
import jax.numpy as jnp

PADDING_MODES = ("zeros", "border")


def control_grid(grid_size: int) -> jax.Array:
  """`[grid_size ** 2, 2]` regular `(x, y)` grid on `[-1, 1]^2`, row-major."""
  if grid_size < 2:
    raise ValueError(f"grid_size must be >= 2, got {grid_size}.")
  t = jnp.linspace(-1.0, 1.0, grid_size)
  yy, xx = jnp.meshgrid(t, t, indexing="ij")
  return jnp.stack([xx.reshape(-1), yy.reshape(-1)], axis=-1)


def tps_kernel(sq_dist: jax.Array) -> jax.Array:
  """`U = r^2 log r^2` from squared distances (0 at r = 0, smooth gradient)."""
  positive = sq_dist > 0
  safe = jnp.where(positive, sq_dist, 1.0)
  return jnp.where(positive, sq_dist * jnp.log(safe), 0.0)


def _sq_dist(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(a[..., :, None, :] - b[None, :, :]), axis=-1)


@flax.struct.dataclass
class Tps:
  """A 2-D thin-plate spline `f(p) = sum_k w_k U(|p - c_k|^2) + a0 + A p`.

  Attributes:
    centres: `[n, 2]` control points `c_k` (the source points of the fit).
    weights: `[n, 2]` kernel weights `w_k`.
    affine: `[3, 2]` rows `a0`, then the linear part (`[1, x, y] @ affine`).
  """
  centres: jax.Array
  weights: jax.Array
  affine: jax.Array


@jax.jit
def fit_tps(source: jax.Array, target: jax.Array,
            regularization: float = 0.0) -> Tps:
  """Interpolating TPS with `f(source_k) = target_k` (smoothing if reg > 0).

  Solves `[[K + reg I, P], [P^T, 0]] [w; a] = [target; 0]` with
  `K_kl = U(|s_k - s_l|^2)` and `P = [1, s]`, then one step of iterative
  refinement (float32: control points reproduced to about 1e-6 for a 5x5
  grid, 3e-5 normalised units for 10x10).

  Args:
    source: `[n, 2]` points (n >= 3, not collinear).
    target: `[n, 2]` their images.
    regularization: Tikhonov term on the kernel (0 = exact interpolation).

  Returns:
    The fitted `Tps`.
  """
  n = source.shape[0]
  if source.shape != (n, 2) or target.shape != (n, 2) or n < 3:
    raise ValueError("source and target must both be [n, 2] with n >= 3, got "
                     f"{source.shape} and {target.shape}.")
  source = source.astype(jnp.float32)
  target = target.astype(jnp.float32)
  k = tps_kernel(_sq_dist(source, source)) + regularization * jnp.eye(n)
  p = jnp.concatenate([jnp.ones((n, 1)), source], axis=1)
  top = jnp.concatenate([k, p], axis=1)
  bottom = jnp.concatenate([p.T, jnp.zeros((3, 3))], axis=1)
  system = jnp.concatenate([top, bottom], axis=0)
  rhs = jnp.concatenate([target, jnp.zeros((3, 2))], axis=0)
  sol = jnp.linalg.solve(system, rhs)
  residual = rhs - jnp.matmul(system, sol, precision=jax.lax.Precision.HIGHEST)
  sol = sol + jnp.linalg.solve(system, residual)
  return Tps(centres=source, weights=sol[:n], affine=sol[n:])


@jax.jit
def apply_tps(tps: Tps, points: jax.Array) -> jax.Array:
  """Evaluates the spline at `[..., 2]` points -> `[..., 2]`."""
  shape = points.shape
  pts = points.reshape(-1, 2).astype(jnp.float32)
  u = tps_kernel(_sq_dist(pts, tps.centres))
  hi = jax.lax.Precision.HIGHEST
  out = (jnp.matmul(u, tps.weights, precision=hi) + tps.affine[0] +
         jnp.matmul(pts, tps.affine[1:], precision=hi))
  return out.reshape(shape)


@flax.struct.dataclass
class TpsWarp:
  """A TPS image deformation and its two maps (see the module docstring).

  Attributes:
    source: `[n, 2]` regular control points `c_k` (normalised).
    target: `[n, 2]` displaced control points `d_k = F(c_k)` (normalised).
    sampling: TPS `G` (warped -> original; image warping). `G(d_k) = c_k`
      for fitted warps (`make_tps_warp`); for `random_dve_warp` only
      approximately (`F` is then the inverse of `G`'s affine part).
    forward: TPS `F`, roughly `G^-1` (Newton start for the landmarks).
  """
  source: jax.Array
  target: jax.Array
  sampling: Tps
  forward: Tps


def make_tps_warp(source: jax.Array, target: jax.Array) -> TpsWarp:
  """The warp that moves `source` control points to `target` (normalised)."""
  return TpsWarp(source=source, target=target,
                 sampling=fit_tps(target, source),
                 forward=fit_tps(source, target))


@functools.partial(jax.jit, static_argnames=("grid_size",))
def random_tps_warp(key: jax.Array,
                    grid_size: int = 5,
                    control_sd: float = 0.05,
                    rotation_sd_deg: float = 0.0,
                    scale_sd: float = 0.0,
                    translation_sd: float = 0.0) -> TpsWarp:
  """A random warp: optional similarity about the centre + control jitter.

  `d_k = s R(theta) c_k + t + control_sd * N(0, I)` with
  `theta ~ N(0, rotation_sd_deg)` degrees, `s ~ 1 + N(0, scale_sd)`,
  `t ~ N(0, translation_sd)` per axis; all lengths in normalised units (1 =
  half the image width). All sd = 0 gives the identity warp.

  Args:
    key: PRNG key.
    grid_size: control grid side (e.g. 5 or 10).
    control_sd: jitter of each displaced control point.
    rotation_sd_deg, scale_sd, translation_sd: the similarity component.

  Returns:
    A `TpsWarp`.
  """
  src = control_grid(grid_size)
  k_jit, k_rot, k_scale, k_shift = jax.random.split(key, 4)
  theta = rotation_sd_deg * math.pi / 180.0 * jax.random.normal(k_rot)
  scale = 1.0 + scale_sd * jax.random.normal(k_scale)
  shift = translation_sd * jax.random.normal(k_shift, (2,))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rot = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
  dst = scale * src @ rot.T + shift
  dst = dst + control_sd * jax.random.normal(k_jit, src.shape)
  return make_tps_warp(src, dst)


DVE_EVAL_WARP = dict(warpsd_all=5e-4, warpsd_subset=5e-3, transsd=0.05,
                     scalesd=0.05, rotsd=2.5)


def affine_inverse(affine: jax.Array) -> jax.Array:
  """Inverse of the affine map `p -> [1, p] @ affine`, same `[3, 2]` layout."""
  linear_inv = jnp.linalg.inv(affine[1:])
  return jnp.concatenate([-jnp.matmul(affine[:1], linear_inv), linear_inv], 0)


@functools.partial(jax.jit, static_argnames=("grid_size",))
def random_dve_warp(key: jax.Array,
                    warpsd_all: float = 5e-4,
                    warpsd_subset: float = 5e-3,
                    transsd: float = 0.05,
                    scalesd: float = 0.05,
                    rotsd: float = 2.5,
                    grid_size: int = 10) -> TpsWarp:
  """A random warp drawn as DVE draws it (`utils/tps.py`, `Warper`).

  The sampling map is `G(p) = sum_k w_k U(|p - c_k|^2) + [1, p] @ affine`
  with `c_k` the regular `grid_size ** 2` control grid (DVE: 10 x 10) and,
  as DVE's `random_tps_weights`:

    * `w_k ~ N(0, warpsd_all)` per entry, a random half of the entries
      (`uniform > 0.5`) drawn from `N(0, warpsd_subset)` instead;
    * `affine` rows `[tx, ty]`, `[s cos r, -s sin r]`, `[s sin r, s cos r]`
      with `r ~ N(0, rotsd)` degrees, `s = 1 + N(0, scalesd)`,
      `tx, ty ~ N(0, transsd)`.

  The weights do not satisfy the TPS side conditions (no fit is involved);
  lengths are normalised (1 = half the image side). DVE's kernel is
  `D log(D + 1e-5)` with `D = r^2`; `tps_kernel` is `D log D`, which moves
  `G` by at most `1e-5 * sum_k |w_k|` normalised units, far below a pixel.
  The defaults are DVE's evaluation values (`test_matching.py`: the training
  values `0.001, 0.01, 0.1, 0.1, 5` halved); all sd = 0 is the identity.

  Args:
    key: PRNG key.
    warpsd_all, warpsd_subset: sd of the kernel weights (see above).
    transsd, scalesd, rotsd: sd of translation, scale, rotation (degrees).
    grid_size: control grid side.

  Returns:
    A `TpsWarp` whose `forward` map is the inverse of the affine part (zero
    kernel weights), the Newton start of `warp_points`.
  """
  centres = control_grid(grid_size)
  k_all, k_subset, k_pick, k_rot, k_scale, k_shift = jax.random.split(key, 6)
  shape = centres.shape
  weights = jnp.where(
      jax.random.uniform(k_pick, shape) > 0.5,
      warpsd_subset * jax.random.normal(k_subset, shape),
      warpsd_all * jax.random.normal(k_all, shape))
  rot = rotsd * math.pi / 180.0 * jax.random.normal(k_rot)
  scale = 1.0 + scalesd * jax.random.normal(k_scale)
  shift = transsd * jax.random.normal(k_shift, (2,))
  cos, sin = scale * jnp.cos(rot), scale * jnp.sin(rot)
  affine = jnp.stack([shift, jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
  sampling = Tps(centres=centres, weights=weights, affine=affine)
  forward = Tps(centres=centres, weights=jnp.zeros_like(weights),
                affine=affine_inverse(affine))
  return TpsWarp(source=centres, target=apply_tps(forward, centres),
                 sampling=sampling, forward=forward)


def pixels_to_normalized(points: jax.Array,
                         image_size: Tuple[int, int]) -> jax.Array:
  """`(x, y)` pixels -> `[-1, 1]` (align_corners=True); `image_size=(H, W)`."""
  h, w = image_size
  scale = jnp.array([2.0 / (w - 1), 2.0 / (h - 1)], jnp.float32)
  return points * scale - 1.0


def normalized_to_pixels(points: jax.Array,
                         image_size: Tuple[int, int]) -> jax.Array:
  """Inverse of `pixels_to_normalized`."""
  h, w = image_size
  scale = jnp.array([(w - 1) / 2.0, (h - 1) / 2.0], jnp.float32)
  return (points + 1.0) * scale


@functools.partial(jax.jit, static_argnames=("padding",))
def bilinear_sample(image: jax.Array, points: jax.Array,
                    padding: str = "zeros") -> jax.Array:
  """Bilinear values of `image [H, W, C]` at `(x, y)` pixels `[..., 2]`.

  Pixel centres are at integers. `padding="zeros"`: the image is 0 outside
  (as `grid_sample`'s default); "border": edge values are extended.

  Returns:
    `[..., C]` in the image's float dtype (float32 for integer images).
  """
  if padding not in PADDING_MODES:
    raise ValueError(f"padding must be one of {PADDING_MODES}, got "
                     f"{padding!r}.")
  h, w = image.shape[:2]
  img = image.astype(jnp.float32) if not jnp.issubdtype(
      image.dtype, jnp.floating) else image
  x, y = points[..., 0], points[..., 1]
  if padding == "border":
    x = jnp.clip(x, 0.0, w - 1.0)
    y = jnp.clip(y, 0.0, h - 1.0)
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  fx = (x - x0)[..., None]
  fy = (y - y0)[..., None]
  x0 = x0.astype(jnp.int32)
  y0 = y0.astype(jnp.int32)

  def tap(yi, xi):
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    val = img[jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)]
    return jnp.where(inside[..., None], val, 0.0)

  return ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1)) +
          fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))


def pixel_grid(image_size: Tuple[int, int]) -> jax.Array:
  """`[H, W, 2]` float32 `(x, y)` pixel centres of an `(H, W)` image."""
  h, w = image_size
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing="ij")
  return jnp.stack([xs, ys], axis=-1)


def sampling_locations(warp: TpsWarp,
                       image_size: Tuple[int, int]) -> jax.Array:
  """`[H, W, 2]` pixels `G(y)` of the original read by each warped pixel."""
  return normalized_to_pixels(
      apply_tps(warp.sampling,
                pixels_to_normalized(pixel_grid(image_size), image_size)),
      image_size)


@functools.partial(jax.jit, static_argnames=("padding",))
def warp_image(image: jax.Array, warp: TpsWarp,
               padding: str = "zeros") -> jax.Array:
  """`J(y) = I(G(y))` on the pixel grid: `[H, W, C]` -> float `[H, W, C]`."""
  src = sampling_locations(warp, image.shape[:2])
  return bilinear_sample(image, src, padding)


def invert_tps(tps: Tps, targets: jax.Array, init: jax.Array,
               iterations: int = 8) -> Tuple[jax.Array, jax.Array]:
  """Solves `tps(y) = targets` for y by Newton's method.

  Args:
    tps: the map to invert.
    targets: `[N, 2]` values.
    init: `[N, 2]` starting points.
    iterations: static number of Newton steps.

  Returns:
    `(y [N, 2], residual [N])` with `residual = ||tps(y) - targets||`.
  """
  f = lambda p: apply_tps(tps, p)
  jac = jax.vmap(jax.jacfwd(f))

  def step(_, y):
    r = f(y) - targets
    return y - jnp.linalg.solve(jac(y), r[..., None])[..., 0]

  y = jax.lax.fori_loop(0, iterations, step, init.astype(jnp.float32))
  return y, jnp.linalg.norm(f(y) - targets, axis=-1)


@functools.partial(jax.jit, static_argnames=("image_size", "iterations",
                                             "return_residual"))
def warp_points(points: jax.Array, warp: TpsWarp,
                image_size: Tuple[int, int], iterations: int = 8,
                return_residual: bool = False):
  """Forward-maps landmarks: the `y` with `G(y) = x` for each original `x`.

  Args:
    points: `[N, 2]` `(x, y)` pixels of the original image.
    warp: the `TpsWarp` used by `warp_image`.
    image_size: `(H, W)` of the image (same for original and warped).
    iterations: Newton steps.
    return_residual: also return `||G(y) - x||` in normalised units.

  Returns:
    `[N, 2]` pixels of the warped image (and `[N]` residuals).
  """
  x = pixels_to_normalized(points.astype(jnp.float32), image_size)
  y, res = invert_tps(warp.sampling, x, apply_tps(warp.forward, x), iterations)
  y = normalized_to_pixels(y, image_size)
  return (y, res) if return_residual else y


@functools.partial(jax.jit, static_argnames=("image_size",))
def snap_points(points: jax.Array, warp: TpsWarp,
                image_size: Tuple[int, int]) -> jax.Array:
  """DVE's landmark map (`Warper.warp_keypoints`): the warped-image pixel
  whose sampling location `G(y)` is nearest to each original point.

  Args:
    points: `[N, 2]` `(x, y)` pixels of the original image.
    warp: the `TpsWarp` used by `warp_image`.
    image_size: `(H, W)`.

  Returns:
    `[N, 2]` integer-valued float32 pixels of the warped image.
  """
  grid = pixel_grid(image_size).reshape(-1, 2)
  src = sampling_locations(warp, image_size).reshape(-1, 2)
  best = jnp.argmin(_sq_dist(points.astype(jnp.float32), src), axis=-1)
  return grid[best]


@functools.partial(jax.jit, static_argnames=("image_size", "iterations"))
def warp_landmarks(points: jax.Array, warp: TpsWarp,
                   image_size: Tuple[int, int], iterations: int = 8,
                   tolerance: float = 1e-3) -> Tuple[jax.Array, jax.Array]:
  """`warp_points`, falling back to `snap_points` where Newton fails.

  Newton can fail where an original point has no preimage near the image
  (it left the frame through a fold of the map); DVE's nearest-pixel rule
  is then the only answer the protocol defines.

  Args:
    points: `[N, 2]` `(x, y)` pixels of the original image.
    warp: the `TpsWarp` used by `warp_image`.
    image_size: `(H, W)`.
    iterations: Newton steps.
    tolerance: largest accepted residual `||G(y) - x||` (normalised units).

  Returns:
    `([N, 2]` warped pixels, `[N]` bool: snapped instead of solved).
  """
  solved, res = warp_points(points, warp, image_size, iterations, True)
  snapped = ~(res <= tolerance)  # Also catches NaN residuals.
  out = jnp.where(snapped[:, None], snap_points(points, warp, image_size),
                  solved)
  return out, snapped


def warp_pair(key: jax.Array, image: jax.Array, landmarks: jax.Array,
              padding: str = "zeros", **warp_kwargs):
  """Convenience: random warp of one image and its landmarks.

  Returns:
    `(warped image [H, W, C] float, warped landmarks [N, 2], TpsWarp)`.
  """
  warp = random_tps_warp(key, **warp_kwargs)
  size = image.shape[:2]
  return (warp_image(image, warp, padding),
          warp_points(landmarks, warp, size), warp)

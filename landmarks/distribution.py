"""A heatmap as a distribution: soft-argmax, covariance, closed-form 2x2 PCA.

STAR (Zhou et al., CVPR 2023) reads each landmark's heatmap as a discrete
distribution over the decoder grid: its mean is the prediction (paper eq. 1),
its covariance (eq. 3-4) and that covariance's eigen-decomposition (eq. 5)
say how uncertain the prediction is along which direction. The STAR loss
(`star_jax.loss`), the Fig. 3 ellipses (`landmarks.plots`) and per-landmark
uncertainty at prediction time all read them from here.

Conventions:
  * Heatmaps are landmark-major `[B, N, H, W]` and non-negative (models
    compute channel-last and transpose once at their output).
  * Coordinates are `(x, y)` on the decoder grid `x = linspace(-1, 1, W)`,
    `y = linspace(-1, 1, H)` (align_corners=True, as the public decoder).
  * Low-precision inputs (bf16, f16) are upcast and everything is computed
    in float32; float64 inputs (only under `jax_enable_x64`, used by the
    gradient tests) stay float64.

Numerical choices (where we differ from, or pin down, the public code
ZhenglinZhou/STAR, lib/loss/starLoss_v2.py):
  * Eigen-decomposition: closed form for symmetric 2x2 matrices
    (`symmetric_eigh_2x2`) instead of `torch.linalg.eigh` on the CPU.
    Eigenvalues ascending, eigenvectors as columns (paper eq. 5). The public
    code indexes rows of eigh's eigenvector matrix; for 2x2 input LAPACK's
    syevd returns a symmetric eigenvector matrix (a reflection, determinant
    -1), so its rows are its columns and the public code does project on the
    eigenvectors, as we do. Only the signs differ, which no distance of the
    loss sees (all are even functions).
  * Isotropy (l1 == l2, e.g. constant or all-zero heatmaps): the
    eigenvectors are undefined. When the discriminant radius
    r = (l2 - l1) / 2 is below `8 * eps_dtype * (|a| + |c| + 2|b|)` (the
    level of rounding noise of the covariance entries) we set r = 0 and take
    the coordinate axes as eigenvectors, as LAPACK does for a diagonal
    matrix. Gradients are finite there because sqrt and atan2 are evaluated
    on safe dummy inputs behind `jnp.where`.
  * eps placement as the public code: V1 = sum p + 1e-5, V2 = sum p^2 + 1e-5
    on the heatmap normalised by max(sum, 1e-6).
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

SUM_FLOOR = 1e-6  # heatmap / max(sum, SUM_FLOOR), as the public decoder.


# ----------------------------------------------------------------------------
# Input handling.


def compute_dtype(x) -> jnp.dtype:
  """float32 for low-precision or integer inputs, float64 stays float64."""
  dtype = jnp.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.promote_types(dtype, jnp.float32)
  return jnp.dtype(jnp.float32)


def as_compute(x) -> jax.Array:
  x = jnp.asarray(x)
  return x.astype(compute_dtype(x))


def is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_rank(x, rank: int, name: str, layout: str) -> None:
  ndim = jnp.ndim(x)
  if ndim != rank:
    raise ValueError(
        f"{name} must have rank {rank} with layout {layout}; got shape "
        f"{tuple(jnp.shape(x))}.")


def check_heatmaps(heatmaps, name: str = "heatmaps",
                   allow_negative: bool = False) -> None:
  """Raises ValueError unless `heatmaps` is `[B, N, H, W]`, H, W >= 2, >= 0.

  Shapes are checked always (static under jit); negativity only when the
  array is concrete (not a tracer), since values are unknown while tracing.
  """
  check_rank(heatmaps, 4, name, "[B, N, H, W] (landmark-major; transpose "
              "channel-last model outputs with jnp.moveaxis(x, -1, 1))")
  h, w = jnp.shape(heatmaps)[2:]
  if h < 2 or w < 2:
    raise ValueError(f"{name} must be at least 2x2 spatially (the grid is "
                     "linspace(-1, 1, size)); got shape "
                     f"{tuple(jnp.shape(heatmaps))}.")
  if not allow_negative and is_concrete(heatmaps):
    if bool(jnp.any(jnp.asarray(heatmaps) < 0)):
      raise ValueError(
          f"{name} must be non-negative (they are normalised into "
          "distributions); apply ReLU/softplus/sigmoid first. Got minimum "
          f"{float(jnp.min(jnp.asarray(heatmaps)))}.")


def check_landmarks(landmarks, heatmaps, name: str = "landmarks") -> None:
  check_rank(landmarks, 3, name, "[B, N, 2] (x, y)")
  b, n = jnp.shape(heatmaps)[:2]
  if tuple(jnp.shape(landmarks)) != (b, n, 2):
    raise ValueError(
        f"{name} must have shape [B, N, 2] = {(b, n, 2)} to match heatmaps "
        f"{tuple(jnp.shape(heatmaps))}; got {tuple(jnp.shape(landmarks))}.")


# ----------------------------------------------------------------------------
# Decoding: normalisation, grid, soft-argmax (paper eq. 1).


def coordinate_grid(height: int, width: int, dtype=jnp.float32):
  """Grid of the decoder: `(xs [W], ys [H])`, both `linspace(-1, 1, size)`."""
  return (jnp.linspace(-1.0, 1.0, width, dtype=dtype),
          jnp.linspace(-1.0, 1.0, height, dtype=dtype))


def normalize_heatmaps(heatmaps: jax.Array) -> jax.Array:
  """`heatmaps / max(sum over H, W, 1e-6)`: `[B, N, H, W]` -> same shape."""
  total = jnp.sum(heatmaps, axis=(-2, -1), keepdims=True)
  return heatmaps / jnp.maximum(total, SUM_FLOOR)


def weighted_mean(probs: jax.Array) -> jax.Array:
  """Eq. 1 on normalised heatmaps `[B, N, H, W]` -> `[B, N, 2]` (x, y)."""
  xs, ys = coordinate_grid(*probs.shape[-2:], dtype=probs.dtype)
  mean_x = jnp.sum(probs, axis=-2) @ xs  # Marginal over rows, then E[x].
  mean_y = jnp.sum(probs, axis=-1) @ ys
  return jnp.stack([mean_x, mean_y], axis=-1)


def soft_argmax(heatmaps) -> jax.Array:
  """Soft-argmax, paper eq. 1: `[B, N, H, W]` (>= 0) -> `[B, N, 2]` (x, y).

  The heatmap is divided by `max(sum, 1e-6)` and the expectation of the grid
  `linspace(-1, 1, W) x linspace(-1, 1, H)` is returned.
  """
  check_heatmaps(heatmaps)
  return weighted_mean(normalize_heatmaps(as_compute(heatmaps)))


# ----------------------------------------------------------------------------
# PCA of the discrete distribution (paper eq. 3-5).


class DistributionPCA(NamedTuple):
  """Mean, covariance and its eigen-decomposition per landmark.

  Attributes:
    mean: `[B, N, 2]` (x, y), eq. 1.
    covariance: `[B, N, 2, 2]`, unbiased weighted covariance, eq. 4.
    eigenvalues: `[B, N, 2]`, ascending (l1 <= l2).
    eigenvectors: `[B, N, 2, 2]`, column i is the unit eigenvector of
      eigenvalue i (eq. 5, V = [v1, v2]).
  """
  mean: jax.Array
  covariance: jax.Array
  eigenvalues: jax.Array
  eigenvectors: jax.Array


def unbiased_weighted_covariance(probs: jax.Array, mean: jax.Array,
                                 eps: float = 1e-5) -> jax.Array:
  """Paper eq. 4: `sum p (g - mu)(g - mu)^T / (V1 - V2 / V1)`.

  Args:
    probs: normalised heatmaps `[B, N, H, W]`.
    mean: `[B, N, 2]` (x, y) weighted mean of `probs`.
    eps: added to V1 = sum p and V2 = sum p^2 (public code: 1e-5).

  Returns:
    `[B, N, 2, 2]` covariance, rows/columns ordered (x, y).
  """
  xs, ys = coordinate_grid(*probs.shape[-2:], dtype=probs.dtype)
  dx = xs - mean[..., 0:1]  # [B, N, W]
  dy = ys - mean[..., 1:2]  # [B, N, H]
  sxx = jnp.sum(jnp.sum(probs, axis=-2) * dx * dx, axis=-1)
  syy = jnp.sum(jnp.sum(probs, axis=-1) * dy * dy, axis=-1)
  sxy = jnp.einsum("...hw,...h,...w->...", probs, dy, dx)
  v1 = jnp.sum(probs, axis=(-2, -1)) + eps
  v2 = jnp.sum(probs * probs, axis=(-2, -1)) + eps
  denominator = v1 - v2 / v1
  cov = jnp.stack([jnp.stack([sxx, sxy], -1), jnp.stack([sxy, syy], -1)], -2)
  return cov / denominator[..., None, None]


def symmetric_eigh_2x2(matrix) -> Tuple[jax.Array, jax.Array]:
  """Closed-form eigen-decomposition of symmetric 2x2 matrices (eq. 5).

  For S = [[a, b], [b, c]]: l = (a + c) / 2 -/+ r with
  r = sqrt(((a - c) / 2)^2 + b^2); the eigenvector of the smaller eigenvalue is
  at angle phi = atan2(-2b, c - a) / 2 and the other is it turned by +90
  degrees. Below the isotropy threshold (module
  docstring) r is 0 and the eigenvectors are the coordinate axes; sqrt and
  atan2 see safe dummy inputs there so values and gradients stay finite.

  Args:
    matrix: `[..., 2, 2]` symmetric (the off-diagonal is symmetrised).

  Returns:
    eigenvalues `[..., 2]` ascending, eigenvectors `[..., 2, 2]` as columns
    (`eigenvectors[..., :, i]` belongs to `eigenvalues[..., i]`).
  """
  matrix = as_compute(matrix)
  if matrix.shape[-2:] != (2, 2):
    raise ValueError(f"matrix must have shape [..., 2, 2]; got {matrix.shape}.")
  a = matrix[..., 0, 0]
  c = matrix[..., 1, 1]
  b = 0.5 * (matrix[..., 0, 1] + matrix[..., 1, 0])
  half_trace = 0.5 * (a + c)
  half_diff = 0.5 * (a - c)
  radius_sq = half_diff * half_diff + b * b
  tol = 8.0 * jnp.finfo(matrix.dtype).eps * (jnp.abs(a) + jnp.abs(c)
                                             + 2.0 * jnp.abs(b))
  distinct = radius_sq > tol * tol + jnp.finfo(matrix.dtype).tiny
  radius = jnp.where(distinct, jnp.sqrt(jnp.where(distinct, radius_sq, 1.0)),
                     0.0)
  eigenvalues = jnp.stack([half_trace - radius, half_trace + radius], axis=-1)
  # Angle of the minor axis (the major axis of -S); the dummy (1, 0) gives
  # angle 0, i.e. the identity (coordinate axes) when isotropic.
  phi = 0.5 * jnp.arctan2(jnp.where(distinct, -b, 0.0),
                          jnp.where(distinct, -half_diff, 1.0))
  cos, sin = jnp.cos(phi), jnp.sin(phi)
  # Columns: v1 = (cos, sin) (minor axis), v2 = (-sin, cos) (major axis).
  eigenvectors = jnp.stack([jnp.stack([cos, sin], -1),
                            jnp.stack([-sin, cos], -1)], axis=-1)
  return eigenvalues, eigenvectors


def distribution_pca(heatmaps, eps: float = 1e-5) -> DistributionPCA:
  """PCA of each heatmap as a discrete distribution (paper eq. 1, 3-5).

  Args:
    heatmaps: `[B, N, H, W]`, non-negative; normalised by `max(sum, 1e-6)`.
    eps: the V1/V2 epsilon of eq. 4 (public code: 1e-5).

  Returns:
    `DistributionPCA(mean [B, N, 2], covariance [B, N, 2, 2],
    eigenvalues [B, N, 2] ascending, eigenvectors [B, N, 2, 2] as columns)`.
  """
  check_heatmaps(heatmaps)
  # Materialise the input before the reductions: when it is the transpose of
  # a channel-last model output, XLA (CPU) otherwise fuses the transpose into
  # every reduction and the loss gets several times slower
  # (bench/star_loss.py); a no-op for contiguous [B, N, H, W] input.
  heatmaps = jax.lax.optimization_barrier(as_compute(heatmaps))
  probs = normalize_heatmaps(heatmaps)
  mean = weighted_mean(probs)
  covariance = unbiased_weighted_covariance(probs, mean, eps)
  eigenvalues, eigenvectors = symmetric_eigh_2x2(covariance)
  return DistributionPCA(mean, covariance, eigenvalues, eigenvectors)

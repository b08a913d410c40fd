"""STAR for coordinate regression: a mean + covariance head and its losses.

This is our own formulation, not the STAR paper's. The paper (Zhou et al.,
CVPR 2023) defines STAR on heatmaps: the heatmap's mean mu (eq. 1) and
covariance Sigma (eq. 3-4) give the ambiguity directions. A coordinate
regressor has no heatmap, so here the head predicts, per landmark, a mean and
a covariance directly, and STAR's decomposition is applied to the predicted
covariance. The same closed-form eigen-decomposition, distances and
restriction as the heatmap loss are used (`star_jax.loss`), so with the mean
and covariance of a heatmap the two losses are equal.

Per landmark, with the target y and e = y - mu in the normalised crop frame
[-1, 1] of the heatmap loss's ground truth (`landmarks.coordinates.
normalise_landmarks`, align_corners=False, clamped):

  (R1) Sigma = L L^T, L = [[l11, 0], [l21, l22]],
       l11 = min(min_std + softplus(p0), max_std),
       l22 = min(min_std + softplus(p2), max_std),
       l21 = l22 * rho, rho = max_ratio * tanh(p1 / max_ratio).
       So sigma_x = l11, sigma_y = l22 sqrt(1 + rho^2) and the correlation is
       rho / sqrt(1 + rho^2); det Sigma = (l11 l22)^2 > 0 and
       det / (Sigma_xx Sigma_yy) = 1 / (1 + rho^2) >= 1 / (1 + max_ratio^2),
       which keeps Sigma positive definite after float32 rounding too.
  (R2) Sigma = V diag(l1, l2) V^T by
       `landmarks.distribution.symmetric_eigh_2x2` (eq. 5's closed form,
       eigenvalues ascending, eigenvectors as columns).
  (R3) STAR_reg = sum_i d(v_i^T e) / sqrt(l_i + eps) + w R(l)
       (eq. 6 on the predicted Sigma; R = |l1| + |l2| ("code") or
       (l1 + l2) / 2 ("paper", eq. 7)).
  (R4) NLL = 0.5 e^T Sigma^-1 e + 0.5 log det Sigma + log(2 pi)
       (the 2-D Gaussian negative log-likelihood).
  (R5) the eq. 2 baseline on mu alone (smooth-L1 of |e| by default).

Why the restriction matters more here: in the heatmap loss Sigma is tied to
the same heatmap as mu and cannot grow without the heatmap spreading over the
grid; here it is a free output. For a fixed error, d / sqrt(l) + w l has its
minimum at l = (d / (2 w))^(2/3) (d in its linear part), so with
restriction="value" the eigenvalues stay finite; without it (restriction=
"none") the loss goes to 0 as l -> infinity and is refused. With
restriction="detach" eigenvalues and eigenvectors are constants of the loss,
so the covariance outputs get no gradient at all and keep their initial
values (the mean is then fitted with a fixed, untrained weighting).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from landmarks import distribution
from star_jax import layers
from star_jax import loss as loss_lib

Dtype = Any

MIN_STD = 1e-3     # normalised units: 1e-3 of a half crop.
MAX_STD = 1e2      # normalised units; only a guard against overflow.
MAX_RATIO = 1e2    # |l21| / l22 bound: |correlation| < 0.99995.
INIT_STD = 0.1     # the head's initial sigma_x = sigma_y.
RESTRICTIONS = ("value", "detach")


# ----------------------------------------------------------------------------
# (R1) Cholesky parameterisation.


def cholesky_covariance(params, min_std: float = MIN_STD,
                        max_std: float = MAX_STD,
                        max_ratio: float = MAX_RATIO):
  """(R1): `[..., 3]` raw (p0, p1, p2) -> (L `[..., 2, 2]`, Sigma `[..., 2, 2]`).

  L is lower triangular with diagonal `min(min_std + softplus(p), max_std)`
  and `L[1, 0] = L[1, 1] * max_ratio * tanh(p1 / max_ratio)`; Sigma = L L^T
  is positive definite for every finite or infinite input (module docstring).

  Args:
    params: `[..., 3]` raw head outputs.
    min_std: lower bound of the diagonal of L (> 0).
    max_std: upper bound of the diagonal of L.
    max_ratio: bound of |L[1, 0]| / L[1, 1].

  Returns:
    (L, Sigma), float32 (float64 for float64 input).
  """
  if not 0 < min_std < max_std:
    raise ValueError(f"need 0 < min_std < max_std; got {min_std}, {max_std}.")
  params = distribution.as_compute(params)
  if params.shape[-1] != 3:
    raise ValueError(f"params must be [..., 3]; got {params.shape}.")
  l11 = jnp.minimum(min_std + jax.nn.softplus(params[..., 0]), max_std)
  l22 = jnp.minimum(min_std + jax.nn.softplus(params[..., 2]), max_std)
  l21 = l22 * (max_ratio * jnp.tanh(params[..., 1] / max_ratio))
  zero = jnp.zeros_like(l11)
  chol = jnp.stack([jnp.stack([l11, zero], -1), jnp.stack([l21, l22], -1)], -2)
  cov = jnp.stack([
      jnp.stack([l11 * l11, l11 * l21], -1),
      jnp.stack([l11 * l21, l21 * l21 + l22 * l22], -1)], -2)
  return chol, cov


def inverse_softplus(y: float) -> float:
  """x with softplus(x) = y (y > 0), for initialising the diagonal."""
  return float(y + np.log(-np.expm1(-y)))


# ----------------------------------------------------------------------------
# (R3) STAR on a predicted covariance.


def _check_moments(mean, covariance, target) -> None:
  mean_shape = tuple(jnp.shape(mean))
  if mean_shape[-1:] != (2,) or tuple(jnp.shape(target)) != mean_shape:
    raise ValueError(f"mean and target must both be [..., 2] (x, y); got "
                     f"{mean_shape} and {tuple(jnp.shape(target))}.")
  if tuple(jnp.shape(covariance)) != mean_shape + (2,):
    raise ValueError(f"covariance must be [..., 2, 2] = {mean_shape + (2,)}; "
                     f"got {tuple(jnp.shape(covariance))}.")


def star_regression_loss_per_point(
    mean, covariance, target, *, distance: str = "smooth_l1", w: float = 1.0,
    restriction: str = "value", value_form: str = "code", eps: float = 1e-5,
    eigenvalue_clamp: Optional[Sequence[float]] = None) -> jax.Array:
  """(R3): STAR's eq. 6 (+ restriction) on a given mean and covariance.

  `loss.star_loss_from_moments`, the part of the heatmap STAR loss after
  its PCA (one code path), on the predicted mean and covariance.

  Args:
    mean: `[..., 2]` predicted (x, y) mu.
    covariance: `[..., 2, 2]` predicted Sigma (symmetric PSD).
    target: `[..., 2]` ground truth y on the scale of `mean`.
    distance: d, one of `loss.DISTANCES`.
    w: weight of the restriction.
    restriction: "value" (adds `w * R(l)`) or "detach" (stop_gradient on
      eigenvalues and eigenvectors, nothing added); "none" is refused (the
      loss would fall to 0 as the covariance grows, module docstring).
    value_form: "code" `|l1| + |l2|` or "paper" `(l1 + l2) / 2`.
    eps: the epsilon under the square root.
    eigenvalue_clamp: optional `(low, high)` clamp of the eigenvalues.

  Returns:
    `[...]` per-landmark loss.
  """
  loss_lib.distance_fn(distance)
  try:
    loss_lib.check_star_options(restriction, value_form, eigenvalue_clamp,
                                RESTRICTIONS)
  except ValueError as e:
    raise ValueError(
        f"{e} (for a predicted covariance: without the value restriction "
        "the loss decreases without bound as the covariance grows)") from e
  _check_moments(mean, covariance, target)
  return loss_lib.star_loss_from_moments(
      mean, covariance, target, distance=distance, w=w,
      restriction=restriction, value_form=value_form, eps=eps,
      eigenvalue_clamp=eigenvalue_clamp)


def star_regression_loss(mean, covariance, target, **kwargs) -> jax.Array:
  """(R3) averaged over all leading axes (B, N); kwargs as the per-point."""
  return jnp.mean(star_regression_loss_per_point(mean, covariance, target,
                                                 **kwargs))


# ----------------------------------------------------------------------------
# (R4) Gaussian NLL, (R5) the mean-only baseline.


def gaussian_nll_per_point(mean, covariance, target) -> jax.Array:
  """(R4): `0.5 e^T Sigma^-1 e + 0.5 log det Sigma + log(2 pi)`, `[...]`.

  The 2x2 inverse and determinant in closed form; Sigma must be positive
  definite (`cholesky_covariance` guarantees it).
  """
  _check_moments(mean, covariance, target)
  covariance = distribution.as_compute(covariance)
  e = jnp.asarray(target).astype(covariance.dtype) - mean.astype(
      covariance.dtype)
  a, c = covariance[..., 0, 0], covariance[..., 1, 1]
  b = 0.5 * (covariance[..., 0, 1] + covariance[..., 1, 0])
  det = a * c - b * b
  ex, ey = e[..., 0], e[..., 1]
  mahalanobis = (c * ex * ex - 2.0 * b * ex * ey + a * ey * ey) / det
  return 0.5 * mahalanobis + 0.5 * jnp.log(det) + np.log(2.0 * np.pi)


def gaussian_nll(mean, covariance, target) -> jax.Array:
  """(R4) averaged over all leading axes (B, N)."""
  return jnp.mean(gaussian_nll_per_point(mean, covariance, target))


def smooth_l1_mean_loss(mean, target, *, distance: str = "smooth_l1",
                        on: str = "norm") -> jax.Array:
  """(R5): the paper's eq. 2 baseline on the head's mean, `[B, N, 2]` input.

  `loss.coordinate_loss` itself (smooth-L1 with s = 0.01 of the error's norm
  by default), so the regression baseline and the heatmap baseline share
  one definition.
  """
  return loss_lib.coordinate_loss(mean, target, distance=distance, on=on)


# ----------------------------------------------------------------------------
# The head.


class RegressionHead(nn.Module):
  """Feature map -> per landmark mean (R5 frame) and covariance (R1).

  Stride-2 3x3 convs (+ BatchNorm + ReLU) shrink the map until its side is at
  most `pooled_size`; the map is then flattened (keeping where features are,
  which a global pool would lose) and one Dense layer gives 5 numbers per
  landmark: (x, y) of the mean in the normalised crop frame and the Cholesky
  parameters (p0, p1, p2). The Dense kernel starts small, so the first
  predictions are near the bias: mean (0, 0) (the crop centre) and
  sigma_x = sigma_y = `init_std`.

  Attributes:
    num_points: N landmarks.
    width: channels of the strided convs.
    pooled_size: largest side of the flattened map.
    min_std, max_std, max_ratio: `cholesky_covariance`'s bounds.
    init_std: initial standard deviation (normalised units).
    dtype: compute dtype of the convs; the Dense layer and the outputs are
      float32.
  """
  num_points: int
  width: int = 256
  pooled_size: int = 4
  min_std: float = MIN_STD
  max_std: float = MAX_STD
  max_ratio: float = MAX_RATIO
  init_std: float = INIT_STD
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> Dict[str, jax.Array]:
    """`[B, h, h, C]` -> "mean" `[B, N, 2]`, "cholesky" and "covariance"
    `[B, N, 2, 2]` (float32)."""
    x = features.astype(self.dtype)
    i = 0
    while x.shape[1] > self.pooled_size or x.shape[2] > self.pooled_size:
      x = layers.conv_kxk(self.width, 3, x.shape[-1], 2, self.dtype,
                          name=f"conv_{i}")(x)
      x = nn.relu(layers.batch_norm(train, self.dtype, f"bn_{i}")(x))
      i += 1
    # The Dense layer in float32 even under bfloat16: its outputs are the
    # coordinates themselves (bf16 would round them to ~1/256 of the crop).
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    diag = inverse_softplus(self.init_std - self.min_std)
    bias = np.tile(np.array([0.0, 0.0, diag, 0.0, diag], np.float32),
                   self.num_points)
    out = nn.Dense(
        5 * self.num_points, dtype=jnp.float32, param_dtype=jnp.float32,
        kernel_init=nn.initializers.variance_scaling(1e-2, "fan_in",
                                                     "truncated_normal"),
        bias_init=lambda *_: jnp.asarray(bias), name="dense")(x)
    out = out.astype(jnp.float32).reshape(x.shape[0], self.num_points, 5)
    chol, cov = cholesky_covariance(out[..., 2:], self.min_std, self.max_std,
                                    self.max_ratio)
    return {"mean": out[..., :2], "cholesky": chol, "covariance": cov}

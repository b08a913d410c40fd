"""STAR loss (Zhou et al., CVPR 2023), its distances and companion losses.

Heatmaps, the decoder grid, dtypes and the heatmap PCA (eq. 1, 3-5, the
closed-form 2x2 eigen-decomposition and its isotropy rule) are those of
`landmarks.distribution`. Ground truth handed to `star_loss` must already be
on the decoder scale [-1, 1] (the public code normalises ground truth with
align_corners=False, `(2p + 1) / S - 1`; that is the data pipeline's job,
not this module's).

Numerical choices of the loss (where we differ from, or pin down, the public
code ZhenglinZhou/STAR, lib/loss/starLoss_v2.py):
  * At isotropy (l1 == l2, eigenvectors = the coordinate axes by
    convention) both terms of eq. 6 share the scale 1/sqrt(l + eps), so the
    loss only depends on the basis through d: for `distance="l2"` the sum is
    rotation invariant (e^T (S + eps I)^(-1/2) e) and the choice does not
    matter; for l1, smooth-l1, Wing and AWing it does, and the loss is the
    axis-aligned value. Near (but not at) isotropy the exact gradient of the
    eigenvectors grows like 1 / (l2 - l1) for the non-rotation-invariant
    distances; this is a property of eq. 6, not of the implementation (the
    public eigh backward has the same 1 / (l2 - l1) factor). At exactly
    l1 == l2 the gradient is a convention (eigenvalues follow the trace,
    eigenvectors fixed), except for `distance="l2"`, where eq. 6 is the
    smooth `e^T (S + eps I)^(-1/2) e` and we evaluate it in that form
    (`inverse_sqrt_quadratic_form`, same value) so that its gradient is
    exact there too (used whenever S is PSD and no eigenvalue clamp is set).
  * eps placement as the public code: `d(v_i^T e) / sqrt(l_i + eps)`,
    eps = 1e-5.
  * Eigenvalues are floored at 0 inside the square root only (always on,
    needed for finiteness): a covariance is PSD, negative values come from
    rounding or from heatmaps whose raw sum is below 1e-6, where
    V1 - V2/V1 < 0 and the public code takes the square root of a negative
    number (NaN).
  * Optional `eigenvalue_clamp=(lo, hi)` (off by default): clamps both
    eigenvalues before they enter eq. 6 and the restriction, as the authors
    suggest in their issue #37 (`(1e-6, 1e2)`) against huge eigenvalues on
    the first steps. Not needed for finiteness on one-hot, constant or
    all-zero heatmaps.
  * Degenerate heatmaps give finite but very large gradients, the exact
    derivatives of the public formula: all-zero or one-hot maps have l = 0,
    where d/dl (l + 1e-5)^(-1/2) is about -1.6e7, and the sum floor 1e-6 and
    V1 - V2/V1 = 1e-5 multiply that by up to 1e6 (|grad| ~ 1e12 in the
    tests). A clamp with low > 0 (e.g. (1e-6, 1e2)) cuts the eigenvalue part
    of that gradient to zero below `low`.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from landmarks import distribution

DISTANCES = ("l1", "l2", "smooth_l1", "wing", "awing")
RESTRICTIONS = ("value", "detach", "none")
VALUE_FORMS = ("code", "paper")


# ----------------------------------------------------------------------------
# Distances d(.) (elementwise, no reduction).


def l1_distance(e: jax.Array) -> jax.Array:
  """|e|."""
  return jnp.abs(e)


def l2_distance(e: jax.Array) -> jax.Array:
  """e^2 (squared, as torch's mse_loss used by the public code)."""
  return e * e


def smooth_l1_distance(e: jax.Array, s: float = 0.01) -> jax.Array:
  """Paper eq. 8: `0.5 / s * e^2` if `|e| < s` else `|e| - 0.5 s` (s = 0.01)."""
  sq = e * e
  return jnp.where(sq < s * s, (0.5 / s) * sq, jnp.abs(e) - 0.5 * s)


def wing_distance(e: jax.Array, omega: float = 0.01,
                  epsilon: float = 2.0) -> jax.Array:
  """Wing (Feng et al. 2018): `omega ln(1 + |e|/epsilon)` if `|e| < omega`
  else `|e| - C`, C = omega - omega ln(1 + omega/epsilon).

  Defaults are those of the public WingLoss (omega 0.01, epsilon 2, for
  coordinates in [-1, 1]).
  """
  x = jnp.abs(e)
  c = omega - omega * np.log1p(omega / epsilon)
  return jnp.where(x < omega, omega * jnp.log1p(x / epsilon), x - c)


def _awing(delta, target, omega, theta, epsilon, alpha):
  """Adaptive Wing (Wang et al. 2019) on |error| `delta` and target `target`."""
  power = alpha - target
  ratio = theta / epsilon
  ratio_pow = jnp.exp(power * np.log(ratio))  # (theta/eps)^power, one exp.
  a = (omega / (1.0 + ratio_pow)) * power * (ratio_pow / ratio) / epsilon
  c = theta * a - omega * jnp.log1p(ratio_pow)
  # (delta/eps)^power as exp(power * log(.)), 0 at delta = 0 (power > 1 for
  # targets below alpha - 1, so value and slope are 0 there): cheaper than pow.
  positive = delta > 0
  log_delta = jnp.log(jnp.where(positive, delta, 1.0) / epsilon)
  delta_pow = jnp.where(positive, jnp.exp(power * log_delta), 0.0)
  small = omega * jnp.log1p(delta_pow)
  return jnp.where(delta < theta, small, a * delta - c)


def awing_distance(e: jax.Array, omega: float = 14.0, theta: float = 0.5,
                   epsilon: float = 1.0, alpha: float = 2.1) -> jax.Array:
  """Adaptive Wing on a scalar error, with target value 0 (exponent alpha).

  The public code has no AWing distance for coordinates; this is AWing's
  formula at y = 0 with the heatmap defaults (omega 14, theta 0.5,
  epsilon 1, alpha 2.1).
  """
  return _awing(jnp.abs(e), 0.0, omega, theta, epsilon, alpha)


_DISTANCE_FNS = {
    "l1": l1_distance,
    "l2": l2_distance,
    "smooth_l1": smooth_l1_distance,
    "wing": wing_distance,
    "awing": awing_distance,
}


def distance_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """The elementwise distance called `name` (one of `DISTANCES`)."""
  if name not in _DISTANCE_FNS:
    raise ValueError(f"unknown distance {name!r}; expected one of {DISTANCES}.")
  return _DISTANCE_FNS[name]


def coordinate_loss(pred, target, *, distance: str = "smooth_l1",
                    on: str = "norm") -> jax.Array:
  """Regression baseline, paper eq. 2: mean over B, N of d(y_t - mu).

  Args:
    pred: `[B, N, 2]` predicted coordinates (e.g. `soft_argmax(heatmaps)`).
    target: `[B, N, 2]` ground truth on the same scale.
    distance: one of `DISTANCES`.
    on: "norm" applies d to the Euclidean norm of the 2D error (what the public
      SmoothL1Loss / WingLoss do); "coordinates" applies d to each coordinate
      and averages them too (what the public l1 / l2 baseline, torch's
      l1_loss / mse_loss, does).

  Returns:
    scalar float32.
  """
  fn = distance_fn(distance)
  distribution.check_rank(pred, 3, "pred", "[B, N, 2] (x, y)")
  pred_shape, target_shape = tuple(jnp.shape(pred)), tuple(jnp.shape(target))
  if pred_shape != target_shape or pred_shape[-1] != 2:
    raise ValueError(f"pred and target must both be [B, N, 2]; got "
                     f"{pred_shape} and {target_shape}.")
  err = distribution.as_compute(target) - distribution.as_compute(pred)
  if on == "coordinates":
    return jnp.mean(fn(err))
  if on != "norm":
    raise ValueError(f"on must be 'norm' or 'coordinates'; got {on!r}.")
  sq = jnp.sum(err * err, axis=-1)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return jnp.mean(fn(norm))


# ----------------------------------------------------------------------------
# STAR loss (paper eq. 6-7).


def ambiguity_guided_decomposition(error: jax.Array, eigenvalues: jax.Array,
                                   eigenvectors: jax.Array,
                                   distance: Callable[[jax.Array], jax.Array],
                                   eps: float = 1e-5) -> jax.Array:
  """Paper eq. 6: `sum_i d(v_i^T e) / sqrt(l_i + eps)`.

  Args:
    error: `[..., 2]` e = y_t - mu.
    eigenvalues: `[..., 2]`.
    eigenvectors: `[..., 2, 2]` as columns.
    distance: elementwise d.
    eps: added under the square root (public code: 1e-5). Eigenvalues are
      floored at 0 there (see module docstring).

  Returns:
    `[...]` per-landmark loss.
  """
  projected = jnp.einsum("...ki,...k->...i", eigenvectors, error)
  scale = jax.lax.rsqrt(jnp.maximum(eigenvalues, 0.0) + eps)
  return jnp.sum(distance(projected) * scale, axis=-1)


def inverse_sqrt_quadratic_form(error: jax.Array, covariance: jax.Array,
                                eps: float = 1e-5) -> jax.Array:
  """`e^T (S + eps I)^(-1/2) e`: eq. 6 with d = e^2, without eigenvectors.

  For a 2x2 SPD X with eigenvalues x1, x2, X^(-1/2) = alpha I + beta X with
  beta = -1 / (sqrt(x1 x2) (sqrt(x1) + sqrt(x2))) and
  alpha = (sqrt(x1 x2) + x1 + x2) / (sqrt(x1 x2) (sqrt(x1) + sqrt(x2))):
  only trace and determinant appear, so value and gradient are smooth at
  x1 == x2, where the eigenvector route has to pick a basis. Requires
  det(X) > 0 (callers select it only where S is PSD).

  Args:
    error: `[..., 2]`.
    covariance: `[..., 2, 2]` symmetric.
    eps: added to the diagonal.

  Returns:
    `[...]`.
  """
  a = covariance[..., 0, 0] + eps
  c = covariance[..., 1, 1] + eps
  b = 0.5 * (covariance[..., 0, 1] + covariance[..., 1, 0])
  trace = a + c
  det = a * c - b * b
  positive = (det > 0) & (trace > 0)  # Dummies keep unused lanes finite.
  root_det = jnp.sqrt(jnp.where(positive, det, 1.0))
  sum_roots = jnp.sqrt(jnp.where(positive, trace, 1.0) + 2.0 * root_det)
  denominator = root_det * sum_roots
  ex, ey = error[..., 0], error[..., 1]
  quad = a * ex * ex + 2.0 * b * ex * ey + c * ey * ey
  return ((root_det + trace) * (ex * ex + ey * ey) - quad) / denominator


def value_restriction(eigenvalues: jax.Array, form: str = "code") -> jax.Array:
  """Eigenvalue restriction: "paper" (eq. 7) (l1 + l2) / 2, "code" |l1|+|l2|.

  `[..., 2]` -> `[...]`.
  """
  if form == "code":
    return jnp.sum(jnp.abs(eigenvalues), axis=-1)
  if form == "paper":
    return 0.5 * jnp.sum(eigenvalues, axis=-1)
  raise ValueError(f"value_form must be one of {VALUE_FORMS}; got {form!r}.")


def check_star_options(restriction: str, value_form: str,
                       eigenvalue_clamp: Optional[Sequence[float]],
                       restrictions: Sequence[str] = RESTRICTIONS) -> None:
  """ValueError unless the STAR options are valid (`restrictions`: allowed)."""
  if restriction not in restrictions:
    raise ValueError(f"restriction must be one of {tuple(restrictions)}; got "
                     f"{restriction!r}.")
  if value_form not in VALUE_FORMS:
    raise ValueError(f"value_form must be one of {VALUE_FORMS}; got "
                     f"{value_form!r}.")
  if eigenvalue_clamp is not None and (
      len(eigenvalue_clamp) != 2 or eigenvalue_clamp[0] > eigenvalue_clamp[1]):
    raise ValueError("eigenvalue_clamp must be None or (low, high) with "
                     "low <= high, e.g. (1e-6, 1e2); got "
                     f"{eigenvalue_clamp!r}.")


def star_loss_from_moments(mean, covariance, target, *,
                           distance: str = "smooth_l1", w: float = 1.0,
                           restriction: str = "value",
                           value_form: str = "code", eps: float = 1e-5,
                           eigenvalue_clamp: Optional[Sequence[float]] = None
                           ) -> jax.Array:
  """Eq. 6 (+ eq. 7) on a given mean and covariance, per landmark `[...]`.

  The part of STAR after the heatmap PCA: the covariance's closed-form
  eigen-decomposition, the optional clamp, the detach restriction, eq. 6
  (in the exact `e^T (S + eps I)^(-1/2) e` form for distance "l2") and the
  value restriction. `star_loss_per_point` feeds it a heatmap's moments,
  `star_jax.regression` predicted ones. Options as `star_loss`; they are
  not validated here (`check_star_options`).

  Args:
    mean: `[..., 2]` (x, y) mu.
    covariance: `[..., 2, 2]` symmetric Sigma, on the scale of `mean`.
    target: `[..., 2]` ground truth.
  """
  dist = distance_fn(distance)
  covariance = distribution.as_compute(covariance)
  mean = jnp.asarray(mean).astype(covariance.dtype)
  eigenvalues, eigenvectors = distribution.symmetric_eigh_2x2(covariance)
  psd = eigenvalues[..., 0] >= 0
  if eigenvalue_clamp is not None:
    low, high = eigenvalue_clamp
    eigenvalues = jnp.clip(eigenvalues, low, high)
  if restriction == "detach":
    eigenvalues = jax.lax.stop_gradient(eigenvalues)
    eigenvectors = jax.lax.stop_gradient(eigenvectors)
  error = distribution.as_compute(target).astype(mean.dtype) - mean
  loss = ambiguity_guided_decomposition(error, eigenvalues, eigenvectors, dist,
                                        eps)
  if distance == "l2" and eigenvalue_clamp is None:
    # Same value, but differentiable at l1 == l2 (see module docstring).
    if restriction == "detach":
      covariance = jax.lax.stop_gradient(covariance)
    loss = jnp.where(psd, inverse_sqrt_quadratic_form(error, covariance, eps),
                     loss)
  if restriction == "value":
    loss = loss + w * value_restriction(eigenvalues, value_form)
  return loss


def star_loss_per_point(heatmaps, landmarks, *, distance: str = "smooth_l1",
                        w: float = 1.0, restriction: str = "value",
                        value_form: str = "code", eps: float = 1e-5,
                        eigenvalue_clamp: Optional[Sequence[float]] = None
                        ) -> jax.Array:
  """STAR loss per landmark, `[B, N]` (see `star_loss` for the arguments)."""
  distance_fn(distance)
  check_star_options(restriction, value_form, eigenvalue_clamp)
  distribution.check_heatmaps(heatmaps)
  distribution.check_landmarks(landmarks, heatmaps)
  pca = distribution.distribution_pca(heatmaps, eps)
  return star_loss_from_moments(
      pca.mean, pca.covariance, landmarks, distance=distance, w=w,
      restriction=restriction, value_form=value_form, eps=eps,
      eigenvalue_clamp=eigenvalue_clamp)


def star_loss(heatmaps, landmarks, *, distance: str = "smooth_l1",
              w: float = 1.0, restriction: str = "value",
              value_form: str = "code", eps: float = 1e-5,
              eigenvalue_clamp: Optional[Sequence[float]] = None) -> jax.Array:
  """STAR loss, paper eq. 6 (+ eq. 7), mean over batch and landmarks.

  Args:
    heatmaps: `[B, N, H, W]` non-negative (e.g. the AAM-fused heatmaps).
    landmarks: `[B, N, 2]` ground truth (x, y) on the decoder scale [-1, 1].
    distance: d in eq. 6, one of `DISTANCES` (default smooth-l1, s = 0.01).
    w: weight of the value restriction.
    restriction: "value" adds `w * restriction`; "detach" treats eigenvalues
      and eigenvectors as constants (stop_gradient) and adds nothing; "none"
      adds nothing.
    value_form: "code" `|l1| + |l2|` (public code, default); "paper"
      `(l1 + l2) / 2` (eq. 7).
    eps: V1/V2 epsilon of eq. 4 and the epsilon under the square root.
    eigenvalue_clamp: optional `(low, high)` clamp of the eigenvalues (issue #37
      of the public code suggests `(1e-6, 1e2)`); default None (off).

  Returns:
    scalar, float32 (float64 for float64 inputs).
  """
  return jnp.mean(star_loss_per_point(
      heatmaps, landmarks, distance=distance, w=w, restriction=restriction,
      value_form=value_form, eps=eps, eigenvalue_clamp=eigenvalue_clamp))


# ----------------------------------------------------------------------------
# Heatmap losses used with STAR: AWing with weight map, DR (Jensen-Shannon).


def awing_weight_map(target: jax.Array, threshold: float = 0.2,
                     weight: float = 10.0) -> jax.Array:
  """`weight * [maxpool3x3(target) >= threshold] + 1`, `[B, C, H, W]`.

  3x3 max-pool, stride 1, padded (with -inf) so the output keeps the input
  size; computed as two separable 3-tap maxima (XLA's CPU reduce_window is
  several times slower).
  """
  h, w = target.shape[-2:]
  pad = [(0, 0)] * (target.ndim - 2)
  rows = jnp.pad(target, pad + [(0, 0), (1, 1)], constant_values=-jnp.inf)
  rows = jnp.maximum(jnp.maximum(rows[..., :w], rows[..., 1:w + 1]),
                     rows[..., 2:])
  cols = jnp.pad(rows, pad + [(1, 1), (0, 0)], constant_values=-jnp.inf)
  dilated = jnp.maximum(jnp.maximum(cols[..., :h, :], cols[..., 1:h + 1, :]),
                        cols[..., 2:, :])
  return weight * (dilated >= threshold).astype(target.dtype) + 1.0


def awing_heatmap_loss(pred, target, *, omega: float = 14.0,
                       theta: float = 0.5, epsilon: float = 1.0,
                       alpha: float = 2.1,
                       use_weight_map: bool = True) -> jax.Array:
  """Adaptive Wing loss on heatmaps (Wang et al. 2019), mean over all pixels.

  Args:
    pred: `[B, C, H, W]` predicted maps (point or edge maps; any sign).
    target: `[B, C, H, W]` target maps in [0, 1].
    omega, theta, epsilon, alpha: AWing parameters (defaults as STAR).
    use_weight_map: multiply by `awing_weight_map(target)`.

  Returns:
    scalar float32.
  """
  distribution.check_rank(pred, 4, "pred", "[B, C, H, W]")
  if tuple(jnp.shape(pred)) != tuple(jnp.shape(target)):
    raise ValueError(f"pred and target must have the same [B, C, H, W] shape; "
                     f"got {tuple(jnp.shape(pred))} and "
                     f"{tuple(jnp.shape(target))}.")
  pred = distribution.as_compute(pred)
  target = distribution.as_compute(target).astype(pred.dtype)
  loss = _awing(jnp.abs(pred - target), target, omega, theta, epsilon, alpha)
  if use_weight_map:
    loss = loss * awing_weight_map(target)
  return jnp.mean(loss)


def gaussian_heatmaps(landmarks, height: int, width: int,
                      sigma: float = 1.0) -> jax.Array:
  """Normalised Gaussians on the decoder grid, `[B, N, 2]` -> `[B, N, H, W]`.

  `sigma` is in heatmap pixels: on the grid `linspace(-1, 1, W)` one pixel is
  `2 / (W - 1)` (and `2 / (H - 1)` in y). Each map sums to 1.
  """
  landmarks = distribution.as_compute(landmarks)
  xs, ys = distribution.coordinate_grid(height, width, dtype=landmarks.dtype)
  sx = sigma * 2.0 / (width - 1)
  sy = sigma * 2.0 / (height - 1)
  gx = jnp.exp(-0.5 * ((xs - landmarks[..., 0:1]) / sx) ** 2)  # [B, N, W]
  gy = jnp.exp(-0.5 * ((ys - landmarks[..., 1:2]) / sy) ** 2)  # [B, N, H]
  g = gy[..., :, None] * gx[..., None, :]
  return g / jnp.maximum(jnp.sum(g, axis=(-2, -1), keepdims=True),
                         jnp.finfo(g.dtype).tiny)


def js_divergence(p: jax.Array, q: jax.Array,
                  log_eps: float = 1e-24) -> jax.Array:
  """Jensen-Shannon divergence (nats) of distributions over the last two axes.

  `0.5 KL(p || m) + 0.5 KL(q || m)`, m = (p + q) / 2, with `log(x + 1e-24)`
  so that zero entries give finite values and gradients (as dsntnn).
  `[..., H, W]` x2 -> `[...]`.
  """
  m = 0.5 * (p + q)
  log_m = jnp.log(m + log_eps)
  kl_p = jnp.sum(p * (jnp.log(p + log_eps) - log_m), axis=(-2, -1))
  kl_q = jnp.sum(q * (jnp.log(q + log_eps) - log_m), axis=(-2, -1))
  return 0.5 * (kl_p + kl_q)


def distribution_regularization(heatmaps, landmarks,
                                sigma: float = 1.0) -> jax.Array:
  """DR (Nibali et al. 2018, as used in the STAR paper, Table 3).

  Jensen-Shannon divergence between each normalised heatmap and a Gaussian of
  `sigma` heatmap pixels (paper: 1.0) centred at the ground truth; mean over
  B and N.

  Args:
    heatmaps: `[B, N, H, W]` non-negative.
    landmarks: `[B, N, 2]` ground truth (x, y) on the decoder scale.
    sigma: Gaussian standard deviation in heatmap pixels.

  Returns:
    scalar float32.
  """
  distribution.check_heatmaps(heatmaps)
  distribution.check_landmarks(landmarks, heatmaps)
  probs = distribution.normalize_heatmaps(distribution.as_compute(heatmaps))
  target = gaussian_heatmaps(landmarks, *probs.shape[-2:], sigma=sigma)
  return jnp.mean(js_divergence(probs, target.astype(probs.dtype)))

"""Locality-Constrained Repellence loss (SCE-MAE paper Sec. 3.3, eq. 4-7).

For the kept tokens T of one image (the attentive tokens and the K cluster
centres from `carb.py`, a static count):

  p(t_j | t_i) = softmax_j <phi_i, phi_j> / tau                  (eq. 4)
  f_loc(t_i, t_j) = log(1 + ||pos_i - pos_j||)                   (eq. 5)
  lambda_rep(t_i, t_j) = r_att-att | r_inatt-inatt | r_att-inatt (eq. 6)
  L_LCR = sum_i sum_j f_loc * lambda_rep * p(t_j | t_i)          (eq. 7)

Decisions where the paper is silent:
  * Self-pairs: eq. 4's denominator runs over all t_k in T, so the self pair is
    part of the softmax (default). It adds nothing to eq. 7 (f_loc(i, i) =
    log 1 = 0) but takes probability mass, as in the CL code this stage follows.
    `exclude_self=True` drops it from the softmax instead.
  * Positions are `(row, col)` on the patch grid in patch units (one unit = one
    patch = P input pixels); a cluster centre has its own patch's position.
    `position_scale` multiplies them (e.g. P for input pixels), which changes
    the log's saturation.
  * Normalisation: eq. 7 sums over anchors i and partners j (default,
    `anchor_reduction="sum"`); "mean" divides by |T| (the DVE/CL code
    convention). Over the batch we take the mean over images (optionally
    weighted, e.g. by the `valid` flag).
  * tau is not given in the paper; the default 1/7 is the temperature of the
    CL dense-correspondence loss (features L2-normalised, logits = 7 * cosine),
    the stage-2 code base whose protocol SCE-MAE follows.
  * f_loc and lambda_rep are constants: only p(t_j | t_i) carries gradients.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

DEFAULT_TAU = 1.0 / 7.0
ANCHOR_REDUCTIONS = ("sum", "mean")


def correspondence_probabilities(features: jax.Array,
                                 tau: float = DEFAULT_TAU,
                                 exclude_self: bool = False) -> jax.Array:
  """Eq. 4: `p[i, j] = p(t_j | t_i)`, a softmax over j of cosine / tau.

  Args:
    features: `[..., T, D]` projected features (L2-normalised by the
      projector; not re-normalised here).
    tau: temperature.
    exclude_self: drop j == i from the softmax (not the paper's eq. 4).

  Returns:
    `[..., T, T]` rows summing to 1.
  """
  if tau <= 0:
    raise ValueError(f"tau must be positive, got {tau}.")
  logits = jnp.einsum("...id,...jd->...ij", features, features,
                      precision=jax.lax.Precision.HIGHEST) / tau
  logits = logits.astype(jnp.float32)
  if exclude_self:
    t = features.shape[-2]
    logits = jnp.where(jnp.eye(t, dtype=bool), -1e9, logits)
  return jax.nn.softmax(logits, axis=-1)


LOCALITIES = ("log", "distance")


def locality_constraint(positions: jax.Array,
                        position_scale: float = 1.0,
                        locality: str = "log") -> jax.Array:
  """Eq. 5: `f_loc[i, j] = log(1 + ||pos_i - pos_j||)`, constant (no grad).

  Args:
    positions: `[..., T, 2]` patch-grid positions in patch units.
    position_scale: unit conversion (1 = patch units, P = input pixels).
    locality: "log" is eq. 5; "distance" is the plain `||pos_i - pos_j||`
      of the DVE / CL correspondence loss, used (with all repellence weights
      1) for the "clustering without LCR" row of the Table-4 ablation.

  Returns:
    `[..., T, T]` float32.
  """
  if locality not in LOCALITIES:
    raise ValueError(f"locality must be one of {LOCALITIES}, got "
                     f"{locality!r}.")
  pos = jax.lax.stop_gradient(positions.astype(jnp.float32)) * position_scale
  diff = pos[..., :, None, :] - pos[..., None, :, :]
  dist = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1))
  return jnp.log1p(dist) if locality == "log" else dist


def repellence_coefficients(is_attentive: jax.Array,
                            r_att_att: float = 5.0,
                            r_att_inatt: float = 5.0,
                            r_inatt_inatt: float = 2.0) -> jax.Array:
  """Eq. 6: pairwise repellence weights from the token types.

  Args:
    is_attentive: `[..., T]` bool, True for attentive tokens, False for
      (approximated) inattentive cluster centres.
    r_att_att, r_att_inatt, r_inatt_inatt: the paper's 5, 5, 2.

  Returns:
    `[..., T, T]` float32.
  """
  a = is_attentive[..., :, None]
  b = is_attentive[..., None, :]
  return jnp.where(a & b, r_att_att,
                   jnp.where(~a & ~b, r_inatt_inatt, r_att_inatt)).astype(
                       jnp.float32)


def lcr_loss_per_image(features: jax.Array,
                       positions: jax.Array,
                       is_attentive: jax.Array,
                       *,
                       tau: float = DEFAULT_TAU,
                       r_att_att: float = 5.0,
                       r_att_inatt: float = 5.0,
                       r_inatt_inatt: float = 2.0,
                       position_scale: float = 1.0,
                       exclude_self: bool = False,
                       anchor_reduction: str = "sum",
                       locality: str = "log") -> jax.Array:
  """Eq. 7 for each image: `[..., T, D]`, `[..., T, 2]`, `[..., T]` -> `[...]`.

  See the module docstring for the choices (self-pairs, units, reduction).
  """
  if anchor_reduction not in ANCHOR_REDUCTIONS:
    raise ValueError(f"anchor_reduction must be one of {ANCHOR_REDUCTIONS}, "
                     f"got {anchor_reduction!r}.")
  t = features.shape[-2]
  if positions.shape[-2:] != (t, 2) or is_attentive.shape[-1] != t:
    raise ValueError(f"expected positions [..., {t}, 2] and is_attentive "
                     f"[..., {t}] for {t} kept tokens, got {positions.shape} "
                     f"and {is_attentive.shape}.")
  p = correspondence_probabilities(features, tau, exclude_self)
  weight = locality_constraint(positions, position_scale, locality) * (
      repellence_coefficients(is_attentive, r_att_att, r_att_inatt,
                              r_inatt_inatt))
  per_anchor = jnp.sum(weight * p, axis=-1)  # [..., T]
  if anchor_reduction == "sum":
    return jnp.sum(per_anchor, axis=-1)
  return jnp.mean(per_anchor, axis=-1)


def lcr_loss(features: jax.Array,
             positions: jax.Array,
             is_attentive: jax.Array,
             image_weights: Optional[jax.Array] = None,
             **kwargs) -> jax.Array:
  """Batch LCR loss: mean over images of eq. 7.

  Args:
    features: `[B, T, D]` projected kept-token features.
    positions: `[B, T, 2]` `(row, col)` patch positions.
    is_attentive: `[B, T]` token types.
    image_weights: optional `[B]` (e.g. the batch's `valid` flags); the result
      is `sum_b w_b L_b / max(sum_b w_b, 1e-8)`.
    **kwargs: settings of `lcr_loss_per_image`.

  Returns:
    Scalar loss.
  """
  if features.ndim != 3:
    raise ValueError(f"features must be [B, T, D], got {features.shape}.")
  per_image = lcr_loss_per_image(features, positions, is_attentive, **kwargs)
  if image_weights is None:
    return jnp.mean(per_image)
  w = image_weights.astype(jnp.float32)
  return jnp.sum(w * per_image) / jnp.maximum(jnp.sum(w), 1e-8)

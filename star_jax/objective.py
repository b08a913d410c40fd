"""STAR's training objective: the per-stack loss of eq. 10, summed over stacks.

For stacks i = 0..S-1 with weight 2^i / 2^(S-1) (public code):

    L_i = star_weight * STAR(fused heatmaps_i, gt)                  (eq. 6-7)
        + pointmap_weight * AWing(pointmaps_i, point targets)        (10)
        + edgemap_weight * AWing(edgemaps_i, edge targets)           (10)
        + dr_weight * DR(heatmaps_i, gt)                             (0; Table 3)

  * `loss.star=False` replaces STAR by the plain regression of eq. 2:
    `distance(gt - soft_argmax(heatmaps))` (the paper's baseline; with the
    default smooth-l1 distance, the smooth-L1 baseline).
  * `loss.distance`, `loss.restriction` ("value" | "detach" | "none"),
    `loss.value_form` ("code" | "paper"), `loss.w`, `loss.eigenvalue_clamp`
    select the variants of star_jax.loss.star_loss.
  * Point / edge targets are computed inside the jitted step from the crop
    pixel landmarks with data.targets.
  * Ground truth is normalised to the decoder scale with align_corners=False,
    `(2p + 1) / S - 1`, clamped to [-1, 1] (public code); `loss.align_corners
    =True` uses `2p / (S - 1) - 1` (landmarks.coordinates).

With the regression head (`model.head="regression"`, star_jax/regression.py,
our own formulation) `regression_training_loss` replaces eq. 10: one loss on
the last stack's predicted mean and covariance, chosen by `loss.regression`
(`REGRESSION_LOSSES`): "star" (STAR's eq. 6 + restriction on the predicted
covariance, with `loss.distance`, `loss.w`, `loss.restriction`,
`loss.value_form`, `loss.eigenvalue_clamp`), "smooth_l1" (eq. 2 on the mean,
`loss.distance`, `loss.baseline_on`) or "nll" (Gaussian negative
log-likelihood). Ground truth is normalised as for the heatmaps.
`loss.regression` is a key only the regression configs have; `LossSettings`
leaves it to `regression_loss_name`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from data import schemes as schemes_lib
from data import targets as targets_lib
from landmarks import coordinates
from landmarks import distribution
from star_jax import loss as loss_lib
from star_jax import regression
from training import errors


def stack_weights(num_stacks: int) -> np.ndarray:
  """Per-stack loss weights 2^i / 2^(S-1), i = 0..S-1 (public code)."""
  return np.array([2.0**i / 2.0**(num_stacks - 1) for i in range(num_stacks)])


_DEFAULTS = common.star().loss


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """`config.loss` as a hashable record.

  Defaults: configs/common.py `star().loss` (the public STAR code's
  settings), read from there so they are set once.
  """
  star: bool = _DEFAULTS.star
  distance: str = _DEFAULTS.distance
  w: float = _DEFAULTS.w
  restriction: str = _DEFAULTS.restriction
  value_form: str = _DEFAULTS.value_form
  eigenvalue_clamp: Optional[tuple] = _DEFAULTS.eigenvalue_clamp
  star_weight: float = _DEFAULTS.star_weight
  pointmap_weight: float = _DEFAULTS.pointmap_weight
  edgemap_weight: float = _DEFAULTS.edgemap_weight
  dr_weight: float = _DEFAULTS.dr_weight
  dr_sigma: float = _DEFAULTS.dr_sigma
  align_corners: bool = _DEFAULTS.align_corners
  baseline_on: str = _DEFAULTS.baseline_on
  target_mode: str = _DEFAULTS.target_mode

  @classmethod
  def from_config(cls, cfg) -> "LossSettings":
    known = {f.name for f in dataclasses.fields(cls)}
    values = dict(cfg.items()) if cfg is not None else {}
    values.pop("regression", None)  # regression_loss_name's key.
    unknown = sorted(set(values) - known)
    if unknown:
      raise errors.UserError(f"unknown config.loss keys {unknown}; known: "
                             f"{sorted(known)}")
    clamp = values.get("eigenvalue_clamp", None)
    if clamp is not None:
      values["eigenvalue_clamp"] = tuple(float(c) for c in clamp)
    return cls(**values)


def star_training_loss(outputs: Sequence[Dict[str, jax.Array]],
                       landmarks: jax.Array, settings: LossSettings,
                       scheme: schemes_lib.LandmarkScheme, crop_size: int,
                       ) -> tuple[jax.Array, Dict[str, jax.Array]]:
  """Eq. 10: the composed training loss of all stacks (see module docstring).

  Args:
    outputs: per stack, the model's dict: "heatmaps" `[B, N, h, h]`, and with
      AAM "pointmaps" `[B, N, h, h]`, "edgemaps" `[B, E, h, h]`.
    landmarks: `[B, N, 2]` ground truth in crop pixels.
    settings: loss settings.
    scheme: landmark scheme (edges for the edge targets).
    crop_size: S, the side of the crop in pixels.

  Returns:
    (scalar loss, metrics: per-term means over stacks, unweighted).
  """
  num_stacks = len(outputs)
  h = outputs[0]["heatmaps"].shape[-1]
  gt = coordinates.normalise_landmarks(landmarks.astype(jnp.float32), crop_size,
                                       settings.align_corners, clamp=True)
  use_aam = "pointmaps" in outputs[0]
  if use_aam:
    point_targets = targets_lib.point_heatmaps(
        landmarks, crop_size=crop_size, heatmap_size=h,
        mode=settings.target_mode)
    edge_targets = targets_lib.edge_maps(landmarks, scheme,
                                         crop_size=crop_size, heatmap_size=h)
  total = 0.0
  terms: Dict[str, jax.Array] = {}

  def add(name, value):
    terms[name] = terms.get(name, 0.0) + value / num_stacks

  for i, (out, weight) in enumerate(zip(outputs, stack_weights(num_stacks))):
    del i
    heatmaps = out["heatmaps"]
    if settings.star:
      coord = loss_lib.star_loss(
          heatmaps, gt, distance=settings.distance, w=settings.w,
          restriction=settings.restriction, value_form=settings.value_form,
          eigenvalue_clamp=settings.eigenvalue_clamp)
    else:
      coord = loss_lib.coordinate_loss(
          distribution.soft_argmax(heatmaps), gt, distance=settings.distance,
          on=settings.baseline_on)
    stack_loss = settings.star_weight * coord
    add("loss_coordinates", coord)
    if use_aam:
      point = loss_lib.awing_heatmap_loss(out["pointmaps"], point_targets)
      edge = loss_lib.awing_heatmap_loss(out["edgemaps"], edge_targets)
      stack_loss += (settings.pointmap_weight * point +
                     settings.edgemap_weight * edge)
      add("loss_pointmaps", point)
      add("loss_edgemaps", edge)
    if settings.dr_weight:
      dr = loss_lib.distribution_regularization(heatmaps, gt,
                                                sigma=settings.dr_sigma)
      stack_loss += settings.dr_weight * dr
      add("loss_dr", dr)
    total = total + weight * stack_loss
  return total, terms


# ------------------------------------------------- the regression head ----

REGRESSION_LOSSES = ("star", "smooth_l1", "nll")


def regression_loss_name(config) -> str:
  """`config.loss.regression` for `config.model.head="regression"`, checked.

  Raises training.errors.UserError for an unknown name and for loss settings
  that only the heatmap head has a meaning for.
  """
  loss_cfg = config.get("loss", None)
  name = loss_cfg.get("regression", "star") if loss_cfg is not None else "star"
  if name not in REGRESSION_LOSSES:
    raise errors.UserError(
        f"config.loss.regression must be one of {REGRESSION_LOSSES}; got "
        f"{name!r}.")
  settings = LossSettings.from_config(loss_cfg)
  if not settings.star:
    raise errors.UserError(
        "config.loss.star=False selects the heatmap baseline; with "
        "model.head='regression' choose the loss with "
        "--config.loss.regression=smooth_l1 (or star, nll) instead.")
  if settings.dr_weight:
    raise errors.UserError(
        "config.loss.dr_weight > 0 regularises heatmaps; the regression head "
        "has none: set --config.loss.dr_weight=0.")
  if name == "star" and settings.restriction not in regression.RESTRICTIONS:
    raise errors.UserError(
        f"config.loss.restriction={settings.restriction!r}: with a predicted "
        "covariance the STAR loss falls to 0 as the covariance grows; use "
        f"one of {regression.RESTRICTIONS}.")
  return name


def regression_training_loss(outputs: Sequence[Dict[str, jax.Array]],
                             landmarks: jax.Array, settings: LossSettings,
                             name: str, crop_size: int,
                             ) -> tuple[jax.Array, Dict[str, jax.Array]]:
  """The regression head's loss (module docstring) on the last stack.

  Args:
    outputs: the model's list; its last dict has "mean" `[B, N, 2]` and
      "covariance" `[B, N, 2, 2]` (normalised crop frame).
    landmarks: `[B, N, 2]` ground truth in crop pixels.
    settings: loss settings (distance, w, restriction, ...).
    name: one of `REGRESSION_LOSSES`.
    crop_size: S, the side of the crop in pixels.

  Returns:
    (scalar loss, metrics): "loss_coordinates" (the loss) and "std_px", the
    mean over landmarks of sqrt(trace(Sigma) / 2) in crop pixels.
  """
  out = outputs[-1]
  mean, cov = out["mean"], out["covariance"]
  gt = coordinates.normalise_landmarks(landmarks.astype(jnp.float32), crop_size,
                                       settings.align_corners, clamp=True)
  if name == "star":
    value = regression.star_regression_loss(
        mean, cov, gt, distance=settings.distance, w=settings.w,
        restriction=settings.restriction, value_form=settings.value_form,
        eigenvalue_clamp=settings.eigenvalue_clamp)
  elif name == "smooth_l1":
    value = regression.smooth_l1_mean_loss(mean, gt,
                                           distance=settings.distance,
                                           on=settings.baseline_on)
  elif name == "nll":
    value = regression.gaussian_nll(mean, cov, gt)
  else:
    raise ValueError(f"unknown regression loss {name!r}; expected one of "
                     f"{REGRESSION_LOSSES}.")
  trace = cov[..., 0, 0] + cov[..., 1, 1]
  std_px = jnp.mean(jnp.sqrt(0.5 * trace)) * 0.5 * crop_size
  return value, {"loss_coordinates": value, "std_px": std_px}

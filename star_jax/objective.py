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
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import schemes as schemes_lib
from data import targets as targets_lib
from landmarks import coordinates
from star_jax import loss as loss_lib
from training import errors


def stack_weights(num_stacks: int) -> np.ndarray:
  """Per-stack loss weights 2^i / 2^(S-1), i = 0..S-1 (public code)."""
  return np.array([2.0**i / 2.0**(num_stacks - 1) for i in range(num_stacks)])


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """`config.loss` as a hashable record (defaults: the public STAR code)."""
  star: bool = True
  distance: str = "smooth_l1"
  w: float = 1.0
  restriction: str = "value"
  value_form: str = "code"
  eigenvalue_clamp: Optional[tuple] = None
  star_weight: float = 1.0
  pointmap_weight: float = 10.0
  edgemap_weight: float = 10.0
  dr_weight: float = 0.0
  dr_sigma: float = 1.0
  align_corners: bool = False
  baseline_on: str = "norm"
  target_mode: str = "public"

  @classmethod
  def from_config(cls, cfg) -> "LossSettings":
    known = {f.name for f in dataclasses.fields(cls)}
    values = dict(cfg.items()) if cfg is not None else {}
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
          loss_lib.soft_argmax(heatmaps), gt, distance=settings.distance,
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

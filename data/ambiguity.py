"""Ambiguous-annotation noise: training labels slid along or across a curve.

The STAR paper's motivation (Sec. 1, Fig. 1) is that a contour point's
position *along* the face edge is ambiguous (annotators disagree there),
while its position *across* the edge is not. This module makes that
controllable on real labels: it moves the points of chosen curves of the
68-point scheme along their local tangent ("tangent") or along the normal
("normal") by N(0, (sigma * IOD)^2), one scalar draw per point, so a study
can train on labels with a known kind of ambiguity and compare losses.

  * Curves come from the scheme's edges (data/schemes.py): "jaw" is the
    contour 0-16, "brows" the two brows 17-21 and 22-26 (two separate
    curves), "nose_bridge" 27-30.
  * Tangents are central differences of the polyline inside, one-sided at
    the two ends (`curve_tangents`), always of the *unperturbed* points; the
    normal is the tangent rotated by +90 degrees in (x, y) array coordinates,
    `(tx, ty) -> (-ty, tx)`.
  * IOD is the distance of the scheme's ocular normaliser points (outer eye
    corners 36 / 45 for 68 points), the normaliser the configs report NME with.
  * The draw of a face is a standard normal per point, from a generator
    seeded by a stable hash (SHA-256) of `(seed, file name, index in the
    list)`: reproducible across processes and machines, identical for every
    run that lists the same faces (a STAR and a smooth-L1 run see the same
    noisy labels). Because the draw is scaled by `sigma * IOD` afterwards,
    sigma 0.1 moves every point exactly twice as far as sigma 0.05, and the
    tangent and normal settings use the same draws in two directions.
  * Invisible points are not moved; boxes, centre / scale and everything
    else of a record are kept (with crop_mode "points" the training crop
    follows the noisy points: a crop jitter consistent with the image, not a
    label error).

`tangent_normal_errors` splits prediction errors the same way, for the
analysis (star_jax/ambiguity_study.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data import records as records_lib
from data import schemes as schemes_lib
from training import errors

# Group name -> the scheme edge names (data/schemes.py) of its curves.
GROUP_EDGES: Dict[str, Tuple[str, ...]] = {
    "jaw": ("contour",),
    "brows": ("right_brow", "left_brow"),
    "nose_bridge": ("nose_bridge",),
}
DIRECTIONS = ("tangent", "normal")


def group_curves(group: str, scheme: schemes_lib.LandmarkScheme = None
                 ) -> Tuple[Tuple[int, ...], ...]:
  """The point-index tuples (one per curve, ordered along it) of `group`.

  Args:
    group: a `GROUP_EDGES` name.
    scheme: the landmark scheme (default: the 68-point one).
  """
  scheme = scheme or schemes_lib.get_scheme(68)
  if group not in GROUP_EDGES:
    raise errors.UserError(f"unknown label-noise group {group!r}; expected "
                           f"one of {sorted(GROUP_EDGES)}")
  curves = []
  for edge in GROUP_EDGES[group]:
    if edge not in scheme.edge_names:
      raise errors.UserError(f"the {scheme.name} scheme has no {edge!r} "
                             f"curve (group {group!r}); its curves: "
                             f"{list(scheme.edge_names)}")
    e = scheme.edge_names.index(edge)
    if scheme.edge_closed[e]:
      raise errors.UserError(f"group {group!r}: the {scheme.name} {edge!r} "
                             "curve is closed; only open curves are supported")
    curves.append(tuple(int(i) for i in scheme.edges[e]))
  return tuple(curves)


def group_and_rest(group: str, scheme: schemes_lib.LandmarkScheme = None
                   ) -> Tuple[List[int], List[int]]:
  """(the points of `group`'s curves in curve order, every other point).

  The analyses' split of a face, e.g. the jaw (0-16) vs the inner points
  (17-67) of the 68-point scheme.
  """
  scheme = scheme or schemes_lib.get_scheme(68)
  points = [int(i) for curve in group_curves(group, scheme) for i in curve]
  chosen = set(points)
  return points, [i for i in range(scheme.num_points) if i not in chosen]


def curve_tangents(points, indices: Sequence[int]) -> np.ndarray:
  """Unit tangents `[..., K, 2]` of the polyline `points[..., indices, :]`.

  Central differences `p[k+1] - p[k-1]` inside, one-sided differences at the
  two ends, normalised. A zero difference (coinciding neighbours) falls back
  to the direction from the curve's first to its last point, and to (1, 0)
  when that is zero too, so the result is always a unit vector.

  Args:
    points: `[..., N, 2]` (x, y) points.
    indices: K >= 2 point indices, in order along the curve.
  """
  idx = np.asarray(indices, int)
  if idx.ndim != 1 or idx.size < 2:
    raise ValueError(f"a curve needs at least 2 point indices; got {indices!r}")
  p = np.asarray(points, np.float64)[..., idx, :]
  d = np.empty_like(p)
  d[..., 1:-1, :] = p[..., 2:, :] - p[..., :-2, :]
  d[..., 0, :] = p[..., 1, :] - p[..., 0, :]
  d[..., -1, :] = p[..., -1, :] - p[..., -2, :]
  norm = np.linalg.norm(d, axis=-1, keepdims=True)
  chord = p[..., -1:, :] - p[..., :1, :]
  chord_norm = np.linalg.norm(chord, axis=-1, keepdims=True)
  x_axis = np.broadcast_to(np.array([1.0, 0.0]), chord.shape)
  fallback = np.where(chord_norm > 0, chord / np.where(chord_norm > 0,
                                                       chord_norm, 1.0),
                      x_axis)
  ok = norm > 0
  return np.where(ok, d / np.where(ok, norm, 1.0),
                  np.broadcast_to(fallback, d.shape))


def curve_normals(points, indices: Sequence[int]) -> np.ndarray:
  """`curve_tangents` rotated by +90 degrees: `(tx, ty) -> (-ty, tx)`."""
  t = curve_tangents(points, indices)
  return np.stack([-t[..., 1], t[..., 0]], axis=-1)


def inter_ocular(points, scheme: schemes_lib.LandmarkScheme = None) -> float:
  """Distance of the scheme's ocular normaliser points (36 / 45 for 68)."""
  points = np.asarray(points, np.float64)
  scheme = scheme or schemes_lib.get_scheme(points.shape[-2])
  return float(schemes_lib.normaliser_distance(scheme, points, "ocular"))


def _check(groups: Sequence[str], sigma: float, direction: str,
           scheme: schemes_lib.LandmarkScheme = None) -> None:
  if isinstance(groups, str):
    raise errors.UserError(f"label-noise groups must be a tuple of names, "
                           f"e.g. ('jaw',); got the string {groups!r}")
  if len(set(groups)) != len(tuple(groups)):
    raise errors.UserError(f"label-noise groups repeat a name: {groups!r}")
  for g in groups:
    group_curves(g, scheme)
  if direction not in DIRECTIONS:
    raise errors.UserError(f"label-noise direction must be one of "
                           f"{DIRECTIONS}; got {direction!r}")
  if not (np.isfinite(sigma) and sigma >= 0):
    raise errors.UserError(f"label-noise sigma must be a finite number >= 0 "
                           f"(in units of the inter-ocular distance; 0 = off); "
                           f"got {sigma!r}")


def perturb_along_curves(points, *, groups: Sequence[str], sigma: float,
                         direction: str, rng: np.random.Generator,
                         iod: Optional[float] = None,
                         visible: Optional[np.ndarray] = None) -> np.ndarray:
  """Moves the points of `groups` along their curve's tangent or normal.

  Each point k of a chosen curve moves by `sigma * iod * z_k * u_k`, z_k a
  standard normal (one draw per point, in curve order, groups in the given
  order) and u_k the unit tangent or normal of the unperturbed curve at k.
  Points of other groups are unchanged; sigma 0 returns an equal copy
  without drawing.

  Args:
    points: `[N, 2]` (x, y) pixels.
    groups: `GROUP_EDGES` names.
    sigma: std of the displacement in units of `iod`.
    direction: "tangent" or "normal".
    rng: the generator the draws come from.
    iod: the normalising distance in pixels; default `inter_ocular(points)`.
    visible: optional `[N]` bools; invisible points are drawn for but not
      moved (so the other points' draws do not depend on visibility).

  Returns:
    `[N, 2]` in the dtype of `points`.
  """
  points = np.asarray(points)
  scheme = schemes_lib.get_scheme(points.shape[0])
  _check(groups, float(sigma), direction, scheme)
  out = points.astype(np.float64, copy=True)
  if sigma == 0:
    return out.astype(points.dtype)
  if iod is None:
    iod = inter_ocular(points, scheme)
  vis = (np.ones(points.shape[0], bool) if visible is None
         else np.asarray(visible, bool))
  base = np.asarray(points, np.float64)
  for group in groups:
    for curve in group_curves(group, scheme):
      u = (curve_tangents(base, curve) if direction == "tangent"
           else curve_normals(base, curve))
      z = rng.standard_normal(len(curve))
      move = (float(sigma) * float(iod) * z)[:, None] * u
      idx = np.asarray(curve)
      move[~vis[idx]] = 0.0
      out[idx] += move
  return out.astype(points.dtype)


@dataclasses.dataclass(frozen=True)
class LabelNoise:
  """Settings of the training-label noise (config `data.label_noise`).

  Attributes:
    groups: `GROUP_EDGES` names whose points move.
    sigma: displacement std in units of the inter-ocular distance; 0 = off.
    direction: "tangent" (along the curve) or "normal" (across it).
    seed: the noise seed (independent of the training seed).
  """
  groups: Tuple[str, ...] = ("jaw",)
  sigma: float = 0.0
  direction: str = "tangent"
  seed: int = 0

  def __post_init__(self):
    groups = self.groups
    if isinstance(groups, str):
      _check(groups, self.sigma, self.direction)  # raises the clear message.
    object.__setattr__(self, "groups", tuple(groups))
    _check(self.groups, float(self.sigma), self.direction)

  @property
  def enabled(self) -> bool:
    return self.sigma > 0

  @classmethod
  def from_config(cls, config: Any) -> "LabelNoise":
    """From a ConfigDict / mapping with groups, sigma, direction, seed.

    None (the field absent from a config) gives the default: no noise.
    """
    if config is None:
      return cls()
    get = config.get
    known = {"groups", "sigma", "direction", "seed"}
    keys = set(config.keys())
    if keys - known:
      raise errors.UserError(f"unknown data.label_noise fields "
                             f"{sorted(keys - known)}; known: {sorted(known)}")
    return cls(groups=tuple(get("groups", ("jaw",))),
               sigma=float(get("sigma", 0.0)),
               direction=str(get("direction", "tangent")),
               seed=int(get("seed", 0)))


def face_rng(seed: int, record: records_lib.FaceRecord,
             index: int) -> np.random.Generator:
  """The generator of one face: a SHA-256 of (seed, file name, key, index).

  The file name (not the whole path) is hashed so the draws do not depend on
  how the data root is spelled; the index in the list tells apart faces of
  one file.
  """
  key = "\x1f".join([str(int(seed)), os.path.basename(record.image_path),
                     repr(record.image_key), str(int(index))])
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def apply_to_records(records: Sequence[records_lib.FaceRecord],
                     settings: LabelNoise) -> List[records_lib.FaceRecord]:
  """The records with noisy landmarks (`dataclasses.replace`; inputs kept).

  With `settings.sigma == 0` the same record objects are returned (as a new
  list).
  """
  if not isinstance(settings, LabelNoise):
    raise TypeError(f"settings must be a LabelNoise; got {type(settings)}")
  if not settings.enabled:
    return list(records)
  out = []
  for i, r in enumerate(records):
    noisy = perturb_along_curves(
        r.landmarks, groups=settings.groups, sigma=settings.sigma,
        direction=settings.direction, rng=face_rng(settings.seed, r, i),
        visible=r.visible)
    out.append(dataclasses.replace(r, landmarks=noisy))
  return out


def tangent_normal_errors(pred, gt, indices: Sequence[int]
                          ) -> Tuple[np.ndarray, np.ndarray]:
  """Signed error components along / across the ground-truth curve.

  Args:
    pred, gt: `[..., N, 2]` points (same unit).
    indices: the curve's point indices, in order.

  Returns:
    `(along, across)`, each `[..., K]`: `(pred - gt) . t` and
    `(pred - gt) . n` with t, n the unit tangent / normal of the gt curve.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape:
    raise ValueError(f"pred and gt must have the same shape; got {pred.shape} "
                     f"and {gt.shape}")
  idx = np.asarray(indices, int)
  e = pred[..., idx, :] - gt[..., idx, :]
  t = curve_tangents(gt, idx)
  n = np.stack([-t[..., 1], t[..., 0]], axis=-1)
  return np.sum(e * t, axis=-1), np.sum(e * n, axis=-1)

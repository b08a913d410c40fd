"""Landmark metrics: NME, cumulative error distribution, FR and AUC.

Semantics follow the public STAR evaluation (ZhenglinZhou/STAR, lib/metric):
  * NME of a face = mean over points of ||pred - gt|| / ||mean(gt[left]) -
    mean(gt[right])|| (left/right: one index or several, whose mean is used,
    e.g. pupils as eye-contour means).
  * CED on `xs = numpy.arange(0, threshold + step, step)`: share of faces with
    NME <= x. FR@t = 1 - CED(xs[-1]); AUC@t = Simpson integral of the CED over
    xs, divided by t. Because of `arange`, t = 0.05 (300W in the public code)
    gives xs up to 0.0501 (502 samples): we keep that grid so numbers match.
    With an even number of samples Simpson's last interval uses the Cartwright
    correction (as `scipy.integrate.simpson` since SciPy 1.11; the public
    code's old `simps` averaged two rules there, a difference of order
    `step` in the last interval). Unlike the public code we do not round.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from data import schemes as schemes_lib

Indices = Union[int, Sequence[int]]

# Named normalisers, (left, right) index or index tuple, built from the one
# table of eye indices in data.schemes: "<family>_inter_ocular" (outer eye
# corners) and "<family>_inter_pupil" (pupils, or the eye-contour points whose
# mean is the pupil) for each scheme, and "<family>" for the one the papers
# report with (the scheme's default_norm).
SCHEME_FAMILIES: Dict[str, str] = {"wflw": "wflw98", "300w": "300w68",
                                   "cofw": "cofw29", "five_point": "five5"}


def _index_or_tuple(indices: Sequence[int]) -> Indices:
  indices = tuple(int(i) for i in indices)
  return indices[0] if len(indices) == 1 else indices


def _normaliser_table() -> Dict[str, Tuple[Indices, Indices]]:
  table: Dict[str, Tuple[Indices, Indices]] = {}
  for family, scheme_name in SCHEME_FAMILIES.items():
    scheme = schemes_lib.get_scheme(scheme_name)
    ocular = tuple(int(i) for i in scheme.ocular)
    pupil = tuple(_index_or_tuple(p) for p in scheme.pupils)
    table[f"{family}_inter_ocular"] = ocular
    if pupil != ocular:
      table[f"{family}_inter_pupil"] = pupil
    table[family] = table[f"{family}_inter_{scheme.default_norm}"]
  return table


NORMALISERS: Dict[str, Tuple[Indices, Indices]] = _normaliser_table()

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make-up",
                   "occlusion", "blur")


def _as_index_array(indices: Indices, num_points: int, name: str) -> np.ndarray:
  idx = np.atleast_1d(np.asarray(indices))
  if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"{name} must be an int or a non-empty list of ints; got "
                     f"{indices!r}.")
  if np.any(idx < 0) or np.any(idx >= num_points):
    raise ValueError(f"{name} indices {idx.tolist()} out of range for "
                     f"{num_points} points.")
  return idx


def normaliser(name: str) -> Tuple[Indices, Indices]:
  """The `(left, right)` indices of a named normaliser (see `NORMALISERS`)."""
  if name not in NORMALISERS:
    raise ValueError(f"unknown normaliser {name!r}; expected one of "
                     f"{sorted(NORMALISERS)}.")
  return NORMALISERS[name]


def normaliser_family(num_points: int) -> Optional[str]:
  """The `NORMALISERS` prefix of the scheme with `num_points` points, or None."""
  for family, scheme_name in SCHEME_FAMILIES.items():
    if schemes_lib.get_scheme(scheme_name).num_points == int(num_points):
      return family
  return None


def canonical_normaliser(name: str) -> str:
  """The `*_inter_*` name of a normaliser: "cofw" -> "cofw_inter_pupil"."""
  indices = normaliser(name)
  if "_inter_" in name:
    return name
  for other, value in NORMALISERS.items():
    if "_inter_" in other and value == indices:
      return other
  return name


def eval_normalisers(primary: str, num_points: int) -> Dict[str, str]:
  """Output key -> normaliser name of the per-face NMEs `eval_step` returns.

  "nme" is `primary` (canonical name); `nme_inter_ocular` / `nme_inter_pupil`
  add the scheme's other normaliser(s) when they differ from it.
  """
  primary = canonical_normaliser(primary)
  out = {"nme": primary}
  family = normaliser_family(num_points)
  for kind in ("inter_ocular", "inter_pupil"):
    name = f"{family}_{kind}"
    if family and name in NORMALISERS and name != primary:
      out[f"nme_{kind}"] = name
  return out


def nme(pred, gt, left: Indices, right: Indices) -> jax.Array:
  """Normalised mean error per face.

  Args:
    pred: `[B, N, 2]` predicted landmarks (any consistent unit, e.g. pixels).
    gt: `[B, N, 2]` ground truth in the same unit.
    left, right: index or list of indices into N; the normaliser is the
      distance between the mean of `gt[:, left]` and the mean of `gt[:, right]`.

  Returns:
    `[B]` float32 NME (a fraction, not %).
  """
  if jnp.ndim(pred) != 3 or jnp.shape(pred)[-1] != 2:
    raise ValueError(f"pred must be [B, N, 2]; got {tuple(jnp.shape(pred))}.")
  if tuple(jnp.shape(pred)) != tuple(jnp.shape(gt)):
    raise ValueError(f"pred and gt must have the same [B, N, 2] shape; got "
                     f"{tuple(jnp.shape(pred))} and {tuple(jnp.shape(gt))}.")
  n = jnp.shape(gt)[1]
  left_idx = _as_index_array(left, n, "left")
  right_idx = _as_index_array(right, n, "right")
  dtype = jnp.promote_types(jnp.result_type(gt), jnp.float32)
  pred = jnp.asarray(pred, dtype)
  gt = jnp.asarray(gt, dtype)
  norm = jnp.linalg.norm(jnp.mean(gt[:, left_idx], axis=1)
                         - jnp.mean(gt[:, right_idx], axis=1), axis=-1)
  if not isinstance(norm, jax.core.Tracer) and bool(jnp.any(norm <= 0)):
    bad = np.flatnonzero(np.asarray(norm) <= 0).tolist()
    raise ValueError(f"zero normalising distance for faces {bad} (left "
                     f"{left_idx.tolist()}, right {right_idx.tolist()}): check "
                     "the annotation or the normaliser indices.")
  errors = jnp.linalg.norm(pred - gt, axis=-1)  # [B, N]
  return jnp.mean(errors, axis=-1) / norm


def nme_named(pred, gt, name: str) -> jax.Array:
  """`nme` with a named normaliser, e.g. "wflw", "300w_inter_pupil", "cofw"."""
  left, right = normaliser(name)
  return nme(pred, gt, left, right)


def _check_nmes(nmes) -> np.ndarray:
  nmes = np.asarray(nmes, dtype=np.float64)
  if nmes.ndim != 1 or nmes.size == 0:
    raise ValueError(f"nmes must be a non-empty 1-D array of per-face NMEs; "
                     f"got shape {nmes.shape}.")
  if not np.all(np.isfinite(nmes)):
    raise ValueError(f"nmes contains {np.count_nonzero(~np.isfinite(nmes))} "
                     "non-finite values.")
  return nmes


def ced_curve(nmes, threshold: float = 0.1,
              step: float = 1e-4) -> Tuple[np.ndarray, np.ndarray]:
  """Cumulative error distribution: `xs = arange(0, threshold + step, step)`,
  `ys[i]` = share of faces with NME <= xs[i]. Returns float64 `(xs, ys)`."""
  nmes = _check_nmes(nmes)
  if not (threshold > 0 and step > 0 and step <= threshold):
    raise ValueError(f"need 0 < step <= threshold; got threshold={threshold}, "
                     f"step={step}.")
  xs = np.arange(0, threshold + step, step)
  ys = np.searchsorted(np.sort(nmes), xs, side="right") / float(nmes.size)
  return xs, ys


def simpson(ys: np.ndarray, xs: np.ndarray) -> float:
  """Composite Simpson rule on (possibly uneven) samples.

  Pairs of intervals use the parabola through three points; with an odd number
  of intervals the last one gets the Cartwright correction (SciPy >= 1.11).
  """
  ys = np.asarray(ys, np.float64)
  xs = np.asarray(xs, np.float64)
  if ys.shape != xs.shape or ys.ndim != 1 or ys.size < 2:
    raise ValueError(f"simpson needs 1-D xs, ys of equal length >= 2; got "
                     f"{xs.shape}, {ys.shape}.")
  h = np.diff(xs)
  if ys.size == 2:
    return float(0.5 * h[0] * (ys[0] + ys[1]))
  pairs = (ys.size - 1) // 2
  h0, h1 = h[0:2 * pairs:2], h[1:2 * pairs:2]
  y0, y1, y2 = ys[0:2 * pairs:2], ys[1:2 * pairs:2], ys[2:2 * pairs + 1:2]
  hs = h0 + h1
  total = np.sum(hs / 6.0 * ((2.0 - h1 / h0) * y0 + hs * hs / (h0 * h1) * y1
                             + (2.0 - h0 / h1) * y2))
  if (ys.size - 1) % 2:  # Odd number of intervals: correct the last one.
    ha, hb = h[-2], h[-1]
    total += ((2 * hb * hb + 3 * ha * hb) / (6 * (ha + hb)) * ys[-1]
              + (hb * hb + 3 * ha * hb) / (6 * ha) * ys[-2]
              - hb ** 3 / (6 * ha * (ha + hb)) * ys[-3])
  return float(total)


def fr_auc(nmes, threshold: float = 0.1,
           step: float = 1e-4) -> Tuple[float, float]:
  """Failure rate and area under the CED up to `threshold`.

  Args:
    nmes: `[F]` per-face NMEs (fractions).
    threshold: t of FR@t / AUC@t (0.1 for WFLW and COFW; the public code uses
      0.05 for 300W).
    step: CED sampling step.

  Returns:
    `(fr, auc)`: share of faces with NME > xs[-1] and
    `simpson(ced, xs) / threshold`, as Python floats (not rounded).
  """
  xs, ys = ced_curve(nmes, threshold, step)
  return float(1.0 - ys[-1]), simpson(ys, xs) / threshold


def subset_metrics(nmes, threshold: float = 0.1,
                   step: float = 1e-4) -> Dict[str, float]:
  """`{"nme", "fr", "auc", "count"}` of one set of per-face NMEs."""
  nmes = _check_nmes(nmes)
  fr, auc = fr_auc(nmes, threshold, step)
  return {"nme": float(np.mean(nmes)), "fr": fr, "auc": auc,
          "count": int(nmes.size)}


def attribute_metrics(nmes, attributes: Mapping[str, object],
                      threshold: float = 0.1,
                      step: float = 1e-4) -> Dict[str, Dict[str, float]]:
  """Per-subset NME / FR / AUC, e.g. the WFLW attribute breakdown.

  Args:
    nmes: `[F]` per-face NMEs.
    attributes: name -> `[F]` flags (bool or 0/1), e.g. WFLW's "pose",
      "expression", "illumination", "make-up", "occlusion", "blur".
    threshold, step: as `fr_auc`.

  Returns:
    `{"full": metrics, name: metrics, ...}` with metrics as `subset_metrics`;
    a subset with no faces has count 0 and NaN values (absent, not zero).
  """
  nmes = _check_nmes(nmes)
  result = {"full": subset_metrics(nmes, threshold, step)}
  for name, flags in attributes.items():
    flags = np.asarray(flags)
    if flags.shape != nmes.shape:
      raise ValueError(f"attribute {name!r} must have shape {nmes.shape} (one "
                       f"flag per face); got {flags.shape}.")
    if not np.all((flags == 0) | (flags == 1)):
      raise ValueError(f"attribute {name!r} must hold 0/1 or bool flags.")
    selected = nmes[flags.astype(bool)]
    if selected.size == 0:
      result[name] = {"nme": float("nan"), "fr": float("nan"),
                      "auc": float("nan"), "count": 0}
    else:
      result[name] = subset_metrics(selected, threshold, step)
  return result


def wflw_attribute_metrics(nmes, attributes: Mapping[str, object],
                           threshold: float = 0.1,
                           step: float = 1e-4) -> Dict[str, Dict[str, float]]:
  """WFLW breakdown: `attribute_metrics` requiring the six WFLW attributes."""
  missing = [a for a in WFLW_ATTRIBUTES if a not in attributes]
  if missing:
    raise ValueError(f"WFLW attributes missing: {missing}; expected keys "
                     f"{WFLW_ATTRIBUTES}.")
  return attribute_metrics(nmes, {a: attributes[a] for a in WFLW_ATTRIBUTES},
                           threshold, step)


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray,
                     num_samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> Dict[str, float]:
  """Bootstrap of the mean error difference `a - b` over the same items.

  An item is a face (two models on the same faces) or an image pair (two
  matchers on the same pairs). Each item's landmark errors are averaged
  first (`[P, K]` -> `[P]`; `[P]` is used as is), and items, not landmarks,
  are resampled with replacement: the landmarks of one face are not
  independent samples. The resamples depend only on `seed` and P, so every
  comparison over the same items with the same seed uses the same ones.

  Args:
    errors_a, errors_b: `[P, K]` or `[P]` errors of two methods on the same
      items (e.g. `matching.evaluate_matching(...)["same_errors"]`).
    num_samples: bootstrap resamples.
    seed: `np.random.default_rng` seed.
    confidence: central coverage of the percentile interval.

  Returns:
    `mean_difference` (mean over items of `a - b`), `low`, `high` (the
    percentile interval), `num_pairs` (items), `num_samples`.
  """
  a, b = np.asarray(errors_a, np.float64), np.asarray(errors_b, np.float64)
  if a.shape != b.shape or a.ndim not in (1, 2) or a.shape[0] < 1:
    raise ValueError("errors_a and errors_b must be equal [P, K] or [P] "
                     f"arrays with P >= 1, got {a.shape} and {b.shape}.")
  if num_samples < 1 or not 0.0 < confidence < 1.0:
    raise ValueError(f"need num_samples >= 1 and 0 < confidence < 1, got "
                     f"{num_samples} and {confidence}.")
  diff = (a.mean(axis=1) - b.mean(axis=1)) if a.ndim == 2 else a - b
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, diff.shape[0], size=(num_samples, diff.shape[0]))
  means = diff[idx].mean(axis=1)
  tail = 50.0 * (1.0 - confidence)
  low, high = np.percentile(means, [tail, 100.0 - tail])
  return {"mean_difference": float(diff.mean()), "low": float(low),
          "high": float(high), "num_pairs": int(diff.shape[0]),
          "num_samples": int(num_samples)}

"""Landmark matching (DVE protocol, SCE-MAE Sec. 4.1, Table 1 and 4).

Pairs (`make_pairs`) follow DVE's `test_matching.py`: the test split in its
order is cut into consecutive faces `(2k, 2k + 1)`, `k < n // 2` (DVE's
DataLoader with batch_size 2, shuffle off, drop_last). Every face gets DVE's
pair warper (`utils/tps.py`, `Warper`): a random TPS warp `W1` and, on top of
it, a second one `W2`, so its two views are `I o G1` and `I o G1 o G2`. The
Warper returns them reversed (more warped first), so in pair k:

  * source: face 2k warped twice (`W1` then `W2`),
  * same identity: face 2k warped once (`W1`),
  * different identity: face 2k + 1 warped once (its own `W1`),

each with its landmarks moved by the same warps (`tps.warp_landmarks`). Warps
are `tps.random_dve_warp` with DVE's evaluation parameters by default
(`warp_type` "dve"), or the earlier similarity + control jitter
(`tps.random_tps_warp`, `warp_type` "similarity_jitter"); see `warp_sampler`.

For every landmark of the source, its feature is compared by cosine
similarity with every pixel of the target's features, both upsampled
bilinearly to the image size (`upsample_features`); the argmax pixel is the
match (`match_points`). The error is the Euclidean distance to the target's
landmark, reported in a 70 x 70 frame (`to_dve_frame`): DVE evaluates on
70 x 70 MAFL crops (CelebA resized to 100, centre 70) and averages raw pixel
errors there; errors at our crop size are scaled by 70 / size.
`baseline_matching` scores image-free matchers on the same pairs and
`landmarks.metrics.paired_bootstrap` compares two matchers pair by pair.

Differences to DVE's code:
  * descriptors: DVE queries the descriptor at the rounded landmark on the
    stride grid and takes the argmax on the target grid times the stride; we
    follow the SCE-MAE text ("features upsampled to the image") and sample
    the source feature bilinearly at the exact landmark;
  * landmarks: DVE snaps each warped landmark to the nearest warped pixel; we
    invert the sampling map exactly and snap only where that fails;
  * DVE warps the 100 px image and then crops 15 px per side, so the warp's
    normalised frame is the uncropped image and the borders show real
    content; we warp our crop itself (zeros outside, as `grid_sample`);
  * warped images are rounded to the input's integer type (DVE truncates to
    uint8); DVE's kernel has a `+1e-5` inside the log (`tps.random_dve_warp`);
  * random draws come from JAX keys (same distributions, different numbers
    than DVE's torch seed 0).
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from sce_mae_jax import projector as projector_lib
from sce_mae_jax import tps as tps_lib

DVE_FRAME = 70.0
WARP_TYPES = ("dve", "similarity_jitter")
_WARP_KEYS = {
    "dve": frozenset({"warpsd_all", "warpsd_subset", "transsd", "scalesd",
                      "rotsd", "grid_size"}),
    "similarity_jitter": frozenset({"control_sd", "rotation_sd_deg",
                                    "scale_sd", "translation_sd",
                                    "grid_size"}),
}
_WARP_FNS = {"dve": tps_lib.random_dve_warp,
             "similarity_jitter": tps_lib.random_tps_warp}


def upsample_features(features: jax.Array, size: int) -> jax.Array:
  """`[h, w, D]` -> `[size, size, D]` bilinear (half-pixel centres, as the
  cover-and-stride "centre" geometry)."""
  return jax.image.resize(features, (size, size, features.shape[-1]),
                          method="bilinear")


def match_points(source: jax.Array, target: jax.Array,
                 points: jax.Array) -> jax.Array:
  """Cosine-argmax matches of `points` from `source` into `target`.

  Args:
    source, target: `[H, W, D]` features at image resolution.
    points: `[K, 2]` `(x, y)` pixels in the source image.

  Returns:
    `[K, 2]` float32 `(x, y)` pixel of the most similar target feature.
  """
  h, w, d = target.shape
  src = projector_lib.l2_normalize(source)
  tgt = projector_lib.l2_normalize(target).reshape(h * w, d)
  query = tps_lib.bilinear_sample(src, points, padding="border")  # [K, D]
  query = projector_lib.l2_normalize(query)
  scores = jnp.matmul(query, tgt.T, precision=jax.lax.Precision.HIGHEST)
  best = jnp.argmax(scores, axis=-1)
  return jnp.stack([best % w, best // w], axis=-1).astype(jnp.float32)


def to_dve_frame(errors: np.ndarray, image_size: int) -> np.ndarray:
  """Pixel errors at `image_size` -> pixels of DVE's 70 x 70 frame."""
  return np.asarray(errors) * (DVE_FRAME / float(image_size))


_match_batch = jax.jit(jax.vmap(match_points))


def pair_matches(src_feats: jax.Array, tgt_feats: jax.Array,
                 src_points: jax.Array, image_size: int) -> np.ndarray:
  """`[B, K, 2]` matched target pixels, features `[B, h, w, D]`."""
  up = jax.vmap(lambda f: upsample_features(f, image_size))
  return np.asarray(_match_batch(up(src_feats), up(tgt_feats), src_points))


def pair_errors(src_feats: jax.Array, tgt_feats: jax.Array,
                src_points: jax.Array, tgt_points: jax.Array,
                image_size: int) -> np.ndarray:
  """`[B, K]` match errors in pixels of the image, features `[B, h, w, D]`."""
  pred = pair_matches(src_feats, tgt_feats, src_points, image_size)
  return np.linalg.norm(pred - np.asarray(tgt_points), axis=-1)


# ---------------------------------------------------------------- pairs ----

def warp_sampler(warp_kwargs: Optional[dict] = None
                 ) -> Tuple[str, Callable[[jax.Array], tps_lib.TpsWarp]]:
  """The warp family and its sampler `key -> TpsWarp` from a config dict.

  `warp_kwargs` holds the keyword arguments of the family's function and an
  optional `"type"` (`WARP_TYPES`). Without a type, the family is
  "similarity_jitter" when a key only it has is present (configs written
  before the DVE warps) and "dve" otherwise (so `{}` is DVE's evaluation
  warp).

  Returns:
    `(warp type, sampler)`.

  Raises:
    ValueError: unknown type, or keys the family does not take.
  """
  kwargs = dict(warp_kwargs or {})
  warp_type = kwargs.pop("type", None)
  if warp_type is None:
    only_jitter = _WARP_KEYS["similarity_jitter"] - _WARP_KEYS["dve"]
    warp_type = "similarity_jitter" if only_jitter & set(kwargs) else "dve"
  if warp_type not in WARP_TYPES:
    raise ValueError(f"warp type must be one of {WARP_TYPES}, got "
                     f"{warp_type!r}.")
  unknown = sorted(set(kwargs) - _WARP_KEYS[warp_type])
  if unknown:
    raise ValueError(f"{warp_type!r} warps take {sorted(_WARP_KEYS[warp_type])}"
                     f", got unknown {unknown}.")
  return warp_type, functools.partial(_WARP_FNS[warp_type], **kwargs)


def _quantize_like(images: jax.Array, dtype: np.dtype) -> jax.Array:
  """Warped float images -> `dtype` (rounded and clipped when integer)."""
  if not np.issubdtype(dtype, np.integer):
    return images.astype(dtype)
  info = np.iinfo(dtype)
  return jnp.clip(jnp.round(images), info.min, info.max).astype(dtype)


@functools.lru_cache(maxsize=8)
def _pair_fn(warp_items: Tuple[Tuple[str, object], ...],
             image_size: Tuple[int, int], dtype: np.dtype):
  """Jitted, batched `(keys, faces 2k, faces 2k + 1) -> pair arrays`.

  Cached on its (hashable) arguments so repeated `make_pairs` calls with the
  same settings compile once.
  """
  _, draw = warp_sampler(dict(warp_items))

  def one(key, image_a, points_a, image_b, points_b):
    k_first, k_second, k_other = jax.random.split(key, 3)
    first, second, other = draw(k_first), draw(k_second), draw(k_other)
    move = functools.partial(tps_lib.warp_landmarks, image_size=image_size)
    same = tps_lib.warp_image(image_a.astype(jnp.float32), first)
    same_pts, snap_same = move(points_a, first)
    source = tps_lib.warp_image(same, second)
    source_pts, snap_source = move(same_pts, second)
    diff = tps_lib.warp_image(image_b.astype(jnp.float32), other)
    diff_pts, snap_diff = move(points_b, other)
    return {
        "source_image": _quantize_like(source, dtype),
        "same_image": _quantize_like(same, dtype),
        "diff_image": _quantize_like(diff, dtype),
        "source_points": source_pts, "same_points": same_pts,
        "diff_points": diff_pts,
        "snapped": snap_same | snap_source | snap_diff,
        "warps": {"source_first": first, "source_second": second,
                  "diff": other},
    }

  return jax.jit(jax.vmap(one))


def num_available_pairs(num_faces: int,
                        num_pairs: Optional[int] = None) -> int:
  """`n // 2` DVE pairs, capped by `num_pairs` (None or 0: all)."""
  if num_pairs is not None and num_pairs < 0:
    raise ValueError(f"num_pairs must be >= 0 or None, got {num_pairs}.")
  available = num_faces // 2
  return available if not num_pairs else min(int(num_pairs), available)


def make_pairs(images: np.ndarray, landmarks: np.ndarray,
               num_pairs: Optional[int] = None, seed: int = 0,
               warp_kwargs: Optional[dict] = None,
               batch_size: int = 32) -> Dict[str, np.ndarray]:
  """DVE's matching pairs of a test split (see the module docstring).

  Pair k uses faces 2k and 2k + 1 and the key `fold_in(PRNGKey(seed), k)`,
  so capping `num_pairs` keeps a prefix of the same pairs.

  Args:
    images: `[n, H, W, C]` faces (n >= 2), in split order.
    landmarks: `[n, K, 2]` `(x, y)` pixels of the faces.
    num_pairs: at most this many pairs (None or 0: all `n // 2`).
    seed: warp seed.
    warp_kwargs: warp family and parameters (`warp_sampler`).
    batch_size: pairs warped per jitted call.

  Returns:
    `source_index` / `diff_index` int `[P]` (2k, 2k + 1); `source_image`,
    `same_image`, `diff_image` `[P, H, W, C]` in the images' dtype;
    `source_points`, `same_points`, `diff_points` float32 `[P, K, 2]`;
    `snapped` bool `[P, K]` (a landmark map of the pair fell back to
    nearest-pixel snapping); `warps` (the `TpsWarp`s, stacked); `warp_type`.
  """
  n = images.shape[0]
  if n < 2:
    raise ValueError("matching needs at least 2 test images.")
  count = num_available_pairs(n, num_pairs)
  warp_type, _ = warp_sampler(warp_kwargs)  # Validates before compiling.
  items = tuple(sorted(dict(warp_kwargs or {}, type=warp_type).items()))
  fn = _pair_fn(items, tuple(images.shape[1:3]), np.dtype(images.dtype))
  base = jax.random.PRNGKey(seed)
  chunks = []
  for start in range(0, count, batch_size):
    ks = np.arange(start, start + batch_size)
    ks = np.minimum(ks, count - 1)  # Pads the last chunk (one compile).
    keys = jax.vmap(lambda k: jax.random.fold_in(base, k))(jnp.asarray(ks))
    out = fn(keys, jnp.asarray(images[2 * ks]),
             jnp.asarray(landmarks[2 * ks], jnp.float32),
             jnp.asarray(images[2 * ks + 1]),
             jnp.asarray(landmarks[2 * ks + 1], jnp.float32))
    keep = min(batch_size, count - start)
    chunks.append(jax.tree.map(lambda x, m=keep: np.asarray(x)[:m], out))
  pairs = jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)
  pairs["source_index"] = 2 * np.arange(count)
  pairs["diff_index"] = 2 * np.arange(count) + 1
  pairs["warp_type"] = warp_type
  return pairs


# -------------------------------------------------------------- results ----

def _result(kind: str, pairs: Dict[str, np.ndarray], same_px: np.ndarray,
            diff_px: np.ndarray) -> Dict[str, object]:
  """Means and per-pair errors (70 px frame) of one matcher on `pairs`."""
  size = pairs["source_image"].shape[2]
  same = to_dve_frame(np.asarray(same_px, np.float64), size)
  diff = to_dve_frame(np.asarray(diff_px, np.float64), size)
  return {"same": float(np.mean(same)), "diff": float(np.mean(diff)),
          "same_px": float(np.mean(same_px)),
          "diff_px": float(np.mean(diff_px)),
          "same_errors": same, "diff_errors": diff,
          "source_index": np.asarray(pairs["source_index"]),
          "diff_index": np.asarray(pairs["diff_index"]),
          "num_pairs": int(same.shape[0]),
          "num_snapped": int(np.sum(pairs["snapped"])),
          "warp_type": str(pairs["warp_type"]), "feature_kind": kind}


def evaluate_matching(model, params, arrays: Dict[str, np.ndarray], *,
                      kind: str = "projector",
                      num_pairs: Optional[int] = None,
                      seed: int = 0, warp_kwargs: Optional[dict] = None,
                      batch_size: int = 16,
                      stride: Optional[int] = None,
                      examples: Optional[list] = None,
                      pairs: Optional[Dict[str, np.ndarray]] = None
                      ) -> Dict[str, object]:
  """Same / different identity errors (70 px frame) of one feature kind.

  Args:
    model: a `stage2.FeatureModel`.
    params: `{"encoder", "projector"}`.
    arrays: `stage2.load_arrays` output (images + crop landmarks).
    kind: feature kind (`stage2.FEATURE_KINDS`).
    num_pairs, seed, warp_kwargs: passed to `make_pairs`.
    batch_size: pairs per feature batch.
    stride: dense-feature stride (None: the model's default).
    examples: when a list, the first batch's pairs are appended to it as
      dicts (`kind` "same" | "diff", `source_image`, `target_image`,
      `source_points`, `matched_points`, `target_points`, pixels), for
      `landmarks.plots.matching_pairs`.
    pairs: precomputed `make_pairs` output (then `arrays`, `num_pairs`,
      `seed` and `warp_kwargs` are not used).

  Returns:
    `same`, `diff` (mean errors, 70 px frame), `same_px`, `diff_px` (mean
    errors at the crop size), `same_errors`, `diff_errors` (float64 `[P, K]`,
    70 px frame; `landmarks.metrics.paired_bootstrap`), `source_index`, `diff_index`,
    `num_pairs`, `num_snapped`, `warp_type`, `feature_kind`.
  """
  if pairs is None:
    pairs = make_pairs(arrays["image"], arrays["landmarks"], num_pairs, seed,
                       warp_kwargs)
  size = pairs["source_image"].shape[2]
  feats = jax.jit(lambda im: model.dense_features(params, im, kind, stride))
  errs = {"same": [], "diff": []}
  for start in range(0, pairs["source_image"].shape[0], batch_size):
    sl = slice(start, start + batch_size)
    src = feats(jnp.asarray(pairs["source_image"][sl]))
    src_pts = pairs["source_points"][sl]
    for tag in ("same", "diff"):
      tgt = feats(jnp.asarray(pairs[f"{tag}_image"][sl]))
      matched = pair_matches(src, tgt, jnp.asarray(src_pts), size)
      true = pairs[f"{tag}_points"][sl]
      errs[tag].append(np.linalg.norm(matched - true, axis=-1))
      if examples is not None and start == 0:
        examples.extend(
            {"kind": tag, "source_image": pairs["source_image"][i],
             "target_image": pairs[f"{tag}_image"][i],
             "source_points": src_pts[i], "matched_points": matched[i],
             "target_points": true[i]}
            for i in range(len(src_pts)))
  return _result(kind, pairs, np.concatenate(errs["same"]),
                 np.concatenate(errs["diff"]))


def baseline_matching(pairs: Dict[str, np.ndarray],
                      mean_shape: Optional[np.ndarray] = None
                      ) -> Dict[str, object]:
  """An image-free matcher on `pairs`, in `evaluate_matching`'s layout.

  Without `mean_shape`, the identity matcher: every landmark is matched to
  its own source pixel (what a matcher gets by ignoring both images). With
  `mean_shape` `[K, 2]` (crop pixels, e.g. the mean landmarks of training
  faces), landmark k is matched to `mean_shape[k]` in every target.

  Returns:
    The `evaluate_matching` result dict, `feature_kind` "identity" or
    "mean_shape".
  """
  src = np.asarray(pairs["source_points"], np.float64)
  if mean_shape is None:
    kind, pred = "identity", src
  else:
    mean_shape = np.asarray(mean_shape, np.float64)
    if mean_shape.shape != src.shape[1:]:
      raise ValueError(f"mean_shape must be {src.shape[1:]}, got "
                       f"{mean_shape.shape}.")
    kind, pred = "mean_shape", np.broadcast_to(mean_shape, src.shape)
  errors = {tag: np.linalg.norm(pred - pairs[f"{tag}_points"], axis=-1)
            for tag in ("same", "diff")}
  return _result(kind, pairs, errors["same"], errors["diff"])


def format_result(result: Dict[str, object]) -> str:
  return (f"matching ({result['feature_kind']}, {result['num_pairs']} pairs, "
          f"{result.get('warp_type', 'dve')} warps): "
          f"same {result['same']:.3f}  diff {result['diff']:.3f}  "
          "(mean pixel error, 70 x 70 frame)")


def json_default(value):
  """`json.dump(..., default=json_default)`: NumPy arrays and scalars."""
  if isinstance(value, (np.ndarray, np.generic)):
    return value.tolist()
  raise TypeError(f"{type(value).__name__} is not JSON serialisable.")


def write_result(result, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2, sort_keys=True, default=json_default)

"""CARB token selection for SCE-MAE stage 2 (paper Sec. 3.2, eq. 1-3).

The Correspondence Approximation and Refinement Block splits the N patch tokens
of a frozen MAE encoder into

  * attentive tokens: the `k_att = round(eta * N)` tokens with the highest
    CLS-to-patch attention (eq. 1) at an early encoder layer (the paper uses the
    third layer, eta = 0.1 for DeiT-T/S and 0.25 for DeiT-B), and
  * inattentive tokens: the other `N - k_att`, grouped by density-peak
    clustering (eq. 2-3) into K cluster centres (K = 4 in the paper); every
    inattentive token is then replaced by its centre's feature.

The LCR loss (`lcr.py`) only sees the kept set: the `k_att` attentive tokens
plus the K centres, a static count `k_att + K`.

Everything here is per image with static shapes (top-k and gathers with static
counts, masks instead of boolean indexing), so `jax.jit` compiles once per
(N, C, eta, K) and `carb_select_batch` is a plain `jax.vmap`.

Decisions where the paper is silent (see each docstring):
  * eq. 1 uses a softmax over the N patch keys only; from a ViT attention map
    (softmax over CLS + N keys) the CLS column is dropped and each head's row is
    renormalised, which gives eq. 1 exactly; heads are then averaged.
  * `k_att = floor(eta * N + 0.5)` (round half up, not Python's banker's round).
  * Density (eq. 2) as printed, `exp(+sum ||t_i - t_j||^2)`, has the wrong sign
    (isolated tokens would be densest and it overflows). We use the DPC-kNN
    form of the cited token-clustering work:
    `rho_i = exp(-mean of the k smallest ||t_i - t_j||^2, j != i)`, k = 5.
  * Everything is computed in log-density: `rho * delta` is ranked through
    `log rho + log delta`, which has the same top-K but cannot underflow (for
    192-d ViT features the squared distances are O(100) and `exp(-100)` is a
    float32 denormal).
  * delta for the densest token = max distance from that token (eq. 3 as
    printed; the TCFormer code uses the global max distance instead).
  * Distances are scaled by 1/sqrt(C) (the TCFormer / BAT DPC-kNN code;
    `scale_by_dim`, default on): without it the density term dominates the
    score on high-dimensional tokens (see `density_peak_clustering`); off =
    the plain Euclidean distances of eq. 2-3 as printed.
  * Tie-break noise: a uniform `noise_scale * (1 + |log rho|) * U(0, 1)` added
    to log rho, i.e. a relative perturbation of about 1e-6 (only reorders
    near-exact ties); no key = no noise.
  * Clustering runs on the features of the selection layer (`tokens`); the
    features that are substituted and returned (`output_tokens`) may be another
    layer's (e.g. the last encoder layer, which the projector sees); by default
    the same.
  * Replacement: "centre" (paper: the centre token's own feature) or "mean"
    (member average, as in token-merging work); the kept centre's position is
    the centre token's own patch position in both modes.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import flax
import jax
import jax.numpy as jnp

REPLACE_MODES = ("centre", "mean")


def attentive_count(num_patches: int, eta: float) -> int:
  """Number of attentive tokens `round(eta * N)`, rounding halves up."""
  if not 0.0 < eta < 1.0:
    raise ValueError(f"eta must be in (0, 1), got {eta}; the paper uses 0.1 "
                     "(DeiT-T/S) or 0.25 (DeiT-B).")
  k = int(math.floor(eta * num_patches + 0.5))
  if not 1 <= k <= num_patches - 1:
    raise ValueError(f"eta={eta} with N={num_patches} patches gives {k} "
                     "attentive tokens; need between 1 and N - 1.")
  return k


def cls_attention_from_row(cls_row: jax.Array,
                           includes_cls: bool = True) -> jax.Array:
  """Head-averaged CLS-to-patch similarity (eq. 1) from the CLS attention row.

  Args:
    cls_row: `[..., heads, T]` the CLS query's attention probabilities. With
      `includes_cls` the row covers all `T = 1 + N` keys (CLS first), as sliced
      from a ViT attention map `attn[..., 0, :]`; otherwise `T = N`.
    includes_cls: whether column 0 is the CLS key.

  Returns:
    `[..., N]` eq. 1 per head (softmax over the N patch keys only, obtained by
    dropping the CLS column and renormalising), averaged over heads.
  """
  if cls_row.ndim < 2:
    raise ValueError(f"cls_row must be [..., heads, T], got {cls_row.shape}.")
  row = cls_row[..., 1:] if includes_cls else cls_row
  row = row / jnp.sum(row, axis=-1, keepdims=True)
  return jnp.mean(row, axis=-2)


def cls_attention_from_map(attention: jax.Array) -> jax.Array:
  """Eq. 1 from a full attention map `[..., heads, 1 + N, 1 + N]` -> `[..., N]`.

  Token 0 must be the CLS token (the ViT layout); see `cls_attention_from_row`.
  """
  if attention.ndim < 3 or attention.shape[-1] != attention.shape[-2]:
    raise ValueError("attention must be [..., heads, 1 + N, 1 + N], got "
                     f"{attention.shape}.")
  return cls_attention_from_row(attention[..., 0, :], includes_cls=True)


def cls_similarity_from_qk(q_cls: jax.Array, keys: jax.Array) -> jax.Array:
  """Eq. 1 literally: `mean_heads softmax(K q_cls / sqrt(d))`.

  Args:
    q_cls: `[..., heads, d]` CLS query per head.
    keys: `[..., heads, N, d]` patch keys per head (no CLS key).

  Returns:
    `[..., N]` head-averaged similarity.
  """
  d = q_cls.shape[-1]
  logits = jnp.einsum("...hnd,...hd->...hn", keys, q_cls) / math.sqrt(d)
  return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=-2)


def patch_positions(indices: jax.Array,
                    grid_shape: Tuple[int, int]) -> jax.Array:
  """`(row, col)` patch-grid positions (patch units, float32) of flat indices.

  Patch `n` of a row-major `grid_shape = (Hp, Wp)` grid sits at
  `(n // Wp, n % Wp)`; its centre in input pixels is
  `(P * row + (P - 1) / 2, P * col + (P - 1) / 2)` for patch size P.
  """
  width = grid_shape[1]
  return jnp.stack([indices // width, indices % width], axis=-1).astype(
      jnp.float32)


def split_attentive(cls_similarity: jax.Array,
                    num_attentive: int) -> Tuple[jax.Array, jax.Array]:
  """Attentive / inattentive split (Sec. 3.2) with static sizes.

  Args:
    cls_similarity: `[N]` eq. 1 scores.
    num_attentive: static `k_att`.

  Returns:
    `(attentive [k_att], inattentive [N - k_att])` int32 patch indices; the
    attentive ones by decreasing similarity, the inattentive ones too.
  """
  n = cls_similarity.shape[-1]
  _, order = jax.lax.top_k(cls_similarity, n)
  return order[:num_attentive], order[num_attentive:]


def pairwise_sq_distances(x: jax.Array) -> jax.Array:
  """`[M, M]` squared Euclidean distances of `[M, C]` rows (exact 0 diagonal)."""
  sq = jnp.sum(jnp.square(x), axis=-1)
  # HIGHEST: TPUs would otherwise multiply in bfloat16 and the cancellation
  # in |a|^2 + |b|^2 - 2ab would swamp small distances.
  gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  d2 = sq[:, None] + sq[None, :] - 2.0 * gram
  d2 = jnp.maximum(d2, 0.0)
  return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d2)


def knn_log_density(sq_dist: jax.Array, k: int,
                    include_self: bool = False) -> jax.Array:
  """Log of the kNN density (eq. 2 with the sign corrected).

  The printed eq. 2, `rho_i = exp(sum_j ||t_i - t_j||^2)`, has the wrong sign:
  it would make the most isolated token the densest and overflows for real
  features. We use the DPC-kNN form of the cited work [28]:
  `log rho_i = -mean of the k smallest ||t_i - t_j||^2` over `j != i` (with
  `include_self`, token i itself counts as one of its k neighbours, as the
  TCFormer code does).

  Args:
    sq_dist: `[M, M]` squared distances between the inattentive tokens.
    k: number of neighbours (paper setting: 5).
    include_self: count the zero self-distance among the k.

  Returns:
    `[M]` log rho.
  """
  m = sq_dist.shape[0]
  if not include_self:
    sq_dist = jnp.where(jnp.eye(m, dtype=bool), jnp.inf, sq_dist)
  neg_nearest, _ = jax.lax.top_k(-sq_dist, k)
  return jnp.mean(neg_nearest, axis=-1)


def peak_distance(dist: jax.Array, log_density: jax.Array) -> jax.Array:
  """Eq. 3: distance to the nearest denser token, or max distance if none.

  Args:
    dist: `[M, M]` Euclidean distances.
    log_density: `[M]` log rho (monotone in rho, so "denser" is unchanged).

  Returns:
    `[M]` delta.
  """
  denser = log_density[None, :] > log_density[:, None]  # [i, j]: j denser.
  nearest_denser = jnp.min(jnp.where(denser, dist, jnp.inf), axis=-1)
  return jnp.where(jnp.any(denser, axis=-1), nearest_denser,
                   jnp.max(dist, axis=-1))


@flax.struct.dataclass
class Clustering:
  """Density-peak clustering of M tokens into K centres.

  Attributes:
    centres: `[K]` int32 local indices (into the M tokens) by decreasing score.
    assignment: `[M]` int32 cluster id in `[0, K)` of each token.
    log_density: `[M]` log rho (including the tie-break noise).
    delta: `[M]` eq. 3.
    log_score: `[M]` `log(rho * delta)`.
  """
  centres: jax.Array
  assignment: jax.Array
  log_density: jax.Array
  delta: jax.Array
  log_score: jax.Array


def density_peak_clustering(tokens: jax.Array,
                            num_clusters: int = 4,
                            knn: int = 5,
                            key: Optional[jax.Array] = None,
                            noise_scale: float = 1e-6,
                            include_self: bool = False,
                            scale_by_dim: bool = True) -> Clustering:
  """DPC-kNN (eq. 2-3): centres = top-K of `rho * delta`, nearest-centre labels.

  Args:
    tokens: `[M, C]` features of the inattentive tokens.
    num_clusters: static K (paper: 4).
    knn: static k of the kNN density (5).
    key: PRNG key of the tie-break noise `noise_scale * (1 + |log rho|) *
      U(0, 1)` added to log rho (a relative change of rho by about
      `noise_scale`); None = no noise.
    noise_scale: see `key`.
    include_self: see `knn_log_density`.
    scale_by_dim: divide distances by sqrt(C) (TCFormer / BAT; default).
      `log rho` grows with the squared distances (O(C)) while `log delta`
      grows with their log, so on unscaled C = 192 ViT tokens the score
      `rho * delta` ranks by density alone and all K centres fall in the
      densest region; scaled, density and separation both count. False =
      eq. 2-3 as printed.

  Returns:
    A `Clustering`. Each token is assigned to the nearest centre in feature
    space; a centre is always assigned to itself.
  """
  m, c = tokens.shape
  needed = knn + (0 if include_self else 1)
  if m < max(num_clusters, needed):
    raise ValueError(f"{m} inattentive tokens cannot give {num_clusters} "
                     f"centres with a {knn}-NN density; lower K, k or eta.")
  tokens = tokens.astype(jnp.float32)
  sq_dist = pairwise_sq_distances(tokens)
  if scale_by_dim:
    sq_dist = sq_dist / c
  log_density = knn_log_density(sq_dist, knn, include_self)
  if key is not None and noise_scale > 0:
    u = jax.random.uniform(key, log_density.shape, dtype=log_density.dtype)
    log_density = log_density + noise_scale * (1.0 + jnp.abs(log_density)) * u
  dist = jnp.sqrt(sq_dist)
  delta = peak_distance(dist, log_density)
  log_score = log_density + jnp.log(delta)
  _, centres = jax.lax.top_k(log_score, num_clusters)
  assignment = jnp.argmin(dist[:, centres], axis=-1).astype(jnp.int32)
  assignment = assignment.at[centres].set(
      jnp.arange(num_clusters, dtype=jnp.int32))
  return Clustering(centres=centres.astype(jnp.int32), assignment=assignment,
                    log_density=log_density, delta=delta, log_score=log_score)


@flax.struct.dataclass
class CarbSelection:
  """What stage 2 needs from CARB for one image (a batch adds a leading axis).

  With `k_att` attentive tokens and K centres, `T = k_att + K` kept tokens,
  attentive first (by decreasing CLS similarity), then centres (by decreasing
  score).

  Attributes:
    kept_index: `[T]` int32 patch indices (row-major on the patch grid).
    kept_features: `[T, C]` their features (`output_tokens`; for centres the
      centre feature or the member average, see `replace`).
    kept_positions: `[T, 2]` float32 `(row, col)` in patch units; a centre has
      its own patch's position.
    kept_is_attentive: `[T]` bool, True for attentive, False for centres.
    attentive_mask: `[N]` bool.
    cluster_of_patch: `[N]` int32 cluster id in `[0, K)` of each inattentive
      patch, -1 for attentive patches.
    representative: `[N]` int32 patch index whose kept feature stands for each
      patch (itself if attentive, its centre if inattentive).
    approx_tokens: `[N, C]` the complete feature map with every inattentive
      token replaced by its centre's feature (what the paper feeds to the
      projector).
    cls_similarity: `[N]` eq. 1 scores used for the split.
    log_density, delta: `[N - k_att]` eq. 2-3 diagnostics of the inattentive
      tokens (in `inattentive_index` order).
    inattentive_index: `[N - k_att]` int32 patch indices.
  """
  kept_index: jax.Array
  kept_features: jax.Array
  kept_positions: jax.Array
  kept_is_attentive: jax.Array
  attentive_mask: jax.Array
  cluster_of_patch: jax.Array
  representative: jax.Array
  approx_tokens: jax.Array
  cls_similarity: jax.Array
  log_density: jax.Array
  delta: jax.Array
  inattentive_index: jax.Array


def carb_select(cls_similarity: jax.Array,
                tokens: jax.Array,
                key: Optional[jax.Array] = None,
                output_tokens: Optional[jax.Array] = None,
                *,
                grid_shape: Optional[Tuple[int, int]] = None,
                eta: float = 0.1,
                num_clusters: int = 4,
                knn: int = 5,
                replace: str = "centre",
                noise_scale: float = 1e-6,
                knn_include_self: bool = False,
                scale_by_dim: bool = True) -> CarbSelection:
  """CARB selection for one image (Sec. 3.2 + the substitution of Sec. 3.3).

  Args:
    cls_similarity: `[N]` eq. 1 scores of the selection layer (see
      `cls_attention_from_map`).
    tokens: `[N, C]` patch tokens used for clustering (selection layer).
    key: PRNG key for the tie-break noise; None = no noise.
    output_tokens: `[N, C']` features to substitute and return (e.g. the last
      layer's); defaults to `tokens`.
    grid_shape: `(Hp, Wp)` patch grid, default square.
    eta: attentive rate (0.1 for DeiT-T/S, 0.25 for DeiT-B).
    num_clusters: K (4).
    knn: k of the kNN density (5).
    replace: "centre" (paper) or "mean" (member average).
    noise_scale: relative size of the tie-break noise on log rho.
    knn_include_self: see `knn_log_density`.
    scale_by_dim: see `density_peak_clustering`.

  Returns:
    A `CarbSelection`.
  """
  n, _ = tokens.shape
  if cls_similarity.shape != (n,):
    raise ValueError(f"cls_similarity must be [N]=[{n}], got "
                     f"{cls_similarity.shape}.")
  if replace not in REPLACE_MODES:
    raise ValueError(f"replace must be one of {REPLACE_MODES}, got {replace!r}.")
  if grid_shape is None:
    side = int(round(math.sqrt(n)))
    if side * side != n:
      raise ValueError(f"N={n} is not a square; pass grid_shape=(Hp, Wp).")
    grid_shape = (side, side)
  if grid_shape[0] * grid_shape[1] != n:
    raise ValueError(f"grid_shape {grid_shape} does not hold N={n} patches.")
  if output_tokens is None:
    output_tokens = tokens
  if output_tokens.shape[0] != n:
    raise ValueError(f"output_tokens must have N={n} rows, got "
                     f"{output_tokens.shape}.")

  k_att = attentive_count(n, eta)
  att_idx, inatt_idx = split_attentive(cls_similarity, k_att)
  inatt_tokens = tokens[inatt_idx]

  clus = density_peak_clustering(
      inatt_tokens, num_clusters=num_clusters, knn=knn, key=key,
      noise_scale=noise_scale, include_self=knn_include_self,
      scale_by_dim=scale_by_dim)

  centre_idx = inatt_idx[clus.centres]  # [K] patch indices.
  inatt_out = output_tokens[inatt_idx]
  if replace == "centre":
    centre_feats = output_tokens[centre_idx]
  else:
    one_hot = jax.nn.one_hot(clus.assignment, num_clusters,
                             dtype=inatt_out.dtype)  # [M, K]
    counts = jnp.sum(one_hot, axis=0)  # >= 1: a centre is its own member.
    sums = jnp.matmul(one_hot.T, inatt_out,
                      precision=jax.lax.Precision.HIGHEST)
    centre_feats = sums / counts[:, None]
  substituted = centre_feats[clus.assignment]  # [M, C']
  approx = output_tokens.at[inatt_idx].set(substituted)

  kept_index = jnp.concatenate([att_idx, centre_idx]).astype(jnp.int32)
  kept_features = jnp.concatenate([output_tokens[att_idx], centre_feats])
  kept_is_att = jnp.arange(k_att + num_clusters) < k_att

  attentive_mask = jnp.zeros((n,), bool).at[att_idx].set(True)
  cluster_of_patch = jnp.full((n,), -1, jnp.int32).at[inatt_idx].set(
      clus.assignment)
  representative = jnp.arange(n, dtype=jnp.int32).at[inatt_idx].set(
      centre_idx[clus.assignment])

  return CarbSelection(
      kept_index=kept_index,
      kept_features=kept_features,
      kept_positions=patch_positions(kept_index, grid_shape),
      kept_is_attentive=kept_is_att,
      attentive_mask=attentive_mask,
      cluster_of_patch=cluster_of_patch,
      representative=representative,
      approx_tokens=approx,
      cls_similarity=cls_similarity,
      log_density=clus.log_density,
      delta=clus.delta,
      inattentive_index=inatt_idx.astype(jnp.int32))


def carb_select_batch(cls_similarity: jax.Array,
                      tokens: jax.Array,
                      key: Optional[jax.Array] = None,
                      output_tokens: Optional[jax.Array] = None,
                      **kwargs) -> CarbSelection:
  """`carb_select` vmapped over a batch: `[B, N]`, `[B, N, C]` -> batched.

  `key` (one key) is split into one key per image. Keyword arguments are the
  static settings of `carb_select`.
  """
  b = tokens.shape[0]
  fn = functools.partial(carb_select, **kwargs)
  keys = None if key is None else jax.random.split(key, b)
  out = output_tokens
  in_axes = (0, 0, None if keys is None else 0, None if out is None else 0)
  return jax.vmap(fn, in_axes=in_axes)(cls_similarity, tokens, keys, out)

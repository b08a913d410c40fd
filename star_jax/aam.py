"""Heatmap activations and the Anisotropic Attention Module (AAM) fusion.

AAM (ADNet, used by STAR): point maps and edge maps (after a sigmoid) build an
attention mask for the landmark heatmaps,

  mask_p = (sum_e M[e, p] * edge_e + bias_p) * point_p,
  fused_p = mask_p * heatmap_p,

where M is the fixed 0/1 edge-to-point matrix (point p lies on edge e) and
bias_p = 1 for points on no edge (0 otherwise). All arrays here are
channel-last `[B, H, W, C]`.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from landmarks import decoding

HEATMAP_ACTIVATIONS = ("instance_norm_relu", "softmax")


def edge_to_point_matrix(edges: Sequence[Sequence[int]],
                         num_points: int) -> np.ndarray:
  """The fixed 0/1 matrix M `[E, N]`: M[e, p] = 1 iff point p is on edge e.

  For a scheme: `edge_to_point_matrix(scheme.edges, scheme.num_points)`. The
  public code stores the transpose (`[N, E]`, as a 1x1 conv weight).
  """
  m = np.zeros((len(edges), num_points), np.float32)
  for e, indices in enumerate(edges):
    indices = [int(i) for i in indices]
    if not indices:
      raise ValueError(f"Edge {e} has no points; every edge needs >= 1 point.")
    bad = [i for i in indices if not 0 <= i < num_points]
    if bad:
      raise ValueError(
          f"Edge {e} has point indices {bad} outside [0, {num_points}); "
          "edges must index the model's landmarks.")
    m[e, indices] = 1.0
  return m


def points_on_no_edge(e2p: np.ndarray) -> np.ndarray:
  """Bias `[N]`: 1 for points on no edge, 0 otherwise."""
  return (e2p.sum(axis=0) < 0.5).astype(np.float32)


def instance_norm_relu(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """ReLU(instance norm) without affine, per sample and channel over H, W.

  As PyTorch's `F.instance_norm` (biased variance, eps 1e-5) then ReLU.

  Args:
    x: `[B, H, W, C]` heatmap logits.

  Returns:
    `[B, H, W, C]`, non-negative, float32.
  """
  x = x.astype(jnp.float32)
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
  return jax.nn.relu((x - mean) * jax.lax.rsqrt(var + eps))


def activate_heatmaps(x: jax.Array, kind: str) -> jax.Array:
  """Applies the heatmap activation named `kind` (see HEATMAP_ACTIVATIONS)."""
  if kind == "instance_norm_relu":
    return instance_norm_relu(x)
  if kind == "softmax":
    return decoding.spatial_softmax(x)
  raise ValueError(f"heatmap_activation must be one of {HEATMAP_ACTIVATIONS}, "
                   f"got {kind!r}.")


def aam_fuse(heatmaps: jax.Array, pointmaps: jax.Array, edgemaps: jax.Array,
             e2p: np.ndarray) -> jax.Array:
  """AAM fusion: fused = ((edge @ M + bias) * point) * heatmaps.

  Args:
    heatmaps: `[B, H, W, N]` activated heatmaps.
    pointmaps: `[B, H, W, N]` point maps after sigmoid.
    edgemaps: `[B, H, W, E]` edge maps after sigmoid.
    e2p: `[E, N]` 0/1 edge-to-point matrix (`edge_to_point_matrix`).

  Returns:
    `[B, H, W, N]` fused heatmaps (float32).
  """
  m = jnp.asarray(e2p, jnp.float32)
  bias = jnp.asarray(points_on_no_edge(np.asarray(e2p)))
  edge_to_point = jnp.einsum("bhwe,en->bhwn", edgemaps.astype(jnp.float32), m,
                             precision=jax.lax.Precision.HIGHEST)
  mask = (edge_to_point + bias) * pointmaps.astype(jnp.float32)
  return mask * heatmaps.astype(jnp.float32)

"""Decoding per-landmark maps into points: spatial softmax and soft-argmax.

Maps here are channel-last, `[B, h, w, M]` (one map per landmark or feature
channel), as the models compute them. The soft-argmax is the expectation of
the cell centres (`landmarks.coordinates.grid_centres`) under each map's
distribution, in the normalised frame of `normalise_landmarks`. STAR's own
heatmap decoder (eq. 1 of the STAR paper, grid `linspace(-1, 1, W)` on
landmark-major heatmaps) is `landmarks.distribution.soft_argmax`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from landmarks import coordinates


def spatial_softmax(logits: jax.Array) -> jax.Array:
  """`[B, h, w, M]` logits -> float32 distributions over the h * w positions.

  Each map (sample, channel) sums to 1.
  """
  b, h, w, m = logits.shape
  flat = logits.astype(jnp.float32).reshape(b, h * w, m)
  return jax.nn.softmax(flat, axis=1).reshape(b, h, w, m)


def soft_argmax(probs: jax.Array) -> jax.Array:
  """Expected cell centre of `[B, h, w, M]` distributions -> `[B, M, 2]` (x, y).
  """
  _, h, w, _ = probs.shape
  hi = jax.lax.Precision.HIGHEST
  x = jnp.einsum("bhwm,w->bm", probs,
                 jnp.asarray(coordinates.grid_centres(w)), precision=hi)
  y = jnp.einsum("bhwm,h->bm", probs,
                 jnp.asarray(coordinates.grid_centres(h)), precision=hi)
  return jnp.stack([x, y], axis=-1)

"""The light SCE-MAE stage-2 projector (paper Sec. 3.3): 1x1 conv + L2 norm.

A 1x1 convolution on the patch-token map is a per-token linear layer, so the
module is an `nn.Dense` on the last axis; it accepts token sequences
`[..., N, C]` and feature maps `[..., H, W, C]` alike. The output dimension is
64, 128 or 256 in the paper's tables (any positive value is accepted). The
output is L2-normalised per token, so `<phi_i, phi_j>` in the LCR loss (eq. 4)
is a cosine similarity.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

PAPER_DIMS = (64, 128, 256)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
  """`x / max(||x||, eps)` along `axis` (zero vectors stay zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


class LightProjector(nn.Module):
  """Per-token linear projection to `features` dims, then L2 normalisation.

  Attributes:
    features: output dimension (paper: 64, 128 or 256).
    normalize: L2-normalise the output (default True, as the paper's cosine
      similarities need).
    dtype: computation dtype (parameters stay float32).
  """
  features: int = 64
  normalize: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[..., C]` -> `[..., features]` (unit norm when `normalize`)."""
    if self.features <= 0:
      raise ValueError(f"features must be positive, got {self.features}.")
    y = nn.Dense(self.features, dtype=self.dtype, name="conv1x1")(x)
    if self.normalize:
      y = l2_normalize(y.astype(jnp.float32))
    return y

"""Stage-2 projectors: SCE-MAE's light 1x1 conv (paper Sec. 3.3) and CL's.

Two kinds (`projector_from_config`, `config.projector.kind`):
  * "linear" (`LightProjector`, the default): 1x1 conv + L2 norm, the
    projector the SCE-MAE paper describes;
  * "spatial_softmax" (`SpatialSoftmaxProjector`): the ContrastLandmark
    FeatDistiller the 64 / 128 / 256 dims come from: 1x1 conv with bias,
    then a per-channel softmax over the spatial positions of the image's
    token grid (multiplier 7), then L2 norm per token. CL reports it works
    best; each output channel becomes a spatial "where" map, so it cannot be
    applied token by token: it needs every token of one image.

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
KINDS = ("linear", "spatial_softmax")


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


class SpatialSoftmaxProjector(nn.Module):
  """CL's FeatDistiller: 1x1 conv, per-channel spatial softmax, L2 norm.

  `__call__(tokens [..., N, C]) -> [..., N, features]`: for each output
  channel d, `softmax_n(softmax_mul * (W x_n + b)_d)` over the N tokens of
  the image (axis -2), then each token's vector is L2-normalised. The N
  tokens must be one image's whole grid (for stage 2: every patch, with the
  CARB substitution; for cover-and-stride: each shifted window's grid).

  Attributes:
    features: output dimension (64 / 128 / 256).
    softmax_mul: the softmax multiplier (CL: 7).
  """
  features: int = 64
  softmax_mul: float = 7.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.features <= 0:
      raise ValueError(f"features must be positive, got {self.features}.")
    if x.ndim < 2:
      raise ValueError("SpatialSoftmaxProjector needs a token grid "
                       f"[..., N, C], got shape {x.shape}.")
    y = nn.Dense(self.features, name="conv1x1")(x).astype(jnp.float32)
    y = jax.nn.softmax(self.softmax_mul * y, axis=-2)
    # A token far from every channel's peak has all entries tiny (a norm
    # below 1e-6 is common): normalise it anyway, as CL's F.normalize does.
    return l2_normalize(y, eps=1e-20)


def projector_from_config(config) -> nn.Module:
  """The projector of `config.projector` (kind, dim, softmax_mul)."""
  p = config.projector
  kind = p.get("kind", "linear")
  if kind == "linear":
    return LightProjector(features=int(p.dim))
  if kind == "spatial_softmax":
    return SpatialSoftmaxProjector(features=int(p.dim),
                                   softmax_mul=float(p.get("softmax_mul", 7.0)))
  raise ValueError(f"config.projector.kind must be one of {KINDS}, got "
                   f"{kind!r}.")

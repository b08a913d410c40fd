"""Vision Transformer encoder (DeiT-T/S/B widths) for SCE-MAE, in flax.linen.

The encoder follows MAE's ViT: a patch embedding (a linear map of each
non-overlapping `p x p` patch), a CLS token, 2-D sin-cos positional embeddings
(fixed; learned as an option), pre-norm transformer blocks (LayerNorm eps 1e-6,
multi-head self-attention with a qkv bias, an exact-GELU MLP with ratio 4) and a
final LayerNorm. Initialisation as MAE: xavier-uniform for every dense layer
(the patch embedding as the flattened `[p * p * C, D]` matrix), zero biases,
N(0, 0.02) for the CLS token (and for a learned positional embedding).

Token layout everywhere: token 0 is CLS, tokens 1.. are the (kept) patches in
the order of `keep_ids` (row-major patch order when nothing is masked).

Layers are numbered like hidden states: layer 0 is the embedding (patch
embedding + positions, CLS prepended) before any block, layer l (1..depth) is
the output of block l (before the final norm). "After the third encoder layer"
(the SCE-MAE clustering point) is `return_layers=(3,)`, and the attention that
produced it is `return_attention_layers=(3,)`.

Mixed precision: `dtype` is the compute dtype (e.g. bfloat16) and
`param_dtype` the parameter dtype (float32); the attention softmax, the
LayerNorm statistics and the positional table stay in float32.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# DeiT widths (Touvron et al. 2021): depth 12, MLP ratio 4, head width 64.
VIT_PRESETS = {
    "deit_tiny": dict(width=192, depth=12, num_heads=3, mlp_ratio=4.0),
    "deit_small": dict(width=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "deit_base": dict(width=768, depth=12, num_heads=12, mlp_ratio=4.0),
}

LAYER_NORM_EPS = 1e-6
POS_EMBED_KINDS = ("sincos", "learned")

_dense_init = nn.initializers.xavier_uniform()
# Xavier on the flattened [p * p * C, D] patch-embedding matrix (as MAE).
_patch_init = nn.initializers.variance_scaling(
    1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=-1)
_token_init = nn.initializers.normal(stddev=0.02)


def sincos_pos_embed_1d(width: int, positions: np.ndarray) -> np.ndarray:
  """1-D sin-cos embedding: `[..., width]` = `[sin(p w_k), cos(p w_k)]`.

  `w_k = 10000^(-k / (width / 2))`, `k = 0 .. width/2 - 1` (Vaswani et al.).

  Args:
    width: even embedding width.
    positions: float `[...]`.

  Returns:
    float64 `[..., width]`.
  """
  if width % 2:
    raise ValueError(f"sin-cos embedding width must be even, got {width}")
  half = width // 2
  omega = 1.0 / 10000.0 ** (np.arange(half, dtype=np.float64) / half)
  angles = np.asarray(positions, np.float64)[..., None] * omega
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def sincos_pos_embed_2d(width: int, grid_size: int,
                        cls_token: bool = True) -> np.ndarray:
  """Fixed 2-D sin-cos positional embedding of a `grid_size^2` patch grid.

  Channels `[0, width/2)` embed the patch column (x), channels `[width/2,
  width)` the patch row (y), each with `sincos_pos_embed_1d`; patches are in
  row-major order. With `cls_token` a zero row is prepended for CLS (MAE's
  layout).

  Args:
    width: embedding width, divisible by 4.
    grid_size: patches per side.
    cls_token: prepend a zero row.

  Returns:
    float32 `[(1 +) grid_size^2, width]`.
  """
  if width % 4:
    raise ValueError(f"2-D sin-cos embedding width must be divisible by 4, "
                     f"got {width}")
  rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size),
                           indexing="ij")
  emb = np.concatenate([sincos_pos_embed_1d(width // 2, cols.reshape(-1)),
                        sincos_pos_embed_1d(width // 2, rows.reshape(-1))],
                       axis=-1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, width)), emb], axis=0)
  return emb.astype(np.float32)


def cls_to_patch_attention(attention: jax.Array,
                           average_heads: bool = True) -> jax.Array:
  """The CLS query's attention over the patch tokens.

  Args:
    attention: `[B, H, 1 + K, 1 + K]` attention probabilities (token 0 = CLS).
    average_heads: average over the heads.

  Returns:
    `[B, K]` (head-averaged) or `[B, H, K]`.
  """
  row = attention[..., 0, 1:]
  return row.mean(axis=-2) if average_heads else row


class PatchEmbed(nn.Module):
  """Non-overlapping `p x p` patches -> `[B, N, D]` (a strided convolution)."""

  patch_size: int
  width: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images `[B, H, W, C]` -> tokens `[B, (H/p) (W/p), D]`, row-major."""
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                kernel_init=_patch_init, dtype=self.dtype,
                param_dtype=self.param_dtype, name="proj")(images)
    return x.reshape(x.shape[0], -1, x.shape[-1])


class Attention(nn.Module):
  """Multi-head self-attention that also returns its probabilities."""

  num_heads: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array):
    """x `[B, T, D]` -> (out `[B, T, D]`, probs float32 `[B, H, T, T]`)."""
    b, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f"width {d} is not divisible by {self.num_heads} heads")
    hd = d // self.num_heads
    qkv = nn.Dense(3 * d, kernel_init=_dense_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="qkv")(x)
    qkv = qkv.reshape(b, t, 3, self.num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]     # [B, T, H, hd]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32) * (hd ** -0.5)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
    out = nn.Dense(d, kernel_init=_dense_init, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="proj")(
                       out.reshape(b, t, d))
    return out, probs


class Mlp(nn.Module):
  """Dense -> exact GELU -> Dense."""

  hidden: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    x = nn.Dense(self.hidden, kernel_init=_dense_init, dtype=self.dtype,
                 param_dtype=self.param_dtype, name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    return nn.Dense(d, kernel_init=_dense_init, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="fc2")(x)


class Block(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""

  num_heads: int
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array):
    """x `[B, T, D]` -> (x `[B, T, D]`, attention probs `[B, H, T, T]`)."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="norm1", **kw)(x)
    y, probs = Attention(self.num_heads, name="attn", **kw)(y)
    x = x + y
    y = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="norm2", **kw)(x)
    x = x + Mlp(int(x.shape[-1] * self.mlp_ratio), name="mlp", **kw)(y)
    return x, probs


@flax.struct.dataclass
class EncoderOutput:
  """What `ViTEncoder` returns.

  Attributes:
    tokens: `[B, 1 + K, D]` final-normed tokens (CLS first), K = kept patches.
    layers: `{l: [B, 1 + K, D]}` hidden states requested by `return_layers`.
    attentions: `{l: float32 [B, H, 1 + K, 1 + K]}` attention probabilities of
      block l requested by `return_attention_layers`.
  """

  tokens: jax.Array
  layers: Dict[int, jax.Array]
  attentions: Dict[int, jax.Array]


class ViTEncoder(nn.Module):
  """ViT encoder with optional token keeping (MAE) and layer capture.

  Attributes:
    image_size: square input side (96 for SCE-MAE).
    patch_size: patch side (8).
    width, depth, num_heads, mlp_ratio: transformer size (`VIT_PRESETS`).
    pos_embed: "sincos" (fixed, default) or "learned".
    dtype: compute dtype; param_dtype: parameter dtype.
  """

  image_size: int = 96
  patch_size: int = 8
  width: int = 192
  depth: int = 12
  num_heads: int = 3
  mlp_ratio: float = 4.0
  pos_embed: str = "sincos"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid_size ** 2

  def _check(self, images):
    if self.image_size % self.patch_size:
      raise ValueError(f"image_size {self.image_size} is not a multiple of "
                       f"patch_size {self.patch_size}")
    if self.pos_embed not in POS_EMBED_KINDS:
      raise ValueError(f"pos_embed must be one of {POS_EMBED_KINDS}, got "
                       f"{self.pos_embed!r}")
    if images.ndim != 4 or images.shape[1:3] != (self.image_size,) * 2:
      raise ValueError(
          f"expected images [B, {self.image_size}, {self.image_size}, C], got "
          f"{images.shape}; resize or crop to image_size first")

  @nn.compact
  def __call__(self, images: jax.Array, *,
               keep_ids: Optional[jax.Array] = None,
               return_layers: Sequence[int] = (),
               return_attention_layers: Sequence[int] = ()) -> EncoderOutput:
    """Encodes images.

    Args:
      images: float `[B, S, S, C]` (normalised pixels).
      keep_ids: optional int `[B, K]` patch indices (row-major) to keep, in the
        order they should appear; None keeps all N patches in order.
      return_layers: hidden-state layers to return (0 = embeddings, l =
        output of block l).
      return_attention_layers: blocks (1..depth) whose attention to return.

    Returns:
      `EncoderOutput`.
    """
    self._check(images)
    for l in return_layers:
      if not 0 <= l <= self.depth:
        raise ValueError(f"return_layers must be in [0, {self.depth}], got {l}")
    for l in return_attention_layers:
      if not 1 <= l <= self.depth:
        raise ValueError(
            f"return_attention_layers must be in [1, {self.depth}], got {l}")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = PatchEmbed(self.patch_size, self.width, name="patch_embed", **kw)(
        images.astype(self.dtype))
    if self.pos_embed == "sincos":
      pos = jnp.asarray(sincos_pos_embed_2d(self.width, self.grid_size))
    else:
      pos = self.param("pos_embed", _token_init,
                       (1 + self.num_patches, self.width), self.param_dtype)
    x = x + pos[1:].astype(self.dtype)
    if keep_ids is not None:
      x = jnp.take_along_axis(x, keep_ids[..., None], axis=1)
    cls = self.param("cls_token", _token_init, (1, 1, self.width),
                     self.param_dtype)
    cls = (cls + pos[:1]).astype(self.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.width)),
                         x], axis=1)
    layers, attentions = {}, {}
    if 0 in return_layers:
      layers[0] = x
    for l in range(1, self.depth + 1):
      x, probs = Block(self.num_heads, self.mlp_ratio, name=f"block{l}",
                       **kw)(x)
      if l in return_layers:
        layers[l] = x
      if l in return_attention_layers:
        attentions[l] = probs
    x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="norm", **kw)(x)
    return EncoderOutput(tokens=x, layers=layers, attentions=attentions)


def vit_encoder(preset: str = "deit_small", **overrides) -> ViTEncoder:
  """A `ViTEncoder` from a `VIT_PRESETS` name (96 px, patch 8 by default)."""
  if preset not in VIT_PRESETS:
    raise ValueError(f"unknown ViT preset {preset!r}; choose one of "
                     f"{sorted(VIT_PRESETS)}")
  return ViTEncoder(**{**VIT_PRESETS[preset], **overrides})


def encoder_parameter_count(encoder: ViTEncoder) -> Dict[str, int]:
  """Counts encoder parameters without allocating them (`jax.eval_shape`).

  Returns:
    `params`: trainable encoder parameters (patch embedding, CLS token, all
    blocks, final norm, and the positional table when learned);
    `pos_embed_table`: the `(1 + N) x D` fixed sin-cos table (a frozen buffer,
    0 when learned); `total_as_mae`: their sum, which is what MAE's PyTorch
    `sum(p.numel())` counts (it stores the fixed table as a frozen parameter).
  """
  images = jax.ShapeDtypeStruct(
      (1, encoder.image_size, encoder.image_size, 3), jnp.float32)
  shapes = jax.eval_shape(encoder.init, jax.random.key(0), images)
  params = sum(int(np.prod(x.shape))
               for x in jax.tree_util.tree_leaves(shapes["params"]))
  table = ((1 + encoder.num_patches) * encoder.width
           if encoder.pos_embed == "sincos" else 0)
  return dict(params=params, pos_embed_table=table,
              total_as_mae=params + table)

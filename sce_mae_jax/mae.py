"""Masked autoencoder (He et al., CVPR 2022): SCE-MAE's stage-1 pretraining.

Pieces, each a function or a small module:
  * `patchify` / `unpatchify`: images <-> per-patch pixel vectors, each patch
    flattened in (row, column, channel) order (the order the patch embedding
    and the decoder's prediction use).
  * `random_masking`: per-sample random subset of patches with a STATIC kept
    count `num_kept = int(N * (1 - mask_ratio))`; the permutation is the argsort
    of uniform noise, `ids_restore` its inverse.
  * `MAEDecoder`: embeds the kept tokens, appends one learned mask token per
    removed patch, unshuffles with `ids_restore`, adds fixed sin-cos positions,
    runs transformer blocks and predicts each patch's pixels.
  * `mae_loss`: the mean squared error per patch, averaged over the masked
    patches only, against per-patch normalised pixels (`norm_pix_loss`).
  * `MAE`: encoder (`vit.ViTEncoder` on the kept patches) + decoder + loss.

Decoder presets: MAE's 512 wide x 8 blocks x 16 heads for DeiT-S/B; for DeiT-T
we use 256 x 4 x 8 heads (our choice: MAE publishes no tiny decoder, and a
decoder wider than a 192-wide encoder would dominate its compute).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sce_mae_jax import vit

DECODER_PRESETS = {
    "mae": dict(decoder_width=512, decoder_depth=8, decoder_heads=16),
    "small": dict(decoder_width=256, decoder_depth=4, decoder_heads=8),
}
# Which decoder each encoder preset gets by default.
DEFAULT_DECODER = {"deit_tiny": "small", "deit_small": "mae",
                   "deit_base": "mae"}
NORM_PIX_EPS = 1e-6


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """`[B, H, W, C]` -> `[B, (H/p)(W/p), p * p * C]`, patches row-major.

  Each patch vector is ordered (row in patch, column in patch, channel).
  """
  b, h, w, c = images.shape
  p = patch_size
  if h % p or w % p:
    raise ValueError(f"image size {(h, w)} is not a multiple of patch {p}")
  x = images.reshape(b, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int,
               grid_shape: Optional[tuple] = None) -> jax.Array:
  """Inverse of `patchify`: `[B, N, p * p * C]` -> `[B, H, W, C]`.

  Args:
    patches: patch vectors, row-major patch order.
    patch_size: p.
    grid_shape: `(rows, cols)` of patches; None means a square grid.
  """
  b, n, d = patches.shape
  p = patch_size
  if grid_shape is None:
    g = int(round(n ** 0.5))
    if g * g != n:
      raise ValueError(f"{n} patches do not form a square grid; pass "
                       "grid_shape=(rows, cols)")
    grid_shape = (g, g)
  gh, gw = grid_shape
  if gh * gw != n or d % (p * p):
    raise ValueError(f"cannot unpatchify {patches.shape} with patch {p} and "
                     f"grid {grid_shape}")
  c = d // (p * p)
  x = patches.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, gh * p, gw * p, c)


def num_kept(num_patches: int, mask_ratio: float) -> int:
  """Static kept count `int(N * (1 - mask_ratio))` (as MAE)."""
  if not 0.0 <= mask_ratio < 1.0:
    raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
  k = int(num_patches * (1.0 - mask_ratio))
  if k < 1:
    raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of "
                     f"{num_patches}")
  return k


class Masking(NamedTuple):
  """A random masking of N patches.

  Attributes:
    keep_ids: int32 `[B, K]` indices of the kept patches (encoder order).
    ids_restore: int32 `[B, N]` position of each patch in the shuffled order;
      `take(shuffled, ids_restore)` puts shuffled tokens back in patch order.
    mask: float32 `[B, N]`, 1 for removed (masked) patches, 0 for kept.
  """

  keep_ids: jax.Array
  ids_restore: jax.Array
  mask: jax.Array


def masking_from_noise(noise: jax.Array, mask_ratio: float) -> Masking:
  """Masking from per-patch noise `[B, N]`: the K smallest-noise patches stay."""
  n = noise.shape[-1]
  k = num_kept(n, mask_ratio)
  ids_shuffle = jnp.argsort(noise, axis=-1).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=-1).astype(jnp.int32)
  mask = (ids_restore >= k).astype(jnp.float32)
  return Masking(ids_shuffle[:, :k], ids_restore, mask)


def random_masking(rng: jax.Array, batch_size: int, num_patches: int,
                   mask_ratio: float) -> Masking:
  """Independent uniform random masking per sample (static shapes)."""
  noise = jax.random.uniform(rng, (batch_size, num_patches))
  return masking_from_noise(noise, mask_ratio)


def normalized_pixel_targets(patches: jax.Array,
                             eps: float = NORM_PIX_EPS) -> jax.Array:
  """Per-patch standardised pixels `(x - mean) / sqrt(var + eps)`.

  The variance is unbiased (divides by `P - 1`), as `torch.var` in MAE.
  """
  mean = patches.mean(axis=-1, keepdims=True)
  var = patches.var(axis=-1, keepdims=True, ddof=1)
  return (patches - mean) / jnp.sqrt(var + eps)


def mae_loss(pred: jax.Array, images: jax.Array, mask: jax.Array,
             patch_size: int, norm_pix_loss: bool = True) -> jax.Array:
  """MAE reconstruction loss (MAE paper, Sec. 3 "Reconstruction target").

  `L = sum_n mask_n * mean_j (pred_nj - target_nj)^2 / sum_n mask_n`, the
  per-patch mean squared error averaged over the masked patches only.

  Args:
    pred: `[B, N, p * p * C]` predicted patch pixels.
    images: `[B, H, W, C]` input images.
    mask: `[B, N]`, 1 where the patch was masked.
    patch_size: p.
    norm_pix_loss: standardise each target patch (`normalized_pixel_targets`).

  Returns:
    float32 scalar.
  """
  target = patchify(images.astype(jnp.float32), patch_size)
  if norm_pix_loss:
    target = normalized_pixel_targets(target)
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


class MAEDecoder(nn.Module):
  """Light transformer decoder predicting the pixels of every patch."""

  num_patches: int
  patch_size: int = 8
  channels: int = 3
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  mlp_ratio: float = 4.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, ids_restore: jax.Array) -> jax.Array:
    """Decodes.

    Args:
      tokens: `[B, 1 + K, D]` encoder output (CLS first, kept patches in
        shuffled order).
      ids_restore: int `[B, N]` from the masking.

    Returns:
      `[B, N, p * p * C]` predicted pixels in patch order (compute dtype).
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b = tokens.shape[0]
    n, w = self.num_patches, self.decoder_width
    x = nn.Dense(w, kernel_init=vit._dense_init, name="embed", **kw)(tokens)
    mask_token = self.param("mask_token", vit._token_init, (1, 1, w),
                            self.param_dtype)
    fill = jnp.broadcast_to(mask_token.astype(x.dtype),
                            (b, n + 1 - x.shape[1], w))
    patches = jnp.concatenate([x[:, 1:], fill], axis=1)        # Shuffled order.
    patches = jnp.take_along_axis(patches, ids_restore[..., None], axis=1)
    x = jnp.concatenate([x[:, :1], patches], axis=1)
    grid = int(round(n ** 0.5))
    pos = vit.sincos_pos_embed_2d(w, grid, cls_token=True)
    x = x + jnp.asarray(pos).astype(x.dtype)
    for l in range(1, self.decoder_depth + 1):
      x, _ = vit.Block(self.decoder_heads, self.mlp_ratio, name=f"block{l}",
                       **kw)(x)
    x = nn.LayerNorm(epsilon=vit.LAYER_NORM_EPS, name="norm", **kw)(x)
    x = nn.Dense(self.patch_size ** 2 * self.channels,
                 kernel_init=vit._dense_init, name="pred", **kw)(x)
    return x[:, 1:]


class MAE(nn.Module):
  """ViT encoder + MAE decoder; `__call__` returns the loss and predictions.

  Attributes:
    encoder: the `vit.ViTEncoder` (its image/patch size define N).
    decoder_width, decoder_depth, decoder_heads: decoder size.
    mask_ratio: share of patches removed (0.75).
    norm_pix_loss: per-patch normalised targets.
  """

  encoder: vit.ViTEncoder
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_heads: int = 16
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True

  def setup(self):
    enc = self.encoder
    self.decoder = MAEDecoder(
        num_patches=enc.num_patches, patch_size=enc.patch_size,
        decoder_width=self.decoder_width, decoder_depth=self.decoder_depth,
        decoder_heads=self.decoder_heads, mlp_ratio=enc.mlp_ratio,
        dtype=enc.dtype, param_dtype=enc.param_dtype)

  def __call__(self, images: jax.Array, *,
               noise: Optional[jax.Array] = None,
               mask_ratio: Optional[float] = None) -> Dict[str, jax.Array]:
    """One MAE forward pass.

    Args:
      images: float `[B, S, S, 3]` normalised images.
      noise: optional `[B, N]` masking noise (for reproducible masks); None
        draws uniform noise from the "masking" rng stream.
      mask_ratio: overrides the module's ratio (static).

    Returns:
      dict: `loss` float32 scalar, `pred` `[B, N, p * p * 3]`, `mask` `[B, N]`
      (1 = masked), `ids_restore` `[B, N]`.
    """
    ratio = self.mask_ratio if mask_ratio is None else mask_ratio
    n = self.encoder.num_patches
    if noise is None:
      noise = jax.random.uniform(self.make_rng("masking"), (images.shape[0], n))
    if noise.shape != (images.shape[0], n):
      raise ValueError(f"noise must be [B, N] = {(images.shape[0], n)}, got "
                       f"{noise.shape}")
    masking = masking_from_noise(noise, ratio)
    encoded = self.encoder(images, keep_ids=masking.keep_ids)
    pred = self.decoder(encoded.tokens, masking.ids_restore)
    loss = mae_loss(pred, images, masking.mask, self.encoder.patch_size,
                    self.norm_pix_loss)
    return dict(loss=loss, pred=pred, mask=masking.mask,
                ids_restore=masking.ids_restore)


def mae_model(preset: str = "deit_small", decoder: Optional[str] = None,
              mask_ratio: float = 0.75, norm_pix_loss: bool = True,
              **encoder_overrides) -> MAE:
  """An `MAE` from an encoder preset and a decoder preset.

  Args:
    preset: `vit.VIT_PRESETS` name.
    decoder: `DECODER_PRESETS` name; None picks `DEFAULT_DECODER[preset]`.
    mask_ratio, norm_pix_loss: as `MAE`.
    **encoder_overrides: `vit.ViTEncoder` fields (dtype, pos_embed, ...).
  """
  decoder = DEFAULT_DECODER.get(preset, "mae") if decoder is None else decoder
  if decoder not in DECODER_PRESETS:
    raise ValueError(f"unknown decoder preset {decoder!r}; choose one of "
                     f"{sorted(DECODER_PRESETS)}")
  return MAE(encoder=vit.vit_encoder(preset, **encoder_overrides),
             mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss,
             **DECODER_PRESETS[decoder])

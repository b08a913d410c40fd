"""Tests for sce_mae_jax/vit.py against float64 NumPy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from sce_mae_jax import vit


SIZE = 32  # 4 x 4 patches of 8 px.


def _tiny(**kw):
  cfg = dict(image_size=SIZE, patch_size=8, width=16, depth=2, num_heads=2)
  cfg.update(kw)
  return vit.ViTEncoder(**cfg)


def _images(seed, n=2, size=SIZE):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 3)),
                     jnp.float32)


def random_variables(module, *args, seed=0):
  """Random float32 variables with the module's structure, without running its
  init (compiling the init's RNG takes seconds on CPU): kernels
  N(0, 1/fan_in), LayerNorm scales 1 + N(0, 0.1), other leaves N(0, 0.1)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape)
    elif name.endswith("['scale']"):
      value = 1 + rng.normal(0, 0.1, leaf.shape)
    else:
      value = rng.normal(0, 0.1, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def jit_apply(module):
  """A jitted `module.apply` (one compile per module config)."""
  return jax.jit(module.apply,
                 static_argnames=("return_layers", "return_attention_layers"))


@pytest.fixture(scope="module")
def tiny():
  """One tiny encoder and random float32 variables, shared by the tests."""
  enc = _tiny()
  return enc, random_variables(enc, _images(0))


def _np(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def test_sincos_pos_embed_matches_numpy_loop_reference():
  width, grid = 16, 5
  got = vit.sincos_pos_embed_2d(width, grid, cls_token=True)
  want = np.zeros((1 + grid * grid, width))
  half = width // 2          # Channels per axis.
  quarter = half // 2        # Frequencies per axis.
  for i in range(grid * grid):
    row, col = divmod(i, grid)
    for j in range(width):
      pos, jj = (col, j) if j < half else (row, j - half)
      k = jj % quarter
      angle = pos / 10000.0 ** (k / quarter)
      want[1 + i, j] = math.sin(angle) if jj < quarter else math.cos(angle)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert np.all(got[0] == 0)
  with pytest.raises(ValueError):
    vit.sincos_pos_embed_2d(18, 3)


@pytest.mark.parametrize("preset,expected_m", [
    ("deit_tiny", 5.40), ("deit_small", 21.42), ("deit_base", 85.32)])
def test_encoder_parameter_counts(preset, expected_m):
  enc = vit.vit_encoder(preset)
  counts = vit.encoder_parameter_count(enc)
  d, depth, p = enc.width, enc.depth, enc.patch_size
  # Patch embed (weights + bias) + CLS + blocks (2 LN, qkv, proj, fc1, fc2)
  # + final LN.
  by_hand = p * p * 3 * d + d + d + depth * (12 * d * d + 13 * d) + 2 * d
  assert counts["params"] == by_hand
  assert counts["pos_embed_table"] == (1 + 144) * d
  assert abs(counts["total_as_mae"] / 1e6 - expected_m) < 0.005 * expected_m
  learned = vit.encoder_parameter_count(vit.vit_encoder(preset,
                                                        pos_embed="learned"))
  assert learned["params"] == counts["total_as_mae"]
  assert learned["pos_embed_table"] == 0


def _layer_norm(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _block_reference(x, p, heads):
  """float64 pre-norm block; returns (out, attention probs [B, H, T, T])."""
  b, t, d = x.shape
  hd = d // heads
  y = _layer_norm(x, p["norm1"]["scale"], p["norm1"]["bias"])
  qkv = y @ p["attn"]["qkv"]["kernel"] + p["attn"]["qkv"]["bias"]
  qkv = qkv.reshape(b, t, 3, heads, hd)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  o = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
  x = x + o @ p["attn"]["proj"]["kernel"] + p["attn"]["proj"]["bias"]
  y = _layer_norm(x, p["norm2"]["scale"], p["norm2"]["bias"])
  h = y @ p["mlp"]["fc1"]["kernel"] + p["mlp"]["fc1"]["bias"]
  h = 0.5 * h * (1.0 + special.erf(h / np.sqrt(2.0)))  # Exact GELU.
  x = x + h @ p["mlp"]["fc2"]["kernel"] + p["mlp"]["fc2"]["bias"]
  return x, probs


def test_encoder_matches_numpy_reference_with_layers_and_attention(tiny):
  enc, variables = tiny
  images = _images(0)
  out = jit_apply(enc)(variables, images, return_layers=(0, 1, 2),
                  return_attention_layers=(1, 2))
  p = _np(variables["params"])
  x = np.asarray(images, np.float64)
  # Embedding: patches as (row, col, channel) vectors times the kernel.
  b = x.shape[0]
  patches = np.stack([x[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8].reshape(b, -1)
                      for r in range(4) for c in range(4)], 1)
  kernel = p["patch_embed"]["proj"]["kernel"].reshape(192, 16)
  tokens = patches @ kernel + p["patch_embed"]["proj"]["bias"]
  pos = vit.sincos_pos_embed_2d(16, 4).astype(np.float64)
  tokens = tokens + pos[1:]
  cls = np.broadcast_to(p["cls_token"] + pos[:1], (b, 1, 16))
  h = np.concatenate([cls, tokens], 1)
  np.testing.assert_allclose(out.layers[0], h, atol=1e-5)
  for l in (1, 2):
    h, probs = _block_reference(h, p[f"block{l}"], 2)
    np.testing.assert_allclose(out.layers[l], h, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out.attentions[l], probs, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out.attentions[l]).sum(-1), 1.0,
                               atol=1e-6)
  final = _layer_norm(h, p["norm"]["scale"], p["norm"]["bias"])
  np.testing.assert_allclose(out.tokens, final, atol=1e-4, rtol=1e-4)
  cls_att = vit.cls_to_patch_attention(out.attentions[1])
  np.testing.assert_allclose(cls_att, out.attentions[1][:, :, 0, 1:].mean(1),
                             atol=1e-7)


def test_keep_ids_only_see_kept_patches_and_permute_equivariantly(tiny):
  enc, variables = tiny
  images = _images(2)
  keep = jnp.array([[5, 0, 9, 12], [3, 15, 1, 7]])
  base = jit_apply(enc)(variables, images, keep_ids=keep).tokens
  # Changing only removed patches changes nothing.
  grid = np.asarray(images).copy().reshape(2, 4, 8, 4, 8, 3)
  for bi in range(2):
    for n in set(range(16)) - set(np.asarray(keep[bi]).tolist()):
      grid[bi, n // 4, :, n % 4] += 100.0
  edited = jnp.asarray(grid.reshape(2, 32, 32, 3))
  np.testing.assert_array_equal(
      jit_apply(enc)(variables, edited, keep_ids=keep).tokens, base)
  # Permuting the kept ids permutes the patch tokens and keeps CLS.
  perm = np.array([2, 0, 3, 1])
  permuted = jit_apply(enc)(variables, images, keep_ids=keep[:, perm]).tokens
  np.testing.assert_allclose(permuted[:, 1:], base[:, 1:][:, perm], atol=1e-5)
  np.testing.assert_allclose(permuted[:, 0], base[:, 0], atol=1e-5)
  # Keeping everything in order == no masking.
  full = jit_apply(enc)(variables, images).tokens
  all_ids = jnp.broadcast_to(jnp.arange(16), (2, 16))
  np.testing.assert_array_equal(
      jit_apply(enc)(variables, images, keep_ids=all_ids).tokens, full)


def test_bfloat16_compute_keeps_float32_params_and_close_outputs(tiny):
  images = _images(4)
  enc32, variables = tiny
  enc16 = _tiny(dtype=jnp.bfloat16)
  variables16 = jax.eval_shape(enc16.init, jax.random.key(5), images)
  assert all(x.dtype == jnp.float32
             for x in jax.tree_util.tree_leaves(variables16))
  out32 = jit_apply(enc32)(variables, images, return_attention_layers=(1,))
  out16 = jit_apply(enc16)(variables, images, return_attention_layers=(1,))
  assert out16.tokens.dtype == jnp.bfloat16
  assert out16.attentions[1].dtype == jnp.float32
  err = np.abs(np.asarray(out16.tokens, np.float32) - out32.tokens).mean()
  assert err < 0.05, err
  assert err > 0  # It really computed in bfloat16.


def test_learned_pos_embed_is_a_parameter_used_by_the_model(tiny):
  enc, fixed = tiny
  learned = _tiny(pos_embed="learned")
  images = _images(6)
  shapes = jax.eval_shape(learned.init, jax.random.key(7), images)
  assert shapes["params"]["pos_embed"].shape == (17, 16)
  # With the sin-cos table as its learned value, the model equals the fixed one.
  params = dict(fixed["params"])
  params["pos_embed"] = jnp.asarray(vit.sincos_pos_embed_2d(16, 4))
  np.testing.assert_allclose(
      jit_apply(learned)({"params": params}, images).tokens,
      jit_apply(enc)(fixed, images).tokens, atol=1e-6)
  # And moving it changes the output.
  params["pos_embed"] = params["pos_embed"] + np.random.default_rng(8).normal(
      size=(17, 16)).astype(np.float32)
  moved = jit_apply(learned)({"params": params}, images).tokens
  base = jit_apply(enc)(fixed, images).tokens
  assert np.abs(np.asarray(moved) - np.asarray(base)).max() > 0.1


def test_bad_inputs_raise_value_error(tiny):
  enc, variables = tiny
  with pytest.raises(ValueError, match="image_size"):
    jit_apply(enc)(variables, _images(0, size=24))
  with pytest.raises(ValueError, match="return_layers"):
    jit_apply(enc)(variables, _images(0), return_layers=(3,))
  with pytest.raises(ValueError, match="return_attention_layers"):
    jit_apply(enc)(variables, _images(0), return_attention_layers=(0,))
  with pytest.raises(ValueError, match="pos_embed"):
    jax.eval_shape(_tiny(pos_embed="rope").init, jax.random.key(0), _images(0))
  with pytest.raises(ValueError, match="preset"):
    vit.vit_encoder("deit_huge")

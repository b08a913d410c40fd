"""Tests for sce_mae_jax/mae.py: patches, masking, loss, decoder, a training step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sce_mae_jax import mae
from sce_mae_jax import vit


def _random_variables(module, *args, seed=0, **kwargs):
  """Random float32 variables shaped like the module's, without compiling its
  init: kernels N(0, 1/fan_in), LayerNorm scales 1, biases 0, tokens N(0, .02)."""
  shapes = jax.eval_shape(
      functools.partial(module.init, **kwargs),
      {"params": jax.random.key(0), "masking": jax.random.key(1)}, *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.normal(0, 1 / np.sqrt(fan_in), leaf.shape)
    elif name.endswith("['scale']"):
      value = np.ones(leaf.shape)
    elif name.endswith("['bias']"):
      value = np.zeros(leaf.shape)
    else:
      value = rng.normal(0, 0.02, leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _tiny_mae(**kw):
  enc = vit.ViTEncoder(image_size=32, patch_size=8, width=32, depth=1,
                       num_heads=2, **kw)
  return mae.MAE(encoder=enc, decoder_width=32, decoder_depth=1,
                 decoder_heads=2)


def _normal(seed, shape):
  """NumPy draws (eager jax.random compiles an RNG kernel per shape)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape),
                     jnp.float32)


def _uniform(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape),
                     jnp.float32)


def _patchify_reference(x, p):
  """float64 loop: patch (r, c) -> x[rp:(r+1)p, cp:(c+1)p, :].reshape(-1)."""
  b, h, w, _ = x.shape
  out = []
  for r in range(h // p):
    for c in range(w // p):
      out.append(x[:, r * p:(r + 1) * p, c * p:(c + 1) * p, :].reshape(b, -1))
  return np.stack(out, axis=1)


def test_patchify_matches_numpy_reference_and_inverts():
  x = np.random.default_rng(0).normal(size=(2, 24, 16, 3))
  got = mae.patchify(jnp.asarray(x, jnp.float32), 8)
  np.testing.assert_allclose(got, _patchify_reference(x, 8), rtol=1e-6)
  back = mae.unpatchify(got, 8, grid_shape=(3, 2))
  np.testing.assert_array_equal(back, jnp.asarray(x, jnp.float32))
  square = jnp.asarray(x[:, :16], jnp.float32)
  np.testing.assert_array_equal(mae.unpatchify(mae.patchify(square, 4), 4),
                                square)
  with pytest.raises(ValueError):
    mae.patchify(square, 5)
  with pytest.raises(ValueError):
    mae.unpatchify(got, 8)  # 6 patches are not a square grid.


def test_patch_embedding_is_linear_map_of_patchify_vectors():
  """The conv patch embedding == patchify(x) @ kernel.reshape(p*p*C, D) + b,
  so the decoder's targets and the encoder's inputs share the patch order."""
  enc = vit.PatchEmbed(patch_size=8, width=5)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 24, 3)),
                  jnp.float32)
  params = _random_variables(enc, x)
  got = enc.apply(params, x)
  k = params["params"]["proj"]["kernel"].reshape(192, 5)
  want = (_patchify_reference(np.asarray(x, np.float64), 8)
          @ np.asarray(k, np.float64) + np.asarray(
              params["params"]["proj"]["bias"], np.float64))
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("n,ratio,expected", [(144, 0.75, 36), (16, 0.75, 4),
                                              (10, 0.33, 6), (9, 0.0, 9)])
def test_random_masking_keeps_the_configured_count(n, ratio, expected):
  assert mae.num_kept(n, ratio) == expected == int(n * (1 - ratio))
  m = mae.masking_from_noise(_uniform(n, (5, n)), ratio)
  assert m.keep_ids.shape == (5, expected)
  keep = np.asarray(m.keep_ids)
  restore = np.asarray(m.ids_restore)
  mask = np.asarray(m.mask)
  for b in range(5):
    masked = np.flatnonzero(mask[b] == 1)
    assert len(masked) == n - expected
    # Kept + masked indices form a permutation of 0..N-1.
    np.testing.assert_array_equal(
        np.sort(np.concatenate([keep[b], masked])), np.arange(n))
    assert np.all(mask[b, keep[b]] == 0)
    # ids_restore inverts the shuffle: kept ids sit at restore < K.
    np.testing.assert_array_equal(restore[b, keep[b]], np.arange(expected))
  if n > expected:
    assert len({tuple(sorted(k)) for k in keep}) > 1  # Per-sample masks.


def test_random_masking_draws_independent_masks():
  m = mae.random_masking(jax.random.key(0), 64, 16, 0.75)
  assert m.keep_ids.shape == (64, 4)
  np.testing.assert_array_equal(np.asarray(m.mask).sum(1), 12)
  # Each patch is kept by about a quarter of the samples (64 * 4 / 16 = 16).
  counts = np.bincount(np.asarray(m.keep_ids).ravel(), minlength=16)
  assert counts.min() > 3 and counts.max() < 32, counts


def test_masking_from_noise_keeps_the_smallest_noise():
  noise = jnp.array([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.05]])
  m = mae.masking_from_noise(noise, 0.5)
  np.testing.assert_array_equal(m.keep_ids, [[1, 3], [3, 0]])
  np.testing.assert_array_equal(m.mask, [[1, 0, 1, 0], [0, 1, 1, 0]])
  np.testing.assert_array_equal(m.ids_restore, [[3, 0, 2, 1], [1, 3, 2, 0]])
  with pytest.raises(ValueError):
    mae.num_kept(16, 1.0)
  with pytest.raises(ValueError):
    mae.num_kept(3, 0.9)


def _loss_reference(pred, images, mask, p, norm_pix):
  t = _patchify_reference(np.asarray(images, np.float64), p)
  if norm_pix:
    mean = t.mean(-1, keepdims=True)
    var = t.var(-1, keepdims=True, ddof=1)
    t = (t - mean) / np.sqrt(var + 1e-6)
  per = ((np.asarray(pred, np.float64) - t) ** 2).mean(-1)
  return (per * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_matches_reference_and_ignores_unmasked_patches(norm_pix):
  rng = np.random.default_rng(2)
  images = rng.normal(size=(2, 16, 16, 3)) * 3 + 1
  mask = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], np.float64)
  pred = rng.normal(size=(2, 4, 192))
  got = mae.mae_loss(jnp.asarray(pred, jnp.float32),
                     jnp.asarray(images, jnp.float32), jnp.asarray(mask), 8,
                     norm_pix)
  np.testing.assert_allclose(got, _loss_reference(pred, images, mask, 8,
                                                  norm_pix), rtol=1e-5)
  # Hand-made: exact prediction on masked patches, huge error elsewhere.
  target = _patchify_reference(images, 8)
  if norm_pix:
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(
        target.var(-1, keepdims=True, ddof=1) + 1e-6)
  exact = np.where(mask[..., None] == 1, target, 1e6)
  loss = mae.mae_loss(jnp.asarray(exact, jnp.float32),
                      jnp.asarray(images, jnp.float32), jnp.asarray(mask), 8,
                      norm_pix)
  assert abs(float(loss)) < 1e-5
  # Off by 2 on every pixel of one masked patch: 4 / (4 masked patches).
  off = exact.copy()
  off[1, 3] += 2.0
  loss = mae.mae_loss(jnp.asarray(off, jnp.float32),
                      jnp.asarray(images, jnp.float32), jnp.asarray(mask), 8,
                      norm_pix)
  np.testing.assert_allclose(loss, 1.0, rtol=1e-5)


def test_decoder_puts_tokens_back_in_patch_order():
  """With no decoder blocks each patch's prediction is a per-token map, so
  the output must equal the NumPy unshuffle of the inputs."""
  dec = mae.MAEDecoder(num_patches=16, patch_size=2, channels=1,
                       decoder_width=8, decoder_depth=0, decoder_heads=2)
  m = mae.masking_from_noise(_uniform(3, (2, 16)), 0.75)
  tokens = _normal(4, (2, 5, 6))
  params = _random_variables(dec, tokens, m.ids_restore)
  got = dec.apply(params, tokens, m.ids_restore)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                             params["params"])
  x = np.asarray(tokens, np.float64) @ p["embed"]["kernel"] + p["embed"]["bias"]
  restore = np.asarray(m.ids_restore)
  pos = vit.sincos_pos_embed_2d(8, 4).astype(np.float64)
  for b in range(2):
    rows = []
    for n in range(16):
      r = restore[b, n]
      rows.append(x[b, 1 + r] if r < 4 else p["mask_token"][0, 0])
    h = np.stack(rows) + pos[1:]
    mu = h.mean(-1, keepdims=True)
    h = (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-6)
    h = h * p["norm"]["scale"] + p["norm"]["bias"]
    want = h @ p["pred"]["kernel"] + p["pred"]["bias"]
    np.testing.assert_allclose(got[b], want, atol=1e-5)


def test_mae_forward_masks_with_given_noise_and_bfloat16_is_close():
  model = _tiny_mae()
  images = _normal(5, (2, 32, 32, 3))
  noise = _uniform(6, (2, 16))
  variables = _random_variables(model, images, noise=noise)
  out = jax.jit(model.apply)(variables, images, noise=noise)
  want_mask = mae.masking_from_noise(noise, 0.75).mask
  np.testing.assert_array_equal(out["mask"], want_mask)
  np.testing.assert_allclose(
      out["loss"], mae.mae_loss(out["pred"], images, want_mask, 8), rtol=1e-6)
  model16 = _tiny_mae(dtype=jnp.bfloat16)
  out16 = jax.jit(model16.apply)(variables, images, noise=noise)
  assert out16["loss"].dtype == jnp.float32
  np.testing.assert_allclose(out16["loss"], out["loss"], rtol=0.05)


def test_jitted_adamw_step_lowers_the_loss_on_a_fixed_batch():
  model = _tiny_mae()
  # Smooth, structured images (gradients + blobs) so that there is something
  # to reconstruct from the visible patches.
  yy, xx = np.mgrid[0:32, 0:32] / 31.0
  rng = np.random.default_rng(7)
  images = np.stack([
      np.stack([np.sin(3 * xx * a + b) + np.cos(2 * yy * c)
                for a, b, c in rng.uniform(0.5, 2, size=(3, 3))], -1)
      for _ in range(8)]).astype(np.float32)
  images = jnp.asarray(images)
  params = _random_variables(model, images)["params"]
  tx = optax.adamw(2e-3, b1=0.9, b2=0.95, weight_decay=0.05)
  opt_state = tx.init(params)
  eval_noise = _uniform(8, (8, 16))

  @jax.jit
  def step(params, opt_state, key):
    def loss_fn(p):
      return model.apply({"params": p}, images, rngs={"masking": key})["loss"]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def eval_loss(params):
    return model.apply({"params": params}, images, noise=eval_noise)["loss"]

  before = float(eval_loss(params))
  keys = jax.random.split(jax.random.key(9), 40)
  for i in range(40):
    params, opt_state, _ = step(params, opt_state, keys[i])
  after = float(eval_loss(params))
  assert np.isfinite(after)
  assert after < 0.7 * before, (before, after)


def test_presets_and_bad_arguments():
  model = mae.mae_model("deit_tiny")
  assert (model.decoder_width, model.decoder_depth, model.decoder_heads) == (
      256, 4, 8)
  base = mae.mae_model("deit_base")
  assert (base.decoder_width, base.decoder_depth, base.decoder_heads) == (
      512, 8, 16)
  assert base.encoder.width == 768 and base.mask_ratio == 0.75
  with pytest.raises(ValueError, match="decoder preset"):
    mae.mae_model("deit_tiny", decoder="huge")
  with pytest.raises(ValueError, match="noise"):
    small = _tiny_mae()
    images = jnp.zeros((2, 32, 32, 3))
    jax.eval_shape(functools.partial(small.init, noise=jnp.zeros((2, 5))),
                   {"params": jax.random.key(0)}, images)

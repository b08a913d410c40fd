"""Tests for star_jax/winograd.py and the Conv3x3 layer that uses it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_jax import layers
from star_jax import model as model_lib
from star_jax import winograd


def conv3x3_reference(x, kernel):
  """Direct float64 3x3 cross-correlation, stride 1, zero padding 1 (NHWC)."""
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[3]))
  for a in range(3):
    for e in range(3):
      out += padded[:, a:a + h, e:e + w, :] @ kernel[a, e]
  return out


def conv3x3_grads_reference(x, kernel, cotangent):
  """Gradients of sum(conv(x, kernel) * cotangent), float64, from the sums.

  d/dx[n, i, j, c] = sum_{a, e, o} ct[n, i + 1 - a, j + 1 - e, o] k[a, e, c, o]
  d/dk[a, e, c, o] = sum_{n, i, j} xpad[n, i + a, j + e, c] ct[n, i, j, o]
  """
  x = np.asarray(x, np.float64)
  kernel = np.asarray(kernel, np.float64)
  ct = np.asarray(cotangent, np.float64)
  _, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ct_padded = np.pad(ct, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dx = np.zeros_like(x)
  dk = np.zeros_like(kernel)
  for a in range(3):
    for e in range(3):
      dx += ct_padded[:, 2 - a:2 - a + h, 2 - e:2 - e + w, :] @ kernel[a, e].T
      dk[a, e] = np.einsum("nijc,nijo->co", padded[:, a:a + h, e:e + w, :], ct)
  return dx, dk


@pytest.mark.parametrize("shape,c_out", [((2, 8, 8, 5), 7),
                                         ((1, 4, 10, 3), 3),
                                         ((3, 2, 2, 4), 6)])
def test_conv3x3_matches_float64_reference(shape, c_out):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  kernel = rng.standard_normal((3, 3, shape[3], c_out)).astype(np.float32)
  got = np.asarray(winograd.conv3x3(jnp.asarray(x), jnp.asarray(kernel)))
  want = conv3x3_reference(x, kernel)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_conv3x3_gradients_match_float64_reference():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 6, 8, 4)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
  ct = rng.standard_normal((2, 6, 8, 5)).astype(np.float32)
  dx, dk = jax.grad(
      lambda x, k: jnp.sum(winograd.conv3x3(x, k) * ct), argnums=(0, 1))(
          jnp.asarray(x), jnp.asarray(kernel))
  want_dx, want_dk = conv3x3_grads_reference(x, kernel, ct)
  np.testing.assert_allclose(np.asarray(dx), want_dx, rtol=0,
                             atol=2e-5 * np.abs(want_dx).max())
  np.testing.assert_allclose(np.asarray(dk), want_dk, rtol=0,
                             atol=2e-5 * np.abs(want_dk).max())


def test_transform_filter_of_a_delta_filter():
  # A filter with a single 1 at tap (1, 1) (the identity convolution):
  # G g G^T = outer(G[:, 1], G[:, 1]) = outer([0, .5, -.5, 0], same).
  kernel = np.zeros((3, 3, 1, 1), np.float32)
  kernel[1, 1] = 1.0
  got = np.asarray(winograd.transform_filter(jnp.asarray(kernel)))[:, 0, 0]
  col = np.array([0.0, 0.5, -0.5, 0.0])
  np.testing.assert_array_equal(got, np.outer(col, col).reshape(16))
  x = np.random.default_rng(2).standard_normal((1, 6, 4, 1)).astype(np.float32)
  np.testing.assert_allclose(
      np.asarray(winograd.conv3x3(jnp.asarray(x), jnp.asarray(kernel))), x,
      atol=1e-6)


def test_conv3x3_rejects_odd_sizes_and_bad_kernels():
  with pytest.raises(ValueError, match="even height and width"):
    winograd.conv3x3(jnp.zeros((1, 5, 4, 2)), jnp.zeros((3, 3, 2, 2)))
  with pytest.raises(ValueError, match=r"\[3, 3, 2, C_out\]"):
    winograd.conv3x3(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 2)))


def test_use_winograd_rule():
  big = ((8, 64, 64, 128), (3, 3, 128, 128))
  on_cpu = jax.default_backend() == "cpu"
  assert winograd.use_winograd(*big, jnp.float32) == on_cpu
  assert not winograd.use_winograd(*big, jnp.bfloat16)
  assert not winograd.use_winograd((8, 16, 16, 128), big[1], jnp.float32)
  assert not winograd.use_winograd((8, 64, 64, 64), (3, 3, 64, 64),
                                   jnp.float32)
  assert not winograd.use_winograd(*big, jnp.float32, policy="xla")
  assert winograd.use_winograd((1, 4, 4, 2), (3, 3, 2, 2), jnp.bfloat16,
                               policy="winograd")
  assert not winograd.use_winograd((1, 5, 4, 2), (3, 3, 2, 2), jnp.float32,
                                   policy="winograd")
  with pytest.raises(ValueError, match="'auto', 'xla' or 'winograd'"):
    winograd.use_winograd(*big, jnp.float32, policy="fast")


def test_conv3x3_layer_has_the_nn_conv_parameters_and_output():
  """Conv3x3 initialises exactly like the nn.Conv it replaced (checkpoints
  written before stay loadable) and computes the same function."""
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 8, 8, 6)),
                  jnp.float32)
  key = jax.random.PRNGKey(4)
  old = layers.conv_kxk(5, 3, 6, 1, jnp.float32)
  new_wino = layers.Conv3x3(5, policy="winograd")
  new_xla = layers.Conv3x3(5, policy="xla")
  p_old = old.init(key, x)
  p_new = new_wino.init(key, x)
  assert jax.tree.structure(p_old) == jax.tree.structure(p_new)
  for a, b in zip(jax.tree.leaves(p_old), jax.tree.leaves(p_new)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  y_old = np.asarray(old.apply(p_old, x))
  np.testing.assert_allclose(np.asarray(new_wino.apply(p_old, x)), y_old,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(new_xla.apply(p_old, x)), y_old,
                             atol=1e-6)
  assert isinstance(old, nn.Conv)


def test_resblock_same_output_and_gradients_with_either_conv():
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 8, 8, 16)),
                  jnp.float32)
  blocks = {p: layers.ResBlock(16, conv3x3=p) for p in ("xla", "winograd")}
  variables = blocks["xla"].init(jax.random.PRNGKey(0), x, train=False)

  def loss(params, x, block):
    y, _ = block.apply({**variables, "params": params}, x, train=True,
                       mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y))

  grad = jax.value_and_grad(loss, argnums=(0, 1))
  v_xla, g_xla = grad(variables["params"], x, blocks["xla"])
  v_wino, g_wino = grad(variables["params"], x, blocks["winograd"])
  np.testing.assert_allclose(float(v_wino), float(v_xla), rtol=1e-5)
  # Leaves that are zero in exact arithmetic (the conv biases right before a
  # BatchNorm) hold float noise, hence the floor.
  largest = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g_xla))
  for a, b in zip(jax.tree.leaves(g_xla), jax.tree.leaves(g_wino)):
    np.testing.assert_allclose(
        np.asarray(b), np.asarray(a), rtol=0,
        atol=1e-4 * float(jnp.max(jnp.abs(a))) + 1e-6 * largest)


def test_model_conv3x3_policy_reaches_every_resblock():
  """With "winograd" the only convolution left is the stem's 7x7; with
  "xla" every ResBlock adds its 3x3: stem 3 + 2 stacks x (1 feature + 7 in a
  depth-2 hourglass: up1, low1, low3 and the inner level's up1, low1, low2,
  low3) = 19."""
  kwargs = dict(num_points=5, num_stacks=2, depth=2, width=16, use_aam=False)
  images = jnp.zeros((1, 32, 32, 3), jnp.uint8)

  def count_convs(policy):
    net = model_lib.StackedHourglass(conv3x3=policy, **kwargs)
    variables = jax.eval_shape(
        lambda key: net.init(key, images, train=False), jax.random.PRNGKey(0))
    jaxpr = jax.make_jaxpr(lambda v: net.apply(v, images, train=False))(
        variables)
    return str(jaxpr).count("conv_general_dilated[")

  assert count_convs("winograd") == 1
  assert count_convs("xla") == 1 + 19

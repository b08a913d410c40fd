"""Building blocks of the STAR stacked hourglass, channel-last (NHWC).

Semantics follow the public StackedHGNetV1 (ZhenglinZhou/STAR) and its
CoordConv (from ADNet); the code is our own. Speed notes for XLA:

  * 1x1 convolutions are written as a matrix product over the channel axis
    (`Conv1x1`): XLA's CPU backend runs them several times faster than a 1x1
    `lax.conv`. The parameter is a `[C_in, C_out]` kernel (PyTorch stores
    `[C_out, C_in, 1, 1]`; a converter transposes and squeezes).
  * 2x2 max pooling and nearest 2x upsampling are reshapes plus a max / a
    broadcast, whose gradients are cheap elementwise ops, instead of
    `reduce_window` (whose gradient is the slow `select_and_scatter`).
  * 3x3 convolutions (`Conv3x3`) run as Winograd F(2x2, 3x3) matmuls
    (`star_jax/winograd.py`) where that was measured faster: XLA:CPU, float32,
    >= 128 channels, maps >= 32 x 32; elsewhere as `lax.conv`.
  * Coordinate channels are constants; the 1x1 CoordConv multiplies them with
    their slice of the kernel separately instead of concatenating 3-5 channels
    to 256 feature channels.

Initialisation matches PyTorch's defaults for `nn.Conv2d` (weights and biases
uniform in +-1/sqrt(fan_in)); BatchNorm starts at scale 1, bias 0.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from star_jax import winograd

Dtype = Any

# PyTorch's default conv weight init: kaiming_uniform(a=sqrt(5)), i.e.
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                     "uniform")


def torch_bias_init(fan_in: int):
  """PyTorch's default conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def batch_norm(train: bool, dtype: Dtype, name: Optional[str] = None):
  """BatchNorm with PyTorch's defaults (momentum 0.1 -> flax 0.9, eps 1e-5).

  Under `jax.jit` with the batch sharded over a mesh (NamedSharding), the
  batch statistics are means over the global batch: XLA inserts the
  cross-device reductions, no `axis_name` is needed. Statistics are computed
  in float32 even when `dtype` is bfloat16. One difference from PyTorch: the
  running variance is updated with the biased batch variance (PyTorch uses
  the unbiased one; the factor n/(n-1) is ~1 for n = B*64*64).
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


class Conv1x1(nn.Module):
  """1x1 convolution with bias as a matmul over channels.

  Attributes:
    features: output channels.
    dtype: compute dtype (parameters are float32).
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               extra: Optional[jax.Array] = None) -> jax.Array:
    """Applies the convolution.

    Args:
      x: `[..., C]` input.
      extra: optional `[..., C_e]` channels (broadcastable to x's leading
        shape) that act as if concatenated after x's channels; the kernel has
        `C + C_e` input rows, as the PyTorch layer on the concatenation.

    Returns:
      `[..., features]` in `dtype`.
    """
    c_in = x.shape[-1]
    c_total = c_in + (0 if extra is None else extra.shape[-1])
    kernel = self.param("kernel", torch_kernel_init, (c_total, self.features),
                        jnp.float32)
    bias = self.param("bias", torch_bias_init(c_total), (self.features,),
                      jnp.float32)
    kernel = kernel.astype(self.dtype)
    y = jnp.dot(x.astype(self.dtype), kernel[:c_in])
    if extra is not None:
      y = y + jnp.dot(extra.astype(self.dtype), kernel[c_in:])
    return y + bias.astype(self.dtype)


def conv_kxk(features: int, kernel_size: int, in_features: int, stride: int,
             dtype: Dtype, name: Optional[str] = None) -> nn.Conv:
  """A k x k convolution with bias and PyTorch's padding (k - 1) // 2."""
  pad = (kernel_size - 1) // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=stride,
                 padding=((pad, pad), (pad, pad)), use_bias=True,
                 kernel_init=torch_kernel_init,
                 bias_init=torch_bias_init(kernel_size**2 * in_features),
                 dtype=dtype, param_dtype=jnp.float32, name=name)


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, padding 1, with bias.

  The parameters are those of `conv_kxk(features, 3, ...)` (an `nn.Conv`):
  `kernel [3, 3, C_in, C_out]` and `bias [C_out]`, same initialisation, so
  checkpoints and converters see no difference. Only the computation differs
  where `winograd.use_winograd(..., policy)` says so (same maths, float32
  results within ~1e-6 of the output scale).

  Attributes:
    features: output channels.
    dtype: compute dtype (parameters are float32).
    policy: "auto", "xla" or "winograd" (see `winograd.use_winograd`).
  """
  features: int
  dtype: Dtype = jnp.float32
  policy: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """`[B, H, W, C_in]` -> `[B, H, W, features]` in `dtype`."""
    c_in = x.shape[-1]
    kernel = self.param("kernel", torch_kernel_init,
                        (3, 3, c_in, self.features), jnp.float32)
    bias = self.param("bias", torch_bias_init(9 * c_in), (self.features,),
                      jnp.float32)
    x = x.astype(self.dtype)
    kernel = kernel.astype(self.dtype)
    if winograd.use_winograd(x.shape, kernel.shape, self.dtype, self.policy):
      y = winograd.conv3x3(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


class ResBlock(nn.Module):
  """Pre-activation bottleneck residual block.

  out = conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(relu(bn(x))))))))) + skip(x),
  with bottleneck width features // 2 and skip = 1x1 conv when the channel
  count changes, identity otherwise.

  Attributes:
    features: output channels.
    dtype: compute dtype.
    conv3x3: how the 3x3 convolution computes (`Conv3x3.policy`).
  """
  features: int
  dtype: Dtype = jnp.float32
  conv3x3: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`[B, H, W, C_in]` -> `[B, H, W, features]`."""
    mid = self.features // 2
    if x.shape[-1] == self.features:
      residual = x
    else:
      residual = Conv1x1(self.features, self.dtype, name="skip")(x)
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    y = Conv1x1(mid, self.dtype, name="conv1")(y)
    y = nn.relu(batch_norm(train, self.dtype, "bn2")(y))
    y = Conv3x3(mid, self.dtype, self.conv3x3, name="conv2")(y)
    y = nn.relu(batch_norm(train, self.dtype, "bn3")(y))
    y = Conv1x1(self.features, self.dtype, name="conv3")(y)
    return y + residual.astype(y.dtype)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pooling with stride 2: `[B, H, W, C]` -> `[B, H/2, W/2, C]`."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"max_pool_2x2 needs even height and width, got {h}x{w}.")
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling: `[B, H, W, C]` -> `[B, 2H, 2W, C]`."""
  b, h, w, c = x.shape
  y = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return y.reshape(b, 2 * h, 2 * w, c)


def coordinate_channels(height: int, width: int) -> np.ndarray:
  """The CoordConv channels (with radius) in the public code's order.

  Channel 0 is linspace(-1, 1, height) along the rows, channel 1 is
  linspace(-1, 1, width) along the columns, channel 2 is the radius
  sqrt(c0^2 + c1^2) divided by its maximum (sqrt(2)). (The public code calls
  channel 0 "xx" although, after its permute, it varies along the rows.)

  Returns:
    float32 `[height, width, 3]`.
  """
  rows = np.linspace(-1.0, 1.0, height)
  cols = np.linspace(-1.0, 1.0, width)
  c0 = np.broadcast_to(rows[:, None], (height, width))
  c1 = np.broadcast_to(cols[None, :], (height, width))
  r = np.sqrt(c0**2 + c1**2)
  r = r / r.max()
  return np.stack([c0, c1, r], axis=-1).astype(np.float32)


def boundary_channels(heatmaps: jax.Array, threshold: float = 0.05
                      ) -> jax.Array:
  """The 2 "boundary" CoordConv channels from the previous stack's heatmaps.

  The two coordinate channels (rows, columns) kept where the last landmark's
  heatmap (clamped to [0, 1]) exceeds `threshold`, zero elsewhere.

  Args:
    heatmaps: `[B, H, W, N]` activated (unfused) heatmaps of the previous stack.
    threshold: the public code's 0.05.

  Returns:
    float32 `[B, H, W, 2]`, no gradient.
  """
  _, h, w, _ = heatmaps.shape
  coords = jnp.asarray(coordinate_channels(h, w)[..., :2])
  last = jnp.clip(jax.lax.stop_gradient(heatmaps[..., -1:]), 0.0, 1.0)
  return jnp.where(last > threshold, coords[None], 0.0).astype(jnp.float32)

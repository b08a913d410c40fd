"""3x3 convolution (stride 1, padding 1) by Winograd's F(2x2, 3x3) algorithm.

Why: on XLA's CPU backend the 3x3 convolutions of the hourglass ResBlocks
(128 -> 128 channels) and, above all, their kernel gradient are the largest
cost of the STAR training step (`bench/hourglass_step.py`). Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016) computes each 2 x 2 output tile from a 4 x 4 input
tile with 16 instead of 36 multiplications:

  Y = A^T [ (G g G^T) * (B^T d B) ] A       (their nested 2-D form)

for a 3 x 3 filter g and a 4 x 4 tile d, `*` elementwise. Over channels the
16 elementwise products become 16 matrix products `[P, C_in] @ [C_in, C_out]`
(P = B * H/2 * W/2 tiles), which XLA:CPU runs near its matmul speed, and the
transforms are additions that fuse into cheap elementwise loops. Autodiff of
this function gives the input and kernel gradients as matmuls plus transposed
transforms, again no convolution.

Exactness: F(2x2, 3x3) is the numerically mildest Winograd variant (its
transform entries are 0, +-1, +-1/2); against `lax.conv_general_dilated` the
float32 results differ by ~1e-6 of the output's scale (tested against a
float64 NumPy convolution). Speed: the transforms' memory traffic only pays
off for wide channels on large maps, so `use_winograd` selects it where
`bench/conv3x3.py` shows it faster on XLA:CPU (table in README "Measured").
"""

import jax
import jax.numpy as jnp
import numpy as np

# G of F(2x2, 3x3): 3 x 3 filter -> 4 x 4 transformed filter (G g G^T).
FILTER_TRANSFORM = np.array([[1.0, 0.0, 0.0],
                             [0.5, 0.5, 0.5],
                             [0.5, -0.5, 0.5],
                             [0.0, 0.0, 1.0]], np.float32)


def _input_transform_1d(d):
  """B^T d along one axis: 4 arrays (tile rows) -> 4 arrays.

  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
  """
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _output_transform_1d(m):
  """A^T m along one axis: 4 arrays -> 2 arrays.

  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
  """
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def transform_filter(kernel: jax.Array) -> jax.Array:
  """G g G^T for every (input, output) channel pair.

  Args:
    kernel: `[3, 3, C_in, C_out]` (HWIO).

  Returns:
    `[16, C_in, C_out]`, the 4 x 4 transformed filter flattened row-major.
  """
  g = jnp.asarray(FILTER_TRANSFORM, kernel.dtype)
  u = jnp.einsum("ra,abio,sb->rsio", g, kernel, g)
  return u.reshape((16,) + kernel.shape[2:])


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1, zero-padding-1 3x3 convolution by F(2x2, 3x3).

  Same result as `lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1),
  (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))` up to float rounding.

  Args:
    x: `[B, H, W, C_in]` with even H and W.
    kernel: `[3, 3, C_in, C_out]`.

  Returns:
    `[B, H, W, C_out]` in the dtype of `x @ kernel`.
  """
  b, h, w, c_in = x.shape
  if h % 2 or w % 2:
    raise ValueError(f"winograd.conv3x3 needs even height and width, got "
                     f"{h}x{w}; use lax.conv for odd sizes.")
  if kernel.shape[:3] != (3, 3, c_in):
    raise ValueError(f"kernel must be [3, 3, {c_in}, C_out] (HWIO), got "
                     f"{kernel.shape}.")
  c_out = kernel.shape[3]
  th, tw = h // 2, w // 2
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # q[:, I, p, J, q'] = padded[:, 2I + p, 2J + q']: tile (i, j) reads padded
  # rows 2i .. 2i + 3 = (I = i + a // 2, p = a % 2) for a = 0..3, so each of
  # the 16 tile positions is a contiguous slice (no strided gathers, cheap
  # transposes in the backward pass).
  q = padded.reshape(b, th + 1, 2, tw + 1, 2, c_in)

  def tile_entry(a, e):
    return q[:, a // 2:a // 2 + th, a % 2, e // 2:e // 2 + tw, e % 2]

  # V = B^T d B: transform the tile rows, then the tile columns.
  cols = [_input_transform_1d([tile_entry(a, e) for a in range(4)])
          for e in range(4)]                       # cols[e][r]
  v = [_input_transform_1d([cols[e][r] for e in range(4)])
       for r in range(4)]                          # v[r][s]
  v = jnp.stack([v[r][s] for r in range(4) for s in range(4)])
  v = v.reshape(16, b * th * tw, c_in)
  m = jnp.einsum("kpc,kcd->kpd", v, transform_filter(kernel).astype(v.dtype))
  m = m.reshape(4, 4, b, th, tw, c_out)
  # Y = A^T M A: rows, then columns.
  rows = [_output_transform_1d([m[r, s] for r in range(4)])
          for s in range(4)]                       # rows[s][i]
  y = [_output_transform_1d([rows[s][i] for s in range(4)])
       for i in range(2)]                          # y[i][j]
  y = jnp.stack([jnp.stack(y[i], axis=3) for i in range(2)], axis=2)
  return y.reshape(b, h, w, c_out)


def use_winograd(x_shape, kernel_shape, dtype, policy: str = "auto") -> bool:
  """Whether `layers.Conv3x3` computes by Winograd.

  Args:
    x_shape: `[B, H, W, C_in]`.
    kernel_shape: `[3, 3, C_in, C_out]`.
    dtype: the compute dtype.
    policy: "xla" (never), "winograd" (whenever H and W are even) or "auto":
      only where it was measured faster: XLA's CPU backend, float32, H and W
      even, H * W >= 32 * 32 and C_in, C_out >= 128. On GPU / TPU XLA's own
      convolutions (cuDNN, the MXU) are kept.

  Returns:
    bool.
  """
  if policy not in ("auto", "xla", "winograd"):
    raise ValueError(f"conv3x3 policy must be 'auto', 'xla' or 'winograd', "
                     f"got {policy!r}.")
  _, h, w, _ = x_shape
  even = h % 2 == 0 and w % 2 == 0
  if policy != "auto":
    return policy == "winograd" and even
  return (even and jax.default_backend() == "cpu"
          and jnp.dtype(dtype) == jnp.float32 and h * w >= 32 * 32
          and min(kernel_shape[2], kernel_shape[3]) >= 128)

"""STAR's stacked hourglass network (StackedHGNetV1) with AAM, in Flax.

Architecture (semantics of the public StackedHGNetV1, ZhenglinZhou/STAR):

  stem:   CoordConv 7x7/2 (3 image + 3 coordinate channels -> 64) + BN + ReLU,
          ResBlock 64->128, maxpool 2, ResBlock 128->128, ResBlock 128->width
          (S x S x 3 -> S/4 x S/4 x width).
  stack i (num_stacks times):
          1x1 CoordConv (width + 3 coordinate channels, + 2 boundary channels
          from stack 2 on) -> hourglass of `depth` levels (ResBlocks, 2x2
          max pooling, nearest upsampling);
          features = ResBlock + 1x1 conv + BN + ReLU;
          heads (1x1): N heatmaps, N point maps, E edge maps;
          heatmaps = instance norm + ReLU (or spatial softmax), point/edge
          maps = sigmoid, fused heatmaps = AAM(heatmaps, point, edge);
          x += merge(features) + merge(heatmaps) + merge(point) + merge(edge)
          (1x1 convs, activated unfused maps) for all but the last stack.

Defaults follow the public code: depth 4 (the paper says 3), AAM on,
instance-norm + ReLU heatmaps. Parameter counts (used layers only) are 13.48M
(98 points), 13.37M (68), 13.23M (29), as the public model.

Deviations from the public code, all deliberate:
  * The hourglass CoordConv grid is built from the feature size; the public
    code uses width / nstack, which is only right for 4 stacks at 256 px.
  * The public code creates (unused) skip convs in identity ResBlocks; here
    they do not exist, so the parameter tree holds only used layers.
  * BatchNorm's running variance uses the biased batch variance (see
    `layers.batch_norm`).

Regression head (`head="regression"`, star_jax/regression.py, our own
formulation, not the paper's): the last stack's feature map goes to a
`RegressionHead` that predicts per landmark a mean (normalised crop frame)
and a covariance (Cholesky parameters) instead of heatmaps. The earlier
stacks keep their heatmap heads only as the features the next stack is built
from (merge convs, boundary channels); no loss supervises them, and the last
stack has no heatmap head. AAM needs heatmaps, so it is off with this head.

Mixed precision: `dtype=jnp.bfloat16` runs convolutions, matmuls and
BatchNorm normalisation in bfloat16 with float32 parameters and float32
BatchNorm statistics; heads are cast to float32 before their activations, and
all outputs are float32.

Rematerialisation (`remat=True`): each hourglass stack (`Hourglass`, the
outermost level of every stack) is wrapped in `nn.remat`, so its internal
activations are not kept for the backward pass but recomputed from the
stack's input (about one more forward of the hourglasses per step). Same
parameter tree (checkpoints are interchangeable), same loss and gradients up
to float rounding (tests/test_model.py); what it saves in memory:
`bench/compile_memory.py`.

Data parallelism: call the module under `jax.jit` with the batch sharded over
a mesh axis (NamedSharding); BatchNorm statistics are then over the global
batch automatically, without an `axis_name`.

Parameter layout for checkpoint conversion: 1x1 convs are `Conv1x1` modules
with `kernel [C_in, C_out]` (PyTorch: `[C_out, C_in, 1, 1]`); the 3x3
and the stem's 7x7 convs (`nn.Conv`) have `kernel [k, k, C_in, C_out]`
(PyTorch: `[C_out, C_in, k, k]`); every conv has a bias, as in the public code;
CoordConv kernels take the feature channels first, then (row, column, radius)
coordinates, then the two boundary channels, the public code's order.
"""

import functools
from typing import Any, Dict, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import schemes
from star_jax import aam
from star_jax import layers
from star_jax import regression

HEADS = ("heatmap", "regression")

Dtype = Any


def normalise_images(images: jax.Array, input_bgr: bool) -> jax.Array:
  """uint8 (or float in [0, 255]) RGB `[B, S, S, 3]` -> (x - 127.5) / 127.5."""
  x = images.astype(jnp.float32)
  if input_bgr:
    x = x[..., ::-1]
  return (x - 127.5) / 127.5


class Stem(nn.Module):
  """CoordConv 7x7/2 + BN + ReLU, ResBlocks and a max pool: S -> S/4."""
  width: int = 256
  dtype: Dtype = jnp.float32
  conv3x3: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """`[B, S, S, 3]` normalised images -> `[B, S/4, S/4, width]`."""
    b, h, w, _ = x.shape
    coords = jnp.broadcast_to(
        jnp.asarray(layers.coordinate_channels(h, w)), (b, h, w, 3))
    x = jnp.concatenate([x, coords], axis=-1).astype(self.dtype)
    x = layers.conv_kxk(64, 7, 6, 2, self.dtype, name="coord_conv")(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, "coord_conv_bn")(x))
    res = functools.partial(layers.ResBlock, dtype=self.dtype,
                            conv3x3=self.conv3x3)
    x = res(128, name="res1")(x, train)
    x = layers.max_pool_2x2(x)
    x = res(128, name="res2")(x, train)
    return res(self.width, name="res3")(x, train)


class Hourglass(nn.Module):
  """One hourglass: `depth` levels of ResBlocks around a 2x pooling.

  Attributes:
    depth: recursion levels (4 in the public code: 64 -> 4 at 256 px).
    width: channels.
    coord_conv: whether a 1x1 CoordConv comes first (the outermost level).
    dtype: compute dtype.
    conv3x3: how 3x3 convolutions compute (`layers.Conv3x3.policy`).
  """
  depth: int
  width: int = 256
  coord_conv: bool = False
  dtype: Dtype = jnp.float32
  conv3x3: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool,
               prev_heatmaps: jax.Array = None) -> jax.Array:
    """`[B, H, W, width]` -> `[B, H, W, width]`.

    Args:
      x: features.
      train: BatchNorm mode.
      prev_heatmaps: `[B, H, W, N]` activated heatmaps of the previous stack
        (adds the 2 boundary channels to the CoordConv), or None (first stack).
    """
    if self.coord_conv:
      _, h, w, _ = x.shape
      extra = jnp.asarray(layers.coordinate_channels(h, w))[None]
      if prev_heatmaps is not None:
        boundary = layers.boundary_channels(prev_heatmaps)
        extra = jnp.concatenate(
            [jnp.broadcast_to(extra, boundary.shape[:3] + (3,)), boundary], -1)
      x = layers.Conv1x1(self.width, self.dtype, name="coord_conv")(x, extra)
    res = functools.partial(layers.ResBlock, self.width, dtype=self.dtype,
                            conv3x3=self.conv3x3)
    up = res(name="up1")(x, train)
    low = layers.max_pool_2x2(x)
    low = res(name="low1")(low, train)
    if self.depth > 1:
      low = Hourglass(self.depth - 1, self.width, dtype=self.dtype,
                      conv3x3=self.conv3x3, name="low2")(low, train)
    else:
      low = res(name="low2")(low, train)
    low = res(name="low3")(low, train)
    return up + layers.upsample_nearest_2x(low)


# `Hourglass` rematerialised in the backward pass (StackedHourglass.remat).
# The lifted class keeps the module's name, so the parameter paths are
# Hourglass's; `train` (argument 2, counting self) is a Python bool: static.
RematHourglass = nn.remat(Hourglass, static_argnums=(2,))


class StackedHourglass(nn.Module):
  """STAR's stacked hourglass landmark network.

  Attributes:
    num_points: N landmarks (98 WFLW, 68 300W, 29 COFW).
    edges: E tuples of point indices (the landmark scheme's edges); the AAM
      edge-to-point matrix is derived from them. Needed when use_aam.
    num_stacks: hourglasses (4).
    depth: hourglass levels (4 as the public code; the paper says 3).
    width: feature channels (256).
    use_aam: AAM on (point and edge heads, fused heatmaps) or off.
    heatmap_activation: "instance_norm_relu" (public code) or "softmax"
      (spatial softmax, for the DR variant's Jensen-Shannon regulariser).
    head: "heatmap" (STAR's heatmaps, the default) or "regression" (the last
      stack's `regression.RegressionHead`; see the module docstring).
    regression_min_std: the regression head's smallest standard deviation
      (normalised crop units).
    dtype: compute dtype (jnp.float32 or jnp.bfloat16); parameters are f32.
    input_bgr: reverse the input channels (official checkpoints expect BGR).
    conv3x3: how the ResBlocks' 3x3 convolutions compute: "auto" (Winograd
      F(2x2, 3x3) matmuls where measured faster: XLA:CPU, float32, 128
      channels, maps >= 32 x 32; `lax.conv` elsewhere), "xla" or
      "winograd". Same parameters and maths either way (`star_jax/winograd.py`).
    remat: rematerialise each hourglass stack in the backward pass
      (`nn.remat`): less activation memory for ~1 more forward of the
      hourglasses; same parameters, same gradients.
  """
  num_points: int
  edges: Tuple[Tuple[int, ...], ...] = ()
  num_stacks: int = 4
  depth: int = 4
  width: int = 256
  use_aam: bool = True
  heatmap_activation: str = "instance_norm_relu"
  dtype: Dtype = jnp.float32
  input_bgr: bool = False
  conv3x3: str = "auto"
  head: str = "heatmap"
  regression_min_std: float = regression.MIN_STD
  remat: bool = False

  def _check(self, images: jax.Array):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError("images must be [B, S, S, 3] RGB (uint8 or float in "
                       f"[0, 255]), got shape {images.shape}.")
    s = images.shape[1]
    multiple = 4 * 2**self.depth
    if images.shape[2] != s or s % multiple:
      raise ValueError(
          f"images must be square with a side divisible by {multiple} "
          f"(4 * 2**depth, depth={self.depth}), got {images.shape[1:3]}; "
          "use S = 256 (default), 128 or 64, or a smaller depth.")
    if self.heatmap_activation not in aam.HEATMAP_ACTIVATIONS:
      raise ValueError(f"heatmap_activation must be one of "
                       f"{aam.HEATMAP_ACTIVATIONS}, got "
                       f"{self.heatmap_activation!r}.")
    if self.use_aam and not self.edges:
      raise ValueError("use_aam=True needs the scheme's edges (a tuple of "
                       "point-index tuples); pass edges=... or use_aam=False.")
    if self.head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}, got {self.head!r}.")
    if self.head == "regression" and self.use_aam:
      raise ValueError("head='regression' has no heatmaps for AAM; use "
                       "use_aam=False.")
    if self.num_stacks < 1 or self.depth < 1:
      raise ValueError("num_stacks and depth must be >= 1, got "
                       f"{self.num_stacks} and {self.depth}.")

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool) -> List[Dict[str, jax.Array]]:
    """Runs the network.

    Args:
      images: uint8 (or float in [0, 255]) RGB `[B, S, S, 3]`.
      train: BatchNorm uses batch statistics and updates `batch_stats` (pass
        `mutable=["batch_stats"]` to `apply`) when True.

    Returns:
      One dict per stack with float32, landmark-major maps (h = S / 4):
        "heatmaps" `[B, N, h, h]`: the non-negative heatmaps STAR decodes
          (AAM-fused when use_aam, else the activated heatmaps);
        "pointmaps" `[B, N, h, h]` and "edgemaps" `[B, E, h, h]`: after the
          sigmoid, what AWing is applied to (only when use_aam).
      With head="regression", one dict (the last stack's head): "mean"
      `[B, N, 2]` (x, y) in the normalised crop frame, "cholesky" and
      "covariance" `[B, N, 2, 2]`.
    """
    self._check(images)
    n = self.num_points
    e2p = (aam.edge_to_point_matrix(self.edges, n) if self.use_aam else None)
    x = normalise_images(images, self.input_bgr)
    x = Stem(self.width, self.dtype, self.conv3x3, name="stem")(x, train)

    hourglass = RematHourglass if self.remat else Hourglass
    outputs = []
    heatmaps = None
    for i in range(self.num_stacks):
      hg = hourglass(self.depth, self.width, coord_conv=True, dtype=self.dtype,
                     conv3x3=self.conv3x3,
                     name=f"hourglass_{i}")(x, train, heatmaps)
      feature = layers.ResBlock(self.width, self.dtype, self.conv3x3,
                                name=f"feature_res_{i}")(hg, train)
      feature = layers.Conv1x1(self.width, self.dtype,
                               name=f"feature_conv_{i}")(feature)
      feature = nn.relu(
          layers.batch_norm(train, self.dtype, f"feature_bn_{i}")(feature))
      if self.head == "regression" and i == self.num_stacks - 1:
        return [regression.RegressionHead(
            n, self.width, min_std=self.regression_min_std, dtype=self.dtype,
            name="regression_head")(feature, train)]

      logits = layers.Conv1x1(n, self.dtype, name=f"heatmap_head_{i}")(feature)
      heatmaps = aam.activate_heatmaps(logits, self.heatmap_activation)
      out = {}
      if self.use_aam:
        pointmaps = jax.nn.sigmoid(layers.Conv1x1(
            n, self.dtype, name=f"pointmap_head_{i}")(feature).astype(
                jnp.float32))
        edgemaps = jax.nn.sigmoid(layers.Conv1x1(
            e2p.shape[0], self.dtype, name=f"edgemap_head_{i}")(feature).astype(
                jnp.float32))
        out["heatmaps"] = aam.aam_fuse(heatmaps, pointmaps, edgemaps, e2p)
        out["pointmaps"] = pointmaps
        out["edgemaps"] = edgemaps
      else:
        out["heatmaps"] = heatmaps

      if i < self.num_stacks - 1:
        merge = lambda name, y: layers.Conv1x1(  # pylint: disable=g-long-lambda
            self.width, self.dtype, name=f"{name}_{i}")(y)
        x = (x + merge("merge_features", feature)
             + merge("merge_heatmaps", heatmaps))
        if self.use_aam:
          x = (x + merge("merge_pointmaps", pointmaps)
               + merge("merge_edgemaps", edgemaps))
      outputs.append({k: jnp.transpose(v, (0, 3, 1, 2)).astype(jnp.float32)
                      for k, v in out.items()})
    return outputs


def from_scheme(num_points, **kwargs) -> StackedHourglass:
  """A StackedHourglass with the edges of `data.schemes.get_scheme(num_points)`.

  Args:
    num_points: 98, 68 or 29 (or a scheme name `get_scheme` accepts).
    **kwargs: other StackedHourglass fields.
  """
  scheme = schemes.get_scheme(num_points)
  edges = tuple(tuple(int(i) for i in e) for e in scheme.edges)
  kwargs.setdefault("use_aam", bool(edges))
  return StackedHourglass(num_points=scheme.num_points, edges=edges, **kwargs)


def count_params(model: StackedHourglass, image_size: int = 256) -> int:
  """Parameters of `model` (no compile: shapes from jax.eval_shape)."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.uint8)
  variables = jax.eval_shape(
      lambda im: model.init(jax.random.PRNGKey(0), im, train=False), images)
  return int(sum(np.prod(p.shape)
                 for p in jax.tree_util.tree_leaves(variables["params"])))

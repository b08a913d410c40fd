"""Tests for star_jax.model (stacked hourglass + AAM) against NumPy references.

Parameters of the small test networks are drawn with NumPy from the shapes
(jax.eval_shape) instead of `model.init`, whose many random ops take tens of
seconds to dispatch or compile on a loaded 2-core CPU; the initialisers are
tested separately on single layers.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from star_jax import aam
from star_jax import layers
from star_jax import model

# A small network for most tests: 2 stacks, depth 2, width 16, 64 px input.
EDGES = ((0, 1, 2), (2, 3), (5, 6))  # point 4 is on no edge, 2 on two edges
NUM_POINTS = 7


def small_model(**kw):
  cfg = dict(num_points=NUM_POINTS, edges=EDGES, num_stacks=2, depth=2,
             width=16)
  cfg.update(kw)
  return model.StackedHourglass(**cfg)


def random_images(batch=2, size=64, seed=0):
  return np.random.RandomState(seed).randint(
      0, 256, (batch, size, size, 3)).astype(np.uint8)


def numpy_variables(net, images, seed=0):
  """Variables for `net` with NumPy random values (non-trivial BN stats)."""
  shapes = jax.eval_shape(
      functools.partial(net.init, train=False), jax.random.PRNGKey(0), images)
  rng = np.random.RandomState(seed)

  def fill(path, s):
    name = path[-1].key
    if name == "kernel":
      bound = 1 / np.sqrt(np.prod(s.shape[:-1]))
      return rng.uniform(-bound, bound, s.shape).astype(np.float32)
    if name in ("bias", "mean"):
      return rng.uniform(-0.1, 0.1, s.shape).astype(np.float32)
    return rng.uniform(0.8, 1.2, s.shape).astype(np.float32)  # scale, var

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.partial(jax.jit, static_argnums=(0, 3))
def run(net, variables, images, train):
  """Jitted apply returning (outputs, intermediates, batch_stats or None)."""
  mutable = ["intermediates"] + (["batch_stats"] if train else [])
  outs, state = net.apply(variables, images, train=train,
                          capture_intermediates=True, mutable=mutable)
  return outs, state["intermediates"], state.get("batch_stats")


@pytest.fixture(scope="module")
def small_variables():
  return numpy_variables(small_model(), random_images())


# ------------------------------------------------------------------- sizes --


@pytest.mark.parametrize("num_points,expected", [(98, 13.48e6), (68, 13.37e6),
                                                 (29, 13.23e6)])
def test_param_count_matches_public_model(num_points, expected):
  net = model.from_scheme(num_points)
  assert net.use_aam and len(net.edges) == (7 if num_points == 29 else 9)
  count = model.count_params(net)
  assert abs(count - expected) / expected < 0.005, count


# -------------------------------------------------------------------- AAM --


def numpy_aam_reference(heat, point, edge, edges, num_points):
  """Public-code semantics in float64, channel-last maps."""
  e2h = np.zeros((num_points, len(edges)))  # [N, E] as the public conv weight
  for e, idx in enumerate(edges):
    e2h[list(idx), e] = 1.0
  bias = (e2h @ np.ones(len(edges)) < 0.5).astype(np.float64)
  mask = np.einsum("bhwe,ne->bhwn", edge, e2h) + bias
  return mask * point * heat


def test_edge_to_point_matrix_and_bias():
  m = aam.edge_to_point_matrix(EDGES, NUM_POINTS)
  expected = np.zeros((3, 7))
  expected[0, [0, 1, 2]] = 1
  expected[1, [2, 3]] = 1
  expected[2, [5, 6]] = 1
  np.testing.assert_array_equal(m, expected)
  np.testing.assert_array_equal(aam.points_on_no_edge(m), [0, 0, 0, 0, 1, 0, 0])


def test_edge_to_point_matrix_rejects_bad_indices():
  with pytest.raises(ValueError, match="outside"):
    aam.edge_to_point_matrix(((0, 9),), 5)
  with pytest.raises(ValueError, match="no points"):
    aam.edge_to_point_matrix(((),), 5)


def test_aam_fuse_matches_numpy_reference():
  rng = np.random.RandomState(1)
  heat = rng.rand(2, 5, 4, NUM_POINTS)
  point = rng.rand(2, 5, 4, NUM_POINTS)
  edge = rng.rand(2, 5, 4, len(EDGES))
  fused = aam.aam_fuse(jnp.asarray(heat, jnp.float32),
                       jnp.asarray(point, jnp.float32),
                       jnp.asarray(edge, jnp.float32),
                       aam.edge_to_point_matrix(EDGES, NUM_POINTS))
  ref = numpy_aam_reference(heat, point, edge, EDGES, NUM_POINTS)
  np.testing.assert_allclose(np.asarray(fused), ref, rtol=1e-5, atol=1e-6)
  # Hand check: point 4 (no edge) keeps point * heat; point 2 sums two edges.
  np.testing.assert_allclose(np.asarray(fused)[..., 4],
                             point[..., 4] * heat[..., 4], rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(fused)[..., 2],
      (edge[..., 0] + edge[..., 1]) * point[..., 2] * heat[..., 2], rtol=1e-5)


def test_instance_norm_relu_matches_numpy():
  x = np.random.RandomState(2).randn(2, 6, 5, 3) * 3 + 1
  got = np.asarray(aam.instance_norm_relu(jnp.asarray(x, jnp.float32)))
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = x.var(axis=(1, 2), keepdims=True)
  z = (x - mean) / np.sqrt(var + 1e-5)
  np.testing.assert_allclose(got, np.maximum(z, 0), rtol=1e-4, atol=1e-5)
  assert got.min() >= 0 and (got == 0).any() and (got > 0).any()


def test_model_fuses_its_own_maps(small_variables):
  """End to end: output heatmaps = AAM(IN+ReLU(head logits), point, edge)."""
  net = small_model()
  images = random_images()
  outs, inter, _ = run(net, small_variables, images, False)
  for i, out in enumerate(outs):
    logits = np.asarray(inter[f"heatmap_head_{i}"]["__call__"][0], np.float64)
    mean = logits.mean(axis=(1, 2), keepdims=True)
    var = logits.var(axis=(1, 2), keepdims=True)
    heat = np.maximum((logits - mean) / np.sqrt(var + 1e-5), 0)
    point = np.asarray(out["pointmaps"], np.float64).transpose(0, 2, 3, 1)
    edge = np.asarray(out["edgemaps"], np.float64).transpose(0, 2, 3, 1)
    point_logits = np.asarray(inter[f"pointmap_head_{i}"]["__call__"][0])
    np.testing.assert_allclose(point, 1 / (1 + np.exp(-point_logits)),
                               rtol=1e-5)
    ref = numpy_aam_reference(heat, point, edge, EDGES, NUM_POINTS)
    np.testing.assert_allclose(
        np.asarray(out["heatmaps"]).transpose(0, 2, 3, 1), ref, rtol=1e-4,
        atol=1e-5)
    assert out["heatmaps"].shape == (2, NUM_POINTS, 16, 16)
    assert out["edgemaps"].shape == (2, len(EDGES), 16, 16)


def test_without_aam_softmax_heatmaps_are_distributions():
  net = small_model(use_aam=False, heatmap_activation="softmax", edges=())
  images = random_images()
  variables = numpy_variables(net, images)
  outs, _, _ = run(net, variables, images, False)
  assert set(outs[-1]) == {"heatmaps"}
  for out in outs:
    np.testing.assert_allclose(np.asarray(out["heatmaps"]).sum(axis=(2, 3)),
                               1.0, rtol=1e-5)
  assert not any("pointmap" in k or "edgemap" in k
                 for k in variables["params"])


# -------------------------------------------------------------- CoordConv --


def public_coordinate_channels(x_dim, y_dim):
  """NumPy transcription of the public AddCoordsTh construction (with_r)."""
  xx = (np.ones((1, y_dim, 1)) @ np.arange(x_dim)[None, None, :])[..., None]
  yy = (np.arange(y_dim)[None, :, None] @ np.ones((1, 1, x_dim)))[..., None]
  xx = xx.transpose(0, 3, 2, 1) / (x_dim - 1) * 2 - 1  # [1, 1, x_dim, y_dim]
  yy = yy.transpose(0, 3, 2, 1) / (y_dim - 1) * 2 - 1
  rr = np.sqrt(xx**2 + yy**2)
  rr = rr / rr.max()
  return np.concatenate([xx, yy, rr], axis=1)[0]  # [3, H, W] channel order


@pytest.mark.parametrize("size", [64, 16])
def test_coordinate_channels_match_public_order(size):
  got = layers.coordinate_channels(size, size).transpose(2, 0, 1)
  np.testing.assert_allclose(got, public_coordinate_channels(size, size),
                             atol=1e-6)
  lin = np.linspace(-1, 1, size)
  np.testing.assert_allclose(got[0][:, 3], lin, atol=1e-6)  # rows
  np.testing.assert_allclose(got[1][3, :], lin, atol=1e-6)  # columns


def test_boundary_channels_mask_last_heatmap():
  heat = np.zeros((1, 4, 4, 3), np.float32)
  heat[0, :, :, 0] = 1.0  # not the last landmark: ignored
  heat[0, 1, 2, -1] = 0.05  # exactly at the threshold: masked out
  heat[0, 2, 1, -1] = 0.0501
  heat[0, 3, 3, -1] = 7.0  # clamped to 1, kept
  got = np.asarray(layers.boundary_channels(jnp.asarray(heat)))
  coords = public_coordinate_channels(4, 4)[:2].transpose(1, 2, 0)
  keep = np.clip(heat[0, :, :, -1], 0, 1) > 0.05
  ref = np.where(keep[..., None], coords, 0.0)
  np.testing.assert_allclose(got[0], ref, atol=1e-7)
  assert keep.sum() == 2


def test_conv1x1_extra_equals_concatenation():
  rng = np.random.RandomState(4)
  x = rng.randn(2, 3, 3, 5).astype(np.float32)
  extra = rng.randn(2, 3, 3, 2).astype(np.float32)
  conv = layers.Conv1x1(4)
  params = conv.init(jax.random.PRNGKey(0), x, extra)
  got = np.asarray(conv.apply(params, x, extra))
  kernel = np.asarray(params["params"]["kernel"], np.float64)
  bias = np.asarray(params["params"]["bias"], np.float64)
  ref = np.concatenate([x, extra], -1).astype(np.float64) @ kernel + bias
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  assert kernel.shape == (7, 4)


def test_second_hourglass_coordconv_gets_boundary_from_first_heatmaps(
    small_variables):
  """Stack 2's CoordConv extra channels = coords + boundary(stack-1 heatmaps)."""
  net = small_model()
  images = random_images()
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if mod.name == "coord_conv" and context.method_name == "__call__":
      seen[mod.parent.name] = args
    return next_fun(*args, **kwargs)

  @jax.jit
  def extra_channels(variables):
    with nn.intercept_methods(interceptor):
      _, state = net.apply(variables, images, train=False,
                           capture_intermediates=True,
                           mutable=["intermediates"])
    return (seen["hourglass_0"][1], seen["hourglass_1"][1],
            state["intermediates"]["heatmap_head_0"]["__call__"][0])

  extra0, extra1, logits = extra_channels(small_variables)
  logits = np.asarray(logits)
  mean = logits.mean(axis=(1, 2), keepdims=True)
  var = logits.var(axis=(1, 2), keepdims=True)
  heat = np.maximum((logits - mean) / np.sqrt(var + 1e-5), 0)
  coords = public_coordinate_channels(16, 16).transpose(1, 2, 0)
  keep = np.clip(heat[..., -1], 0, 1) > 0.05
  assert 0 < keep.sum() < keep.size  # the test sees both cases
  boundary = np.where(keep[..., None], coords[None, ..., :2], 0.0)
  expected = np.concatenate(
      [np.broadcast_to(coords, (2, 16, 16, 3)), boundary], -1)
  np.testing.assert_allclose(np.asarray(extra1), expected, atol=1e-6)
  # The first hourglass has no boundary channels (3 coordinate channels).
  np.testing.assert_allclose(np.asarray(extra0)[0], coords, atol=1e-6)
  kernel0 = small_variables["params"]["hourglass_0"]["coord_conv"]["kernel"]
  kernel1 = small_variables["params"]["hourglass_1"]["coord_conv"]["kernel"]
  assert kernel0.shape == (16 + 3, 16) and kernel1.shape == (16 + 5, 16)


# ------------------------------------------------------------ primitives --


def test_pool_and_upsample_match_numpy():
  x = np.random.RandomState(5).randn(2, 6, 4, 3).astype(np.float32)
  pooled = np.asarray(layers.max_pool_2x2(jnp.asarray(x)))
  ref = np.max([x[:, i::2, j::2] for i in (0, 1) for j in (0, 1)], axis=0)
  np.testing.assert_array_equal(pooled, ref)
  up = np.asarray(layers.upsample_nearest_2x(jnp.asarray(x)))
  np.testing.assert_array_equal(up, x.repeat(2, axis=1).repeat(2, axis=2))


def test_resblock_matches_numpy_in_eval_mode():
  rng = np.random.RandomState(6)
  x = rng.randn(1, 5, 5, 4).astype(np.float32)
  block = layers.ResBlock(8)
  v = numpy_variables(block, x)
  got = np.asarray(block.apply(v, x, train=False))
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
  s = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                             v["batch_stats"])

  def bn_relu(y, name):
    y = (y - s[name]["mean"]) / np.sqrt(s[name]["var"] + 1e-5)
    return np.maximum(y * p[name]["scale"] + p[name]["bias"], 0)

  def conv3x3(y, w, b):  # w [3, 3, Cin, Cout], padding 1
    yp = np.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros(y.shape[:3] + (w.shape[-1],))
    for di in range(3):
      for dj in range(3):
        out += yp[:, di:di + y.shape[1], dj:dj + y.shape[2]] @ w[di, dj]
    return out + b

  x64 = x.astype(np.float64)
  y = bn_relu(x64, "bn1") @ p["conv1"]["kernel"] + p["conv1"]["bias"]
  y = conv3x3(bn_relu(y, "bn2"), p["conv2"]["kernel"], p["conv2"]["bias"])
  y = bn_relu(y, "bn3") @ p["conv3"]["kernel"] + p["conv3"]["bias"]
  y = y + x64 @ p["skip"]["kernel"] + p["skip"]["bias"]
  np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------- modes and inputs --


def test_train_mode_updates_batchnorm_statistics(small_variables):
  net = small_model()
  images = random_images()
  _, inter, batch_stats = run(net, small_variables, images, True)
  conv_out = np.asarray(inter["stem"]["coord_conv"]["__call__"][0], np.float64)
  new = batch_stats["stem"]["coord_conv_bn"]
  old = small_variables["batch_stats"]["stem"]["coord_conv_bn"]
  np.testing.assert_allclose(
      new["mean"], 0.9 * old["mean"] + 0.1 * conv_out.mean(axis=(0, 1, 2)),
      rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      new["var"], 0.9 * old["var"] + 0.1 * conv_out.var(axis=(0, 1, 2)),
      rtol=1e-3, atol=1e-6)
  # Every BatchNorm in the network moved.
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)),
                                   batch_stats,
                                   small_variables["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  # Eval mode does not depend on the other images of the batch.
  single, _, _ = run(net, small_variables, images[:1], False)
  pair, _, _ = run(net, small_variables, images, False)
  np.testing.assert_allclose(single[-1]["heatmaps"], pair[-1]["heatmaps"][:1],
                             rtol=1e-4, atol=1e-5)


def test_bfloat16_mode_keeps_f32_params_and_outputs(small_variables):
  images = random_images()
  net16 = small_model(dtype=jnp.bfloat16)
  v16 = jax.eval_shape(functools.partial(net16.init, train=False),
                       jax.random.PRNGKey(0), images)
  dtypes = {a.dtype for a in jax.tree_util.tree_leaves(v16)}
  assert dtypes == {np.dtype(np.float32)}
  ref, inter, _ = run(small_model(), small_variables, images, False)
  got, inter16, _ = run(net16, small_variables, images, False)
  # The computation really ran in bfloat16.
  assert inter16["stem"]["coord_conv"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["stem"]["coord_conv"]["__call__"][0].dtype == jnp.float32
  for r, g in zip(ref, got):
    for key in ("heatmaps", "pointmaps", "edgemaps"):
      assert g[key].dtype == jnp.float32
      a, b = np.asarray(r[key]), np.asarray(g[key])
      assert np.abs(a - b).mean() < 0.03 * np.abs(a).mean() + 1e-3, key
      assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99, key


def test_normalise_images_uint8_float_and_bgr():
  images = random_images(batch=1, size=4)
  ref = (images.astype(np.float64) - 127.5) / 127.5
  for x in (images, images.astype(np.float32)):
    np.testing.assert_allclose(model.normalise_images(x, False), ref,
                               atol=1e-6)
  np.testing.assert_allclose(model.normalise_images(images, True),
                             ref[..., ::-1], atol=1e-6)


def test_bgr_model_on_reversed_images_equals_rgb_model(small_variables):
  images = random_images()
  a, _, _ = run(small_model(), small_variables, images, False)
  b, _, _ = run(small_model(input_bgr=True), small_variables,
                np.ascontiguousarray(images[..., ::-1]), False)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x["heatmaps"], y["heatmaps"], atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 64, 64, 1), (2, 64, 48, 3),
                                   (2, 40, 40, 3), (64, 64, 3)])
def test_bad_images_raise(small_variables, shape):
  with pytest.raises(ValueError, match="images must"):
    small_model().apply(small_variables, np.zeros(shape, np.uint8),
                        train=False)


def test_bad_config_raises(small_variables):
  with pytest.raises(ValueError, match="edges"):
    small_model(edges=()).apply(small_variables, random_images(), train=False)
  with pytest.raises(ValueError, match="heatmap_activation"):
    small_model(heatmap_activation="sigmoid").apply(
        small_variables, random_images(), train=False)


def test_works_at_128_px_with_depth_4():
  net = small_model(depth=4, num_stacks=1, width=8)
  images = random_images(batch=1, size=128)
  out, _, _ = run(net, numpy_variables(net, images), images, False)
  assert out[0]["heatmaps"].shape == (1, NUM_POINTS, 32, 32)
  assert np.all(np.asarray(out[0]["heatmaps"]) >= 0)


def test_initialisers_follow_pytorch_defaults():
  x = np.zeros((1, 4, 4, 12), np.float32)
  conv = layers.Conv1x1(300)
  p = conv.init(jax.random.PRNGKey(3), x)["params"]
  bound = 1 / np.sqrt(12)
  for a in (np.asarray(p["kernel"]), np.asarray(p["bias"])):
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
  # Uniform: variance bound^2 / 3.
  np.testing.assert_allclose(np.asarray(p["kernel"]).var(), bound**2 / 3,
                             rtol=0.1)


# ------------------------------------------------------------------ remat --
# A smaller network than `small_model` (depth 1, width 8, 32 px): two
# gradient compiles are what these tests cost.


def remat_model(**kw):
  return small_model(depth=1, width=8, **kw)


@pytest.fixture(scope="module")
def remat_case():
  images = random_images(size=32)
  variables = numpy_variables(remat_model(), images, seed=2)
  return images, variables


def _loss_and_grads(net, variables, images, targets):
  """Jitted ((loss, new batch_stats), grads) of a stand-in loss on all maps."""

  def loss_fn(params):
    outs, state = net.apply({"params": params,
                             "batch_stats": variables["batch_stats"]},
                            images, train=True, mutable=["batch_stats"])
    loss = sum((i + 1) * jnp.mean(jnp.square(o[k] - targets[k]))
               for i, o in enumerate(outs) for k in sorted(o))
    return loss, state["batch_stats"]

  return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])


def test_remat_keeps_parameter_tree(remat_case):
  images, _ = remat_case
  paths = []
  for remat in (False, True):
    shapes = jax.eval_shape(functools.partial(
        remat_model(remat=remat).init, train=False), jax.random.PRNGKey(0),
                            images)
    paths.append([(jax.tree_util.keystr(p), x.shape, x.dtype) for p, x in
                  jax.tree_util.tree_flatten_with_path(shapes)[0]])
  assert paths[0] == paths[1]
  assert any("'hourglass_1'" in p for p, _, _ in paths[0])


def test_remat_same_loss_gradients_and_batch_stats(remat_case):
  images, variables = remat_case
  rng = np.random.RandomState(3)
  h = images.shape[1] // 4
  targets = {"heatmaps": rng.rand(2, NUM_POINTS, h, h),
             "pointmaps": rng.rand(2, NUM_POINTS, h, h),
             "edgemaps": rng.rand(2, len(EDGES), h, h)}
  targets = {k: v.astype(np.float32) for k, v in targets.items()}
  (loss, stats), grads = _loss_and_grads(remat_model(), variables, images,
                                         targets)
  (loss_r, stats_r), grads_r = _loss_and_grads(remat_model(remat=True),
                                               variables, images, targets)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
  assert (jax.tree_util.tree_structure(grads_r)
          == jax.tree_util.tree_structure(grads))
  for g, g_r in zip(jax.tree_util.tree_leaves(grads),
                    jax.tree_util.tree_leaves(grads_r)):
    scale = float(np.abs(np.asarray(g)).max()) + 1e-12
    np.testing.assert_allclose(g_r, g, rtol=1e-5, atol=1e-6 * scale)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      stats, stats_r)
  # The hourglasses' gradients are not trivially zero (the check has teeth).
  for i in (0, 1):
    assert float(np.abs(np.asarray(
        grads[f"hourglass_{i}"]["coord_conv"]["kernel"])).max()) > 0


def test_remat_is_in_the_program_only_when_on(remat_case):
  images, variables = remat_case

  def remat_regions(net):
    def loss_fn(params):
      outs, _ = net.apply({"params": params,
                           "batch_stats": variables["batch_stats"]},
                          images, train=True, mutable=["batch_stats"])
      return sum(jnp.sum(o["heatmaps"]) for o in outs)
    jaxpr = jax.make_jaxpr(loss_fn)(variables["params"])
    # jax.checkpoint's primitive ("remat2" in jax 0.10, "checkpoint" in
    # some versions), counted at the top level of the forward's jaxpr.
    return sum(e.primitive.name in ("remat2", "checkpoint", "remat")
               for e in jaxpr.jaxpr.eqns)

  # One rematerialised region per stack (2 stacks), none without remat.
  assert remat_regions(remat_model(remat=True)) == 2
  assert remat_regions(remat_model()) == 0

"""Tests of star_jax/inference.py: checkpoint loading and the crop predictor.

`make_workdir` writes a tiny STAR training workdir with the real
training.checkpoints.Checkpointer (2 stacks, depth 2, width 16, 64 px crops,
AAM on); test_export.py and test_predict.py reuse it.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from star_jax import inference
from star_jax import method as method_lib
from training import checkpoints as ckpt_lib
from training import state as state_lib

CROP = 64


def tiny_config(**model):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.model.num_stacks = 2
  c.model.depth = 2
  c.model.width = 16
  c.model.use_aam = True
  c.data.crop_size = CROP
  c.compilation_cache_dir = ""
  for k, v in model.items():
    c.model[k] = v
  return c


def _random_leaf(path, shape, rng):
  """Random values by parameter kind (numpy: no compiled init, which takes
  ~50 s to compile for this model on a loaded 2-core CPU)."""
  name = jax.tree_util.keystr(path[-1:])
  if "kernel" in name:
    fan_in = int(np.prod(shape[:-1]))
    return (rng.randn(*shape) / np.sqrt(fan_in)).astype(np.float32)
  if "scale" in name:
    return (1.0 + 0.1 * rng.randn(*shape)).astype(np.float32)
  if "var" in name:
    return (0.5 + np.abs(rng.randn(*shape))).astype(np.float32)
  return (0.1 * rng.randn(*shape)).astype(np.float32)   # bias, mean.


def random_variables(config, seed: int):
  """`{"params", "batch_stats"}` of the config's model with random values."""
  model = inference.model_from_config(config)
  abstract = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct((1, CROP, CROP, 3), jnp.uint8))
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, s: _random_leaf(p, s.shape, rng), abstract)


def make_state(config, seed: int, use_ema: bool = True):
  """A TrainState with random weights, distinct EMA and BatchNorm stats."""
  variables = random_variables(config, seed)
  state = state_lib.create_train_state(
      variables["params"], {"batch_stats": variables["batch_stats"]},
      optax.adam(1e-3), None, jax.random.PRNGKey(0), use_ema)
  if use_ema:
    ema = random_variables(config, seed + 1)
    state = state.replace(ema=(ema["params"],
                               {"batch_stats": ema["batch_stats"]}))
  return state


def make_workdir(path, config=None, use_ema: bool = True):
  """Workdir with checkpoints/2 (latest) and checkpoints_best/1 (best).

  Returns (config, {"latest": state, "best": state}).
  """
  config = config or tiny_config()
  cfg = ckpt_lib.config_to_dict(config)
  best, latest = make_state(config, 10, use_ema), make_state(config, 20,
                                                             use_ema)
  c = ckpt_lib.Checkpointer(str(path), best_metric="test_ema/nme",
                            async_save=False)
  c.save_best(1, best, None, {"step": 1}, cfg, {"test_ema/nme": 0.5})
  c.save(2, latest, None, {"step": 2}, cfg, force=True)
  c.wait()
  c.close()
  return config, {"best": best, "latest": latest}


_SHARED = {}


def shared_workdir(tmp_path_factory):
  """One read-only workdir per test session (test_export/test_predict too)."""
  if "workdir" not in _SHARED:
    path = tmp_path_factory.mktemp("star_workdir")
    config, states = make_workdir(path)
    _SHARED["workdir"] = (str(path), config, states)
  return _SHARED["workdir"]


@pytest.fixture
def workdir(tmp_path_factory):
  return shared_workdir(tmp_path_factory)


def _assert_tree_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _mtimes(path):
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      p = os.path.join(root, f)
      out[p] = os.stat(p).st_mtime_ns
  return out


def test_restores_exact_variables_best_latest_ema_raw(workdir):
  path, _, states = workdir
  before = _mtimes(path)
  for which in ("best", "latest"):
    s = states[which]
    _, _, v, info = inference.load_checkpoint(path, which, with_info=True)
    assert info["ema"] and info["step"] == {"best": 1, "latest": 2}[which]
    _assert_tree_equal(v, {"params": s.ema[0], **s.ema[1]})
  _, _, raw = inference.load_checkpoint(path, "best", use_ema=False)
  s = states["best"]
  _assert_tree_equal(raw, {"params": s.params, **s.model_state})
  # EMA and raw parameters really differ (so the choice above is tested).
  assert not np.allclose(jax.tree.leaves(s.ema[0])[0],
                         jax.tree.leaves(s.params)[0])
  # Loading only reads: no file in the workdir was added or touched.
  assert _mtimes(path) == before


def test_no_ema_checkpoint_uses_raw_and_refuses_use_ema(tmp_path):
  _, states = make_workdir(tmp_path, use_ema=False)
  _, _, v = inference.load_checkpoint(str(tmp_path), "latest")
  s = states["latest"]
  _assert_tree_equal(v, {"params": s.params, **s.model_state})
  with pytest.raises(ValueError, match="no EMA"):
    inference.load_checkpoint(str(tmp_path), "latest", use_ema=True)


def _numpy_soft_argmax_pixels(heatmaps, crop):
  """float64 reference of eq. 1 + align_corners=False denormalisation."""
  h = np.asarray(heatmaps, np.float64)
  size = h.shape[-1]
  grid = np.linspace(-1.0, 1.0, size)
  p = h / np.maximum(h.sum(axis=(-1, -2), keepdims=True), 1e-6)
  x = (p.sum(-2) * grid).sum(-1)   # columns
  y = (p.sum(-1) * grid).sum(-1)   # rows
  xy = np.stack([x, y], -1)
  return ((xy + 1.0) * crop - 1.0) / 2.0


def test_predict_crops_is_the_eval_decode(workdir):
  path, config, _ = workdir
  config_l, model, variables = inference.load_checkpoint(path, "best")
  images = np.random.RandomState(0).randint(0, 256, (3, CROP, CROP, 3),
                                            dtype=np.uint8)
  out = inference.predict_crops(model, variables, images, with_heatmaps=True)
  assert out["heatmaps"].shape == (3, 68, CROP // 4, CROP // 4)
  expected = _numpy_soft_argmax_pixels(out["heatmaps"], CROP)
  np.testing.assert_allclose(np.asarray(out["landmarks_crop"]), expected,
                             atol=1e-3)
  # The training loop's eval step (identity crop map) gives the same points.
  star = method_lib.StarMethod(config_l)
  batch = star.dummy_batch(3)
  batch["image"] = images
  pred = jax.jit(star.eval_step)(
      variables["params"],
      {k: v for k, v in variables.items() if k != "params"}, batch)["pred"]
  np.testing.assert_allclose(np.asarray(out["landmarks_crop"]),
                             np.asarray(pred), atol=1e-4)
  assert config_l.model.width == config.model.width == 16


class _FixedHeatmaps:
  """Stands in for the model: returns given heatmaps (one stack)."""

  def __init__(self, heatmaps):
    self.heatmaps = heatmaps

  def apply(self, variables, images, train):
    del variables, images, train
    return [{"heatmaps": jnp.asarray(self.heatmaps)}]


def test_infer_decoder_conventions_and_crop_maps():
  rng = np.random.RandomState(1)
  maps = rng.uniform(0, 1, (2, 5, 8, 8)).astype(np.float32) ** 4
  c2i = rng.uniform(-2, 2, (2, 2, 3)).astype(np.float32)
  images = np.zeros((2, 32, 32, 3), np.uint8)
  model = _FixedHeatmaps(maps)
  plain = inference.infer(model, {}, images, c2i, False)
  corners = inference.infer(model, {}, images, c2i, True)
  ref = _numpy_soft_argmax_pixels(maps, 32)
  np.testing.assert_allclose(np.asarray(plain["landmarks_crop"]), ref,
                             atol=1e-4)
  # align_corners=True: p = (c + 1)(S - 1)/2 from the same c.
  c = (2.0 * ref + 1.0) / 32 - 1.0
  np.testing.assert_allclose(np.asarray(corners["landmarks_crop"]),
                             (c + 1.0) * 31 / 2.0, atol=1e-4)
  orig = (np.einsum("bij,bnj->bni", c2i[..., :2].astype(np.float64), ref)
          + c2i[:, None, :, 2])
  np.testing.assert_allclose(np.asarray(plain["landmarks"]), orig, atol=1e-4)
  assert "heatmaps" not in plain


def test_clear_errors(tmp_path, workdir):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    inference.load_checkpoint(str(tmp_path / "nope"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="checkpoints_best/ is missing"):
    inference.load_checkpoint(str(empty))
  path, _, _ = workdir
  with pytest.raises(FileNotFoundError, match="pass the workdir itself"):
    inference.load_checkpoint(os.path.join(path, "checkpoints"))
  with pytest.raises(ValueError, match="which must be"):
    inference.load_checkpoint(path, "final")
  # A checkpoint of another method.
  other = tmp_path / "other"
  config = tiny_config()
  config.method = "sce_mae_pretrain"
  c = ckpt_lib.Checkpointer(str(other), async_save=False)
  c.save(1, {"params": {"w": np.ones(3, np.float32)}}, None, {},
         ckpt_lib.config_to_dict(config), force=True)
  c.wait()
  c.close()
  with pytest.raises(ValueError, match="not a STAR checkpoint"):
    inference.load_checkpoint(str(other), "latest")
  # An empty checkpoints/ folder (e.g. a run killed before its first save).
  (tmp_path / "early" / "checkpoints").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="no latest checkpoint"):
    inference.load_checkpoint(str(tmp_path / "early"), "latest")


class _ImageHeatmaps:
  """Stands in for the model: 5 heatmaps computed from the image content."""

  def apply(self, variables, images, train):
    del variables, train
    b, s = images.shape[0], images.shape[1]
    x = images.astype(jnp.float32).reshape(b, s // 4, 4, s // 4, 4, 3)
    pooled = x.mean((2, 4)) / 255.0                       # [B, s/4, s/4, 3]
    maps = jnp.stack([pooled[..., k % 3] ** (k + 1) for k in range(5)], 1)
    return [{"heatmaps": maps}]


def _numpy_image_heatmaps(images):
  b, s = images.shape[0], images.shape[1]
  pooled = images.astype(np.float64).reshape(b, s // 4, 4, s // 4, 4, 3)
  pooled = pooled.mean((2, 4)) / 255.0
  return np.stack([pooled[..., k % 3] ** (k + 1) for k in range(5)], 1)


def test_flip_test_is_the_average_with_the_mirrored_crop():
  perm = (1, 0, 2, 4, 3)                   # an involution, as a scheme's.
  rng = np.random.RandomState(2)
  images = rng.randint(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  c2i = rng.uniform(-2, 2, (2, 2, 3)).astype(np.float32)
  out = inference.infer(_ImageHeatmaps(), {}, images, c2i,
                        flip_permutation=perm)
  plain = _numpy_soft_argmax_pixels(_numpy_image_heatmaps(images), 32)
  mirrored = _numpy_soft_argmax_pixels(
      _numpy_image_heatmaps(images[:, :, ::-1]), 32)
  back = mirrored[:, list(perm)]
  back[..., 0] = 31.0 - back[..., 0]       # x -> (S - 1) - x.
  ref = 0.5 * (plain + back)
  np.testing.assert_allclose(np.asarray(out["landmarks_crop"]), ref,
                             atol=1e-4)
  orig = (np.einsum("bij,bnj->bni", c2i[..., :2].astype(np.float64), ref)
          + c2i[:, None, :, 2])
  np.testing.assert_allclose(np.asarray(out["landmarks"]), orig, atol=1e-4)
  assert not np.allclose(ref, plain, atol=1e-2)   # the flip test mattered.
  # Configs choose it: eval.flip_test on -> the scheme's permutation.
  config = tiny_config()
  assert inference.flip_permutation_for(config) is None
  config.eval.flip_test = True
  perm68 = inference.flip_permutation_for(config)
  assert len(perm68) == 68 and perm68[0] == 16 and perm68[36] == 45


def test_best_step_ranked_by_the_runs_metric(tmp_path):
  """With config.json naming the best metric, "best" is the Checkpointer's
  pick among several kept best checkpoints (lowest value, "min" mode), not
  the newest one."""
  config = tiny_config()
  cfg = ckpt_lib.config_to_dict(config)
  state = make_state(config, 3)
  # Two best checkpoints kept (as if the trainer's keep had been raised),
  # written with the trainer's items: step 5 is newer but worse than step 4.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(
      str(tmp_path / "checkpoints_best"),
      options=ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=False,
          best_fn=lambda m: m["val/nme"], best_mode="min"),
      item_names=ckpt_lib.Checkpointer.ITEMS)
  for step, value in ((4, 0.2), (5, 0.3)):
    manager.save(step, args=ckpt_lib.Checkpointer._args(  # pylint: disable=protected-access
        state, None, {"step": step}, cfg), metrics={"val/nme": value},
                 force=True)
  manager.close()
  assert ckpt_lib.find_checkpoint(str(tmp_path), "best")[1] == 5  # no record
  with open(tmp_path / "config.json", "w") as f:
    json.dump({"best_metric": "val/nme"}, f)
  assert ckpt_lib.find_checkpoint(str(tmp_path), "best")[1] == 4


class _GaussianHeatmapModel:
  """A stand-in for the hourglass: fixed heatmaps, whatever the crops."""

  def __init__(self, heatmaps):
    self.heatmaps = jnp.asarray(heatmaps, jnp.float32)

  def apply(self, variables, x, train=False):
    del variables, train
    return [{"heatmaps": jnp.broadcast_to(
        self.heatmaps, (x.shape[0],) + self.heatmaps.shape)}]


def _gaussian_heatmap(mean, cov, size, crop):
  """A heatmap whose grid points sit at their crop-pixel positions (the
  decoder's convention, align_corners False: x = j S / (W - 1) - 1/2) and
  whose values are the Gaussian density there (float64)."""
  px = np.arange(size) * crop / (size - 1.0) - 0.5
  gx, gy = np.meshgrid(px, px)
  d = np.stack([gx - mean[0], gy - mean[1]], -1)
  q = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)
  return np.exp(-0.5 * q)


def test_uncertainty_recovers_a_known_anisotropic_gaussian():
  crop, size = 128, 32
  means = np.array([[60.0, 70.0], [40.0, 50.0]])
  covs = np.array([[[60.0, 25.0], [25.0, 30.0]],      # tilted, 2:1.
                   [[20.0, -8.0], [-8.0, 90.0]]])
  heat = np.stack([_gaussian_heatmap(m, c, size, crop)
                   for m, c in zip(means, covs)])
  model = _GaussianHeatmapModel(heat)
  images = np.zeros((2, crop, crop, 3), np.uint8)
  a = np.array([[2.0, 0.5], [-0.3, 1.5]])            # crop -> image, linear.
  c2i = np.tile(np.concatenate([a, [[10.0], [-4.0]]], 1), (2, 1, 1))
  out = inference.infer(model, {}, jnp.asarray(images),
                        jnp.asarray(c2i, jnp.float32), with_covariance=True)
  got = np.asarray(out["covariance_crop"], np.float64)
  # The discrete weighted covariance of the grid (float64 reference, eq. 4
  # with V1 = 1), and the continuous Gaussian within 4 %.
  px = np.arange(size) * crop / (size - 1.0) - 0.5
  gx, gy = np.meshgrid(px, px)
  for i, (h, c) in enumerate(zip(heat, covs)):
    p = h / h.sum()
    mu = np.array([(p * gx).sum(), (p * gy).sum()])
    d = np.stack([gx - mu[0], gy - mu[1]], -1)
    ref = np.einsum("hw,hwi,hwj->ij", p, d, d) / (1.0 - (p * p).sum())
    np.testing.assert_allclose(got[0, i], ref, rtol=2e-3, atol=2e-2)
    np.testing.assert_allclose(got[1, i], ref, rtol=2e-3, atol=2e-2)
    np.testing.assert_allclose(got[0, i], c, rtol=0.04, atol=1.0)
    np.testing.assert_allclose(np.asarray(out["landmarks_crop"])[0, i],
                               means[i], atol=0.05)
  # Original pixels: A C A^T.
  np.testing.assert_allclose(np.asarray(out["covariance"])[0],
                             np.einsum("ij,njk,lk->nil", a, got[0], a),
                             rtol=1e-4, atol=1e-3)

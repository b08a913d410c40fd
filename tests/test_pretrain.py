"""Tests of sce_mae_jax/pretrain.py (MAE pretraining on the training spine).

A tiny ViT (1 block, width 32, patch 16 -> 36 patches) keeps every compile
small; images are smooth random PNGs written to a temporary folder ("folder"
data), so the real grain pipeline and its iterator state are exercised.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from sce_mae_jax import mae as mae_lib
from sce_mae_jax import pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")


def write_images(folder, n, seed, size=96):
  """Smooth random RGB images (bilinear upsampled noise) as PNGs."""
  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(n):
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((size + 10 * (i % 3), size),
                                       Image.Resampling.BILINEAR)
    im.save(os.path.join(folder, f"img_{i:03d}.png"))
  return folder


def tiny_config(train_dir, eval_dir, **overrides):
  c = common.mae()
  c.method = "sce_mae_jax.pretrain"
  c.data.name = "folder"
  c.data.root = str(train_dir)
  c.data.eval_root = str(eval_dir)
  c.model.preset = "deit_tiny"
  c.model.patch_size = 16
  c.model.encoder_overrides.width = 32
  c.model.encoder_overrides.depth = 1
  c.model.encoder_overrides.num_heads = 2
  c.model.decoder = "custom"
  c.model.decoder_width = 32
  c.model.decoder_depth = 1
  c.model.decoder_heads = 2
  c.eval.num_grid_images = 2
  c.batch_size = 8
  c.eval_batch_size = 8
  c.num_epochs = 1
  c.optimizer.schedule = "constant"
  c.optimizer.base_learning_rate = 1e-3 * 256 / 8   # lr 1e-3 at batch 8.
  c.log_every_steps = 1
  c.progress_every_steps = 1000
  c.checkpoint_every_steps = 2
  c.eval_every_epochs = 0
  c.compilation_cache_dir = ""
  c.async_checkpoints = False
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("mae_images")
  return (write_images(str(root / "train"), 24, seed=0),
          write_images(str(root / "eval"), 5, seed=1))


# ------------------------------------------------------------ functions ----

def test_weight_decay_mask_follows_mae_groups(folders):
  method = pretrain.MaePretrainMethod(tiny_config(*folders))
  params, _ = jax.eval_shape(method.init_variables, jax.random.PRNGKey(0),
                             method.dummy_batch(2))
  mask = method.weight_decay_mask(params)
  flat = {"/".join(str(k.key) for k in path): v for path, v in
          jax.tree_util.tree_flatten_with_path(mask)[0]}
  shapes = {"/".join(str(k.key) for k in path): v.shape for path, v in
            jax.tree_util.tree_flatten_with_path(params)[0]}
  for name, decay in flat.items():
    leaf = name.split("/")[-1]
    expected = leaf == "kernel"   # dense / conv kernels only.
    assert decay == expected, (name, shapes[name], decay)
  assert any(n.endswith("cls_token") for n in flat)
  assert any(n.endswith("mask_token") for n in flat)
  # MAE's own pretraining groups (timm add_weight_decay): 3-D tokens decay.
  mae_mask = pretrain.weight_decay_mask(params, exclude=())
  flat_mae = jax.tree_util.tree_flatten_with_path(mae_mask)[0]
  tokens = [v for p, v in flat_mae if str(p[-1].key).endswith("_token")]
  assert tokens and all(tokens)
  # The loop's flat '/'-joined dict gives the same answers.
  from training import state as state_lib
  trainable, _ = state_lib.partition(params, None)
  flat_mask = pretrain.weight_decay_mask(trainable)
  assert flat_mask == flat


def test_per_example_loss_matches_numpy_reference():
  rng = np.random.default_rng(0)
  p, b, s = 4, 3, 8
  images = rng.normal(size=(b, s, s, 3))
  n = (s // p) ** 2
  pred = rng.normal(size=(b, n, p * p * 3))
  mask = (rng.random((b, n)) < 0.6).astype(np.float64)
  mask[:, 0] = 1.0
  got = np.asarray(pretrain.per_example_masked_loss(
      jnp.asarray(pred, jnp.float32), jnp.asarray(images, jnp.float32),
      jnp.asarray(mask, jnp.float32), p, True))
  # float64 reference: patches (row, col, channel), unbiased variance.
  want = []
  for i in range(b):
    num = den = 0.0
    for gy in range(s // p):
      for gx in range(s // p):
        k = gy * (s // p) + gx
        t = images[i, gy * p:(gy + 1) * p, gx * p:(gx + 1) * p].reshape(-1)
        t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
        num += mask[i, k] * np.mean((pred[i, k] - t) ** 2)
        den += mask[i, k]
    want.append(num / den)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # The batch mean equals mae.mae_loss when every example masks as many.
  mask_eq = np.zeros((b, n))
  mask_eq[:, :3] = 1.0
  per = pretrain.per_example_masked_loss(pred, images, mask_eq, p, True)
  total = mae_lib.mae_loss(jnp.asarray(pred), jnp.asarray(images),
                           jnp.asarray(mask_eq), p, True)
  np.testing.assert_allclose(np.mean(per), total, rtol=1e-5)


def test_normalise_images_matches_numpy():
  x = np.arange(2 * 96 * 96 * 3).reshape(2, 96, 96, 3) % 256
  got = np.asarray(pretrain.normalise_images(jnp.asarray(x, jnp.uint8)))
  want = (x / 255.0 - np.array(pretrain.IMAGENET_MEAN)) / np.array(
      pretrain.IMAGENET_STD)
  np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------- training ----

def _fixed_batch(method, n):
  images = method.data.eval_images()
  return {"image": np.stack([images[i % len(images)] for i in range(n)])}


@pytest.fixture(scope="module")
def tiny(folders):
  """(method, trainer) shared by the tests below (one compile of each step)."""
  from training import loop
  method = pretrain.MaePretrainMethod(tiny_config(*folders))
  return method, loop.Trainer(method, method.config)


def test_jitted_step_lowers_fixed_mask_loss(tiny):
  from training import mesh as mesh_lib
  method, trainer = tiny
  state = trainer.init_state()
  batch = mesh_lib.global_batch(trainer.mesh, _fixed_batch(method, 8))
  eval_batch = {"image": batch["image"],
                "index": jnp.arange(8, dtype=jnp.int32)}

  def eval_loss(state):
    out = trainer.eval_step(state.params, state.model_state, eval_batch)
    return float(np.mean(np.asarray(out["masked_loss"])))

  before = eval_loss(state)
  for _ in range(25):
    state, metrics = trainer.train_step(state, batch)
  after = eval_loss(state)
  assert np.isfinite(float(metrics["loss"]))
  assert after < 0.85 * before, (before, after)


def test_eval_masking_depends_only_on_index(tiny):
  method, trainer = tiny
  state = trainer.init_state()
  images = jnp.asarray(_fixed_batch(method, 8)["image"])
  index = jnp.arange(8, dtype=jnp.int32)
  whole = trainer.eval_step(state.params, state.model_state,
                            {"image": images, "index": index})
  # The same examples as two batches, in the other order.
  parts = [trainer.eval_step(state.params, state.model_state,
                             {"image": images[i:i + 4],
                              "index": index[i:i + 4]})
           for i in (4, 0)]
  split = np.concatenate([np.asarray(p["masked_loss"]) for p in parts[::-1]])
  np.testing.assert_allclose(np.asarray(whole["masked_loss"]), split,
                             rtol=1e-5)
  # A different example index gives a different mask (not one mask for all).
  m = pretrain.fixed_masking_noise(index, 36, 0)
  assert not np.allclose(m[0], m[1])


def test_eval_writes_grid_and_metric(tiny, tmp_path):
  method, trainer = tiny
  state = trainer.init_state()
  method.begin_eval(7, str(tmp_path))
  try:
    results = trainer.evaluate(state)
  finally:
    method.begin_eval(None, None)
  assert set(results) == {"heldout/masked_loss"}
  # The metric is the mean of the per-example fixed-mask losses over the 5
  # held-out images (the loop pads the last batch): recompute it unpadded.
  images = np.asarray(method.data.eval_images())
  batch = {"image": np.concatenate([images, images[:3]]),
           "index": np.arange(8, dtype=np.int32)}
  out = trainer.eval_step(state.params, state.model_state, batch)
  np.testing.assert_allclose(results["heldout/masked_loss"],
                             np.mean(np.asarray(out["masked_loss"])[:5]),
                             rtol=1e-5)
  from PIL import Image
  grid = np.asarray(Image.open(tmp_path / "reconstruction.png"))
  assert grid.shape == (2 + 2 * 98, 2 + 4 * 98, 3)
  assert os.path.exists(tmp_path / "reconstruction" / "step_00000007.png")
  # Column 0 of row 1 is held-out image 1 exactly.
  np.testing.assert_array_equal(grid[100:196, 2:98], images[1])


_SHARDED = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, sys.argv[1])
    import jax
    import numpy as np
    from training import loop, mesh as mesh_lib
    from sce_mae_jax import pretrain
    from tests import test_pretrain as t
    assert jax.device_count() == 8, jax.devices()
    config = t.tiny_config(sys.argv[2], sys.argv[3])
    method = pretrain.MaePretrainMethod(config)
    local = t._fixed_batch(method, 8)
    params = []
    for devices in (jax.devices()[:1], jax.devices()):
      trainer = loop.Trainer(method, config, mesh=mesh_lib.make_mesh(devices))
      state = trainer.init_state()
      batch = mesh_lib.global_batch(trainer.mesh, local)
      state, metrics = trainer.train_step(state, batch)
      params.append(jax.tree.map(np.asarray, state.params))
      print(len(devices), "devices: loss", float(metrics["loss"]))
    diffs = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))), *params))
    print("MAXDIFF", max(diffs))
""")


def test_sharded_step_equals_unsharded(folders):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _SHARDED, REPO, folders[0], folders[1]],
      capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  line = [l for l in proc.stdout.splitlines() if l.startswith("MAXDIFF")][0]
  assert float(line.split()[1]) < 1e-5, proc.stdout


# In a subprocess so that its persistent compilation cache (which makes the
# second and third runs cheap) does not leak into the other tests.
_RESUME = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    import jax
    import numpy as np
    from training import loop
    from sce_mae_jax import pretrain
    from tests import test_pretrain as t
    out, cache = sys.argv[4], os.path.join(sys.argv[4], "xla")

    def run(max_steps, workdir):
      config = t.tiny_config(sys.argv[2], sys.argv[3], max_steps=max_steps,
                             compilation_cache_dir=cache)
      state = loop.train(pretrain.MaePretrainMethod(config), config,
                         os.path.join(out, workdir))
      return int(state.step), jax.tree.map(np.asarray, state.params)

    steps_a, straight = run(4, "straight")
    run(2, "resumed")
    steps_b, resumed = run(4, "resumed")
    assert steps_a == steps_b == 4, (steps_a, steps_b)
    config = t.tiny_config(sys.argv[2], sys.argv[3])
    init = loop.Trainer(pretrain.MaePretrainMethod(config), config).init_state()
    diff = lambda a, b: max(jax.tree.leaves(jax.tree.map(
        lambda x, y: float(np.max(np.abs(np.asarray(x) - y))), a, b)))
    print("RESUMEDIFF", diff(straight, resumed))
    print("MOVED", diff(init.params, straight))
""")


def test_resume_gives_the_same_params(folders, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-c", _RESUME, REPO, folders[0], folders[1],
       str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=REPO,
      env=env)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  values = dict(l.split() for l in proc.stdout.splitlines()
                if l.startswith(("RESUMEDIFF", "MOVED")))
  assert "resumed from" in proc.stdout
  assert float(values["RESUMEDIFF"]) <= 1e-6, proc.stdout
  assert float(values["MOVED"]) > 1e-4, proc.stdout  # training did something.


# -------------------------------------------------------------- configs ----

def _load_config(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.mark.parametrize("name", ["celeba_mae", "faces_mae"])
def test_config_builds_paper_model(name):
  config = _load_config(name)
  assert config.method == "sce_mae_pretrain"
  lr = config.optimizer.base_learning_rate * config.batch_size / 256
  assert config.optimizer.learning_rate == pytest.approx(lr)
  model = pretrain.model_from_config(config)
  images = jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init({"params": jax.random.PRNGKey(0),
                          "masking": jax.random.PRNGKey(1)},
                         jnp.zeros((1, 96, 96, 3))))
  del images
  enc = sum(int(np.prod(x.shape)) for x in
            jax.tree.leaves(shapes["params"]["encoder"]))
  table = 145 * 192   # fixed sin-cos table, counted by MAE's PyTorch code.
  assert (enc + table) / 1e6 == pytest.approx(5.40, abs=0.005)  # DeiT-T/8.
  if name == "celeba_mae":
    assert config.batch_size == 512
    assert config.optimizer.learning_rate == pytest.approx(3e-4)
    assert (config.optimizer.b1, config.optimizer.b2) == (0.9, 0.95)
    assert config.optimizer.weight_decay == 0.05
    with pytest.raises(ValueError, match="data.root"):
      pretrain.MaePretrainMethod(config).num_train_examples()
  # Overriding the batch rescales the learning rate (MAE's rule).
  config.batch_size = 256
  assert config.optimizer.learning_rate == pytest.approx(
      config.optimizer.base_learning_rate)


def test_faces_split_holds_out_val_identities():
  yt68, mtfl = os.path.join(SHARED, "yt68"), os.path.join(SHARED, "mtfl")
  if not (os.path.isdir(yt68) and os.path.isdir(mtfl)):
    pytest.skip(f"shared data not found at {SHARED}")
  train, heldout = pretrain.faces_paths(yt68, mtfl)
  val_ids = pretrain.yt68_val_identities(yt68)
  assert {pretrain.yt68_identity(p) for p in heldout} == val_ids
  yt_train = [p for p in train if os.sep + "yt68" + os.sep in p]
  assert not {pretrain.yt68_identity(p) for p in yt_train} & val_ids
  assert len(set(train)) == len(train) and not set(train) & set(heldout)
  # Every yt68 frame is used once; of the 7,650 MTFL faces only the 6,650
  # of the fixed train split (the MTFL val faces are never pretrained on).
  from sce_mae_jax import splits
  mtfl_val = set(splits.mtfl_split_paths(mtfl, "val", 1000, 0))
  mtfl_train = [p for p in train if os.sep + "mtfl" + os.sep in p]
  assert len(mtfl_train) == 6650 and not set(mtfl_train) & mtfl_val
  assert len(train) + len(heldout) == 4600 + 6650


def test_missing_folder_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pretrain.list_images(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="val.csv"):
    pretrain.yt68_val_identities(str(tmp_path))

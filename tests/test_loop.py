"""Tests of training/loop.py with a toy method defined here (spine on its own).

The toy method is a Dense -> BatchNorm -> Dense regressor on a fixed random
linear problem served by a real grain DataLoader, so the loop, sharding, BN
over the global batch, iterator state and checkpoints are exercised without
the STAR model. `make_method` makes this module usable as `config.method`
("tests.test_loop") from run.py (see tests/test_run.py).
"""

import os
import subprocess
import sys
import textwrap
import time

import flax.linen as nn
import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data import pipeline
from training import checkpoints as ckpt_lib
from training import loop
from training import mesh as mesh_lib
from training import method as method_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 64
DIM_IN, DIM_OUT = 4, 2


def toy_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "tests.test_loop"
  c.seed = 0
  c.batch_size = 16
  c.num_epochs = 2
  c.max_steps = 0
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-2, schedule="step", decay_epochs=[1],
      decay_factor=0.5))
  c.ema = ml_collections.ConfigDict(dict(enabled=True,
                                         half_life_examples=1000.0,
                                         decay=None))
  c.fsdp = False
  c.fsdp_min_size = 1
  c.log_every_steps = 2
  c.progress_every_steps = 1000
  c.checkpoint_every_steps = 4
  c.keep_checkpoints = 2
  c.eval_every_epochs = 1
  c.eval_batch_size = 16
  c.best_metric = "val_ema/mse"
  c.compilation_cache_dir = ""
  c.async_checkpoints = True
  c.data_delay_s = 0.0  # sleep per training batch (to interrupt a run).
  c.frozen_first_layer = False
  c.resume_may_change = ("data_delay_s",)
  c.eval_label = "a"    # a field ToyMethod declares resumable.
  c.num_workers = 0     # grain worker processes of the training loader.
  for k, v in overrides.items():
    c[k] = v
  return c


def _toy_data(seed=123):
  rng = np.random.RandomState(seed)
  x = rng.randn(NUM_EXAMPLES, DIM_IN).astype(np.float32)
  w = rng.randn(DIM_IN, DIM_OUT).astype(np.float32)
  y = (x @ w + 0.01 * rng.randn(NUM_EXAMPLES, DIM_OUT)).astype(np.float32)
  return x, y


class _Lookup(grain.MapTransform):

  def __init__(self, delay_s=0.0):
    self.x, self.y = _toy_data()
    self.delay_s = delay_s

  def map(self, i):
    # As the real pipelines' transforms do: a SIGTERM to the process group
    # is the main process's to handle (tests/test_preemption.py).
    pipeline.leave_stop_signals_to_the_main_process()
    if self.delay_s:
      time.sleep(self.delay_s)
    i = int(i)
    return {"x": self.x[i], "y": self.y[i], "index": np.int32(i),
            "valid": np.bool_(True)}


class ToyModel(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(8, name="dense1")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     name="bn")(h)
    return nn.Dense(DIM_OUT, name="dense2")(nn.relu(h))


class ToyMethod(method_lib.Method):
  """The loop's method interface on a toy regression problem (no optional
  hooks: begin_eval, write_report, forward, extra_modes are the defaults)."""

  best_mode = "min"
  resumable_fields = ("eval_label",)

  def __init__(self, config):
    self.config = config
    self.model = ToyModel()

  # data
  def num_train_examples(self):
    return NUM_EXAMPLES

  def train_iterator(self, local_batch_size):
    loader = grain.DataLoader(
        data_source=grain.RangeDataSource(0, NUM_EXAMPLES, 1),
        sampler=grain.IndexSampler(
            NUM_EXAMPLES, grain.NoSharding(), shuffle=True,
            seed=int(self.config.seed), num_epochs=None),
        operations=[_Lookup(self.config.data_delay_s),
                    grain.Batch(local_batch_size, drop_remainder=True)],
        worker_count=int(self.config.get("num_workers", 0)))
    return iter(loader)

  def eval_iterators(self, local_batch_size):
    x, y = _toy_data()

    def batches():
      n = 40  # not a multiple of the batch: exercises padding.
      for s in range(0, n, local_batch_size):
        idx = np.arange(s, s + local_batch_size)
        valid = idx < n
        idx = np.where(valid, idx, 0)
        yield {"x": x[idx], "y": y[idx], "index": idx.astype(np.int32),
               "valid": valid}
    return {"val": batches}

  def dummy_batch(self, batch_size):
    return {"x": np.zeros((batch_size, DIM_IN), np.float32),
            "y": np.zeros((batch_size, DIM_OUT), np.float32),
            "index": np.zeros((batch_size,), np.int32),
            "valid": np.ones((batch_size,), bool)}

  # model
  def init_variables(self, rng, batch):
    variables = self.model.init(rng, batch["x"], train=False)
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def loss_fn(self, params, model_state, batch, rng, step):
    del rng, step
    pred, new_state = self.model.apply(
        {"params": params, **model_state}, batch["x"], train=True,
        mutable=["batch_stats"])
    loss = jnp.mean(jnp.square(pred - batch["y"]))
    return loss, (new_state, {"mse": loss})

  def eval_step(self, params, model_state, batch):
    pred = self.model.apply({"params": params, **model_state}, batch["x"],
                            train=False)
    return {"sq_err": jnp.sum(jnp.square(pred - batch["y"]), -1),
            "index": batch["index"]}

  def evaluate(self, outputs, split):
    del split
    return {"mse": float(np.mean(outputs["sq_err"]) / DIM_OUT),
            "count": float(outputs["sq_err"].shape[0])}

  def trainable_mask(self, params):
    if not self.config.frozen_first_layer:
      return None
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "dense1" not in jax.tree_util.keystr(path), params)


def make_method(config):
  return ToyMethod(config)


def _fixed_batch(trainer, seed=5):
  x, y = _toy_data()
  idx = np.random.RandomState(seed).permutation(NUM_EXAMPLES)[:16]
  local = {"x": x[idx], "y": y[idx], "index": idx.astype(np.int32),
           "valid": np.ones(16, bool)}
  return mesh_lib.global_batch(trainer.mesh, local)


def _loss(trainer, state, batch):
  method = trainer.method
  loss, _ = method.loss_fn(state.params, state.model_state, batch, None, 0)
  return float(loss)


def test_one_step_lowers_loss_on_fixed_batch():
  trainer = loop.Trainer(ToyMethod(toy_config()), toy_config())
  state = trainer.init_state()
  batch = _fixed_batch(trainer)
  before = _loss(trainer, state, batch)
  state, metrics = trainer.train_step(state, batch)
  after = _loss(trainer, state, batch)
  assert int(state.step) == 1
  assert float(metrics["loss"]) == pytest.approx(before, rel=1e-6)
  assert after < before


def test_ema_follows_the_per_step_formula():
  config = toy_config()
  trainer = loop.Trainer(ToyMethod(config), config)
  decay = 0.5 ** (16 / 1000.0)
  assert trainer.ema_decay == pytest.approx(decay)
  state = trainer.init_state()
  p0 = jax.tree.map(np.asarray, state.params)
  state, _ = trainer.train_step(state, _fixed_batch(trainer))
  p1 = jax.tree.map(np.asarray, state.params)
  ema = jax.tree.map(np.asarray, state.ema[0])
  np.testing.assert_allclose(
      ema["dense2"]["kernel"],
      decay * p0["dense2"]["kernel"] + (1 - decay) * p1["dense2"]["kernel"],
      rtol=1e-6, atol=1e-7)


def test_frozen_params_get_no_update_and_no_optimizer_state():
  config = toy_config(frozen_first_layer=True)
  trainer = loop.Trainer(ToyMethod(config), config)
  state = trainer.init_state()
  before = jax.tree.map(np.asarray, state.params)
  state, _ = trainer.train_step(state, _fixed_batch(trainer))
  after = jax.tree.map(np.asarray, state.params)
  np.testing.assert_array_equal(before["dense1"]["kernel"],
                                after["dense1"]["kernel"])
  assert np.abs(before["dense2"]["kernel"] - after["dense2"]["kernel"]).max() > 0
  opt_leaves = jax.tree_util.tree_leaves_with_path(state.opt_state)
  assert not any("dense1" in jax.tree_util.keystr(p) for p, _ in opt_leaves)
  assert any("dense2" in jax.tree_util.keystr(p) for p, _ in opt_leaves)


def test_step_schedule_in_steps():
  config = toy_config()
  trainer = loop.Trainer(ToyMethod(config), config)
  # 64 examples / batch 16 = 4 steps per epoch; x0.5 after epoch 1.
  assert trainer.steps_per_epoch == 4 and trainer.total_steps == 8
  assert float(trainer.schedule(3)) == pytest.approx(1e-2)
  assert float(trainer.schedule(4)) == pytest.approx(5e-3)


def test_eval_drops_padding_and_matches_numpy():
  config = toy_config()
  trainer = loop.Trainer(ToyMethod(config), config)
  state = trainer.init_state()
  results = trainer.evaluate(state)
  assert results["val/count"] == 40.0 and results["val_ema/count"] == 40.0
  # Independent float64 forward in numpy (BatchNorm with running averages).
  x, y = _toy_data()
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)
  bs = jax.tree.map(lambda a: np.asarray(a, np.float64),
                    state.model_state["batch_stats"])
  h = x[:40] @ p["dense1"]["kernel"] + p["dense1"]["bias"]
  h = (h - bs["bn"]["mean"]) / np.sqrt(bs["bn"]["var"] + 1e-5)
  h = h * p["bn"]["scale"] + p["bn"]["bias"]
  pred = np.maximum(h, 0) @ p["dense2"]["kernel"] + p["dense2"]["bias"]
  assert results["val/mse"] == pytest.approx(np.mean((pred - y[:40]) ** 2),
                                             rel=1e-5)


def test_train_writes_metrics_checkpoints_and_best(tmp_path):
  config = toy_config()
  state = loop.train(ToyMethod(config), config, str(tmp_path))
  assert int(state.step) == 8
  from training import writers
  rows = writers.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6, 8]
  evals = [r for r in rows if "val_ema/mse" in r]
  assert [r["step"] for r in evals] == [4, 8]  # once per epoch.
  c = ckpt_lib.Checkpointer(str(tmp_path), best_metric="val_ema/mse")
  assert c.latest_step() == 8
  best = min(evals, key=lambda r: r["val_ema/mse"])
  assert c.best.best_step() == best["step"]
  assert c.best_value() == pytest.approx(best["val_ema/mse"], rel=1e-6)
  c.close()


def test_config_mismatch_on_resume_is_refused(tmp_path):
  config = toy_config(max_steps=4)
  loop.train(ToyMethod(config), config, str(tmp_path))
  changed = toy_config(max_steps=8, batch_size=8)
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="batch_size"):
    loop.train(ToyMethod(changed), changed, str(tmp_path))
  # A field the method does not declare resumable is refused; one it
  # declares (eval_label) may change, as may the spine's max_steps.
  other = toy_config(max_steps=8, frozen_first_layer=True)
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="frozen_first_layer"):
    loop.train(ToyMethod(other), other, str(tmp_path))
  longer = toy_config(max_steps=8, eval_label="b")
  state = loop.train(ToyMethod(longer), longer, str(tmp_path))
  assert int(state.step) == 8


def test_a_method_without_optional_hooks_gets_the_defaults(tmp_path):
  config = toy_config()
  m = ToyMethod(config)
  params = {"w": np.ones(3)}
  assert m.trainable_mask(params) is None
  assert m.weight_decay_mask is None
  assert m.begin_eval(3, str(tmp_path)) is None
  assert m.write_report(str(tmp_path), {}, {}, {}) is None
  assert dict(m.extra_modes) == {} and m.best_metric is None
  assert os.listdir(tmp_path) == []           # the no-ops wrote nothing.
  # forward defaults to eval_step (what --mode=summary compiles).
  trainer = loop.Trainer(m, config)
  state = trainer.init_state()
  batch = _fixed_batch(trainer)
  a = m.forward(state.params, state.model_state, batch)
  b = m.eval_step(state.params, state.model_state, batch)
  np.testing.assert_array_equal(np.asarray(a["sq_err"]),
                                np.asarray(b["sq_err"]))
  with pytest.raises(ValueError, match="unknown --mode 'nope'"):
    loop.run_mode("nope", m, config, str(tmp_path))
  # Required hooks raise; data hooks need a `data` object or an override.
  bare = method_lib.Method()
  with pytest.raises(NotImplementedError, match="loss_fn"):
    bare.loss_fn(None, None, None, None, 0)
  with pytest.raises(NotImplementedError, match="data"):
    bare.num_train_examples()


def test_data_hooks_delegate_to_the_data_object():
  class Data:
    def num_train_examples(self):
      return 7

    def train_iterator(self, n):
      return iter([n])

    def eval_iterators(self, n):
      return {"val": lambda: [n]}

  class WithData(method_lib.Method):
    data = Data()

  m = WithData()
  assert m.num_train_examples() == 7
  assert next(m.train_iterator(3)) == 3
  assert m.eval_iterators(4)["val"]() == [4]


_SHARDED_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from training import loop, mesh as mesh_lib
    from tests import test_loop as t
    assert jax.device_count() == 8, jax.devices()
    out = {{}}
    for name, n, fsdp in (("one", 1, False), ("eight", 8, False),
                          ("fsdp", 8, True)):
      config = t.toy_config(fsdp=fsdp, optimizer=dict(
          name="sgd", learning_rate=0.1, schedule="constant"))
      mesh = mesh_lib.make_mesh(jax.devices()[:n])
      trainer = loop.Trainer(t.ToyMethod(config), config, mesh=mesh)
      state = trainer.init_state()
      state, _ = trainer.train_step(state, t._fixed_batch(trainer))
      flat = jax.tree_util.tree_leaves_with_path(
          (state.params, state.model_state))
      for p, v in flat:
        out[name + jax.tree_util.keystr(p)] = np.asarray(v)
      if fsdp:
        k = state.params["dense1"]["kernel"]
        out["fsdp_spec"] = np.array(str(k.sharding.spec))
    np.savez(sys.argv[1], **out)
""")


def test_eight_fake_devices_equal_one_device(tmp_path):
  script = tmp_path / "sharded.py"
  script.write_text(_SHARDED_SCRIPT.format(repo=REPO))
  out = tmp_path / "out.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(script), str(out)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = dict(np.load(out))
  names = [k[len("one"):] for k in r if k.startswith("one")]
  assert any("batch_stats" in n for n in names)
  for n in names:
    np.testing.assert_allclose(r["eight" + n], r["one" + n], rtol=1e-5,
                               atol=1e-6, err_msg=n)
    np.testing.assert_allclose(r["fsdp" + n], r["one" + n], rtol=1e-5,
                               atol=1e-6, err_msg=n)
  # dense1 kernel [4, 8]: its largest dim (8) is sharded over the 8 devices.
  assert str(r["fsdp_spec"]) == "P(None, 'data')"

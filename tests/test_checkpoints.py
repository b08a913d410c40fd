"""Tests of training/checkpoints.py: exact save/restore, best, config guard.

Also the faults: an unrestorable latest checkpoint (truncated file, missing
item, another tree) is set aside, kept byte for byte, and the previous one
used; a failed write (disk full) stops the run with the earlier checkpoints
intact.
"""

import errno
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import test_inference
from tests import test_loop as toy
from tests import test_readers_fuzz
from training import checkpoints as ckpt_lib
from training import errors
from training import loop
from training import mesh as mesh_lib


def _steps(trainer, state, it, n):
  seen = []
  for _ in range(n):
    local = next(it)
    seen.append(local["index"].copy())
    state, _ = trainer.train_step(state, mesh_lib.global_batch(trainer.mesh,
                                                               local))
  return state, seen


def _host(tree):
  return jax.tree.map(np.asarray, tree)


def test_save_restore_next_steps_identical_including_data_order(tmp_path):
  config = toy.toy_config()
  cfg_dict = ckpt_lib.config_to_dict(config)
  method = toy.ToyMethod(config)
  trainer = loop.Trainer(method, config)
  it = method.train_iterator(trainer.local_batch_size)
  state, _ = _steps(trainer, trainer.init_state(), it, 3)
  c = ckpt_lib.Checkpointer(str(tmp_path), keep=2)
  c.save(3, state, it.get_state(), {"epoch": 0.75}, cfg_dict)
  c.wait()
  state, seen_a = _steps(trainer, state, it, 3)  # crosses an epoch boundary.
  final_a = _host(state)
  c.close()

  method2 = toy.ToyMethod(config)
  trainer2 = loop.Trainer(method2, config)
  it2 = method2.train_iterator(trainer2.local_batch_size)
  c2 = ckpt_lib.Checkpointer(str(tmp_path), keep=2)
  assert c2.latest_step() == 3
  restored, data_state, meta, saved_cfg = c2.restore(3, trainer2.abstract_state)
  assert meta == {"epoch": 0.75} and saved_cfg == cfg_dict
  assert isinstance(data_state, bytes)  # grain's JSON state round-trips.
  it2.set_state(data_state)
  assert int(restored.step) == 3
  state2, seen_b = _steps(trainer2, restored, it2, 3)
  for a, b in zip(seen_a, seen_b):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(final_a), jax.tree.leaves(_host(state2))):
    np.testing.assert_array_equal(a, b)
  c2.close()


def test_best_keeps_only_the_best(tmp_path):
  config = toy.toy_config()
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  state = trainer.init_state()
  c = ckpt_lib.Checkpointer(str(tmp_path), best_metric="val/nme",
                            best_mode="min")
  cfg = ckpt_lib.config_to_dict(config)
  assert c.save_best(1, state, None, {}, cfg, {"val/nme": 3.0})
  assert c.save_best(2, state, None, {}, cfg, {"val/nme": 2.0})
  assert not c.save_best(3, state, None, {}, cfg, {"val/nme": 2.5})
  c.wait()
  assert c.best.all_steps() == [2]
  assert c.best_value() == 2.0
  c.close()
  reopened = ckpt_lib.Checkpointer(str(tmp_path), best_metric="val/nme")
  assert reopened.step_for("best") == 2 and reopened.best_value() == 2.0
  assert reopened.latest_step() is None  # periodic ones are separate.
  reopened.close()


def test_config_guard_allows_cadence_refuses_semantics():
  saved = {"seed": 0, "batch_size": 16, "num_epochs": 500,
           "model": {"num_stacks": 4}, "log_every_steps": 50,
           "data": {"root": "/a", "image_size": 256}}
  ok = {"seed": 0, "batch_size": 16, "num_epochs": 600,
        "model": {"num_stacks": 4}, "log_every_steps": 10,
        "data": {"root": "/a", "image_size": 256}}
  ckpt_lib.check_config_compatible(saved, ok)   # spine fields only.
  # data.root is a method's field: refused unless the method declares it.
  moved = {**ok, "data": {"root": "/b", "image_size": 256}}
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="data.root"):
    ckpt_lib.check_config_compatible(saved, moved)
  ckpt_lib.check_config_compatible(saved, moved, may_change=("data.root",))
  bad = {**ok, "model": {"num_stacks": 2}, "data": {"root": "/b",
                                                      "image_size": 128}}
  with pytest.raises(ckpt_lib.ConfigMismatchError) as e:
    ckpt_lib.check_config_compatible(saved, bad, may_change=("data.root",))
  msg = str(e.value)
  assert "model.num_stacks" in msg and "data.image_size" in msg
  assert "data.root" not in msg
  ckpt_lib.check_config_compatible(
      saved, bad, may_change=("model.", "data.image_size", "data.root"))
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="new_field"):
    ckpt_lib.check_config_compatible(saved, {**ok, "new_field": 1})


def test_loop_resume_fields_are_the_methods_declarations():
  from sce_mae_jax import pretrain  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  config = toy.toy_config(resume_may_change=("x.y",))
  fields = loop.resumable_fields(star_method.StarMethod, config)
  assert set(fields) == {"data.root", "data.num_workers",
                         "data.prefetch_buffer_size", "eval.flip_test",
                         "model.conv3x3", "model.remat", "data.augment_on",
                         "data.precrop_margin", "data.precrop_cache_dir",
                         "x.y"}
  assert set(loop.resumable_fields(pretrain.MaePretrainMethod, config)) == {
      "data.root", "data.num_workers", "x.y"}
  assert not set(ckpt_lib.RESUMABLE_FIELDS) & {"data.root", "eval.flip_test"}


def test_model_check_uses_the_methods_model_fields():
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import method as method_lib  # pylint: disable=g-import-not-at-top
  saved = {"method": "m", "model": {"width": 8, "dtype": "float32",
                                    "conv3x3": "auto"},
           "data": {"scheme": "300w", "crop_size": 64, "root": "/a"}}
  scheme = {**saved, "data": {**saved["data"], "scheme": "wflw"}}
  # The base Method's model is `model.*` only: the scheme is not checked.
  loop._check_model_config(saved, scheme, "x", method_lib.Method)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="data.scheme"):
    loop._check_model_config(saved, scheme, "x", star_method.StarMethod)  # pylint: disable=protected-access
  # Compute dtype, implementation fields and non-model fields may differ.
  same_model = {"method": "m", "model": {"width": 8, "dtype": "bfloat16",
                                         "conv3x3": "winograd"},
                "data": {"scheme": "300w", "crop_size": 64, "root": "/b"}}
  loop._check_model_config(saved, same_model, "x", star_method.StarMethod)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="model.conv3x3"):
    loop._check_model_config(saved, same_model, "x", method_lib.Method)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="model.width"):
    loop._check_model_config(  # pylint: disable=protected-access
        saved, {**saved, "model": {**saved["model"], "width": 16}}, "x",
        method_lib.Method)


# ----------------------------------------------------------- restore_run ----

def _distinct_ema_state(trainer):
  """A TrainState whose EMA differs from the raw parameters and stats."""
  state = trainer.init_state()
  rng = np.random.RandomState(7)
  ema = jax.tree.map(
      lambda x: rng.standard_normal(np.shape(x)).astype(np.asarray(x).dtype),
      (_host(state.params), _host(state.model_state)))
  return state.replace(ema=ema, step=np.asarray(3, np.int32))


def _assert_tree_equal(a, b):
  la, ta = jax.tree.flatten(_host(a))
  lb, tb = jax.tree.flatten(_host(b))
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(name="saved_run")
def _saved_run(tmp_path):
  """A workdir with checkpoints/4 (latest) and checkpoints_best/2."""
  config = toy.toy_config()
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  cfg = ckpt_lib.config_to_dict(config)
  best = _distinct_ema_state(trainer)
  latest = best.replace(params=jax.tree.map(lambda x: x + 1, best.params),
                        step=np.asarray(4, np.int32))
  c = ckpt_lib.Checkpointer(str(tmp_path), best_metric="val/mse",
                            async_save=False)
  c.save_best(2, best, None, {}, cfg, {"val/mse": 0.5})
  c.save(4, latest, None, {}, cfg, force=True)
  c.wait()
  c.close()
  return str(tmp_path), trainer, cfg, {"best": best, "latest": latest}


def test_restore_run_host_raw_and_ema_equal_what_was_saved(saved_run):
  workdir, _, cfg, states = saved_run
  before = test_inference._mtimes(workdir)
  for which, step in (("latest", 4), ("best", 2)):
    s = states[which]
    raw = ckpt_lib.restore_run(workdir, which=which, params="raw")
    assert (raw.step, raw.which, raw.used_ema) == (step, which, False)
    assert raw.config == cfg
    assert raw.path.endswith(f"{ckpt_lib.SUBDIRS[which]}/{step}")
    _assert_tree_equal(raw.params, s.params)
    _assert_tree_equal(raw.model_state, s.model_state)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(raw.params))
    for mode in ("ema", "prefer_ema"):
      ema = ckpt_lib.restore_run(workdir, which=which, params=mode)
      assert ema.used_ema
      _assert_tree_equal(ema.params, s.ema[0])
      _assert_tree_equal(ema.model_state, s.ema[1])
  # The EMA really differs from the raw parameters.
  assert not np.allclose(jax.tree.leaves(states["best"].ema[0])[0],
                         jax.tree.leaves(states["best"].params)[0])
  # An explicit step; reading created or touched nothing.
  s2 = ckpt_lib.restore_run(workdir, which="best", step=2)
  _assert_tree_equal(s2.params, states["best"].params)
  assert test_inference._mtimes(workdir) == before


def test_restore_run_sharded_into_the_trainers_layout(saved_run):
  workdir, trainer, _, states = saved_run
  r = ckpt_lib.restore_run(workdir, which="best", params="ema",
                           abstract_state=trainer.abstract_state)
  assert type(r.state) is type(trainer.abstract_state)
  _assert_tree_equal(r.state, states["best"])
  _assert_tree_equal(r.params, states["best"].ema[0])
  leaf = jax.tree.leaves(r.state.params)[0]
  assert leaf.sharding == jax.tree.leaves(
      trainer.abstract_state.params)[0].sharding


def test_restore_run_config_check_runs_before_the_state(saved_run):
  workdir, _, cfg, _ = saved_run
  seen = []

  def refuse(config):
    seen.append(config)
    raise ValueError("other model")

  # A wrong abstract state would fail in orbax; the check refuses first.
  with pytest.raises(ValueError, match="other model"):
    ckpt_lib.restore_run(workdir, abstract_state={"nothing": 1},
                         check_config=refuse)
  assert seen == [cfg]


def test_restore_run_without_ema_and_clear_errors(tmp_path):
  config = toy.toy_config(ema={"enabled": False})
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  state = trainer.init_state()
  c = ckpt_lib.Checkpointer(str(tmp_path / "run"), async_save=False)
  c.save(1, state, None, {}, ckpt_lib.config_to_dict(config), force=True)
  c.wait()
  c.close()
  run = str(tmp_path / "run")
  r = ckpt_lib.restore_run(run, params="prefer_ema")
  assert not r.used_ema
  _assert_tree_equal(r.params, state.params)
  with pytest.raises(ValueError, match="no EMA"):
    ckpt_lib.restore_run(run, params="ema")
  with pytest.raises(ValueError, match="params must be"):
    ckpt_lib.restore_run(run, params="average")
  with pytest.raises(ValueError, match="which must be"):
    ckpt_lib.restore_run(run, which="final")
  with pytest.raises(FileNotFoundError, match="does not exist.*; train it"):
    ckpt_lib.restore_run(str(tmp_path / "nope"), hint="train it")
  with pytest.raises(FileNotFoundError, match="checkpoints_best/ is missing"):
    ckpt_lib.restore_run(run, which="best")
  with pytest.raises(FileNotFoundError, match="pass the workdir itself"):
    ckpt_lib.restore_run(str(tmp_path / "run" / "checkpoints"))
  with pytest.raises(FileNotFoundError, match="no checkpoint step 9"):
    ckpt_lib.restore_run(run, step=9)
  (tmp_path / "early" / "checkpoints").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="no latest checkpoint"):
    ckpt_lib.restore_run(str(tmp_path / "early"))
  # A truncated checkpoint: a UserError naming it (no orbax traceback).
  _truncate_largest_state_file(os.path.join(run, "checkpoints", "1"))
  with pytest.raises(errors.UserError, match="checkpoints/1 does not restore"):
    ckpt_lib.restore_run(run)


# ------------------------------------------------ broken checkpoints ----

def _truncate_largest_state_file(step_dir):
  files = []
  for dirpath, _, names in os.walk(os.path.join(step_dir, "state")):
    files += [os.path.join(dirpath, n) for n in names]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)


def _other_tree(step_dir, workdir, config):
  """Replaces step `step_dir` by a checkpoint of another state tree."""
  import shutil  # pylint: disable=g-import-not-at-top
  step = int(os.path.basename(step_dir))
  shutil.rmtree(step_dir)
  c = ckpt_lib.Checkpointer(workdir, async_save=False)
  c.save(step, {"w": np.zeros(3, np.float32)}, None, {},
         ckpt_lib.config_to_dict(config), force=True)
  c.close()


def _missing_item(step_dir, workdir, config):
  del workdir, config
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(step_dir, "data"))


def _fallback_config():
  return toy.toy_config(max_steps=8, checkpoint_every_steps=4,
                        eval_every_epochs=0, best_metric="")


@pytest.fixture(name="straight_8_steps", scope="module")
def _straight_8_steps(tmp_path_factory):
  """The final state of an uninterrupted 8-step toy run (the reference)."""
  config = _fallback_config()
  return loop.train(toy.ToyMethod(config), config,
                    str(tmp_path_factory.mktemp("straight")))


@pytest.mark.parametrize("damage", ["truncated", "missing_item", "other_tree"])
def test_an_unrestorable_latest_falls_back_to_the_previous_step(
    tmp_path, capsys, damage, straight_8_steps):
  config = _fallback_config()
  straight = straight_8_steps
  workdir = str(tmp_path / "b")
  short = toy.toy_config(max_steps=6, checkpoint_every_steps=3,
                         eval_every_epochs=0, best_metric="")
  loop.train(toy.ToyMethod(short), short, workdir)  # checkpoints 3 and 6.
  step_dir = os.path.join(workdir, "checkpoints", "6")
  if damage == "truncated":
    _truncate_largest_state_file(step_dir)
  elif damage == "missing_item":
    _missing_item(step_dir, workdir, short)
  else:
    _other_tree(step_dir, workdir, short)
  damaged = test_readers_fuzz.tree_state(step_dir)
  capsys.readouterr()
  resumed = loop.train(toy.ToyMethod(config), config, workdir)
  out = capsys.readouterr().out
  assert "warning: checkpoint step 6" in out and "does not restore" in out
  assert "resumed from" in out and "(step 3)" in out
  # The broken step is kept, byte for byte, beside the checkpoints.
  kept = os.path.join(workdir, ckpt_lib.UNREADABLE_SUBDIR, "6")
  assert test_readers_fuzz.tree_state(kept) == damaged
  # Resumed from step 3, the run ends exactly as the uninterrupted one.
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_restorable_checkpoint_is_a_user_error_and_deletes_nothing(tmp_path):
  config = toy.toy_config(max_steps=4, checkpoint_every_steps=4,
                          eval_every_epochs=0, best_metric="")
  workdir = str(tmp_path)
  loop.train(toy.ToyMethod(config), config, workdir)
  _truncate_largest_state_file(os.path.join(workdir, "checkpoints", "4"))
  longer = toy.toy_config(max_steps=8, checkpoint_every_steps=4,
                          eval_every_epochs=0, best_metric="")
  with pytest.raises(errors.UserError, match="none of the checkpoints"):
    loop.train(toy.ToyMethod(longer), longer, workdir)
  assert os.path.isdir(os.path.join(workdir, ckpt_lib.UNREADABLE_SUBDIR, "4"))


def test_a_failed_write_stops_the_run_and_keeps_earlier_checkpoints(
    tmp_path, monkeypatch):
  config = toy.toy_config(max_steps=8, checkpoint_every_steps=4,
                          eval_every_epochs=0, best_metric="",
                          async_checkpoints=False)
  real_save = ocp.CheckpointManager.save

  def disk_full_at_8(self, step, *args, **kwargs):
    if step == 8:
      raise OSError(errno.ENOSPC, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_at_8)
  with pytest.raises(ckpt_lib.CheckpointWriteError) as info:
    loop.train(toy.ToyMethod(config), config, str(tmp_path))
  message = str(info.value)
  assert "step 8" in message and "No space left on device" in message
  assert "intact (steps [4])" in message
  monkeypatch.undo()
  trainer = loop.Trainer(toy.ToyMethod(config), config)
  c = ckpt_lib.Checkpointer(str(tmp_path))
  assert c.latest_step() == 4
  state, _, _, _ = c.restore(4, trainer.abstract_state)
  c.close()
  assert int(state.step) == 4

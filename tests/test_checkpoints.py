"""Tests of training/checkpoints.py: exact save/restore, best, config guard."""

import jax
import numpy as np
import pytest

from tests import test_loop as toy
from training import checkpoints as ckpt_lib
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
        "data": {"root": "/b", "image_size": 256}}
  ckpt_lib.check_config_compatible(saved, ok)
  bad = {**ok, "model": {"num_stacks": 2}, "data": {"root": "/a",
                                                      "image_size": 128}}
  with pytest.raises(ckpt_lib.ConfigMismatchError) as e:
    ckpt_lib.check_config_compatible(saved, bad)
  msg = str(e.value)
  assert "model.num_stacks" in msg and "data.image_size" in msg
  assert "data.root" not in msg
  ckpt_lib.check_config_compatible(saved, bad,
                                    may_change=("model.", "data.image_size"))
  with pytest.raises(ckpt_lib.ConfigMismatchError, match="new_field"):
    ckpt_lib.check_config_compatible(saved, {**ok, "new_field": 1})

"""Every config builds, its model initialises (jax.eval_shape), paper settings.

Also: reading a config imports only ml_collections (no jax, no method code),
and every config's values equal the stored dump tests/fixtures/
config_dumps.json (written from the configs as they were before the defaults
moved to configs/common.py; regenerate it deliberately with
`python -m tests.test_configs --write_dumps` when a value is meant to change).
"""

import dataclasses
import glob
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
from ml_collections import config_dict
import numpy as np
import pytest

from configs import common
from data import schemes
from landmarks import coordinates
from star_jax import method
from star_jax import objective
from training import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "common.py"))
STAR_CONFIGS = [os.path.join(REPO, "configs", n) for n in (
    "default.py", "wflw_star.py", "300w_star.py", "cofw_star.py",
    "yt68_star.py")]
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
DUMPS = os.path.join(REPO, "tests", "fixtures", "config_dumps.json")


def load(path):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def dump(config) -> dict:
  """`{"values": nested JSON values, "types": {dotted path: type name}}`.

  Types tell a tuple from a list, an int from a float, and name field
  references ("ref[float]+ops": a value computed from other fields, e.g.
  the MAE learning rate from the batch size) and typed placeholders.
  """
  values, types = {}, {}

  def walk(c, prefix, out):
    for key, value in sorted(c.items(preserve_field_references=True)):
      path = prefix + key
      if isinstance(value, config_dict.FieldReference):
        kind = f"ref[{value.get_type().__name__}]" + (
            "+ops" if value._ops else "")  # pylint: disable=protected-access
        value = value.get()
      else:
        kind = type(value).__name__
      types[path] = kind
      if isinstance(value, config_dict.ConfigDict):
        out[key] = {}
        walk(value, path + ".", out[key])
      else:
        out[key] = json.loads(json.dumps(value))

  walk(config, "", values)
  return {"values": values, "types": types}


def write_dumps(path=DUMPS):
  out = {os.path.basename(p): dump(load(p)) for p in CONFIGS}
  with open(path, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
    f.write("\n")


# ------------------------------------------- configs without method code ----

def test_reading_every_config_imports_no_jax_and_no_method_code():
  script = textwrap.dedent(f"""
      import importlib.util, os, sys
      sys.path.insert(0, {REPO!r})
      for path in {CONFIGS!r}:
        spec = importlib.util.spec_from_file_location(
            "cfg_" + os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.get_config().to_dict()
      banned = ("jax", "jaxlib", "flax", "optax", "orbax", "grain", "numpy",
                "tensorflow", "star_jax", "sce_mae_jax", "training", "data",
                "landmarks")
      print(sorted({{m.split(".")[0] for m in sys.modules}} & set(banned)))
  """)
  out = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_config_equals_its_stored_dump():
  with open(DUMPS) as f:
    stored = json.load(f)
  names = [os.path.basename(p) for p in CONFIGS]
  assert sorted(stored) == sorted(names), "add new configs to the dump"
  for path in CONFIGS:
    got = dump(load(path))
    want = stored[os.path.basename(path)]
    assert got["types"] == want["types"], path
    assert got["values"] == want["values"], path


def test_dump_tells_tuples_ints_and_references_apart():
  # JSON alone would equate these (1 == 1.0, (1, 2) -> [1, 2]); the types
  # part of the dump does not.
  make = lambda **kw: dump(config_dict.ConfigDict(kw))
  assert make(a=1)["values"] == make(a=1.0)["values"]
  assert make(a=1)["types"] != make(a=1.0)["types"]
  assert make(a=(1, 2))["types"] == {"a": "tuple"}
  assert make(a=[1, 2])["types"] == {"a": "list"}
  assert make(a=config_dict.placeholder(tuple))["types"] == {"a": "ref[tuple]"}
  assert make(a=None)["types"] == {"a": "NoneType"}
  c = config_dict.ConfigDict(dict(b=2))
  c.a = c.get_ref("b") * 2
  assert dump(c) == {"values": {"a": 4, "b": 2},
                     "types": {"a": "ref[int]+ops", "b": "ref[int]"}}


def test_mae_learning_rate_follows_the_batch_size():
  c = common.mae()
  assert c.optimizer.learning_rate == 1.5e-4 * 512 / 256      # 3e-4.
  c.batch_size = 64
  c.optimizer.base_learning_rate = 1e-3
  assert c.optimizer.learning_rate == 1e-3 * 64 / 256


def test_constants_the_code_also_names_equal_the_configs():
  from sce_mae_jax import lcr  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import pretrain  # pylint: disable=g-import-not-at-top
  assert common.MAE_NO_DECAY == pretrain.DEFAULT_NO_DECAY
  assert common.MAE_HELDOUT == pretrain.HELDOUT
  assert common.mae().best_metric == pretrain.MaePretrainMethod.best_metric
  assert common.LCR_TAU == lcr.DEFAULT_TAU
  from training import nonfinite  # pylint: disable=g-import-not-at-top
  assert common.spine("star", batch_size=1, eval_batch_size=1, num_epochs=1
                      ).max_nonfinite_steps == (
                          nonfinite.DEFAULT_MAX_NONFINITE_STEPS)
  # LossSettings keeps defaults (so tests can build one by hand): they must
  # be the config's, field for field, and the config names every field.
  loss = common.star().loss.to_dict()
  defaults = {f.name: f.default for f in dataclasses.fields(
      objective.LossSettings)}
  assert defaults == loss
  assert objective.LossSettings.from_config(common.star().loss) == (
      objective.LossSettings())


# ------------------------------------------------- configs and the model ----

def _param_count(config):
  scheme = schemes.get_scheme(config.data.scheme)
  model = method.model_from_config(config, scheme)
  s = int(config.data.crop_size)
  images = jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_builds_and_names_a_registered_method(path):
  import run  # pylint: disable=g-import-not-at-top
  config = load(path)
  assert config.method in run.METHODS, (path, config.method)


@pytest.mark.parametrize("path", STAR_CONFIGS, ids=os.path.basename)
def test_star_config_builds_and_model_initialises(path):
  config = load(path)
  assert config.method == "star"
  objective.LossSettings.from_config(config.loss)  # all keys are known.
  schemes.get_scheme(config.data.scheme)
  assert config.best_metric.split("/")[0].removesuffix("_ema") in (
      config.data.eval_splits)
  n = _param_count(config)
  assert n > 0
  if config.data.crop_size == 256:
    # The paper's model: 13.48M (98 points), 13.37M (68), 13.23M (29).
    expected = {98: 13.48e6, 68: 13.37e6, 29: 13.23e6}[
        schemes.get_scheme(config.data.scheme).num_points]
    assert abs(n - expected) / expected < 0.005, n


def test_paper_schedule_and_ema_in_steps():
  config = load(os.path.join(REPO, "configs", "wflw_star.py"))
  spe = 7500 // config.batch_size          # WFLW train: 7,500 faces.
  schedule = state_lib.make_schedule(config.optimizer, spe,
                                     config.num_epochs * spe)
  lrs = [float(schedule(e * spe)) for e in (0, 199, 200, 350, 450)]
  np.testing.assert_allclose(lrs, [1e-3, 1e-3, 1e-4, 1e-5, 1e-6], rtol=1e-5)
  assert state_lib.ema_decay(config.ema, config.batch_size) == pytest.approx(
      0.5 ** (128 / 10000))
  assert config.loss.star and config.loss.distance == "smooth_l1"
  assert (config.loss.pointmap_weight, config.loss.edgemap_weight) == (10, 10)


def test_normalisers_match_the_papers():
  get = lambda name: load(os.path.join(REPO, "configs", name)).eval.normaliser
  from landmarks import metrics  # pylint: disable=g-import-not-at-top
  assert metrics.normaliser(get("wflw_star.py")) == (60, 72)
  assert metrics.normaliser(get("300w_star.py")) == (36, 45)
  assert metrics.normaliser(get("cofw_star.py")) == (16, 17)


@pytest.mark.skipif(not os.path.isdir(YT68),
                    reason="../shared/data/yt68 not present")
def test_yt68_config_lists_the_real_data_and_maps_back_exactly(monkeypatch):
  monkeypatch.chdir(REPO)  # data.root is relative to the repository root.
  config = load(os.path.join(REPO, "configs", "yt68_star.py"))
  config.data.crop_size = 64
  m = method.StarMethod(config)
  assert m.num_train_examples() == 2951
  assert len(m.data.eval_records["val"]) == 422
  batch = next(m.eval_iterators(4)["val"]())
  rec = m.data.eval_records["val"][int(batch["index"][0])]
  np.testing.assert_allclose(batch["landmarks_original"][0], rec.landmarks,
                             atol=1e-4)
  # crop_to_image maps the crop landmarks back to the original ones.
  back = np.asarray(coordinates.crop_to_original(
      jnp.asarray(batch["landmarks"]), jnp.asarray(batch["crop_to_image"])))
  np.testing.assert_allclose(back, batch["landmarks_original"], atol=1e-2)


if __name__ == "__main__":
  if sys.argv[1:] != ["--write_dumps"]:
    raise SystemExit("usage: python -m tests.test_configs --write_dumps")
  write_dumps()

"""Every config builds, its model initialises (jax.eval_shape), paper settings."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import schemes
from star_jax import method
from training import state as state_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))
STAR_CONFIGS = [os.path.join(REPO, "configs", n) for n in (
    "default.py", "wflw_star.py", "300w_star.py", "cofw_star.py",
    "yt68_star.py")]
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")


def load(path):
  spec = importlib.util.spec_from_file_location(
      "cfg_" + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _param_count(config):
  scheme = schemes.get_scheme(config.data.scheme)
  model = method._model_from_config(config, scheme)  # pylint: disable=protected-access
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
  method.LossSettings.from_config(config.loss)  # all loss keys are known.
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
  from star_jax import metrics  # pylint: disable=g-import-not-at-top
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
  back = np.asarray(method.crop_to_original(
      jnp.asarray(batch["landmarks"]), jnp.asarray(batch["crop_to_image"])))
  np.testing.assert_allclose(back, batch["landmarks_original"], atol=1e-2)

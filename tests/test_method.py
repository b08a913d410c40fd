"""Tests of star_jax/method.py: coordinates, loss composition, decoding, eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from data import records as records_lib
from data import schemes
from landmarks import metrics as metrics_lib
from star_jax import data as star_data
from star_jax import method

SCHEME = schemes.get_scheme("300w")
def test_decode_one_hot_heatmap_to_original_pixels():
  h, s = 8, 32
  maps = np.zeros((1, 2, h, h), np.float32)
  maps[0, 0, 2, 5] = 1.0   # row 2, column 5.
  maps[0, 1, 7, 0] = 3.0
  # crop -> image: scale 2 and shift (10, 20).
  c2i = np.array([[[2.0, 0.0, 10.0], [0.0, 2.0, 20.0]]], np.float32)
  crop_pts, orig = method.decode_predictions([{"heatmaps": jnp.asarray(maps)}],
                                             jnp.asarray(c2i), s)
  grid = np.linspace(-1, 1, h)
  expected_norm = np.array([[grid[5], grid[2]], [grid[0], grid[7]]])
  expected_crop = ((expected_norm + 1) * s - 1) / 2     # align_corners=False.
  np.testing.assert_allclose(np.asarray(crop_pts)[0], expected_crop, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(orig)[0], 2 * expected_crop + [10, 20],
                             rtol=1e-5)


def tiny_config():
  c = common.star()
  c.data.name = "fake"
  c.data.scheme = "300w"
  c.data.crop_size = 32
  c.model.num_stacks = 2
  c.model.depth = 1
  c.model.width = 8
  # AAM heads off: compiling the edge targets in the step is slow on CPU; the
  # AAM composition is tested on fake outputs above.
  c.model.use_aam = False
  c.eval.normaliser = "300w"
  c.batch_size = 4
  c.eval_batch_size = 4
  c.optimizer.learning_rate = 1e-3
  c.compilation_cache_dir = ""
  return c


class FakeData:
  """Crops of procedural faces; records with attributes and subsets."""

  def __init__(self, n=4, s=32):
    from data import synthetic, transforms  # pylint: disable=g-import-not-at-top
    self.records = synthetic.make_records(n, seed=3, image_size=64)
    batch = {k: [] for k in ("image", "landmarks", "landmarks_original",
                             "visible", "crop_to_image", "valid", "index")}
    for i, r in enumerate(self.records):
      center, scale = transforms.record_center_scale(r, "box")
      crop, pts, _, c2i = transforms.crop_face(r.load_image(), r.landmarks,
                                               center, scale, s)
      batch["image"].append(crop)
      batch["landmarks"].append(pts)
      batch["landmarks_original"].append(r.landmarks.astype(np.float32))
      batch["visible"].append(np.ones(68, bool))
      batch["crop_to_image"].append(c2i.astype(np.float32))
      batch["valid"].append(True)
      batch["index"].append(i)
    self.batch = {k: np.asarray(v) for k, v in batch.items()}
    self.batch["index"] = self.batch["index"].astype(np.int32)

  def num_train_examples(self):
    return len(self.records)

  def eval_groups(self, split, indices):
    del split
    return {"even": np.asarray(indices) % 2 == 0}


@pytest.fixture(scope="module")
def tiny():
  """One tiny STAR method + trainer + initial state shared by the tests below
  (initialising even a tiny hourglass compiles for a while on CPU)."""
  from training import loop  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  fake = FakeData()
  m = method.StarMethod(config, data=fake)
  trainer = loop.Trainer(m, config)
  state = trainer.init_state()
  initial = jax.tree.map(np.asarray, (state.params, state.model_state))
  return m, fake, trainer, state, initial


def test_one_step_on_synthetic_faces_lowers_the_loss(tiny):
  from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  _, fake, trainer, state, _ = tiny
  batch = mesh_lib.global_batch(trainer.mesh, fake.batch)
  losses = []
  for _ in range(3):  # metrics["loss"] is the loss before the update.
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[2] < losses[0]
  assert {"loss_coordinates", "nme"} <= set(metrics)


def test_eval_step_and_evaluate_match_metrics_module(tiny):
  m, fake, _, _, (params, model_state) = tiny
  out = jax.jit(m.eval_step)(params, model_state, fake.batch)
  pred = np.asarray(out["pred"], np.float64)
  gt = fake.batch["landmarks_original"].astype(np.float64)
  iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
  nme = np.linalg.norm(pred - gt, axis=-1).mean(-1) / iod
  np.testing.assert_allclose(np.asarray(out["nme"]), nme, rtol=1e-5)
  outputs = {k: np.asarray(v) for k, v in out.items()}
  result = m.evaluate(outputs, "test")
  assert result["nme"] == pytest.approx(nme.mean(), rel=1e-5)
  fr, auc = metrics_lib.fr_auc(nme[[0, 2]], 0.1)
  assert result["even/nme"] == pytest.approx(nme[[0, 2]].mean(), rel=1e-5)
  assert result["even/fr"] == pytest.approx(fr)
  assert result["even/auc"] == pytest.approx(auc)
  assert result["even/count"] == 2.0


def test_missing_data_is_a_clear_error_before_compiling(tmp_path):
  config = tiny_config()
  config.data.name = "wflw"
  config.data.scheme = "wflw"
  config.data.root = ""
  with pytest.raises(ValueError, match="config.data.root is empty"):
    method.StarMethod(config).num_train_examples()
  config.data.root = str(tmp_path / "nowhere")
  from training import loop  # pylint: disable=g-import-not-at-top
  with pytest.raises(FileNotFoundError) as e:
    loop.Trainer(method.StarMethod(config), config)  # fails before tracing.
  assert "list_98pt_rect_attr" in str(e.value)  # the expected layout.


def test_scheme_mismatch_is_refused(tmp_path):
  config = tiny_config()
  config.data.name = "synthetic"      # 68-point faces ...
  config.data.scheme = "wflw"         # ... declared as 98 points.
  config.data.synthetic.num_train = 2
  config.data.synthetic.num_eval = 2
  with pytest.raises(ValueError, match="68 points per face"):
    method.StarMethod(config).num_train_examples()


def test_eval_groups_from_attributes_and_subsets():
  config = tiny_config()
  config.data.subset_groups = {"common": ("helen_testset", "lfpw_testset"),
                               "challenge": ("ibug",)}
  data = star_data.StarData.__new__(star_data.StarData)
  data.d = config.data
  lm = np.zeros((68, 2), np.float32)
  data.eval_records = {"full": [
      records_lib.FaceRecord("a", lm, subset="helen_testset",
                             attributes={"pose": 1, "yaw": 3.5}),
      records_lib.FaceRecord("b", lm, subset="ibug",
                             attributes={"pose": 0, "yaw": 1.0}),
      records_lib.FaceRecord("c", lm, subset="lfpw_testset",
                             attributes={"pose": 0, "yaw": 0.0})]}
  g = data.eval_groups("full", np.array([2, 0, 1]))
  assert sorted(g) == ["challenge", "common", "pose"]   # yaw is not a flag.
  np.testing.assert_array_equal(g["pose"], [False, True, False])
  np.testing.assert_array_equal(g["common"], [True, True, False])
  np.testing.assert_array_equal(g["challenge"], [False, False, True])

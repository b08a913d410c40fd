"""Tests for sce_mae_jax.fewshot (limited-annotation sampling and table)."""

import json

import numpy as np
import pytest

from configs import common
from sce_mae_jax import fewshot
from sce_mae_jax import keypoint_head as kh
from sce_mae_jax import stage2
from sce_mae_jax import tps


def test_sampling_reproducible_distinct_and_seed_dependent():
  pool = np.arange(500)
  a = fewshot.sample_few_shot(pool, 20, seed=1)
  b = fewshot.sample_few_shot(pool, 20, seed=1)
  c = fewshot.sample_few_shot(pool, 20, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert len(set(a.tolist())) == 20 and np.all(np.diff(a) > 0)
  assert set(a.tolist()) <= set(pool.tolist())


def test_sampling_disjoint_from_val_split():
  split = stage2.fixed_split(200, 50, seed=0)
  for seed in range(5):
    for n in (1, 5, 10, 20, 50, 100):
      got = fewshot.sample_few_shot(np.arange(200), n, seed,
                                    exclude=split["val"])
      assert not set(got.tolist()) & set(split["val"].tolist())
  with pytest.raises(ValueError):
    fewshot.sample_few_shot(np.arange(10), 11, 0)
  with pytest.raises(ValueError):
    fewshot.sample_few_shot(np.arange(10), 5, 0, exclude=np.arange(7))


def test_summary_and_table():
  s = fewshot.summarise({5: [10.0, 12.0, 14.0], 1: [20.0, 20.0, 23.0]})
  assert list(s) == [1, 5]
  np.testing.assert_allclose(s[5]["mean"], 12.0)
  np.testing.assert_allclose(s[5]["std"], np.sqrt(8.0 / 3.0))
  table = fewshot.markdown_table(s, "faces")
  assert "| faces | 1 | 5 |" in table
  assert "21.00 ± 1.41" in table and "12.00 ± 1.63" in table


def test_table_reference_row():
  s = fewshot.summarise({1: [20.0, 22.0, 24.0]})
  ref = fewshot.summarise({1: [13.0, 13.0, 13.0]})
  table = fewshot.markdown_table(s, "faces", ref).splitlines()
  assert table[2] == "| NME (%) | 22.00 ± 1.63 |"
  assert table[3] == "| mean shape of the n faces (reference) | 13.00 ± 0.00 |"


def test_fewshot_settings_follow_the_config():
  d = detection_config()
  s = fewshot.fewshot_settings(d, seed=2)
  assert (s.learning_rate, s.weight_decay, s.epoch_length, s.epochs) == (
      0.01, 5e-4, 1000, 50)
  assert (s.schedule, s.amsgrad, s.loss_alpha, s.seed) == ("cosine", True,
                                                           10.0, 2)
  d.fewshot_tps = False
  assert fewshot.fewshot_augment(d, 96) is None
  d.fewshot_tps = True
  d.warp = "random_tps_warp"
  d.warp_kwargs = {"control_sd": 0.01}
  aug = fewshot.fewshot_augment(d, 96)
  assert aug.warp_fn is tps.random_tps_warp and aug.image_size == 96
  d.warp = "no_such_warp"
  with pytest.raises(ValueError, match="no_such_warp"):
    fewshot.fewshot_augment(d, 96)


def detection_config():
  return common.detection().detection


def spot_images(n, seed):
  """uint8 `[n, 24, 24, 3]` crops with one bright 2 x 2 spot per landmark
  (landmark k in colour channel k) and the landmarks (crop px)."""
  rng = np.random.default_rng(seed)
  base = np.array([[8.0, 9.0], [16.0, 9.0], [12.0, 16.0]])
  lms = base + rng.integers(-3, 4, (n, 3, 2))
  images = np.full((n, 24, 24, 3), 20, np.uint8)
  for i in range(n):
    for k, (x, y) in enumerate(lms[i].astype(int)):
      images[i, y:y + 2, x:x + 2, k] = 255
  return images, (lms + 0.5).astype(np.float32)   # spot centres.


def encode(images):
  """Stand-in encoder: 4 x 4 average pooling -> `[n, 6, 6, 3]` + a constant
  channel."""
  x = images.astype(np.float32).reshape(-1, 6, 4, 6, 4, 3).mean((2, 4)) / 255
  return np.concatenate([x, np.ones(x.shape[:-1] + (1,), np.float32)], -1)


def test_run_fewshot_table_json_and_reference(tmp_path):
  images, lms = spot_images(30, seed=0)
  val_images, val_lms = spot_images(20, seed=1)
  val = {"image": val_images, "landmarks": val_lms}
  load_train = lambda idx: {"image": images[idx], "landmarks": lms[idx]}
  head = kh.IntermediateKeypointRegressor(num_points=3, intermediate=4)
  settings = kh.TrainSettings(epochs=3, epoch_length=16, batch_size=8,
                              learning_rate=1e-2, schedule="cosine")
  aug = kh.tps_augment(24, tps.random_tps_warp, control_sd=0.01)
  summary = fewshot.run_fewshot(
      encode, head, load_train, 30, val, settings, augment=aug,
      counts=(1, 4), seeds=(0, 1, 2), normaliser=(0, 1),
      out_dir=str(tmp_path), title="toy", log=lambda *_: None)
  assert sorted(summary) == [1, 4]
  for n in (1, 4):
    runs = summary[n]["mean_shape_reference"]["runs"]
    want = [float(np.mean(kh.mean_shape_nme(
        lms[fewshot.sample_few_shot(np.arange(30), n, s)], val_lms, (0, 1))))
            for s in (0, 1, 2)]
    np.testing.assert_allclose(runs, want, rtol=1e-12)
    assert len(summary[n]["runs"]) == 3
    assert np.all(np.isfinite(summary[n]["runs"]))
  saved = json.loads((tmp_path / "fewshot.json").read_text())
  assert sorted(saved) == ["1", "4"]
  np.testing.assert_allclose(saved["4"]["mean"], summary[4]["mean"])
  table = (tmp_path / "fewshot.md").read_text().splitlines()
  assert table[0] == "| toy | 1 | 4 |"
  assert table[3].startswith("| mean shape of the n faces (reference) |")
  meta = json.loads((tmp_path / "fewshot_settings.json").read_text())
  assert meta["settings"]["epoch_length"] == 16

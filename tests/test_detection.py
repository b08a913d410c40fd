"""Tests for sce_mae_jax.detection (heads from config, all-annotation path)."""

import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from landmarks import coordinates
from sce_mae_jax import detection
from sce_mae_jax import keypoint_head as kh
from tests import test_keypoint_head as khtest

EYES = (0, 1)


def test_normalise_roundtrip_and_values():
  p = jnp.array([[0.0, 95.0], [47.5, 10.0]])
  n = coordinates.normalise_landmarks(p, 96)
  np.testing.assert_allclose(np.asarray(n)[0], [1 / 96 - 1, 191 / 96 - 1],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(coordinates.denormalise_landmarks(n, 96)),
                             np.asarray(p), atol=1e-5)


def test_smooth_l1_piecewise():
  x = np.array([-2.0, -0.5, 0.0, 0.3, 1.5])
  ref = np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)
  np.testing.assert_allclose(np.asarray(kh.smooth_l1(jnp.asarray(x))),
                             ref)
  ref = np.where(np.abs(x) < 0.5, x**2, np.abs(x) - 0.25)  # beta = 0.5
  np.testing.assert_allclose(
      np.asarray(kh.smooth_l1(jnp.asarray(x), 0.5)), ref)


def test_nme_percent_eye_centres():
  gt = np.array([[[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]],
                np.float32)
  pred = gt + np.array([2.0, 0.0], np.float32)  # every point 2 px off.
  np.testing.assert_allclose(kh.nme_percent(pred, gt, "five_point"),
                             [10.0], rtol=1e-6)


def test_mean_shape_nme_hand_computed():
  a = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
  train = np.stack([a, a + np.array([4.0, 0.0], np.float32)])
  np.testing.assert_allclose(
      kh.mean_shape_nme(train, a[None], "five_point"), [10.0],
      rtol=1e-6)


def test_heads_from_config():
  c = common.detection()
  head = detection.head_from_config(c, 5, "head", (192,))
  assert isinstance(head, kh.ConvBlockRegressor)
  assert (head.hidden, head.intermediate, head.num_maps) == (256, 50, 250)
  assert head.norm_groups == (192,)
  few = detection.head_from_config(c, 5, "fewshot_head")
  assert isinstance(few, kh.IntermediateKeypointRegressor)
  assert (few.softmax_mul, few.num_maps, few.normalise) == (100.0, 250, True)
  c.detection.per_landmark = False
  assert detection.head_from_config(c, 5, "fewshot_head").num_maps == 50
  c.detection.head = "intermediate"
  assert isinstance(detection.head_from_config(c, 5),
                    kh.IntermediateKeypointRegressor)
  c.detection.head = "mlp"
  with pytest.raises(ValueError, match="detection.head"):
    detection.head_from_config(c, 5)


def test_settings_from_config():
  d = common.detection().detection
  s = detection.all_annotation_settings(d, seed=3)
  assert (s.epochs, s.learning_rate, s.weight_decay, s.amsgrad) == (
      300, 1e-3, 5e-4, True)
  assert (s.schedule, s.lr_drops, s.seed, s.loss_alpha) == (
      "piecewise", (1 / 3, 5 / 6), 3, 10.0)
  assert not s.decoupled_weight_decay


def test_mirror_faces_flips_pixels_and_swaps_points():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
  lms = rng.uniform(0, 7, (2, 5, 2)).astype(np.float32)
  im, pts = detection.mirror_faces(images, lms)
  np.testing.assert_array_equal(im[:, :, ::-1], images)
  # Left eye of the mirror = mirrored right eye; nose stays point 2.
  np.testing.assert_allclose(pts[:, 0], np.stack([7 - lms[:, 1, 0],
                                                  lms[:, 1, 1]], -1))
  np.testing.assert_allclose(pts[:, 2, 0], 7 - lms[:, 2, 0])
  im2, pts2 = detection.mirror_faces(im, pts)
  np.testing.assert_array_equal(im2, images)
  np.testing.assert_allclose(pts2, lms, atol=1e-6)


def test_train_all_annotations_curve_and_result():
  feats, lms = khtest.spot_faces(32)
  val_f, val_l = khtest.spot_faces(48, seed=1)
  head = kh.ConvBlockRegressor(num_points=3, intermediate=4, hidden=8)
  s = kh.TrainSettings(epochs=20, batch_size=8, learning_rate=1e-2,
                       lr_drops=(0.6, 0.9))
  logged = []
  out = detection.train_all_annotations(head, feats, lms, val_f, val_l, 24, s,
                                        normaliser=EYES, eval_every=5,
                                        log=logged.append)
  assert len(out["history"]) == 20 == len(logged)
  evaluated = [e["epoch"] for e in out["history"] if "val_nme" in e]
  assert evaluated == [5, 10, 15, 20]
  assert out["losses"].shape == (80,)
  np.testing.assert_allclose(out["history"][-1]["val_nme"],
                             np.mean(out["nme"]), rtol=1e-6)
  np.testing.assert_allclose(out["mean_shape_nme"],
                             kh.mean_shape_nme(lms, val_l, EYES))
  assert np.mean(out["nme"]) < 0.5 * np.mean(out["mean_shape_nme"])
  # The piecewise schedule dropped twice (x0.1 at 60 % and 90 % of the run).
  lrs = [e["lr"] for e in out["history"]]
  np.testing.assert_allclose([lrs[0], lrs[14], lrs[-1]], [1e-2, 1e-3, 1e-4],
                             rtol=1e-5)


def test_no_import_cycle_and_no_star_jax():
  code = ("import sys; from sce_mae_jax import fewshot, keypoint_head; "
          "assert 'sce_mae_jax.detection' not in sys.modules; "
          "assert not any(m.startswith('star_jax') for m in sys.modules), "
          "[m for m in sys.modules if m.startswith('star_jax')]; "
          "from sce_mae_jax import detection; "
          "assert not any(m.startswith('star_jax') for m in sys.modules)")
  subprocess.run([sys.executable, "-c", code], check=True)

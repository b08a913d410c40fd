"""Tests of sce_mae_jax/reconstruction.py (MAE panels and the PNG grid)."""

import numpy as np
import pytest

from sce_mae_jax import mae as mae_lib
from sce_mae_jax import reconstruction as rec

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _inputs(b=3, s=16, p=4, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
  n = (s // p) ** 2
  mask = (rng.random((b, n)) < 0.75).astype(np.float32)
  pred = rng.normal(size=(b, n, p * p * 3)).astype(np.float32)
  return images, pred, mask, p


def _normed(images):
  return (images.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)


def test_patch_order_matches_mae():
  x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
  np.testing.assert_array_equal(rec.patchify(x, 4),
                                np.asarray(mae_lib.patchify(x, 4)))
  np.testing.assert_array_equal(rec.unpatchify(rec.patchify(x, 4), 4), x)
  # Patch k = (row k // 2, col k % 2): hand-checked corner of patch 1.
  assert rec.patchify(x, 4)[0, 1, 0] == x[0, 0, 4, 0]


def test_masked_panel_is_fill_exactly_where_masked():
  images, pred, mask, p = _inputs()
  panels = rec.reconstruction_panels(images, pred, mask, p, fill=(10, 20, 30),
                                     mean=MEAN, std=STD)
  pixel_mask = rec.mask_to_pixels(mask, p)
  masked = panels["masked"]
  assert (masked[pixel_mask] == np.array([10, 20, 30], np.uint8)).all()
  np.testing.assert_array_equal(masked[~pixel_mask], images[~pixel_mask])
  # Patch (r, c) of the pixel mask is mask[r * g + c]: check one by hand.
  g = 16 // p
  for k in range(g * g):
    r, c = divmod(k, g)
    assert (pixel_mask[1, r * p:(r + 1) * p, c * p:(c + 1) * p] ==
            bool(mask[1, k])).all()


def test_pasted_panel_equals_input_where_visible():
  images, pred, mask, p = _inputs(seed=1)
  panels = rec.reconstruction_panels(images, pred, mask, p, mean=MEAN, std=STD)
  pixel_mask = rec.mask_to_pixels(mask, p)
  vis = panels["reconstruction_visible"]
  np.testing.assert_array_equal(vis[~pixel_mask], images[~pixel_mask])
  np.testing.assert_array_equal(vis[pixel_mask],
                                panels["reconstruction"][pixel_mask])


def test_perfect_prediction_reconstructs_the_input():
  images, _, mask, p = _inputs(seed=2)
  normed = _normed(images)
  patches = rec.patchify(normed, p)
  # norm_pix_loss: the prediction is the standardised target patch.
  target = np.asarray(mae_lib.normalized_pixel_targets(
      patches.astype(np.float32)), np.float64)
  got = rec.prediction_to_pixels(target, images, p, True, MEAN, STD)
  assert np.max(np.abs(got.astype(int) - images.astype(int))) <= 1
  # Raw pixels (no norm_pix_loss): exact up to float rounding.
  got = rec.prediction_to_pixels(patches, images, p, False, MEAN, STD)
  np.testing.assert_array_equal(got, images)
  # A wrong prediction is not turned into the input (the test can fail).
  got = rec.prediction_to_pixels(-target, images, p, True, MEAN, STD)
  assert np.mean(np.abs(got.astype(int) - images.astype(int))) > 20
  del mask


def test_norm_pix_display_uses_target_patch_statistics():
  images, pred, _, p = _inputs(b=1, seed=3)
  normed = rec.patchify(_normed(images), p)
  mu = normed.mean(-1, keepdims=True)
  sd = np.sqrt(normed.var(-1, keepdims=True, ddof=1) + 1e-6)
  want = rec.unpatchify(pred * sd + mu, p) * np.array(STD) + np.array(MEAN)
  want = np.clip(np.round(want * 255.0), 0, 255).astype(np.uint8)
  got = rec.prediction_to_pixels(pred, images, p, True, MEAN, STD)
  np.testing.assert_array_equal(got, want)


def test_grid_layout(tmp_path):
  images, pred, mask, p = _inputs(b=2, s=8, p=4, seed=4)
  panels = rec.reconstruction_panels(images, pred, mask, p, mean=MEAN, std=STD)
  grid = rec.grid_of(panels, pad=3, background=255)
  assert grid.shape == (3 + 2 * 11, 3 + 4 * 11, 3)
  for r in range(2):
    for c, name in enumerate(rec.PANELS):
      y, x = 3 + r * 11, 3 + c * 11
      np.testing.assert_array_equal(grid[y:y + 8, x:x + 8], panels[name][r])
  assert (grid[:3] == 255).all() and (grid[:, :3] == 255).all()
  path = tmp_path / "sub" / "g.png"
  rec.write_png(str(path), grid)
  from PIL import Image
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)


def test_bad_images_raise():
  _, pred, mask, p = _inputs()
  with pytest.raises(ValueError, match="uint8"):
    rec.reconstruction_panels(np.zeros((3, 16, 16, 3), np.float32), pred,
                              mask, p)

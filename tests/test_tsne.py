"""Tests for sce_mae_jax.tsne (exact t-SNE, silhouette, PIL scatter)."""

import numpy as np
import pytest

from sce_mae_jax import tsne


def test_silhouette_hand_computed():
  x = np.array([[0.0], [1.0], [4.0], [5.0]])
  labels = np.array([0, 0, 1, 1])
  # Point 0: a = 1, b = (4 + 5) / 2 = 4.5 -> 3.5 / 4.5; point 1: a = 1,
  # b = (3 + 4) / 2 = 3.5 -> 2.5 / 3.5; points 2, 3 mirror them.
  expected = [3.5 / 4.5, 2.5 / 3.5, 2.5 / 3.5, 3.5 / 4.5]
  np.testing.assert_allclose(tsne.silhouette_samples(x, labels), expected)
  np.testing.assert_allclose(tsne.silhouette_score(x, labels),
                             np.mean(expected))


def test_silhouette_singleton_is_zero_and_needs_two_labels():
  x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
  s = tsne.silhouette_samples(x, np.array([0, 0, 1]))
  assert s[2] == 0.0
  # Point 0: a = 1, b = 10 -> 0.9.
  np.testing.assert_allclose(s[0], 0.9)
  with pytest.raises(ValueError):
    tsne.silhouette_samples(x, np.zeros(3))


def test_perplexity_calibration_hits_target_entropy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(40, 5))
  p = tsne.conditional_probabilities(tsne.pairwise_distances(x) ** 2, 10.0)
  np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(np.diag(p), 0.0)
  np.testing.assert_allclose(tsne.entropy_rows(p), np.log(10.0), atol=1e-4)


def test_kl_gradient_finite_differences():
  rng = np.random.default_rng(1)
  p = tsne.joint_probabilities(rng.normal(size=(12, 3)), 4.0)
  y = rng.normal(size=(12, 2))
  _, grad = tsne.kl_gradient(p, y)
  eps = 1e-6
  num = np.zeros_like(y)
  for i in range(12):
    for d in range(2):
      yp, ym = y.copy(), y.copy()
      yp[i, d] += eps
      ym[i, d] -= eps
      num[i, d] = (tsne.kl_gradient(p, yp)[0] -
                   tsne.kl_gradient(p, ym)[0]) / (2 * eps)
  np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-7)


def test_tsne_separates_blobs_and_draws(tmp_path):
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]], float)
  x = np.concatenate([c + rng.normal(size=(20, 4)) for c in centres])
  labels = np.repeat(np.arange(3), 20)
  y = tsne.tsne(x, perplexity=10, iterations=300, seed=0)
  # Input-space silhouette is 0.67; t-SNE tightens the clusters.
  assert tsne.silhouette_score(y, labels) > 0.8
  path = tmp_path / "tsne.png"
  tsne.draw_scatter(y, labels, str(path), names=["a", "b", "c"])
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = np.asarray(Image.open(path).convert("RGB"))
  for colour in tsne.PALETTE[:3]:
    assert np.any(np.all(img == colour, axis=-1))


def test_position_only_features_are_the_sincos_table_at_patch_centres():
  from sce_mae_jax import vit
  width, grid, size = 16, 4, 32       # patch 8: patch r's centre is 8 r + 3.5
  table = vit.sincos_pos_embed_2d(width, grid, cls_token=False)
  lm = np.array([[[3.5, 3.5], [8 * 2 + 3.5, 8 * 1 + 3.5]]])  # (x, y)
  got = tsne.position_only_features(lm, size, width, grid)
  np.testing.assert_allclose(got[0, 0], table[0], atol=1e-6)
  np.testing.assert_allclose(got[0, 1], table[1 * grid + 2], atol=1e-6)
  # Halfway between two patch centres in x: the mean of their rows.
  mid = tsne.position_only_features(np.array([[[7.5, 3.5]]]), size, width,
                                    grid)
  np.testing.assert_allclose(mid[0, 0], 0.5 * (table[0] + table[1]),
                             atol=1e-6)


def test_position_r2_is_one_for_position_and_low_for_noise():
  from sce_mae_jax import vit
  width, grid, patch = 16, 4, 8
  # Features that ARE the position table (stride = patch: h = grid).
  table = vit.sincos_pos_embed_2d(width, grid, cls_token=False)
  dense = np.broadcast_to(table.reshape(grid, grid, width) @ np.eye(width)[:,
                          :6], (6, grid, grid, 6)).copy()
  assert tsne.position_r2(dense, width, grid, patch) == pytest.approx(1.0)
  noise = np.random.default_rng(0).normal(size=(6, grid, grid, 6))
  assert tsne.position_r2(noise, width, grid, patch) < 0.2

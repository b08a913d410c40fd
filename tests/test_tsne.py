"""Tests for sce_mae_jax.tsne (sklearn t-SNE + silhouette, features)."""

import numpy as np
import pytest
from sklearn import manifold
from sklearn import metrics

from sce_mae_jax import tsne


def _silhouette_reference(x, labels):
  """Rousseeuw's silhouette in float64, by explicit differences and loops."""
  x = np.asarray(x, np.float64)
  d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
  out = []
  for i in range(len(x)):
    own = labels == labels[i]
    if own.sum() == 1:
      out.append(0.0)                       # alone in its cluster
      continue
    a = d[i, own].sum() / (own.sum() - 1)
    b = min(d[i, labels == c].mean() for c in np.unique(labels)
            if c != labels[i])
    out.append((b - a) / max(a, b))
  return np.mean(out)


def test_silhouette_hand_computed():
  x = np.array([[0.0], [1.0], [4.0], [5.0]])
  labels = np.array([0, 0, 1, 1])
  # Point 0: a = 1, b = (4 + 5) / 2 = 4.5 -> 3.5 / 4.5; point 1: a = 1,
  # b = (3 + 4) / 2 = 3.5 -> 2.5 / 3.5; points 2, 3 mirror them.
  expected = [3.5 / 4.5, 2.5 / 3.5, 2.5 / 3.5, 3.5 / 4.5]
  np.testing.assert_allclose(metrics.silhouette_samples(x, labels), expected,
                             rtol=1e-15)
  assert metrics.silhouette_score(x, labels) == pytest.approx(
      np.mean(expected), rel=1e-15)
  # A point alone in its cluster counts 0; point 0: a = 1, b = 10 -> 0.9;
  # point 1: a = 1, b = sqrt(101).
  x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0]])
  np.testing.assert_allclose(
      metrics.silhouette_samples(x, np.array([0, 0, 1])),
      [0.9, 1 - 1 / np.sqrt(101), 0.0], rtol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_sklearn_silhouette_equals_float64_reference(seed):
  rng = np.random.default_rng(seed)
  x = np.concatenate([rng.normal(size=(40, 2)) + [0, 0],
                      rng.normal(size=(30, 2)) + [3, 1],
                      rng.normal(size=(29, 2)) * 2 + [-1, 4],
                      [[7.0, 7.0]]])               # a singleton cluster
  labels = np.repeat([2, 0, 5, 9], [40, 30, 29, 1])
  ref = _silhouette_reference(x, labels)
  assert abs(metrics.silhouette_score(x, labels) - ref) < 1e-12
  # The value feature_quality reports, on 2-D embeddings as here.
  assert 0.2 < ref < 0.8


def test_tsne_separates_blobs_keeps_neighbours_and_is_seeded():
  rng = np.random.default_rng(0)
  centres = np.array([[0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]], float)
  x = np.concatenate([c + rng.normal(size=(20, 4)) for c in centres])
  labels = np.repeat(np.arange(3), 20)
  y = tsne.tsne(x, perplexity=10, iterations=300, seed=0)
  assert y.shape == (60, 2) and y.dtype == np.float64
  # Input-space silhouette is 0.67; t-SNE tightens the clusters.
  assert metrics.silhouette_score(x, labels) < 0.7
  assert metrics.silhouette_score(y, labels) > 0.8
  assert manifold.trustworthiness(x, y, n_neighbors=5) > 0.9
  np.testing.assert_array_equal(
      tsne.tsne(x, perplexity=10, iterations=300, seed=0), y)
  assert not np.allclose(tsne.tsne(x, perplexity=10, iterations=300, seed=1),
                         y)
  # The exaggeration length reaches sklearn's optimiser.
  assert not np.allclose(tsne.tsne(x, perplexity=10, iterations=300, seed=0,
                                   exaggeration_iters=None), y)


def test_tsne_arguments_reach_sklearn(monkeypatch):
  seen = {}

  class Recorder(manifold.TSNE):

    def fit_transform(self, x, y=None):
      seen.update(self.get_params(), exploration=self._EXPLORATION_MAX_ITER)
      return np.zeros((len(x), self.n_components))

  monkeypatch.setattr(tsne.manifold, "TSNE", Recorder)
  tsne.tsne(np.zeros((31, 3)), perplexity=30.0, iterations=400, seed=7)
  assert seen["perplexity"] == 10.0                 # (n - 1) / 3 cap
  assert (seen["max_iter"], seen["random_state"]) == (400, 7)
  assert seen["method"] == "exact"
  # sklearn's "random" start, in float64.
  np.testing.assert_array_equal(
      seen["init"], 1e-4 * np.random.RandomState(7).standard_normal((31, 2)))
  assert seen["init"].dtype == np.float64
  assert (seen["learning_rate"], seen["early_exaggeration"]) == ("auto", 12.0)
  assert (seen["min_grad_norm"], seen["n_iter_without_progress"]) == (0.0, 400)
  assert seen["exploration"] == 100                 # the reference schedule
  tsne.tsne(np.zeros((31, 3)), iterations=400, exaggeration_iters=None)
  assert seen["exploration"] == 250                 # sklearn's own length


def test_feature_quality_reports_silhouettes_and_draws(tmp_path):
  rng = np.random.default_rng(0)
  # 12 faces x 3 landmarks; landmark k's feature points along axis k.
  feats = np.eye(3)[None] * 5 + 0.3 * rng.normal(size=(12, 3, 3))
  png = tmp_path / "tsne.png"
  out = tsne.feature_quality(feats, perplexity=5, iterations=1000, runs=2,
                             png=str(png), names=["a", "b", "c"])
  assert out["points"] == 36 and len(out["silhouette_runs"]) == 2
  # Run r: t-SNE (seed r) of the L2-normalised features, labelled by
  # landmark index, then the silhouette of the embedding.
  x = feats.reshape(36, 3)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  labels = np.tile(np.arange(3), 12)
  for r, got in enumerate(out["silhouette_runs"]):
    y = tsne.tsne(x, perplexity=5, iterations=1000, seed=r)
    assert abs(got - _silhouette_reference(y, labels)) < 1e-12
  assert out["silhouette_mean"] == pytest.approx(
      np.mean(out["silhouette_runs"]))
  assert out["silhouette_mean"] > 0.8
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = np.asarray(Image.open(png).convert("RGB"))
  assert img.shape == (600, 740, 3) and img.std() > 5


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

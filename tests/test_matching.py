"""Tests for sce_mae_jax.matching (DVE landmark-matching protocol)."""

import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import matching

S = 16


def one_hot_positional(size=S):
  """`[S, S, S*S]` features: pixel (y, x) -> one-hot of y*S + x (exact)."""
  return np.eye(size * size, dtype=np.float32).reshape(size, size, -1)


def test_same_image_exact_features_zero_error():
  f = jnp.asarray(one_hot_positional())
  pts = np.array([[0, 0], [3, 7], [15, 15], [8, 2]], np.float32)
  pred = np.asarray(matching.match_points(f, f, jnp.asarray(pts)))
  np.testing.assert_array_equal(pred, pts)
  err = matching.pair_errors(f[None], f[None], jnp.asarray(pts)[None],
                             pts[None], S)
  np.testing.assert_array_equal(err, 0.0)


def test_shifted_content_is_found_at_the_shift():
  """Target = source content translated by (dx, dy): matches move by it."""
  f = one_hot_positional()
  dx, dy = 3, -2
  tgt = np.zeros_like(f)
  # target pixel (y + dy, x + dx) holds the source feature of (y, x).
  for y in range(S):
    for x in range(S):
      if 0 <= y + dy < S and 0 <= x + dx < S:
        tgt[y + dy, x + dx] = f[y, x]
  pts = np.array([[4, 5], [10, 12], [6, 9]], np.float32)
  pred = np.asarray(matching.match_points(jnp.asarray(f), jnp.asarray(tgt),
                                          jnp.asarray(pts)))
  np.testing.assert_array_equal(pred, pts + np.array([dx, dy], np.float32))


def test_dve_frame_scaling():
  np.testing.assert_allclose(matching.to_dve_frame(np.array([96.0, 9.6]), 96),
                             [70.0, 7.0])


def test_upsample_keeps_constant_and_size():
  f = jnp.ones((4, 4, 3)) * jnp.array([1.0, 2.0, 3.0])
  up = np.asarray(matching.upsample_features(f, 16))
  assert up.shape == (16, 16, 3)
  np.testing.assert_allclose(up, np.broadcast_to([1.0, 2.0, 3.0], up.shape),
                             rtol=1e-6)


def test_pairs_with_zero_warp_are_identity():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, S, S, 3)).astype(np.uint8)
  lms = rng.uniform(2, S - 3, (3, 5, 2)).astype(np.float32)
  zero = dict(control_sd=0.0, rotation_sd_deg=0.0, scale_sd=0.0,
              translation_sd=0.0)
  pairs = matching.make_pairs(images, lms, 4, seed=0, warp_kwargs=zero)
  np.testing.assert_array_equal(pairs["ref"], [0, 1, 2, 0])
  np.testing.assert_array_equal(pairs["other"], [1, 2, 0, 1])
  np.testing.assert_allclose(pairs["same_image"], images[pairs["ref"]],
                             atol=1e-3)
  np.testing.assert_allclose(pairs["same_points"], lms[pairs["ref"]],
                             atol=1e-3)
  np.testing.assert_allclose(pairs["diff_points"], lms[pairs["other"]],
                             atol=1e-3)
  with pytest.raises(ValueError):
    matching.make_pairs(images[:1], lms[:1], 2)


def test_evaluate_matching_examples_and_errors_agree():
  """Positional features (content-independent): every point matches itself,
  so same-identity errors are 0 under a zero warp, different-identity errors
  are the distance to the other face's points, and the returned examples
  carry exactly those matches."""
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, S, S, 3)).astype(np.uint8)
  lms = np.round(rng.uniform(2, S - 3, (3, 4, 2))).astype(np.float32)
  feats = jnp.asarray(one_hot_positional())

  class PositionalModel:
    def dense_features(self, params, images, kind, stride):
      del params, kind, stride
      return jnp.broadcast_to(feats, (images.shape[0],) + feats.shape)

  zero = dict(control_sd=0.0, rotation_sd_deg=0.0, scale_sd=0.0,
              translation_sd=0.0)
  examples = []
  result = matching.evaluate_matching(
      PositionalModel(), {}, {"image": images, "landmarks": lms},
      num_pairs=3, warp_kwargs=zero, batch_size=2, examples=examples)
  assert result["same"] == pytest.approx(0.0, abs=1e-3)
  ref, other = np.arange(3), (np.arange(3) + 1) % 3
  want_diff = np.linalg.norm(lms[ref] - lms[other], axis=-1).mean()
  assert result["diff_px"] == pytest.approx(want_diff, abs=1e-2)
  assert result["diff"] == pytest.approx(want_diff * 70 / S, abs=1e-2)
  # Examples: the first batch (2 references) for both kinds.
  assert sorted(e["kind"] for e in examples) == ["diff", "diff", "same",
                                                 "same"]
  for e in examples:
    np.testing.assert_array_equal(e["matched_points"], e["source_points"])
  diff = [e for e in examples if e["kind"] == "diff"]
  np.testing.assert_allclose(diff[1]["target_points"], lms[2], atol=1e-3)

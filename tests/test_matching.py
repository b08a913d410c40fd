"""Tests for sce_mae_jax.matching (DVE landmark-matching protocol)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import matching
from sce_mae_jax import tps

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


ZERO_DVE = dict(type="dve", warpsd_all=0.0, warpsd_subset=0.0, transsd=0.0,
                scalesd=0.0, rotsd=0.0)
STRONG_DVE = dict(warpsd_all=1e-3, warpsd_subset=1e-2, transsd=0.1,
                  scalesd=0.1, rotsd=5.0)  # DVE's training warps.


def faces(n, k=4, size=S, seed=0, integer_points=False):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
  lms = rng.uniform(3, size - 4, (n, k, 2))
  if integer_points:
    lms = np.round(lms)
  return images, lms.astype(np.float32)


def dot_faces(points, size=32, sigma=1.2):
  """uint8 faces with a bright blob at each landmark (blobs far apart)."""
  ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
  out = []
  for face in points:
    img = np.zeros((size, size))
    for x, y in face:
      img = np.maximum(img, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) /
                                   (2 * sigma ** 2)))
    out.append(np.round(255 * img).astype(np.uint8)[..., None].repeat(3, -1))
  return np.stack(out)


def jax_tree_index(tree, i):
  return jax.tree.map(lambda x: jnp.asarray(x[i]), tree)


def test_pairs_are_consecutive_faces_over_the_whole_split():
  images, lms = faces(7)
  pairs = matching.make_pairs(images, lms, warp_kwargs=ZERO_DVE)
  np.testing.assert_array_equal(pairs["source_index"], [0, 2, 4])
  np.testing.assert_array_equal(pairs["diff_index"], [1, 3, 5])
  assert pairs["source_image"].shape == (3, S, S, 3)
  assert pairs["source_image"].dtype == np.uint8
  # Zero warp: every view is its face, with its landmarks.
  for view, idx in (("source", [0, 2, 4]), ("same", [0, 2, 4]),
                    ("diff", [1, 3, 5])):
    np.testing.assert_array_equal(pairs[f"{view}_image"], images[idx])
    np.testing.assert_allclose(pairs[f"{view}_points"], lms[idx], atol=1e-4)
  for num_pairs, want in ((None, 3), (0, 3), (2, 2), (10, 3)):
    assert matching.num_available_pairs(7, num_pairs) == want
  with pytest.raises(ValueError):
    matching.make_pairs(images[:1], lms[:1])
  with pytest.raises(ValueError):
    matching.num_available_pairs(7, -1)


def test_pairs_are_deterministic_and_capping_keeps_a_prefix():
  images, lms = faces(6, seed=1)
  full = matching.make_pairs(images, lms, None, seed=3, batch_size=2)
  again = matching.make_pairs(images, lms, 0, seed=3)
  first = matching.make_pairs(images, lms, 1, seed=3)
  other = matching.make_pairs(images, lms, None, seed=4)
  for key in ("source_image", "diff_image", "source_points", "diff_points"):
    np.testing.assert_allclose(full[key], again[key], atol=1e-4)
    np.testing.assert_allclose(full[key][:1], first[key], atol=1e-4)
  assert np.abs(full["source_points"] - other["source_points"]).max() > 1e-3
  assert full["warp_type"] == "dve"


def test_double_warp_follows_dves_warper_order():
  """source = face 2k through W1 then W2; same = face 2k through W1; diff =
  face 2k + 1 through its own W1 (DVE's Warper returns (im2, im1))."""
  images, lms = faces(4, size=24, seed=2)
  images = images.astype(np.float32)  # No rounding (0..255 floats).
  pairs = matching.make_pairs(images, lms, warp_kwargs=STRONG_DVE)
  warps = pairs["warps"]
  size = (24, 24)
  for k in range(2):
    w = {name: jax_tree_index(warps[name], k) for name in warps}
    once = tps.warp_image(images[2 * k], w["source_first"])
    np.testing.assert_allclose(pairs["same_image"][k], once, atol=1e-2)
    np.testing.assert_allclose(
        pairs["source_image"][k],
        tps.warp_image(once, w["source_second"]), atol=1e-2)
    np.testing.assert_allclose(
        pairs["diff_image"][k],
        tps.warp_image(images[2 * k + 1], w["diff"]), atol=1e-2)
    same_pts = tps.warp_points(lms[2 * k], w["source_first"], size)
    np.testing.assert_allclose(pairs["same_points"][k], same_pts, atol=1e-4)
    np.testing.assert_allclose(
        pairs["source_points"][k],
        tps.warp_points(same_pts, w["source_second"], size), atol=1e-4)
    np.testing.assert_allclose(
        pairs["diff_points"][k],
        tps.warp_points(lms[2 * k + 1], w["diff"], size), atol=1e-4)
  assert np.abs(pairs["source_points"] - pairs["same_points"]).max() > 0.5
  assert not pairs["snapped"].any()


def test_warped_dots_peak_at_the_warped_landmarks():
  """End to end without the warps: faces with a bright dot at each landmark;
  every view must peak (within a pixel) where its landmarks are said to be."""
  rng = np.random.default_rng(3)
  grid = np.array([[9.0, 9.0], [22.0, 9.0], [9.0, 22.0], [22.0, 22.0]])
  lms = (grid + rng.uniform(-1.5, 1.5, (4, 4, 2))).astype(np.float32)
  pairs = matching.make_pairs(dot_faces(lms), lms, warp_kwargs=STRONG_DVE,
                              seed=5)
  for view in ("source", "same", "diff"):
    for img, pts in zip(pairs[f"{view}_image"], pairs[f"{view}_points"]):
      img = img[..., 0].astype(np.float64)
      for x, y in pts:
        x0, y0 = int(round(x)), int(round(y))
        win = img[max(y0 - 4, 0):y0 + 5, max(x0 - 4, 0):x0 + 5]
        py, px = np.unravel_index(np.argmax(win), win.shape)
        peak = np.array([px + max(x0 - 4, 0), py + max(y0 - 4, 0)])
        assert np.linalg.norm(peak - [x, y]) <= 1.0, (view, peak, (x, y))


def test_warp_type_selection():
  assert matching.warp_sampler(None)[0] == "dve"
  assert matching.warp_sampler({"rotsd": 1.0})[0] == "dve"
  old = dict(grid_size=5, control_sd=0.05, rotation_sd_deg=2.5,
             scale_sd=0.05, translation_sd=0.05)
  assert matching.warp_sampler(old)[0] == "similarity_jitter"
  assert matching.warp_sampler(dict(old, type="similarity_jitter"))[0] == (
      "similarity_jitter")
  with pytest.raises(ValueError, match="unknown"):
    matching.warp_sampler(dict(old, type="dve"))
  with pytest.raises(ValueError, match="warp type"):
    matching.warp_sampler({"type": "affine"})
  images, lms = faces(4, seed=4)
  zero_old = dict(control_sd=0.0, rotation_sd_deg=0.0, scale_sd=0.0,
                  translation_sd=0.0)
  pairs = matching.make_pairs(images, lms, warp_kwargs=zero_old)
  assert pairs["warp_type"] == "similarity_jitter"
  np.testing.assert_allclose(pairs["diff_points"], lms[[1, 3]], atol=1e-3)
  warped = matching.make_pairs(images, lms, warp_kwargs=dict(old,
                                                             grid_size=4))
  assert np.abs(warped["source_points"] - lms[[0, 2]]).max() > 0.1


def test_identity_matcher_is_the_source_to_target_distance():
  images, lms = faces(5, seed=5)
  pairs = matching.make_pairs(images, lms, warp_kwargs=STRONG_DVE)
  res = matching.baseline_matching(pairs)
  scale = 70.0 / S
  src = pairs["source_points"].astype(np.float64)
  for tag in ("same", "diff"):
    tgt = pairs[f"{tag}_points"].astype(np.float64)
    want = np.sqrt(((src - tgt) ** 2).sum(-1)) * scale
    np.testing.assert_allclose(res[f"{tag}_errors"], want, rtol=1e-6)
    assert res[tag] == pytest.approx(want.mean(), rel=1e-6)
    assert res[f"{tag}_px"] == pytest.approx(want.mean() / scale, rel=1e-6)
  assert res["feature_kind"] == "identity" and res["num_pairs"] == 2
  np.testing.assert_array_equal(res["source_index"], [0, 2])
  # Zero warp: same identity is perfect, different identity is the landmark
  # distance between faces 2k and 2k + 1 (hand computed).
  zero = matching.baseline_matching(
      matching.make_pairs(images, lms, warp_kwargs=ZERO_DVE))
  np.testing.assert_allclose(zero["same_errors"], 0.0, atol=1e-3)
  d = [[np.hypot(*(lms[0, i] - lms[1, i])) for i in range(4)],
       [np.hypot(*(lms[2, i] - lms[3, i])) for i in range(4)]]
  np.testing.assert_allclose(zero["diff_errors"], np.array(d) * scale,
                             atol=1e-3)


def test_mean_shape_matcher_ignores_the_images():
  images, lms = faces(4, seed=6)
  pairs = matching.make_pairs(images, lms, warp_kwargs=STRONG_DVE)
  mean_shape = np.array([[4.0, 5.0], [10.0, 5.0], [7.0, 9.0], [7.5, 12.0]])
  res = matching.baseline_matching(pairs, mean_shape)
  for tag in ("same", "diff"):
    tgt = pairs[f"{tag}_points"].astype(np.float64)
    want = np.array([[np.hypot(*(mean_shape[i] - tgt[p, i]))
                      for i in range(4)] for p in range(2)]) * 70.0 / S
    np.testing.assert_allclose(res[f"{tag}_errors"], want, rtol=1e-6)
  assert res["feature_kind"] == "mean_shape"
  blank = dict(pairs, **{f"{v}_image": np.zeros_like(pairs[f"{v}_image"])
                         for v in ("source", "same", "diff")})
  again = matching.baseline_matching(blank, mean_shape)
  np.testing.assert_array_equal(again["diff_errors"], res["diff_errors"])
  with pytest.raises(ValueError, match="mean_shape"):
    matching.baseline_matching(pairs, mean_shape[:3])


class PositionalModel:
  """Content-independent one-hot positional features; records its inputs."""

  def __init__(self):
    self.calls = []

  def dense_features(self, params, images, kind, stride):
    del params, kind, stride
    # Called under jit: record the concrete images when the call runs.
    jax.debug.callback(lambda x: self.calls.append(np.asarray(x)), images)
    f = jnp.asarray(one_hot_positional())
    return jnp.broadcast_to(f, (images.shape[0],) + f.shape)


def test_evaluate_matching_matches_the_rounded_source_pixel():
  """Positional features: every point matches its own (nearest) pixel, so the
  error is the distance from the rounded source landmark to the target's;
  features are computed for the warped source view."""
  images, lms = faces(5, seed=7)
  arrays = {"image": images, "landmarks": lms}
  pairs = matching.make_pairs(images, lms, warp_kwargs=STRONG_DVE, seed=1)
  model = PositionalModel()
  examples = []
  res = matching.evaluate_matching(model, {}, arrays, seed=1,
                                   warp_kwargs=STRONG_DVE, batch_size=1,
                                   examples=examples)
  # Border padding: a landmark warped out of the frame reads the edge pixel.
  src = np.round(np.clip(pairs["source_points"].astype(np.float64), 0,
                         S - 1))
  for tag in ("same", "diff"):
    want = np.linalg.norm(src - pairs[f"{tag}_points"], axis=-1) * 70.0 / S
    np.testing.assert_allclose(res[f"{tag}_errors"], want, rtol=1e-5)
    assert res[tag] == pytest.approx(want.mean(), rel=1e-5)
  assert res["num_pairs"] == 2 and res["warp_type"] == "dve"
  # Feature calls per batch: source view, then same, then diff target.
  for i, view in enumerate(("source", "same", "diff")):
    np.testing.assert_array_equal(model.calls[i], pairs[f"{view}_image"][:1])
  # Examples: the first batch (one pair), both kinds.
  assert [e["kind"] for e in examples] == ["same", "diff"]
  for e in examples:
    np.testing.assert_array_equal(e["source_image"], pairs["source_image"][0])
    np.testing.assert_array_equal(e["matched_points"], src[0])
  np.testing.assert_allclose(examples[1]["target_points"],
                             pairs["diff_points"][0])
  # Precomputed pairs give the same result; with integer landmarks and a
  # zero warp the matcher is exactly the identity baseline.
  again = matching.evaluate_matching(PositionalModel(), {}, None, pairs=pairs)
  np.testing.assert_array_equal(again["same_errors"], res["same_errors"])
  images, lms = faces(4, seed=8, integer_points=True)
  zero_pairs = matching.make_pairs(images, lms, warp_kwargs=ZERO_DVE)
  got = matching.evaluate_matching(PositionalModel(), {}, None,
                                   pairs=zero_pairs)
  base = matching.baseline_matching(zero_pairs)
  np.testing.assert_allclose(got["diff_errors"], base["diff_errors"],
                             atol=1e-3)
  np.testing.assert_allclose(got["same_errors"], 0.0, atol=1e-3)


def test_write_result_keeps_the_per_pair_errors(tmp_path):
  images, lms = faces(4, seed=10)
  res = matching.baseline_matching(matching.make_pairs(images, lms))
  path = tmp_path / "out" / "matching.json"
  matching.write_result(res, str(path))
  back = json.loads(path.read_text())
  np.testing.assert_allclose(back["same_errors"], res["same_errors"])
  assert back["source_index"] == [0, 2] and back["diff"] == res["diff"]
  assert "identity" in matching.format_result(res)

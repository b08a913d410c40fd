"""Tests for sce_mae_jax.keypoint_head (regressors, training, TPS, NME).

References are float64 NumPy written here; the training tests use synthetic
feature maps in which each landmark is a bright spot in its own channel.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import dense
from landmarks import coordinates
from sce_mae_jax import keypoint_head as kh
from sce_mae_jax import tps


# ------------------------------------------------------------- helpers ----

def np_softmax_maps(logits):
  """`[B, h, w, M]` -> softmax over (h, w), float64."""
  z = logits - logits.max(axis=(1, 2), keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=(1, 2), keepdims=True)


def np_soft_argmax(p):
  """`[B, h, w, M]` -> `[B, M, 2]` on the cell centres `(2r + 1)/n - 1`."""
  _, h, w, _ = p.shape
  xs = (2 * np.arange(w) + 1) / w - 1
  ys = (2 * np.arange(h) + 1) / h - 1
  return np.stack([np.einsum("bhwm,w->bm", p, xs),
                   np.einsum("bhwm,h->bm", p, ys)], -1)


def spot_faces(n, cells=6, size=24, seed=0, noise=0.05):
  """Features `[n, cells, cells, 4]`: channel k holds a bilinear spot at
  landmark k (k = 0, 1, 2), channel 3 is a constant background; landmarks
  crop px `[n, 3, 2]` around a fixed shape."""
  rng = np.random.default_rng(seed)
  base = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.7]]) * size
  lms = (base + rng.uniform(-0.1, 0.1, (n, 3, 2)) * size).astype(np.float32)
  feats = noise * rng.normal(size=(n, cells, cells, 4)).astype(np.float32)
  feats[..., 3] += 1.0
  cell = (lms + 0.5) * cells / size - 0.5
  for i in range(n):
    for k in range(3):
      x0, y0 = np.floor(cell[i, k]).astype(int)
      fx, fy = cell[i, k] - (x0, y0)
      for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
          if 0 <= y0 + dy < cells and 0 <= x0 + dx < cells:
            feats[i, y0 + dy, x0 + dx, k] += 3.0 * wy * wx
  return feats, lms


EYES = (0, 1)


# --------------------------------------------------------- coordinates ----

@pytest.mark.parametrize("stride", [2, 4, 8])
def test_grid_centres_are_the_dense_feature_centres(stride):
  size, patch = 96, 8
  centres = dense.dense_feature_centres((size, size), patch, stride)
  norm = coordinates.normalise_landmarks(centres.astype(np.float64), size)
  g = coordinates.grid_centres(size // stride)
  np.testing.assert_allclose(norm[0, :, 0], g, atol=1e-6)   # x along a row
  np.testing.assert_allclose(norm[:, 0, 1], g, atol=1e-6)   # y down a column
  np.testing.assert_allclose(g, (2 * np.arange(size // stride) + 1) /
                             (size // stride) - 1, atol=1e-7)


def test_l2_normalise_groups():
  x = np.random.default_rng(1).normal(size=(2, 3, 3, 5))
  got = np.asarray(kh.l2_normalise(jnp.asarray(x, jnp.float32), (2,)))
  a, b = x[..., :2], x[..., 2:]
  ref = np.concatenate([a / np.linalg.norm(a, axis=-1, keepdims=True),
                        b / np.linalg.norm(b, axis=-1, keepdims=True)],
                       -1) / np.sqrt(2)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)


# --------------------------------------------------------------- heads ----

def dve_reference(feats, conv_w, reg_w, offset, mul, groups, per_landmark,
                  num_points):
  """DVE's forward in float64 (keypoint_prediction.py, `forward`), on
  features L2-normalised per group, cell-centre grid, plus our offset.

  conv_w `[C, M]`, reg_w `[2 K, 2 I]` as DVE's grouped `reg_conv` weight
  (output row 2k + o reads landmark k's flattened (x_1, y_1, ..., y_I)).
  """
  bounds = [0] + list(groups) + [feats.shape[-1]]
  parts = [feats[..., a:b] / np.linalg.norm(feats[..., a:b], axis=-1,
                                             keepdims=True)
           for a, b in zip(bounds[:-1], bounds[1:])]
  x = np.concatenate(parts, -1) / np.sqrt(len(parts))
  inter = np_soft_argmax(np_softmax_maps(mul * np.einsum("bhwc,cm->bhwm", x,
                                                         conv_w)))
  b, m, _ = inter.shape
  k = num_points
  per = m // k if per_landmark else m
  out = np.zeros((b, k, 2))
  for lm in range(k):
    maps = inter[:, lm * per:(lm + 1) * per] if per_landmark else inter
    flat = maps.reshape(b, 2 * per)           # (x_1, y_1, x_2, y_2, ...)
    for o in range(2):
      out[:, lm, o] = flat @ reg_w[2 * lm + o]
  return out + offset


@pytest.mark.parametrize("per_landmark", [True, False])
def test_intermediate_regressor_matches_dve_reference(per_landmark):
  k, i, c = 3, 4, 7
  head = kh.IntermediateKeypointRegressor(
      num_points=k, intermediate=i, per_landmark=per_landmark, softmax_mul=3.0,
      norm_groups=(3,))
  rng = np.random.default_rng(2)
  feats = rng.normal(size=(2, 5, 6, c))
  params = kh.init_params(head, jax.random.PRNGKey(0), feats)
  m = head.num_maps
  conv_w = rng.normal(size=(c, m))
  reg_w = rng.normal(size=(2 * k, 2 * (m // k if per_landmark else m)))
  offset = rng.normal(size=(k, 2))
  kernel = reg_w.reshape(k, 2, -1).transpose(0, 2, 1)   # [K, 2I, 2]
  params = {"params": {"maps": {"kernel": conv_w.reshape(1, 1, c, m)},
                       "readout": {"kernel": kernel, "offset": offset}}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  got = np.asarray(head.apply(params, jnp.asarray(feats, jnp.float32)))
  want = dve_reference(feats, conv_w, reg_w, offset, 3.0, (3,), per_landmark,
                       k)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_dense_readout_matches_reference():
  rng = np.random.default_rng(3)
  inter = rng.uniform(-1, 1, (2, 6, 2))
  readout = kh.PointReadout(num_points=3, grouped=False, readout_init="random")
  params = readout.init(jax.random.PRNGKey(0), jnp.asarray(inter, jnp.float32))
  kernel = rng.normal(size=(12, 6))
  offset = rng.normal(size=(3, 2))
  params = {"params": {"kernel": jnp.asarray(kernel, jnp.float32),
                       "offset": jnp.asarray(offset, jnp.float32)}}
  got = np.asarray(readout.apply(params, jnp.asarray(inter, jnp.float32)))
  want = (inter.reshape(2, 12) @ kernel).reshape(2, 3, 2) + offset
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("per_landmark", [True, False])
def test_mean_points_readout_starts_at_the_mean_intermediate_point(
    grouped, per_landmark):
  k, i = 3, 4
  m = k * i if per_landmark else i
  inter = np.random.default_rng(4).uniform(-1, 1, (2, m, 2))
  readout = kh.PointReadout(num_points=k, grouped=grouped,
                            per_landmark=per_landmark, use_offset=False)
  x = jnp.asarray(inter, jnp.float32)
  got = np.asarray(readout.apply(readout.init(jax.random.PRNGKey(0), x), x))
  if per_landmark:
    want = inter.reshape(2, k, i, 2).mean(axis=2)
  else:
    want = np.broadcast_to(inter.mean(axis=1, keepdims=True), (2, k, 2))
  np.testing.assert_allclose(got, want, atol=1e-6)


HEADS = {
    "intermediate": kh.IntermediateKeypointRegressor(num_points=3,
                                                     intermediate=4),
    "conv_block": kh.ConvBlockRegressor(num_points=3, intermediate=4,
                                        hidden=8),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_initial_prediction_is_the_mean_training_shape(name):
  feats, lms = spot_faces(16)
  mean_px = lms.astype(np.float64).mean(axis=0)
  mean = coordinates.normalise_landmarks(mean_px, 24)
  # readout "zero": every face's initial prediction is the mean shape.
  exact = HEADS[name].clone(readout_init="zero")
  params = kh.init_params(exact, jax.random.PRNGKey(0), feats, mean)
  pred = kh.predict(exact, params, feats, 24)
  np.testing.assert_allclose(pred, np.broadcast_to(mean_px, pred.shape),
                             atol=1e-4)
  # default "mean_points": the mean initial prediction is the mean shape.
  head = HEADS[name]
  params = kh.init_params(head, jax.random.PRNGKey(0), feats, mean)
  pred = kh.predict(head, params, feats, 24)
  np.testing.assert_allclose(pred.mean(axis=0), mean_px, atol=1e-3)
  if name == "intermediate":   # near-uniform maps: each face close to it.
    assert np.abs(pred - mean_px).max() < 0.5
  # ... and that is the NME of the trivial baseline.
  np.testing.assert_allclose(
      kh.nme_percent(kh.predict(exact, kh.init_params(
          exact, jax.random.PRNGKey(0), feats, mean), feats, 24), lms, EYES),
      kh.mean_shape_nme(lms, lms, EYES), rtol=1e-4)


# ------------------------------------------------------------ training ----

def test_epoch_batches_tile_the_faces_to_a_fixed_length():
  s = kh.TrainSettings(epoch_length=20, batch_size=4)
  assert kh.steps_per_epoch(3, s) == 4          # 3 faces x 6 = 18 samples.
  b = kh.epoch_batches(3, s, np.random.default_rng(0))
  assert b.shape == (4, 4)
  assert np.bincount(b.ravel(), minlength=3).max() <= 6
  one = kh.TrainSettings(epoch_length=0, batch_size=8)
  assert kh.steps_per_epoch(1, one) == 1        # tiled up to one batch.
  np.testing.assert_array_equal(
      kh.epoch_batches(1, one, np.random.default_rng(0)), np.zeros((1, 8)))
  assert kh.steps_per_epoch(100, one) == 12     # one pass, remainder dropped.


def test_piecewise_schedule_drops_at_fractions():
  s = kh.TrainSettings(learning_rate=1e-3)      # DVE: /10 at 100 and 250.
  sched = kh.lr_schedule(s, 300)
  np.testing.assert_allclose([float(sched(t)) for t in (0, 99, 100, 249, 250,
                                                        299)],
                             [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-5)
  cos = kh.lr_schedule(kh.TrainSettings(schedule="cosine"), 100)
  assert float(cos(0)) == pytest.approx(1e-3) and float(cos(100)) < 1e-5
  warm = kh.lr_schedule(kh.TrainSettings(schedule="constant",
                                         warmup_steps=4), 100)
  np.testing.assert_allclose([float(warm(t)) for t in (0, 1, 3, 50)],
                             [2.5e-4, 5e-4, 1e-3, 1e-3], rtol=1e-6)


@pytest.mark.parametrize("decoupled", [False, True])
def test_weight_decay_l2_or_decoupled_and_not_on_offsets(decoupled):
  params = {"kernel": jnp.array([1.0, -2.0]), "offset": jnp.array([3.0])}
  grads = {"kernel": jnp.array([0.5, 0.01]), "offset": jnp.array([0.2])}
  s = kh.TrainSettings(weight_decay=0.1, decoupled_weight_decay=decoupled,
                       amsgrad=False)
  tx = kh.update_direction(s)
  up, _ = tx.update(grads, tx.init(params), params)
  # First Adam step: m_hat / sqrt(v_hat) = sign of the gradient it sees.
  g = np.array([0.5, 0.01])
  p = np.array([1.0, -2.0])
  want = (np.sign(g) + 0.1 * p) if decoupled else np.sign(g + 0.1 * p)
  np.testing.assert_allclose(np.asarray(up["kernel"]), want, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(up["offset"]), [1.0], rtol=1e-5)


def test_regression_loss_is_dve_scaled_smooth_l1():
  pred = np.array([[[0.0, 0.05], [0.3, -0.2]]])
  target = np.zeros_like(pred)
  d = 10 * (pred - target)
  ref = np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5).mean()
  np.testing.assert_allclose(
      float(kh.regression_loss(jnp.asarray(pred), jnp.asarray(target))), ref,
      rtol=1e-6)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_fit_on_spots_reaches_low_error(name):
  feats, lms = spot_faces(32)
  val_f, val_l = spot_faces(64, seed=1)
  s = kh.TrainSettings(epochs=25, batch_size=8, learning_rate=1e-2,
                       schedule="cosine")
  res = kh.fit(HEADS[name], feats, lms, 24, s, val=(val_f, val_l),
               normaliser=EYES, eval_every=25)
  assert res.losses.shape == (100,)
  assert [e["epoch"] for e in res.history] == list(range(1, 26))
  assert "val_nme" in res.history[-1] and "val_nme" not in res.history[0]
  baseline = kh.mean_shape_nme(lms, val_l, EYES).mean()
  nme = kh.evaluate(HEADS[name], res.params, val_f, val_l, 24, EYES).mean()
  assert nme < 0.5 * baseline, (nme, baseline)
  assert res.history[-1]["val_nme"] == pytest.approx(nme, rel=1e-6)
  assert res.history[-1]["train_loss"] < 0.3 * res.history[0]["train_loss"]


def test_fit_few_faces_with_tps_augmentation():
  feats, lms = spot_faces(3)
  aug = kh.tps_augment(24, tps.random_tps_warp, control_sd=0.02,
                       rotation_sd_deg=2.0, scale_sd=0.02, translation_sd=0.02)
  s = kh.TrainSettings(epochs=2, epoch_length=32, batch_size=8,
                       learning_rate=1e-2, schedule="constant")
  res = kh.fit(HEADS["intermediate"], feats, lms, 24, s, augment=aug)
  assert res.losses.shape == (2 * (30 // 8),) and np.all(np.isfinite(
      res.losses))
  again = kh.fit(HEADS["intermediate"], feats, lms, 24, s, augment=aug)
  np.testing.assert_array_equal(res.losses, again.losses)  # seeded.


# -------------------------------------------------------- augmentation ----

def test_tps_augment_with_identity_warp_returns_the_input():
  feats, lms = spot_faces(2)
  target = coordinates.normalise_landmarks(lms, 24)
  aug = kh.tps_augment(24, tps.random_tps_warp, control_sd=0.0)
  f, l = aug(jax.random.PRNGKey(0), jnp.asarray(feats), jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(f), feats, atol=1e-4)
  np.testing.assert_allclose(np.asarray(l), target, atol=1e-5)


def test_tps_augment_moves_features_and_landmarks_together():
  """A warp translating the image by 2 cells moves the cached map by 2
  cells and the landmarks by the same 8 px, so a landmark's spot stays
  under it."""
  size, cells = 24, 6                       # 4 px cells.
  src = tps.control_grid(3)
  shift = 8.0 * 2.0 / (size - 1)            # 8 px in the TPS frame.
  warp = tps.make_tps_warp(src, src + jnp.array([shift, 0.0]))
  fn = lambda key, **_: warp
  aug = kh.TpsAugment(size, fn, (), "border")
  feats = np.zeros((1, cells, cells, 1), np.float32)
  feats[0, 3, 1, 0] = 1.0                   # spot at cell (row 3, col 1).
  lms = np.array([[[1.5 * 4, 3.5 * 4]]], np.float32) - 0.5   # its centre.
  f, l = aug(jax.random.PRNGKey(0), jnp.asarray(feats),
             jnp.asarray(coordinates.normalise_landmarks(lms, size)))
  f = np.asarray(f)
  assert f[0, 3, 3, 0] == pytest.approx(1.0, abs=1e-4)
  assert np.abs(f).sum() == pytest.approx(1.0, abs=1e-3)
  np.testing.assert_allclose(coordinates.denormalise_landmarks(np.asarray(l), size),
                             lms + np.array([8.0, 0.0]), atol=1e-3)


@pytest.mark.parametrize("warp", ["random_tps_warp", "random_dve_warp"])
def test_tps_augment_keeps_each_spot_under_its_landmark(warp):
  """Random warps (DVE's few-shot WarperSingle strength, doubled): the
  brightest cell of landmark k's channel after the warp is the cell of its
  warped landmark, or a neighbour."""
  if not hasattr(tps, warp):
    pytest.skip(f"tps.{warp} not available")
  kwargs = ({"control_sd": 0.01, "rotation_sd_deg": 4.0, "scale_sd": 0.04,
             "translation_sd": 0.04} if warp == "random_tps_warp" else
            {"warpsd_all": 0.001, "warpsd_subset": 0.0, "transsd": 0.04,
             "scalesd": 0.04, "rotsd": 4.0})
  aug = kh.tps_augment(24, getattr(tps, warp), **kwargs)
  feats, lms = spot_faces(16, noise=0.0)
  f, l = aug(jax.random.PRNGKey(3), jnp.asarray(feats),
             jnp.asarray(coordinates.normalise_landmarks(lms, 24)))
  f, l = np.asarray(f), coordinates.denormalise_landmarks(np.asarray(l), 24)
  assert np.all(np.isfinite(f)) and np.all(np.isfinite(l))
  assert np.abs(l - lms).max() > 0.3          # the warps did move points.
  cell = np.round((l + 0.5) * 6 / 24 - 0.5)   # nearest cell (x, y).
  for i in range(16):
    for k in range(3):
      r, c = np.unravel_index(np.argmax(f[i, :, :, k]), (6, 6))
      assert abs(c - cell[i, k, 0]) <= 1 and abs(r - cell[i, k, 1]) <= 1


# ----------------------------------------------------------------- NME ----

def test_nme_and_mean_shape_nme_hand_computed():
  a = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
  # Every point 2 px off, eye distance 20 px -> 10 %.
  np.testing.assert_allclose(kh.nme_percent(a[None] + [2.0, 0.0], a[None]),
                             [10.0], rtol=1e-12)
  # Two faces 4 px apart in x: their mean is 2 px from a -> 10 %; on a face
  # shifted by (3, 4) from that mean: 5 px per point -> 25 %.
  train = np.stack([a, a + np.array([4.0, 0.0], np.float32)])
  val = np.stack([a, a + np.array([5.0, 4.0], np.float32)])
  np.testing.assert_allclose(kh.mean_shape_nme(train, val, "five_point"),
                             [10.0, 25.0], rtol=1e-12)
  # Named normalisers and (left, right) index groups.
  assert kh.eye_indices("300w") == (36, 45)
  np.testing.assert_allclose(
      kh.nme_percent(a[None] + [2.0, 0.0], a[None], ((0, 3), (1, 4))),
      [100 * 2 / np.linalg.norm(a[[0, 3]].mean(0) - a[[1, 4]].mean(0))])
  with pytest.raises(ValueError, match="normaliser"):
    kh.nme_percent(a[None], a[None], "nope")

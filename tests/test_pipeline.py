"""Tests for data.pipeline: determinism, resume, sharding, padding, bad images."""

import csv
import logging
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from data import pipeline
from data import records
from data import schemes
from data import transforms as T
from training import loop

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO_ROOT, "..", "shared", "data", "yt68")
S = 64


def _yt68_records(n, split="val"):
  path = os.path.join(YT68, f"{split}.csv")
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path}")
  with open(path) as f:
    rows = list(csv.reader(f))[1:n + 1]
  return [records.FaceRecord(
      os.path.join(YT68, "images", r[0]),
      np.array([float(v) for v in r[1:]], np.float32).reshape(68, 2))
          for r in rows]


def _take(loader, n, state=None):
  it = iter(loader)
  if state is not None:
    it.set_state(state)
  return [next(it) for _ in range(n)], it


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _train_loader(recs, seed=3, **kw):
  kw.setdefault("shard_index", 0)
  kw.setdefault("shard_count", 1)
  return pipeline.make_landmark_loader(recs, crop_size=S, train=True,
                                       batch_size=4, seed=seed, **kw)


def test_same_seed_same_batches_and_epochs_reshuffle():
  recs = _yt68_records(12)
  a, _ = _take(_train_loader(recs), 6)
  b, _ = _take(_train_loader(recs), 6)
  _assert_batches_equal(a, b)
  c, _ = _take(_train_loader(recs, seed=4), 1)
  assert not np.array_equal(a[0]["image"], c[0]["image"])
  # 12 records, batch 4: batches 0-2 are epoch 1, 3-5 epoch 2; each epoch is a
  # permutation of all records, and the two orders differ.
  e1 = np.concatenate([x["index"] for x in a[:3]])
  e2 = np.concatenate([x["index"] for x in a[3:]])
  assert sorted(e1) == sorted(e2) == list(range(12))
  assert not np.array_equal(e1, e2)


def test_resume_mid_epoch_gives_the_same_remaining_batches():
  recs = _yt68_records(12)
  first, it = _take(_train_loader(recs), 2)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]  # crosses the epoch boundary
  resumed, _ = _take(_train_loader(recs), 3, state=state)
  _assert_batches_equal(resumed, expected)
  assert not np.array_equal(first[0]["index"], expected[0]["index"])


def test_batch_geometry_is_consistent():
  recs = _yt68_records(8)
  (batch,), _ = _take(_train_loader(recs), 1)
  assert batch["image"].shape == (4, S, S, 3) and batch["image"].dtype == np.uint8
  for i in range(4):
    back = T.apply_affine(batch["crop_to_image"][i], batch["landmarks"][i])
    np.testing.assert_allclose(back, batch["landmarks_original"][i], atol=2e-3)
    rec = recs[batch["index"][i]]
    # landmarks_original is the record's points, flip-permuted when flipped.
    flipped = np.linalg.det(batch["crop_to_image"][i][:, :2]) < 0
    perm = np.asarray(schemes.get_scheme(68).flip_permutation)
    want = rec.landmarks[perm] if flipped else rec.landmarks
    np.testing.assert_allclose(batch["landmarks_original"][i], want, atol=1e-4)
  assert batch["valid"].all() and not batch["decode_failed"].any()


def test_eval_pads_last_batch_and_maps_back_exactly():
  recs = _yt68_records(10)
  loader = pipeline.make_eval_loader(recs, crop_size=S, batch_size=4,
                                     shard_index=0, shard_count=1)
  batches = list(loader)
  assert len(batches) == 3
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(index, list(range(10)) + [-1, -1])
  np.testing.assert_array_equal(valid, [True] * 10 + [False] * 2)
  b = batches[0]
  for i in range(4):
    np.testing.assert_allclose(
        T.apply_affine(b["crop_to_image"][i], b["landmarks"][i]),
        recs[i].landmarks, atol=2e-3)
  # Deterministic: the same crop as transforms.crop_face.
  c, s = T.record_center_scale(recs[0], "points")
  crop, lm, _, _ = T.crop_face(recs[0].load_image(), recs[0].landmarks, c, s, S)
  np.testing.assert_array_equal(b["image"][0], crop)
  np.testing.assert_allclose(b["landmarks"][0], lm, atol=1e-5)


def test_sharding_two_processes_disjoint_and_covering():
  recs = _yt68_records(13)
  # Evaluation: padded to 16 = 2 shards x 2 batches x 4; every record once.
  seen = []
  for shard in (0, 1):
    loader = pipeline.make_eval_loader(recs, crop_size=S, batch_size=4,
                                       shard_index=shard, shard_count=2)
    idx = np.concatenate([b["index"][b["valid"]] for b in loader])
    seen.append(set(idx.tolist()))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(13))
  # Training: one epoch per shard (6 of 13 each, grain drops the remainder).
  train = []
  for shard in (0, 1):
    loader = _train_loader(recs[:12], shard_index=shard, shard_count=2)
    bs, _ = _take(loader, 3)  # 12 / 2 = 6 per shard per epoch, 2 epochs
    idx = np.concatenate([b["index"] for b in bs])
    assert sorted(idx[:6]) == sorted(idx[6:])  # the shard repeats per epoch
    train.append(set(idx.tolist()))
  assert not train[0] & train[1] and train[0] | train[1] == set(range(12))


def test_bad_image_is_reported_and_replaced(tmp_path, caplog):
  recs = _yt68_records(6)
  bad = tmp_path / "corrupt.jpg"
  bad.write_bytes(b"not a jpeg at all")
  recs[2] = records.FaceRecord(str(bad), recs[2].landmarks)
  with caplog.at_level(logging.WARNING):
    loader = pipeline.make_eval_loader(recs, crop_size=S, batch_size=6,
                                       shard_index=0, shard_count=1)
    (batch,) = list(loader)
  assert str(bad) in caplog.text
  np.testing.assert_array_equal(batch["valid"], [1, 1, 0, 1, 1, 1])
  np.testing.assert_array_equal(batch["decode_failed"], [0, 0, 1, 0, 0, 0])
  # Training: the slot holds the next record, flagged.
  bs, _ = _take(_train_loader(recs, seed=0), 3)  # 12 samples = 2 epochs
  flagged = np.concatenate([b["decode_failed"] for b in bs])
  index = np.concatenate([b["index"] for b in bs])
  assert flagged.sum() == 2  # once per epoch
  np.testing.assert_array_equal(index[flagged], [3, 3])
  assert 2 not in index


def test_workers_give_the_same_batches():
  recs = _yt68_records(8)
  a, _ = _take(_train_loader(recs, seed=5), 2)
  b, _ = _take(_train_loader(recs, seed=5, num_workers=1), 2)
  _assert_batches_equal(a, b)


def test_workers_survive_a_stop_signal_and_keep_the_batch_order():
  # A scheduler's SIGTERM reaches the whole process group; the workers must
  # leave it to the main process (which saves a checkpoint, then closes them)
  # and go on serving the same batches.
  recs = _yt68_records(8)
  want, _ = _take(_train_loader(recs, seed=5), 4)
  it = iter(_train_loader(recs, seed=5, num_workers=1))
  got = [next(it) for _ in range(2)]
  workers = multiprocessing.active_children()
  assert workers
  for w in workers:
    os.kill(w.pid, signal.SIGTERM)
  time.sleep(0.5)
  assert all(w.is_alive() for w in workers)
  got += [next(it) for _ in range(2)]
  loop.close_iterator(it)
  _assert_batches_equal(want, got)


# ----------------------------------------------------------------- SCE-MAE --


def _blob(h, w, x0, y0, sigma=3.0):
  yy, xx = np.mgrid[0:h, 0:w]
  g = 250.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
  return np.repeat(g[..., None], 3, -1).round().astype(np.uint8)


def _centroid(gray, near, radius):
  yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
  w = gray * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) < radius ** 2)
  return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_dve_celeba_crop_geometry():
  lm = np.array([[70.3, 111.6], [108.2, 112.4], [89.0, 135.0],
                 [73.5, 152.2], [105.1, 151.7]], np.float32)
  for k in range(5):
    image = _blob(218, 178, *lm[k])
    crop, pts, crop_to_image = pipeline.sce_crop(image, lm, "dve_celeba")
    assert crop.shape == (96, 96, 3)
    # Hand-computed: rows 30.., zoom 136/178 (pixel centres), minus 20.
    z = 136 / 178
    want = np.stack([(lm[:, 0] + 0.5) * z - 0.5 - 20,
                     (lm[:, 1] - 30 + 0.5) * z - 0.5 - 20], -1)
    np.testing.assert_allclose(pts, want, atol=1e-4)
    np.testing.assert_allclose(T.apply_affine(crop_to_image, pts), lm, atol=1e-3)
    found = _centroid(crop[..., 0].astype(float), pts[k], 10)
    np.testing.assert_allclose(found, pts[k], atol=0.1)
  with pytest.raises(ValueError, match="178x218"):
    pipeline.sce_crop(np.zeros((100, 100, 3), np.uint8), lm, "dve_celeba")


def test_sce_points_crop_and_loaders():
  recs = _yt68_records(6)
  image = recs[0].load_image()
  crop, pts, inv = pipeline.sce_crop(image, recs[0].landmarks, "points")
  span = pts.max(0) - pts.min(0)
  assert abs(span.max() - 96 / 1.25) < 1.0  # the box fills 1/margin of 96 px
  np.testing.assert_allclose(T.apply_affine(inv, pts), recs[0].landmarks,
                             atol=1e-3)
  loader = pipeline.make_sce_landmark_loader(recs, train=True, batch_size=3,
                                             seed=0, shard_index=0, shard_count=1)
  (b,), _ = _take(loader, 1)
  assert b["image"].shape == (3, 96, 96, 3)
  for i in range(3):
    np.testing.assert_allclose(T.apply_affine(b["crop_to_image"][i], b["landmarks"][i]),
                               b["landmarks_original"][i], atol=2e-3)
  mk = lambda: pipeline.make_pretrain_loader(recs, batch_size=4, seed=1,
                                             shard_index=0, shard_count=1)
  p1, _ = _take(mk(), 2)
  p2, _ = _take(mk(), 2)
  _assert_batches_equal(p1, p2)
  assert list(p1[0]) == ["image"] and p1[0]["image"].shape == (4, 96, 96, 3)
  assert not np.array_equal(p1[0]["image"], p1[1]["image"])


def test_random_resized_crop_bounds_and_flip():
  ramp = np.tile(np.arange(120, dtype=np.uint8)[None, :, None], (100, 1, 3))
  rng = np.random.default_rng(0)
  flips = 0
  for _ in range(20):
    out = pipeline.random_resized_crop(ramp, rng)
    assert out.shape == (96, 96, 3)
    row = out[48, :, 0].astype(int)
    flips += row[5] > row[-5]  # a flipped ramp decreases
  assert 3 <= flips <= 17


# ------------------------------------------- device-mode pre-crops (#18) --


DS = 128  # device-mode tests: yt68 crops of 128 px take both pre-crop paths.


def _device_loader(recs, seed=3, crop_size=DS, **kw):
  kw.setdefault("shard_index", 0)
  kw.setdefault("shard_count", 1)
  return pipeline.make_landmark_loader(recs, crop_size=crop_size, train=True,
                                       batch_size=4, seed=seed,
                                       augment_on="device", **kw)


def _paths(batch):
  """Per sample: "copy" (pre-crop = original pixels, the crop enlarges the
  face) or "resampled" (pre-crop at crop scale)."""
  scale = batch["precrop_to_crop"][:, 0, 0]
  return ["resampled" if v == 1 else "copy" for v in scale]


def test_device_mode_precrops_are_deterministic_and_resume():
  """augment_on="device": the training batches are un-augmented pre-crops
  (2 S px, the train step augments them), in the host mode's record order;
  the same seed gives the same batches and a resumed iterator the same
  remaining batches."""
  recs = _yt68_records(12)
  a, it = _take(_device_loader(recs), 2)
  assert a[0]["image"].shape == (4, 2 * DS, 2 * DS, 3)
  assert {"precrop_to_crop", "precrop_box"} <= set(a[0])
  assert set(_paths(a[0]) + _paths(a[1])) == {"copy", "resampled"}
  state = it.get_state()
  expected = [next(it) for _ in range(3)]          # crosses an epoch
  resumed, _ = _take(_device_loader(recs), 3, state=state)
  _assert_batches_equal(resumed, expected)
  again, _ = _take(_device_loader(recs), 2)
  _assert_batches_equal(again, a)
  host, _ = _take(pipeline.make_landmark_loader(
      recs, crop_size=DS, train=True, batch_size=4, seed=3, shard_index=0,
      shard_count=1), 5)
  np.testing.assert_array_equal(
      np.concatenate([b["index"] for b in a + expected]),
      np.concatenate([b["index"] for b in host]))
  # No randomness on the host: another seed changes the order only.
  other, _ = _take(_device_loader(recs, seed=4), 3)
  by_index = {int(i): b["image"][j] for b in a + expected
              for j, i in enumerate(b["index"])}
  for b in other:
    for j, i in enumerate(b["index"]):
      np.testing.assert_array_equal(b["image"][j], by_index[int(i)])


@pytest.mark.parametrize("crop_size", [S, DS])
def test_device_mode_plain_crop_and_eval_batches_equal_host_mode(crop_size):
  """The pre-crop holds the host's plain crop in its middle (identity
  geometry in the device warp = the crop of the decoded pixels within 1
  grey level; faces more than 2x larger than the crop are decoded at
  1 / r, so that crop is of the reduced decode), its points map back to
  the record's, and evaluation batches do not depend on augment_on."""
  import jax  # pylint: disable=g-import-not-at-top
  from data import device_augment  # pylint: disable=g-import-not-at-top
  recs = _yt68_records(8)
  (batch,), _ = _take(_device_loader(recs, crop_size=crop_size), 1)
  for i in range(4):
    np.testing.assert_allclose(
        T.apply_affine(batch["crop_to_image"][i], batch["landmarks"][i]),
        recs[batch["index"][i]].landmarks, atol=2e-3)
  da = device_augment.DeviceAugment(crop_size, 2 * crop_size)
  base = jax.tree.map(np.asarray, jax.jit(da.base_crop)(batch))
  make = pipeline._StarMake(pipeline.CropConfig(  # pylint: disable=protected-access
      crop_size=crop_size, num_points=68, train=True, crop_mode="points",
      augment_on="device", precrop_size=2 * crop_size))
  reductions = []
  for i in range(4):
    rec = recs[batch["index"][i]]
    c, s = T.record_center_scale(rec, "points")
    crop_m = T.crop_matrix(c, s, crop_size)
    decoded = make.load(rec)
    r = getattr(decoded, "reduction", 1)
    reductions.append(r)
    crop = T.warp_affine(getattr(decoded, "pixels", decoded),
                         T.compose(crop_m, T.reduction_map(r)), crop_size)
    lm = T.apply_affine(crop_m, rec.landmarks)
    c2i = T.invert_affine(crop_m)
    diff = np.abs(base["image"][i].astype(int) - crop.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    np.testing.assert_allclose(base["landmarks"][i], lm, atol=2e-3)
    np.testing.assert_allclose(base["crop_to_image"][i], c2i, atol=1e-4)
  if crop_size == S:   # faces > 2x the crop decoded at 1/2, and the others
    assert 1 in reductions and 2 in reductions, reductions
  else:                # both pre-crop paths
    assert set(_paths(batch)) == {"copy", "resampled"}, _paths(batch)
  evals = [list(pipeline.make_eval_loader(
      recs, crop_size=crop_size, batch_size=4, shard_index=0,
      shard_count=1, augment_on=mode)) for mode in ("host", "device")]
  _assert_batches_equal(*evals)


def test_device_mode_bad_settings_are_user_errors():
  from training import errors  # pylint: disable=g-import-not-at-top
  recs = _yt68_records(4)
  with pytest.raises(errors.UserError, match="augment_on"):
    _train_loader(recs, augment_on="accelerator")
  with pytest.raises(errors.UserError, match="precrop_margin"):
    _train_loader(recs, augment_on="device", precrop_margin=0.5)


def test_device_mode_precrop_cache_gives_the_uncached_batches(tmp_path,
                                                              caplog):
  """data/precrop_cache.py: the pre-crops built once into array_record
  (through a tfds builder) give the uncached loader's batches bit for bit,
  replaced undecodable images included, and resume from its iterator
  state; a changed record builds a new cache, the old one is reused."""
  from data import precrop_cache  # pylint: disable=g-import-not-at-top
  recs = _yt68_records(8)
  bad = tmp_path / "corrupt.jpg"
  bad.write_bytes(b"not a jpeg")
  recs[5] = records.FaceRecord(str(bad), recs[5].landmarks)
  cache = str(tmp_path / "cache")
  with caplog.at_level(logging.WARNING):
    cached = _device_loader(recs, precrop_cache_dir=cache)
  assert str(bad) in caplog.text                  # reported when built
  plain, it = _take(_device_loader(recs), 3)
  got, it_cached = _take(cached, 3)
  _assert_batches_equal(got, plain)
  flagged = np.concatenate([b["decode_failed"] for b in got])
  assert flagged.sum() == 1
  state = it.get_state()
  assert it_cached.get_state() == state
  more, _ = _take(_device_loader(recs, precrop_cache_dir=cache), 2,
                  state=state)
  _assert_batches_equal(more, [next(it) for _ in range(2)])
  keys = os.listdir(os.path.join(cache, precrop_cache.BUILDER_NAME))
  assert len(keys) == 1
  moved = list(recs)
  moved[0] = records.FaceRecord(recs[0].image_path, recs[0].landmarks + 1)
  _device_loader(moved, precrop_cache_dir=cache)
  assert len(os.listdir(os.path.join(cache, precrop_cache.BUILDER_NAME))) == 2

"""Tests of bench/data_pipeline.py's --cache_breakdown (real yt68 frames)."""

import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
sys.path.insert(0, os.path.join(REPO, "bench"))
import data_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_uncompressed_copy_holds_the_same_samples(tmp_path):
  if not os.path.exists(os.path.join(YT68, "train.csv")):
    pytest.skip("real data not found")
  from data import device_augment  # pylint: disable=g-import-not-at-top
  from data import precrop_cache  # pylint: disable=g-import-not-at-top
  recs = data_pipeline.yt68_records(YT68, "train", 6)
  crop = 64
  rows = data_pipeline.cache_breakdown(recs, crop, 2, str(tmp_path), 12)
  assert [r[0] for r in rows] == ["as built (compressed)",
                                  "uncompressed copy"]
  p = device_augment.precrop_size(crop)
  (_, kb_built, *_), (_, kb_plain, *_) = rows
  assert kb_plain * 1e3 >= p * p * 3 and kb_built < kb_plain  # raw, packed.
  assert all(v > 0 for r in rows for v in r[2:])
  key = precrop_cache.cache_key(
      recs, data_pipeline._star_make(crop, "device").config)  # pylint: disable=protected-access
  built = precrop_cache.CachedPrecrops(str(tmp_path), key, len(recs))
  plain = precrop_cache.CachedPrecrops(str(tmp_path / "uncompressed"), key,
                                       len(recs))
  for i in range(len(recs)):
    a, b = built(i), plain(i)
    assert sorted(a) == sorted(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)

"""Tests of data/precrop_cache.py's cache key (no cache is built here; the
build and read-back are tested through the loader in tests/test_pipeline.py)."""

import functools

import numpy as np
import pytest

from data import device_augment
from data import pipeline
from data import precrop_cache
from data import records
from data.synthetic import render
from training import errors


def _config():
  return pipeline.CropConfig(crop_size=64, num_points=68, train=True,
                             crop_mode="points", augment_on="device",
                             precrop_size=device_augment.precrop_size(64))


def _record(loader, key=0):
  return records.FaceRecord("synthetic://x", np.zeros((68, 2), np.float32),
                            image_key=key, image_loader=loader)


class _NoRepr:

  def __call__(self, record):
    return np.zeros((8, 8, 3), np.uint8)


def _render(record, size):
  return np.zeros((size, size, 3), np.uint8)


def test_key_is_stable_for_loaders_with_a_settings_repr():
  a = precrop_cache.cache_key([_record(render.SyntheticImageLoader(0, 96))],
                              _config())
  b = precrop_cache.cache_key([_record(render.SyntheticImageLoader(0, 96))],
                              _config())
  other = precrop_cache.cache_key(
      [_record(render.SyntheticImageLoader(1, 96))], _config())
  assert a == b != other and len(a) == 16


@pytest.mark.parametrize("loader", [
    _NoRepr(), lambda record: None, functools.partial(_render, size=8)])
def test_loaders_whose_repr_is_an_address_are_refused(loader):
  with pytest.raises(errors.UserError, match="no stable repr.*__repr__"):
    precrop_cache.cache_key([_record(loader)], _config())

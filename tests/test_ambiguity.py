"""Tests of data/ambiguity.py: label noise along / across the face curves."""

import dataclasses

from ml_collections import config_dict
import numpy as np
import pytest

from data import ambiguity
from data import records
from training import errors

JAW = list(range(17))
BROWS = (list(range(17, 22)), list(range(22, 27)))
NOSE = list(range(27, 31))


def _face(rng, scale=1.0, shift=(0.0, 0.0)):
  """A 68-point face: the jaw a lower half ellipse, brows arcs, rest random."""
  p = rng.uniform(30, 70, (68, 2))
  theta = np.linspace(np.pi, 0, 17) + rng.normal(0, 0.02, 17)
  p[:17] = np.stack([50 + 40 * np.cos(theta), 45 + 45 * np.sin(theta)], -1)
  p[17:22] = np.stack([np.linspace(20, 42, 5), 30 - 3 * np.sin(
      np.linspace(0, np.pi, 5))], -1)
  p[22:27] = np.stack([np.linspace(58, 80, 5), 30 - 3 * np.sin(
      np.linspace(0, np.pi, 5))], -1)
  p[27:31] = np.stack([50 + rng.normal(0, 0.5, 4), np.linspace(38, 55, 4)], -1)
  p[36] = (28.0, 40.0)
  p[45] = (72.0, 41.0)
  return (p * scale + np.asarray(shift)).astype(np.float32)


def _np_tangents(c):
  """float64 reference: central differences inside, one-sided at the ends."""
  c = np.asarray(c, np.float64)
  out = []
  for k in range(len(c)):
    a, b = c[max(k - 1, 0)], c[min(k + 1, len(c) - 1)]
    d = b - a
    out.append(d / np.hypot(*d))
  return np.array(out)


def _records(n, seed=0, folder="/data/images"):
  rng = np.random.default_rng(seed)
  return [records.FaceRecord(
      image_path=f"{folder}/face_{i:04d}.jpg",
      landmarks=_face(rng, scale=rng.uniform(0.8, 2.5)),
      visible=np.ones(68, bool), subset="train") for i in range(n)]


# --------------------------------------------------------------- curves ----

def test_tangents_of_a_hand_computed_polyline():
  pts = np.array([[0, 0], [1, 0], [2, 1], [2, 3]], np.float64)
  t = ambiguity.curve_tangents(pts, [0, 1, 2, 3])
  want = np.array([[1, 0], np.array([2, 1]) / np.sqrt(5),
                   np.array([1, 3]) / np.sqrt(10), [0, 1]])
  np.testing.assert_allclose(t, want, atol=1e-12)
  n = ambiguity.curve_normals(pts, [0, 1, 2, 3])
  np.testing.assert_allclose(n, np.stack([-want[:, 1], want[:, 0]], -1),
                             atol=1e-12)
  # Index order is the curve order: reversed indices flip the tangents.
  np.testing.assert_allclose(ambiguity.curve_tangents(pts, [3, 2, 1, 0]),
                             -want[::-1], atol=1e-12)


def test_tangents_batch_and_degenerate_neighbours():
  rng = np.random.default_rng(0)
  faces = np.stack([_face(rng) for _ in range(3)])
  t = ambiguity.curve_tangents(faces, JAW)
  for f in range(3):
    np.testing.assert_allclose(t[f], _np_tangents(faces[f, :17]), atol=1e-6)
  # Coinciding end neighbours: the one-sided difference is zero, the
  # tangent falls back to the first -> last chord (a unit vector).
  pts = np.array([[0, 0], [0, 0], [3, 4]], np.float64)
  t = ambiguity.curve_tangents(pts, [0, 1, 2])
  np.testing.assert_allclose(t[0], [0.6, 0.8])
  np.testing.assert_allclose(np.linalg.norm(t, axis=-1), 1.0)


def test_groups_come_from_the_scheme_edges():
  assert ambiguity.group_curves("jaw") == (tuple(JAW),)
  assert ambiguity.group_curves("brows") == tuple(tuple(b) for b in BROWS)
  assert ambiguity.group_curves("nose_bridge") == (tuple(NOSE),)


# ----------------------------------------------------------- perturbation ----

@pytest.mark.parametrize("direction", ["tangent", "normal"])
def test_moves_exactly_sigma_iod_z_along_the_direction(direction):
  rng = np.random.default_rng(1)
  p = _face(rng, scale=1.7)
  out = ambiguity.perturb_along_curves(
      p, groups=("jaw",), sigma=0.07, direction=direction,
      rng=np.random.default_rng(5))
  iod = np.hypot(*(p[45].astype(np.float64) - p[36]))   # outer eye corners.
  z = np.random.default_rng(5).standard_normal(17)       # one draw per point.
  t = _np_tangents(p[:17])
  n = np.stack([-t[:, 1], t[:, 0]], -1)
  u, other = (t, n) if direction == "tangent" else (n, t)
  d = out[:17].astype(np.float64) - p[:17]
  np.testing.assert_allclose(d, (0.07 * iod * z)[:, None] * u, atol=2e-4)
  # No component in the other direction (float32 rounding of the output).
  assert np.max(np.abs(np.sum(d * other, -1))) < 1e-4
  np.testing.assert_array_equal(out[17:], p[17:])        # others untouched.
  assert out.dtype == p.dtype


def test_brows_are_two_curves_and_other_points_stay():
  rng = np.random.default_rng(2)
  p = _face(rng)
  out = ambiguity.perturb_along_curves(
      p, groups=("brows",), sigma=0.1, direction="tangent",
      rng=np.random.default_rng(0))
  moved = np.flatnonzero(np.any(out != p, axis=-1))
  assert set(moved) <= set(range(17, 27)) and len(moved) == 10
  for brow in BROWS:
    t = _np_tangents(p[brow])   # point 21 uses 20 -> 21, never 22.
    d = out[brow].astype(np.float64) - p[brow]
    assert np.max(np.abs(d[:, 0] * t[:, 1] - d[:, 1] * t[:, 0])) < 1e-4
  both = ambiguity.perturb_along_curves(
      p, groups=("jaw", "nose_bridge"), sigma=0.1, direction="normal",
      rng=np.random.default_rng(0))
  moved = set(np.flatnonzero(np.any(both != p, axis=-1)))
  assert moved == set(JAW) | set(NOSE)


def test_sigma_zero_is_the_identity():
  p = _face(np.random.default_rng(3))
  out = ambiguity.perturb_along_curves(
      p, groups=("jaw",), sigma=0.0, direction="normal",
      rng=np.random.default_rng(0))
  np.testing.assert_array_equal(out, p)
  assert out is not p
  recs = _records(4)
  same = ambiguity.apply_to_records(recs, ambiguity.LabelNoise(sigma=0.0))
  assert all(a is b for a, b in zip(same, recs))


def test_magnitude_distribution_matches_sigma_times_iod():
  recs = _records(500)
  sigma = 0.08
  noisy = ambiguity.apply_to_records(
      recs, ambiguity.LabelNoise(sigma=sigma, direction="tangent", seed=3))
  zs = []
  for r, q in zip(recs, noisy):
    p = r.landmarks.astype(np.float64)
    iod = np.hypot(*(p[45] - p[36]))
    d = q.landmarks[:17].astype(np.float64) - p[:17]
    zs.append(np.sum(d * _np_tangents(p[:17]), -1) / iod)
  zs = np.concatenate(zs)                     # 8,500 draws.
  # std of a sample std of 8.5k normals: ~0.8 %; mean: sigma / 92.
  assert abs(zs.std() / sigma - 1) < 0.04
  assert abs(zs.mean()) < 4 * sigma / np.sqrt(zs.size)


def test_sigma_and_direction_reuse_the_same_draws():
  recs = _records(5)
  def disp(**kw):
    out = ambiguity.apply_to_records(recs, ambiguity.LabelNoise(**kw))
    return np.stack([o.landmarks.astype(np.float64) - r.landmarks
                     for o, r in zip(out, recs)])
  small = disp(sigma=0.05, direction="tangent")
  large = disp(sigma=0.1, direction="tangent")
  normal = disp(sigma=0.05, direction="normal")
  np.testing.assert_allclose(large, 2 * small, atol=1e-4)
  # Same |displacement| per point, rotated by 90 degrees.
  np.testing.assert_allclose(np.linalg.norm(normal, axis=-1),
                             np.linalg.norm(small, axis=-1), atol=1e-4)
  np.testing.assert_allclose(normal[..., 0], -small[..., 1], atol=1e-4)


def test_records_reproducible_seeded_and_keyed_by_face():
  recs = _records(6)
  settings = ambiguity.LabelNoise(sigma=0.1, seed=7)
  a = ambiguity.apply_to_records(recs, settings)
  b = ambiguity.apply_to_records(recs, settings)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x.landmarks, y.landmarks)
  c = ambiguity.apply_to_records(recs, dataclasses.replace(settings, seed=8))
  assert all(np.any(x.landmarks != y.landmarks) for x, y in zip(a, c))
  # Another spelling of the data root gives the same draws.
  other_root = _records(6, folder="../shared/data/yt68/images")
  d = ambiguity.apply_to_records(other_root, settings)
  for x, y in zip(a, d):
    np.testing.assert_array_equal(x.landmarks, y.landmarks)
  # Faces draw independently: no two faces share a displacement pattern.
  disp = [x.landmarks[:17] - r.landmarks[:17] for x, r in zip(a, recs)]
  assert len({tuple(np.round(v[:, 0], 4)) for v in disp}) == len(recs)
  # Originals untouched, everything but the landmarks carried over.
  fresh = _records(6)
  for r, f, x in zip(recs, fresh, a):
    np.testing.assert_array_equal(r.landmarks, f.landmarks)
    assert (x.image_path, x.subset) == (r.image_path, r.subset)
    assert x.visible is r.visible


def test_invisible_points_do_not_move_and_do_not_shift_other_draws():
  rec = _records(1)[0]
  hidden = rec.visible.copy()
  hidden[[3, 8]] = False
  rec_hidden = dataclasses.replace(rec, visible=hidden)
  settings = ambiguity.LabelNoise(sigma=0.1, direction="normal")
  (a,) = ambiguity.apply_to_records([rec], settings)
  (b,) = ambiguity.apply_to_records([rec_hidden], settings)
  np.testing.assert_array_equal(b.landmarks[[3, 8]], rec.landmarks[[3, 8]])
  keep = [i for i in range(68) if i not in (3, 8)]
  np.testing.assert_array_equal(a.landmarks[keep], b.landmarks[keep])


def test_tangent_normal_errors_recover_known_offsets():
  rng = np.random.default_rng(4)
  gt = np.stack([_face(rng) for _ in range(3)]).astype(np.float64)
  t = np.stack([_np_tangents(g[:17]) for g in gt])
  n = np.stack([-t[..., 1], t[..., 0]], -1)
  a, c = rng.normal(0, 2, (3, 17)), rng.normal(0, 2, (3, 17))
  pred = gt.copy()
  pred[:, :17] += a[..., None] * t + c[..., None] * n
  along, across = ambiguity.tangent_normal_errors(pred, gt, JAW)
  np.testing.assert_allclose(along, a, atol=1e-10)
  np.testing.assert_allclose(across, c, atol=1e-10)


# ------------------------------------------------------------- validation ----

@pytest.mark.parametrize("kwargs", [
    dict(groups=("chin",)), dict(direction="radial"), dict(sigma=-0.1),
    dict(sigma=float("nan")), dict(groups="jaw"), dict(groups=("jaw", "jaw"))])
def test_bad_settings_are_user_errors(kwargs):
  with pytest.raises(errors.UserError):
    ambiguity.LabelNoise(**{"sigma": 0.1, **kwargs})
  with pytest.raises(errors.UserError):
    ambiguity.perturb_along_curves(
        _face(np.random.default_rng(0)), rng=np.random.default_rng(0),
        **{"groups": ("jaw",), "sigma": 0.1, "direction": "tangent",
           **kwargs})


def test_from_config():
  c = config_dict.ConfigDict(dict(groups=("jaw", "brows"), sigma=0.05,
                                  direction="normal", seed=3))
  assert ambiguity.LabelNoise.from_config(c) == ambiguity.LabelNoise(
      ("jaw", "brows"), 0.05, "normal", 3)
  assert not ambiguity.LabelNoise.from_config(None).enabled
  with pytest.raises(errors.UserError, match="unknown"):
    ambiguity.LabelNoise.from_config(dict(sigma=0.1, sgima=0.2))


def test_group_and_rest_partitions_the_face():
  jaw, inner = ambiguity.group_and_rest("jaw")
  assert jaw == list(range(17)) and inner == list(range(17, 68))
  brows, rest = ambiguity.group_and_rest("brows")
  assert brows == list(range(17, 27))
  assert sorted(brows + rest) == list(range(68)) and not set(brows) & set(rest)

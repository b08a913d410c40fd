"""Tests for data.schemes: flip permutations, edges, E2H matrix."""

import csv
import os

import numpy as np
import pytest

from data import schemes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO_ROOT, "..", "shared", "data", "yt68")


@pytest.mark.parametrize("n", [98, 68, 29, 5])
def test_flip_permutation_is_an_involution(n):
  perm = np.asarray(schemes.get_scheme(n).flip_permutation)
  assert sorted(perm.tolist()) == list(range(n))
  np.testing.assert_array_equal(perm[perm], np.arange(n))


@pytest.mark.parametrize("n,expected_edges,expected_total", [
    (98, 9, 96), (68, 9, 68), (29, 7, 26), (5, 0, 0)])
def test_edge_counts_and_matrix(n, expected_edges, expected_total):
  scheme = schemes.get_scheme(n)
  assert scheme.num_edges == expected_edges
  m = np.zeros((scheme.num_edges, n))
  for e, idx in enumerate(scheme.edges):
    m[e, list(idx)] = 1
  assert m.shape == (expected_edges, n)
  # Each point lies on one edge except COFW's lip corners 22, 23 (two lips).
  assert m.sum() == sum(len(e) for e in scheme.edges)
  assert int((m.sum(0) > 0).sum()) == expected_total
  assert len(set(scheme.edges)) == scheme.num_edges


def test_edges_are_mirror_closed():
  # A flipped edge is an edge (the mirror of the left brow is the right brow).
  for n in (98, 68, 29):
    scheme = schemes.get_scheme(n)
    perm = scheme.flip_permutation
    edge_sets = [frozenset(e) for e in scheme.edges]
    for e in scheme.edges:
      assert frozenset(perm[i] for i in e) in edge_sets


def _symmetric_face(scheme, axis_x):
  """Points mirror-symmetric about x = axis_x, all with distinct heights."""
  rng = np.random.default_rng(0)
  pts = np.zeros((scheme.num_points, 2))
  perm = scheme.flip_permutation
  for i in range(scheme.num_points):
    j = perm[i]
    if j < i:
      continue
    y = rng.uniform(10, 90)
    dx = 0.0 if i == j else rng.uniform(5, 40)
    pts[i] = (axis_x - dx, y)  # lower index: image-left in these tests
    pts[j] = (axis_x + dx, y)
  return pts


@pytest.mark.parametrize("n", [98, 68, 29, 5])
def test_flip_symmetric_face_is_invariant(n):
  scheme = schemes.get_scheme(n)
  width = 101  # pixel centres 0..100, axis at 50
  pts = _symmetric_face(scheme, 50.0)
  flipped = scheme.flip_landmarks(pts, width)
  np.testing.assert_allclose(flipped, pts, atol=1e-12)
  np.testing.assert_allclose(scheme.flip_landmarks(flipped, width), pts)


def test_300w_named_points_swap():
  scheme = schemes.get_scheme(68)
  pts = np.zeros((68, 2))
  pts[36] = (30.0, 40.0)   # outer corner on the image left
  pts[45] = (70.0, 41.0)   # outer corner on the image right
  pts[30] = (48.0, 60.0)   # nose tip (on the axis, maps to itself)
  flipped = scheme.flip_landmarks(pts, 100)
  # New 36 is the mirror of old 45: x' = 99 - 70.
  np.testing.assert_allclose(flipped[36], (29.0, 41.0))
  np.testing.assert_allclose(flipped[45], (69.0, 40.0))
  np.testing.assert_allclose(flipped[30], (51.0, 60.0))
  assert scheme.flip_permutation[36] == 45 and scheme.flip_permutation[8] == 8
  wflw = schemes.get_scheme(98)
  assert wflw.flip_permutation[60] == 72 and wflw.flip_permutation[96] == 97
  cofw = schemes.get_scheme(29)
  assert cofw.flip_permutation[16] == 17 and cofw.flip_permutation[20] == 20


def test_flip_on_real_mean_face_yt68():
  """The mean yt68 shape (real annotations) is close to mirror-symmetric.

  A wrong flip pair (e.g. 40<->46 instead of 40<->47) moves a point by several
  per cent of the inter-ocular distance, far above the tolerance.
  """
  path = os.path.join(YT68, "train.csv")
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {path}")
  with open(path) as f:
    rows = list(csv.reader(f))[1:]
  shapes = np.array([[float(v) for v in r[1:]] for r in rows]).reshape(-1, 68, 2)
  scheme = schemes.get_scheme(68)
  # Normalise each face: eye-corner midpoint at 0, eye axis horizontal,
  # inter-ocular distance 1; then take the median shape.
  mid = (shapes[:, 36] + shapes[:, 45]) / 2
  v = shapes[:, 45] - shapes[:, 36]
  angle = -np.arctan2(v[:, 1], v[:, 0])
  c, s = np.cos(angle), np.sin(angle)
  rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
  norm = np.einsum("bij,bnj->bni", rot, shapes - mid[:, None])
  norm /= schemes.normaliser_distance(scheme, shapes)[:, None, None]
  median = np.median(norm, 0)

  def asymmetry(perm):
    mirrored = median[np.asarray(perm)] * np.array([-1.0, 1.0])
    mirrored[:, 0] -= (mirrored[:, 0] - median[:, 0]).mean()  # best axis
    return np.linalg.norm(mirrored - median, axis=-1).max()

  assert asymmetry(scheme.flip_permutation) < 0.05
  # Deliberately wrong pairs are detected by the same measure.
  for a, b, c_, d in [(40, 46, 41, 47), (61, 65, 63, 67), (0, 15, 1, 16)]:
    wrong = np.asarray(scheme.flip_permutation).copy()
    wrong[[a, b, c_, d]] = [b, a, d, c_]
    assert asymmetry(wrong) > 0.06


def test_normaliser_distances():
  scheme = schemes.get_scheme(68)
  pts = np.zeros((68, 2))
  pts[36:42] = (10.0, 0.0)
  pts[42:48] = (40.0, 4.0)
  pts[36] = (4.0, 0.0)
  pts[45] = (46.0, 0.0)
  assert schemes.normaliser_distance(scheme, pts, "ocular") == pytest.approx(42.0)
  # Pupils: means of 36-41 and 42-47: (9, 0) and (41, 10/3).
  expected = np.hypot(32.0, 10.0 / 3.0)
  assert schemes.normaliser_distance(scheme, pts, "pupil") == pytest.approx(expected)


def test_bad_scheme_requests():
  with pytest.raises(ValueError, match="no landmark scheme with 21"):
    schemes.get_scheme(21)
  with pytest.raises(ValueError, match="unknown landmark scheme"):
    schemes.get_scheme("aflw19")
  assert schemes.get_scheme("WFLW").num_points == 98

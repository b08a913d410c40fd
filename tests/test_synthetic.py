"""Tests for data/synthetic/: determinism, geometry, rendering, annotation noise."""

import pickle

import numpy as np
import pytest

from data import records
from data import synthetic
from data.synthetic import geometry

SIZE = 96


def _point_in_polygon(point, polygon):
  """Even-odd ray casting, float64."""
  x, y = point
  inside = False
  n = len(polygon)
  for i in range(n):
    x1, y1 = polygon[i]
    x2, y2 = polygon[(i + 1) % n]
    if (y1 > y) != (y2 > y):
      xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
      if xc > x:
        inside = not inside
  return inside


def _sample(image, point):
  """Bilinear-free lookup: nearest pixel colour as float64 [3]."""
  s = image.shape[0]
  x = int(np.clip(round(float(point[0])), 0, s - 1))
  y = int(np.clip(round(float(point[1])), 0, s - 1))
  return image[y, x].astype(np.float64)


def test_render_is_deterministic_per_seed_and_index():
  a_img, a_pts = synthetic.render_face(3, 5, SIZE)
  b_img, b_pts = synthetic.render_face(3, 5, SIZE)
  np.testing.assert_array_equal(a_img, b_img)
  np.testing.assert_array_equal(a_pts, b_pts)
  c_img, c_pts = synthetic.render_face(3, 6, SIZE)
  d_img, d_pts = synthetic.render_face(4, 5, SIZE)
  assert np.abs(a_img.astype(int) - c_img).mean() > 5
  assert np.abs(a_pts - c_pts).max() > 1.0
  assert np.abs(a_img.astype(int) - d_img).mean() > 5
  assert a_img.dtype == np.uint8 and a_img.shape == (SIZE, SIZE, 3)
  assert a_pts.dtype == np.float32 and a_pts.shape == (68, 2)


@pytest.mark.parametrize("size", [48, 128])
def test_landmarks_inside_image(size):
  for i in range(40):
    g = synthetic.face_geometry(11, i, size)
    assert g.landmarks.min() >= 0.0
    assert g.landmarks.max() <= size - 1
    assert abs(g.yaw) <= 40 and abs(g.pitch) <= 20 and abs(g.roll) <= 25


def test_point_order_is_ibug_68():
  """In the face frame (roll undone): brows above eyes above nose tip above
  mouth above chin; jaw runs from the image left (0) through the chin (8)."""
  for i in range(30):
    g = synthetic.face_geometry(0, i, SIZE)
    r = np.deg2rad(g.roll)
    unroll = np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
    p = (g.landmarks - g.landmarks.mean(0)) @ unroll.T
    y = p[:, 1]
    assert y[17:22].mean() < y[36:42].min()         # Brows above eyes.
    assert y[22:27].mean() < y[42:48].min()
    assert y[[37, 38, 43, 44]].max() < y[30]        # Eyes above nose tip.
    assert y[30] < y[33] < y[51] < y[57] < y[8]     # Tip, nostrils, lips, chin.
    x = p[:, 0]
    assert x[36] < x[39] < x[42] < x[45]            # Eye corners left->right.
    assert x[48] < x[51] < x[54]                    # Mouth corners.
    assert x[0] < x[8] < x[16]
    assert x[17] < x[21] < x[22] < x[26]


def test_silhouette_matches_brute_force_float64():
  """Closed-form silhouette == the densely sampled meridian point furthest out."""
  rng = np.random.default_rng(0)
  params = geometry._sample_params(rng)
  outline = geometry._frontal_outline(params)
  normals = geometry._outline_normals(outline)
  radius = np.sum((outline - geometry._HEAD_CENTRE) * normals, -1)
  depth = geometry._FRONT_Z - geometry._SILHOUETTE_Z
  t = np.linspace(-np.pi / 2, np.pi / 2, 20001)
  for yaw, pitch, roll in [(0, 0, 0), (35, -15, 20), (-40, 20, -25)]:
    rot = geometry.rotation_matrix(yaw, pitch, roll)
    got = geometry.silhouette(outline, rot)
    for j in range(len(outline)):
      n3 = np.array([normals[j, 0], normals[j, 1], 0.0])
      c3 = np.array([*(outline[j] - radius[j] * normals[j]),
                     geometry._SILHOUETTE_Z])
      ring = (c3[None] + radius[j] * np.cos(t)[:, None] * n3[None]
              + depth * np.sin(t)[:, None] * np.array([0, 0, 1.0])[None])
      proj = ring @ rot[:2].T
      m = rot[:2] @ n3
      m /= np.linalg.norm(m)
      want = proj[np.argmax(proj @ m)]
      np.testing.assert_allclose(got[j], want, atol=1e-4)
  # Frontal pose: the silhouette is the frontal outline itself.
  np.testing.assert_allclose(
      geometry.silhouette(outline, np.eye(3)), outline, atol=1e-12)


def test_eye_corners_and_brows_are_drawn_features():
  """Eye corners sit on the dark lash line, brows on dark strokes: their pixels
  differ from the face's median skin colour."""
  hits, total = 0, 0
  for i in range(30):
    image, pts = synthetic.render_face(7, i, 128)
    g = synthetic.face_geometry(7, i, 128)
    # Skin: median over a small patch on each cheek (between eye and jaw).
    cheeks = [0.5 * pts[41] + 0.5 * pts[3], 0.5 * pts[46] + 0.5 * pts[13]]
    skin = np.median([_sample(image, c + d) for c in cheeks
                      for d in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1]))
                      .reshape(2, -1).T], axis=0)
    for k in (36, 39, 42, 45, 19, 24):
      total += 1
      hits += np.linalg.norm(_sample(image, pts[k]) - skin) > 30
    assert _point_in_polygon(pts[30], g.outline)   # Nose tip inside the face.
    assert _point_in_polygon(pts[57], g.outline)
  assert hits / total > 0.9, (hits, total)


def test_contour_points_lie_on_the_face_boundary():
  """Across the contour (along its normal) the image changes much more than
  across a line of the same length inside the face."""
  edge, interior = [], []
  for i in range(30):
    image, pts = synthetic.render_face(5, i, 128)
    tangent = synthetic.contour_tangents(pts)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], -1)
    centre = pts[27:36].mean(0)
    normal *= np.sign(np.sum((pts[:17] - centre) * normal, -1))[:, None]
    iod = synthetic.inter_ocular(pts)
    step = 0.06 * iod
    for j in range(1, 16):
      a = _sample(image, pts[j] + step * normal[j])
      b = _sample(image, pts[j] - step * normal[j])
      edge.append(np.linalg.norm(a - b))
      # Same step, but halfway between the contour point and the nose.
      mid = 0.5 * pts[j] + 0.5 * centre
      a = _sample(image, mid + step * normal[j])
      b = _sample(image, mid - step * normal[j])
      interior.append(np.linalg.norm(a - b))
  assert np.median(edge) > 3 * np.median(interior) + 10, (
      np.median(edge), np.median(interior))


def test_zero_noise_records_hold_true_points():
  recs = synthetic.make_records(6, seed=2, image_size=SIZE)
  for i, r in enumerate(recs):
    _, true = synthetic.render_face(2, i, SIZE)
    np.testing.assert_array_equal(r.landmarks, true)
    np.testing.assert_allclose(r.box, [*true.min(0), *true.max(0)])
    assert r.subset == "synthetic" and r.image_key == i
    assert r.visible.all() and r.num_points == 68


def test_contour_noise_is_tangential_with_the_configured_std():
  knob = 0.05
  true = synthetic.make_records(150, seed=9, image_size=SIZE)
  noisy = synthetic.make_records(150, seed=9, image_size=SIZE,
                                 contour_noise=knob)
  along, across = [], []
  for t, n in zip(true, noisy):
    np.testing.assert_array_equal(t.landmarks[17:], n.landmarks[17:])
    np.testing.assert_array_equal(t.box, n.box)  # Box from the true face.
    d = n.landmarks[:17].astype(np.float64) - t.landmarks[:17]
    tan = synthetic.contour_tangents(t.landmarks)
    nor = np.stack([tan[:, 1], -tan[:, 0]], -1)
    iod = synthetic.inter_ocular(t.landmarks)
    along.append(np.sum(d * tan, -1) / iod)
    across.append(np.sum(d * nor, -1) / iod)
  along, across = np.concatenate(along), np.concatenate(across)
  assert np.abs(across).max() < 1e-4            # float32 rounding only.
  assert abs(along.std() - knob) < 0.06 * knob  # 2550 draws: ~1.4% s.e.
  assert abs(along.mean()) < 0.1 * knob
  # Reproducible, and the same draw scales with the knob.
  again = synthetic.make_records(150, seed=9, image_size=SIZE,
                                 contour_noise=2 * knob)
  d2 = np.stack([a.landmarks[:17] - t.landmarks[:17]
                 for a, t in zip(again, true)])
  d1 = np.stack([a.landmarks[:17] - t.landmarks[:17]
                 for a, t in zip(noisy, true)])
  np.testing.assert_allclose(d2, 2 * d1, atol=2e-4)


def test_point_noise_is_isotropic_with_the_configured_std():
  knob = 0.02
  true = synthetic.make_records(60, seed=1, image_size=SIZE)
  noisy = synthetic.make_records(60, seed=1, image_size=SIZE, point_noise=knob)
  d = np.concatenate([
      (n.landmarks - t.landmarks) / synthetic.inter_ocular(t.landmarks)
      for t, n in zip(true, noisy)])
  assert abs(d[:, 0].std() - knob) < 0.06 * knob
  assert abs(d[:, 1].std() - knob) < 0.06 * knob


def test_noise_does_not_change_the_image():
  a = synthetic.make_records(2, seed=4, image_size=SIZE)
  b = synthetic.make_records(2, seed=4, image_size=SIZE, contour_noise=0.1,
                             point_noise=0.01)
  np.testing.assert_array_equal(a[1].load_image(), b[1].load_image())


def test_records_pickle_and_render_identically():
  recs = synthetic.make_records(3, seed=6, image_size=SIZE, contour_noise=0.03)
  restored = pickle.loads(pickle.dumps(recs))
  for r, q in zip(recs, restored):
    assert isinstance(q, records.FaceRecord)
    np.testing.assert_array_equal(r.landmarks, q.landmarks)
    image = q.load_image()
    np.testing.assert_array_equal(image, r.load_image())
    np.testing.assert_array_equal(
        image, synthetic.render_face(6, r.image_key, SIZE)[0])


@pytest.mark.parametrize("kwargs", [
    dict(num_faces=-1, seed=0),
    dict(num_faces=2, seed=0, image_size=16),
    dict(num_faces=2, seed=0, contour_noise=-0.1),
    dict(num_faces=2, seed=0, point_noise=float("nan")),
])
def test_bad_arguments_raise_value_error(kwargs):
  with pytest.raises(ValueError):
    synthetic.make_records(**kwargs)

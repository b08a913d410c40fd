"""Tests for data.augment: flips, the one-warp geometry, texture ops, seeding."""

import numpy as np
import pytest

from data import augment as A
from data import schemes
from data import transforms as T

S = 64


def _face(seed=0, n=68):
  """A synthetic face's points (left/right pairs mirror-symmetric) + an image."""
  rng = np.random.default_rng(seed)
  scheme = schemes.get_scheme(n)
  pts = np.zeros((n, 2))
  for i in range(n):
    j = scheme.flip_permutation[i]
    if j < i:
      continue
    y, dx = rng.uniform(60, 140), (0.0 if i == j else rng.uniform(5, 45))
    pts[i], pts[j] = (100 - dx, y), (100 + dx, y)
  pts += rng.normal(0, 2, size=pts.shape)  # break exact symmetry
  image = rng.integers(0, 256, size=(200, 210, 3), dtype=np.uint8)
  return scheme, pts.astype(np.float32), image


def _blob(h, w, x0, y0, sigma=4.0):
  yy, xx = np.mgrid[0:h, 0:w]
  g = 250.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
  return np.repeat(g[..., None], 3, -1).round().astype(np.uint8)


def _centroid(gray, near, radius):
  yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
  w = gray * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) < radius ** 2)
  return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


FLIP_ONLY = A.AugmentConfig.from_mapping(
    dict(flip_prob=1.0, shift_sigma=0, rotate_sigma_deg=0, scale_sigma=0,
         occlusion_prob=0, blur_prob=0, gamma_prob=0, noise_prob=0, gray_prob=0))


def test_flip_swaps_named_points_and_mirrors_pixels():
  scheme, pts, image = _face()
  m0 = T.crop_matrix((100.0, 100.0), 0.8, S)
  plain, plain_pts, _, _ = T.crop_face(image, pts, (100.0, 100.0), 0.8, S)
  crop, aug_pts, vis, m = A.augment(image, pts, np.ones(68, bool), m0, S,
                                    scheme, np.random.default_rng(0), FLIP_ONLY)
  # PIL's fixed-point bilinear rounds mirrored positions within 1 level.
  assert np.abs(crop.astype(int) - plain[:, ::-1]).max() <= 1
  # New 36 (image-left outer eye corner) is the mirror of old 45, and so on.
  np.testing.assert_allclose(aug_pts[36], [S - 1 - plain_pts[45, 0], plain_pts[45, 1]],
                             atol=1e-4)
  np.testing.assert_allclose(aug_pts[45], [S - 1 - plain_pts[36, 0], plain_pts[36, 1]],
                             atol=1e-4)
  np.testing.assert_allclose(aug_pts[8], [S - 1 - plain_pts[8, 0], plain_pts[8, 1]],
                             atol=1e-4)
  # Left-side points stay on the left: the symmetric face keeps its layout.
  assert aug_pts[36, 0] < aug_pts[45, 0] and aug_pts[0, 0] < aug_pts[16, 0]


def test_flip_twice_is_identity():
  scheme, pts, image = _face(1)
  vis = np.arange(68) % 3 > 0
  m0 = T.crop_matrix((100.0, 100.0), 0.8, S)
  plain, plain_pts, _, _ = T.crop_face(image, pts, (100.0, 100.0), 0.8, S)
  rng = np.random.default_rng(0)
  c1, p1, v1, m1 = A.augment(image, pts, vis, m0, S, scheme, rng, FLIP_ONLY)
  c2, p2, v2, m2 = A.augment(c1, p1, v1, np.eye(3)[:2], S, scheme, rng, FLIP_ONLY)
  np.testing.assert_array_equal(c2, c1[:, ::-1])  # an exact pixel mirror
  assert np.abs(c2.astype(int) - plain).max() <= 1
  np.testing.assert_allclose(p2, plain_pts, atol=1e-4)
  np.testing.assert_array_equal(v2, vis)
  np.testing.assert_allclose(T.compose(m2, m1), m0, atol=1e-12)
  assert not np.array_equal(v1, vis)  # the first flip did permute


@pytest.mark.parametrize("seed", range(6))
def test_dot_follows_landmark_through_augmentation(seed):
  """A dot drawn at point 36 is found where the augmentation puts point 36.

  Texture ops that move no pixels (gamma, grey) are on; occlusion, noise and
  blur (which can hide or smear the dot) are off.
  """
  scheme, pts, _ = _face(seed)
  image = _blob(200, 210, *pts[36])
  config = A.AugmentConfig.from_mapping(
      dict(occlusion_prob=0, blur_prob=0, noise_prob=0, gamma_prob=1.0,
           gray_prob=1.0))
  m0 = T.crop_matrix((100.0, 100.0), 0.9, 128)
  crop, aug_pts, _, m = A.augment(image, pts, np.ones(68, bool), m0, 128,
                                  scheme, np.random.default_rng(seed), config)
  flipped = np.linalg.det(m[:, :2]) < 0
  # After a flip the dot (old 36) is the new point 45.
  where = aug_pts[45] if flipped else aug_pts[36]
  np.testing.assert_allclose(T.apply_affine(m, pts[36]),
                             where, atol=1e-3)
  radius = 4 * 4.0 * np.sqrt(abs(np.linalg.det(m[:, :2]))) + 3
  found = _centroid(crop[..., 0].astype(float), where, radius)
  np.testing.assert_allclose(found, where, atol=0.1)


def test_same_seed_same_output_and_different_seed_differs():
  scheme, pts, image = _face(2)
  m0 = T.crop_matrix((100.0, 100.0), 0.8, S)
  config = A.AugmentConfig()
  # Force every texture op on, so all of their randomness is exercised.
  all_on = A.AugmentConfig.from_mapping(
      dict(occlusion_prob=1, blur_prob=1, gamma_prob=1, noise_prob=1, gray_prob=1))
  for cfg in (config, all_on):
    outs = [A.augment(image, pts, np.ones(68, bool), m0, S, scheme,
                      np.random.default_rng(s), cfg) for s in (7, 7, 8)]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert not np.array_equal(outs[0][1], outs[2][1])


def test_geometry_distribution_matches_config():
  rng = np.random.default_rng(0)
  config = A.AugmentConfig()
  mats, flips = zip(*[A.sample_geometry(rng, 256, config) for _ in range(4000)])
  mats = np.stack(mats)
  flips = np.array(flips)
  assert abs(flips.mean() - 0.5) < 0.03
  lin = mats[:, :, :2].copy()
  lin[flips, :, 0] *= -1  # G o F: undo the mirror of the x column
  zoom = np.sqrt(np.abs(np.linalg.det(lin)))
  angle = np.degrees(np.arctan2(lin[:, 1, 0], lin[:, 0, 0]))
  assert abs(zoom.mean() - 1.0) < 0.01 and abs(zoom.std() - 0.1) < 0.01
  assert abs(angle.mean()) < 1.0 and abs(angle.std() - 18.0) < 1.0
  # The crop centre moves by the shift alone: N(0, 0.05 * 255).
  centre = mats[:, :, :2] @ np.array([127.5, 127.5]) + mats[:, :, 2]
  shift = centre - 127.5
  assert np.all(np.abs(shift.std(0) - 0.05 * 255) < 0.6)


def _box_blur_reference(image, k):
  h, w, _ = image.shape
  out = np.zeros(image.shape, np.float64)

  def reflect(i, n):  # reflect-101: -1 -> 1, n -> n - 2
    while i < 0 or i >= n:
      i = -i if i < 0 else 2 * (n - 1) - i
    return i

  for y in range(h):
    for x in range(w):
      ys = [reflect(y + d, h) for d in range(-(k // 2), k - k // 2)]
      xs = [reflect(x + d, w) for d in range(-(k // 2), k - k // 2)]
      out[y, x] = image[np.ix_(ys, xs)].reshape(-1, 3).mean(0)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("k", [2, 3, 6, 12])
def test_box_blur_matches_reference(k):
  rng = np.random.default_rng(k)
  img = rng.integers(0, 256, size=(14, 17, 3), dtype=np.uint8)
  got = A.box_blur(img, k)
  want = _box_blur_reference(img, k)
  np.testing.assert_array_equal(got, want)  # both round half to even


def test_texture_ops_hand_checked():
  img = np.full((20, 20, 3), 200, np.uint8)
  img[..., 0] = 100
  occ = A.occlude(img, np.random.default_rng(3))
  hole = np.all(occ == 0, axis=-1)
  ys, xs = np.nonzero(hole)
  assert hole.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1) > 0  # a rectangle
  assert np.array_equal(occ[~hole], img[~hole])
  gray = A.to_gray(img)
  np.testing.assert_array_equal(gray[0, 0], [170, 170, 170])  # .299*100+.701*200
  g = A.gamma(np.array([[[0, 128, 255]]], np.uint8), np.random.default_rng(0))
  assert g[0, 0, 0] == 0 and g[0, 0, 2] == 255
  nz = A.noise_blend(img, np.random.default_rng(0), 0.0)
  np.testing.assert_array_equal(nz, img)


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="unknown augmentation keys"):
    A.AugmentConfig.from_mapping({"flip_rate": 0.5})
  with pytest.raises(ValueError, match="flip_prob must be in"):
    A.AugmentConfig.from_mapping({"flip_prob": 1.5})

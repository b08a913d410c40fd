"""Tests of data/device_augment.py: the in-step augmentation equals the host's.

References are the host implementation (data/augment.py, PIL through
data/transforms.warp_affine) and float64 NumPy. Tolerances, and why:
  * crops: |device - host| <= 1 grey level at every pixel and at most 1 % of
    the pixels differing: PIL interpolates in float64 and truncates to uint8,
    the device in float32; a value within ~1e-3 of an integer can truncate to
    the neighbouring level (measured: ~0.01-0.5 % of pixels on random noise
    images, 0.01-0.03 % on yt68 faces);
  * points and matrices: 2e-3 px / 1e-4 (float32 of coordinates of ~100 px);
  * blur, occlusion: exact; gamma, noise blend: one level (float32 vs
    float64 before a floor); grey: one level at exact ties only;
  * distributions: two-sample Kolmogorov-Smirnov p > 1e-3 and |z| < 4 for
    means, standard deviations and rates, on 3,000-4,000 draws of each side
    (fixed seeds, so the outcome is deterministic); negative controls show
    that 10 % more rotation or an occlusion probability of 0.5 instead of
    0.4 (on the host side) is flagged.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from data import augment as A
from data import device_augment as D
from data import pipeline
from data import records
from data import schemes
from data import transforms as T
from training import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEME = schemes.get_scheme(68)
PERM = tuple(int(i) for i in SCHEME.flip_permutation)
NO_TEXTURE = dict(occlusion_prob=0, blur_prob=0, gamma_prob=0, noise_prob=0,
                  gray_prob=0)


# ------------------------------------------------------------- helpers --


def _smooth_noise(h, w, seed, lo=0, hi=255):
  """Random texture with structure at several scales, uint8 in [lo, hi]."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(h, w, 3))
  x = ndimage.gaussian_filter(x, (1.5, 1.5, 0)) + 0.3 * x
  x = (x - x.min()) / (x.max() - x.min())
  return np.round(lo + (hi - lo) * x).astype(np.uint8)


def _face_points(center, side, seed):
  """68 points filling a box of `side` px about `center` (left/right
  pairs roughly mirrored, so flips permute visibly different points)."""
  rng = np.random.default_rng(seed)
  pts = np.zeros((68, 2))
  for i in range(68):
    j = PERM[i]
    if j < i:
      continue
    y = rng.uniform(-0.5, 0.5) * side
    dx = 0.0 if i == j else rng.uniform(0.05, 0.5) * side
    pts[i], pts[j] = (-dx, y), (dx, y)
  pts[:2] = [[-side / 2, -side / 2], [side / 2, side / 2]]  # box = side.
  return (pts + rng.normal(0, 0.3, pts.shape) + center).astype(np.float32)


def _record(points, visible=None):
  return records.FaceRecord("memory.png", np.asarray(points, np.float32),
                            visible=visible)


def _crop_config(s, margin=2.0, **kw):
  return pipeline.CropConfig(crop_size=s, num_points=68, train=True,
                             crop_mode="points", augment_on="device",
                             precrop_size=D.precrop_size(s, margin), **kw)


def _device(s, margin=2.0, **augment):
  return D.DeviceAugment(s, D.precrop_size(s, margin),
                         A.AugmentConfig.from_mapping(augment or None), PERM)


def _params_of_geometry(geo, flipped, s):
  """(flip, angle, zoom, shift) of a host `augment.sample_geometry` map
  G o F, in float64: the linear part is zoom R(angle) diag(+-1, 1)."""
  a = np.asarray(geo, np.float64)[:, :2]
  zoom = np.sqrt(abs(np.linalg.det(a)))
  angle = np.arctan2(-a[0, 1], a[1, 1])
  c = (s - 1) / 2.0
  f0 = np.array([s - 1.0 if flipped else 0.0, 0.0])  # F(0)
  r = zoom * np.array([[np.cos(angle), -np.sin(angle)],
                       [np.sin(angle), np.cos(angle)]])
  shift = geo[:, 2] - r @ (f0 - c) - c
  return bool(flipped), float(angle), float(zoom), shift


def _batch_params(rows):
  """Device `params` (leading axis B) from (flip, angle, zoom, shift) rows."""
  flip, angle, zoom, shift = zip(*rows)
  return dict(flip=jnp.asarray(flip), angle=jnp.asarray(angle, jnp.float32),
              zoom=jnp.asarray(zoom, jnp.float32),
              shift=jnp.asarray(np.stack(shift), jnp.float32))


def _inside_margin(geo, s, p):
  """True when the crop's sampling region lies inside the pre-crop (less
  one pixel for the bilinear taps): where the two paths read the same
  pixels."""
  d = (p - s) / 2.0
  corners = np.array([[0, 0], [s - 1, 0], [0, s - 1], [s - 1, s - 1]], float)
  q = T.apply_affine(T.invert_affine(geo), corners) + d
  return bool(np.all(q >= 0.5) and np.all(q <= p - 2.5))


def _assert_crops_close(device, host, max_fraction=0.01):
  diff = np.abs(np.asarray(device).astype(int) - np.asarray(host).astype(int))
  assert diff.max() <= 1, diff.max()
  assert (diff > 0).mean() <= max_fraction, (diff > 0).mean()


_apply = jax.jit(lambda da, batch, params: da.apply(batch, params,
                                                    texture=False),
                 static_argnums=0)


# ---------------------------------------------------- warp and geometry --


def test_warp_equals_pil_on_random_maps():
  """warp_bilinear reads the source as PIL's BILINEAR affine transform:
  random rotations, zooms 0.4-2.5 and shifts that leave the image."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (37, 45, 3), np.uint8)
  maps = []
  for _ in range(12):
    g = T.similarity_about((20.0, 20.0), rng.normal(0, 0.6),
                           np.exp(rng.uniform(np.log(0.4), np.log(2.5))),
                           rng.normal(0, 8, 2))
    maps.append(T.compose(g, T.hflip_about(45)) if rng.random() < 0.5 else g)
  warp = jax.jit(jax.vmap(lambda m: D.warp_bilinear(jnp.asarray(image), m, 40)))
  got = np.asarray(warp(jnp.asarray(np.stack(
      [T.invert_affine(m) for m in maps]), jnp.float32)))
  for m, out in zip(maps, got):
    host = T.warp_affine(image, m, 40)
    # Pixels whose sample point is within 1e-3 px of the border test
    # (black vs value) are the float32 / float64 ambiguity; none expected.
    _assert_crops_close(out, host)
    assert (out == 0).sum() == pytest.approx((host == 0).sum(), abs=6)


def test_geometry_matrix_equals_host_sample_geometry():
  config = A.AugmentConfig()
  for seed in range(20):
    geo, flipped = A.sample_geometry(np.random.default_rng(seed), 64, config)
    flip, angle, zoom, shift = _params_of_geometry(geo, flipped, 64)
    got = D.geometry_matrix(jnp.asarray(flip), jnp.float32(angle),
                            jnp.float32(zoom), jnp.asarray(shift, jnp.float32),
                            64)
    np.testing.assert_allclose(np.asarray(got), geo, atol=1e-4)


@pytest.mark.parametrize("where", ["middle", "border"])
def test_fixed_draws_equal_host_augment_geometry(where):
  """The same draw gives the host's crop, points, visibility, flip
  permutation and crop_to_image (faces the crop enlarges: the pre-crop is
  a copy of original pixels, so both warps read the same pixels)."""
  s = 32
  image = _smooth_noise(90, 100, 1)
  center = (50.0, 45.0) if where == "middle" else (8.0, 80.0)
  points = _face_points(center, 18.0, 2)       # k = 32 / (18 * 1.25) = 1.42
  visible = np.arange(68) % 5 > 0
  record = _record(points, visible)
  config = _crop_config(s)
  sample = pipeline.precrop_sample(record, image, 3, config)
  assert sample["image"].shape == (64, 64, 3)
  aug_config = A.AugmentConfig.from_mapping(NO_TEXTURE)
  c, sc = T.record_center_scale(record, "points")
  crop_m = T.crop_matrix(c, sc, s)
  rows, hosts, flips = [], [], []
  for seed in range(40):
    geo, flipped = A.sample_geometry(np.random.default_rng(seed), s,
                                     aug_config)
    if not _inside_margin(geo, s, config.precrop_size):
      continue
    rows.append(_params_of_geometry(geo, flipped, s))
    hosts.append(A.augment_geometry(image, points, visible, crop_m, s, SCHEME,
                                    np.random.default_rng(seed), aug_config))
    flips.append(flipped)
  assert len(rows) >= 35 and 5 < sum(flips) < len(rows) - 5
  batch = D.stack_samples([sample] * len(rows))
  out = jax.tree.map(np.asarray, _apply(_device(s), batch, _batch_params(rows)))
  perm = np.asarray(PERM)
  for i, (crop, pts, vis, m) in enumerate(hosts):
    _assert_crops_close(out["image"][i], crop)
    np.testing.assert_allclose(out["landmarks"][i], pts, atol=2e-3)
    np.testing.assert_array_equal(out["visible"][i], vis)
    want = points[perm] if flips[i] else points
    np.testing.assert_array_equal(out["landmarks_original"][i], want)
    np.testing.assert_allclose(out["crop_to_image"][i], T.invert_affine(m),
                               atol=1e-3)
    # The batch contract: crop_to_image maps the points back.
    np.testing.assert_allclose(T.apply_affine(out["crop_to_image"][i],
                                              out["landmarks"][i]),
                               want, atol=2e-3)
  assert "precrop_to_crop" not in out and "precrop_box" not in out
  if where == "border":  # part of the crop lies outside the image: black.
    assert (out["image"] == 0).all(-1).any()


def test_resampled_precrop_geometry_on_a_linear_ramp():
  """Faces the crop shrinks (k < 1): the pre-crop is resampled at crop
  scale, the device warp resamples again. Bilinear interpolation is exact
  on an affine image, so on a ramp both paths give the same values up to
  the two truncations (device - host in [-2, 1]): the geometry is the
  host's, only the second interpolation differs on real images."""
  s = 32
  yy, xx = np.mgrid[0:160, 0:170].astype(np.float64)
  ramp = np.stack([40 + 1.1 * xx, 30 + 1.2 * yy,
                   200 - 0.5 * xx - 0.4 * yy], -1)
  image = np.floor(ramp).astype(np.uint8)
  points = _face_points((85.0, 80.0), 50.0, 4)    # k = 32 / 62.5 = 0.51
  record = _record(points)
  config = _crop_config(s)
  sample = pipeline.precrop_sample(record, image, 0, config)
  assert np.abs(sample["precrop_to_crop"][:, :2] - np.eye(2)).max() == 0
  aug_config = A.AugmentConfig.from_mapping(NO_TEXTURE)
  c, sc = T.record_center_scale(record, "points")
  crop_m = T.crop_matrix(c, sc, s)
  rows, hosts = [], []
  for seed in range(30):
    geo, flipped = A.sample_geometry(np.random.default_rng(seed), s,
                                     aug_config)
    if _inside_margin(geo, s, config.precrop_size):
      rows.append(_params_of_geometry(geo, flipped, s))
      hosts.append(A.augment_geometry(image, points, np.ones(68, bool),
                                      crop_m, s, SCHEME,
                                      np.random.default_rng(seed), aug_config))
  batch = D.stack_samples([sample] * len(rows))
  out = jax.tree.map(np.asarray, _apply(_device(s), batch, _batch_params(rows)))
  for i, (crop, pts, _, m) in enumerate(hosts):
    diff = out["image"][i].astype(int) - crop.astype(int)
    inner = np.zeros((s, s), bool)
    inner[1:-1, 1:-1] = True  # the image border is far outside the crop.
    assert diff[inner].min() >= -2 and diff[inner].max() <= 1, (
        diff.min(), diff.max())
    np.testing.assert_allclose(out["landmarks"][i], pts, atol=2e-3)
    np.testing.assert_allclose(out["crop_to_image"][i], T.invert_affine(m),
                               atol=1e-3)


@pytest.mark.parametrize("side", [14.0, 20.0, 24.0, 25.0, 26.0, 40.0])
def test_precrop_holds_the_margin_region_on_both_paths(side):
  """Whatever the path (copy for k >= ~1.05, resampled below), the
  widened crop's square (crop px -d ... S - 1 + d) lies inside the
  pre-crop's pixel centres 0 ... P - 1, so every bilinear tap the device
  warp takes for it holds image content: k ~ 32 / (1.25 side)."""
  s = 32
  config = _crop_config(s)
  p, d = config.precrop_size, (config.precrop_size - s) / 2.0
  image = _smooth_noise(160, 160, 3)
  record = _record(_face_points((80.0, 80.0), side, 1))
  sample = pipeline.precrop_sample(record, image, 0, config)
  c, sc = T.record_center_scale(record, "points")
  k = T.crop_matrix(c, sc, s)[0, 0]
  corners = np.array([[-d, -d], [s - 1 + d, -d], [-d, s - 1 + d],
                      [s - 1 + d, s - 1 + d]])
  q = T.apply_affine(T.invert_affine(sample["precrop_to_crop"]), corners)
  assert q.min() >= -1e-3 and q.max() <= p - 1 + 1e-3, q
  copied = not np.allclose(sample["precrop_to_crop"][:, :2], np.eye(2))
  assert copied == pipeline.copies_original_pixels(k, p)
  assert copied == (k >= 1.06) or abs(k - 1.05) < 0.01, k


def test_base_crop_is_the_plain_crop():
  s = 32
  image = _smooth_noise(90, 100, 5)
  points = _face_points((50.0, 45.0), 18.0, 6)
  record = _record(points)
  sample = pipeline.precrop_sample(record, image, 0, _crop_config(s))
  base = jax.tree.map(np.asarray, jax.jit(_device(s).base_crop)(
      D.stack_samples([sample])))
  c, sc = T.record_center_scale(record, "points")
  crop, pts, _, c2i = T.crop_face(image, points, c, sc, s)
  _assert_crops_close(base["image"][0], crop)
  np.testing.assert_allclose(base["landmarks"][0], pts, atol=2e-3)
  np.testing.assert_allclose(base["crop_to_image"][0], c2i, atol=1e-4)


# ------------------------------------------------------------- texture --


def test_texture_ops_equal_host_on_fixed_parameters():
  image = _smooth_noise(48, 48, 7)
  # Occlusion: the host's four uniforms, in its order -> the same box.
  for seed in range(10):
    u = np.random.default_rng(seed).random(4)
    host = A.occlude(image, np.random.default_rng(seed))
    box = D.occlusion_box(*[jnp.float32(v) for v in u], 48, 48)
    np.testing.assert_array_equal(np.asarray(D.occlude(image, box)), host)
  # Box blur: every kernel size up to the largest, bit for bit.
  k_max = D.max_blur_kernel(48, 0.25)
  assert k_max == 11
  blur = jax.jit(lambda k: D.box_blur(jnp.asarray(image), k, k_max))
  for k in range(0, k_max + 1):
    np.testing.assert_array_equal(np.asarray(blur(k)), A.box_blur(image, k),
                                  err_msg=f"k={k}")
  # Gamma: the host's g (both branches), one level at most.
  values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
  for seed in range(10):
    rng = np.random.default_rng(seed)
    g = 0.25 + 0.75 * rng.random() if rng.random() < 0.5 else (
        1.0 + 3.0 * rng.random())
    host = A.gamma(values, np.random.default_rng(seed))
    _assert_crops_close(D.gamma(values, jnp.float32(g)), host, 0.02)
  # Noise blend: the host's noise image and alpha.
  for seed in range(10):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
    alpha = 0.5 * rng.random()
    host = A.noise_blend(image, np.random.default_rng(seed), 0.5)
    _assert_crops_close(D.noise_blend(image, noise, jnp.float32(alpha)), host,
                        0.02)
  # Grey: exact integer luma. Equal to the host's float64 luma except at
  # exact ties (299 R + 587 G + 114 B = 1000 q + 500), where it rounds half
  # to even (int64 NumPy reference); the test image has ties of both kinds.
  rgb = np.random.default_rng(8).integers(0, 256, (64, 64, 3), np.uint8)
  rgb[0, :4] = [[0, 36, 12], [1, 13, 5], [0, 12, 4], [1, 37, 13]]  # q even, odd
  got = np.asarray(D.to_gray(rgb))[..., 0].astype(int)
  n = rgb.astype(np.int64) @ np.array([299, 587, 114])
  tie = n % 1000 == 500
  assert tie.sum() >= 4
  np.testing.assert_array_equal(got[~tie], A.to_gray(rgb)[..., 0][~tie])
  q = n // 1000
  np.testing.assert_array_equal(got[tie], (q + q % 2)[tie])


def test_apply_texture_chain_equals_host_order():
  """All five ops on, with the parameters the host drew: same result
  within the per-op levels above (at most 3 levels after the chain)."""
  image = _smooth_noise(48, 48, 9, lo=20, hi=235)
  config = A.AugmentConfig.from_mapping(dict(
      occlusion_prob=1, blur_prob=1, gamma_prob=1, noise_prob=1, gray_prob=1,
      blur_max_ratio=0.25))
  for seed in range(4):
    host = A.augment_texture(image, np.random.default_rng(seed), config)
    rng = np.random.default_rng(seed)            # replay the host's draws
    rng.random()
    occ = rng.random(4)
    rng.random()
    k = int(48 * 0.25 * rng.random())
    rng.random()
    g = 0.25 + 0.75 * rng.random() if rng.random() < 0.5 else (
        1.0 + 3.0 * rng.random())
    rng.random()
    noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
    alpha = 0.5 * rng.random()
    out = D.occlude(jnp.asarray(image), D.occlusion_box(
        *[jnp.float32(v) for v in occ], 48, 48))
    out = D.box_blur(out, k, D.max_blur_kernel(48, 0.25))
    out = D.gamma(out, jnp.float32(g))
    out = D.noise_blend(out, jnp.asarray(noise), jnp.float32(alpha))
    out = np.asarray(D.to_gray(out))
    diff = np.abs(out.astype(int) - host.astype(int))
    assert diff.max() <= 3 and (diff > 0).mean() < 0.05, (diff.max(),
                                                          (diff > 0).mean())


# --------------------------------------------------------- distributions --


def _ks_ok(a, b, name):
  p = stats.ks_2samp(a, b).pvalue
  assert p > 1e-3, f"{name}: KS p = {p:.2g}"


def _z(a, b):
  """z of the difference of means (a, b: samples; Welch)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
  return (a.mean() - b.mean()) / max(se, 1e-12)


def _z_std(a, b):
  """z of the difference of standard deviations (normal-theory se)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  se = np.sqrt(a.var() / (2 * a.size) + b.var() / (2 * b.size))
  return (a.std() - b.std()) / se


def _same_distribution(a, b, name):
  _ks_ok(a, b, name)
  assert abs(_z(a, b)) < 4, f"{name}: mean z = {_z(a, b):.2f}"
  assert abs(_z_std(a, b)) < 4, f"{name}: std z = {_z_std(a, b):.2f}"


def _host_geometry_draws(n, s, config):
  rows = [_params_of_geometry(*A.sample_geometry(
      np.random.default_rng([11, i]), s, config), s) for i in range(n)]
  flip, angle, zoom, shift = (np.array(v) for v in zip(*rows))
  return dict(flip=flip, angle=angle, zoom=zoom, shift_x=shift[:, 0],
              shift_y=shift[:, 1])


def _device_geometry_draws(n, s, config):
  p = jax.jit(lambda k: D.sample_batch_params(k, n, s, config))(
      jax.random.PRNGKey(5))
  p = jax.tree.map(np.asarray, p)
  return dict(flip=p["flip"], angle=p["angle"], zoom=p["zoom"],
              shift_x=p["shift"][:, 0], shift_y=p["shift"][:, 1])


def test_sampled_geometry_has_the_host_distribution():
  n, s = 4000, 256
  config = A.AugmentConfig()
  host = _host_geometry_draws(n, s, config)
  dev = _device_geometry_draws(n, s, config)
  for name in ("angle", "zoom", "shift_x", "shift_y"):
    _same_distribution(dev[name], host[name], name)
  assert abs(_z(dev["flip"], host["flip"])) < 4
  # Negative control: 10 % more rotation (on the host side) is flagged.
  wider = A.AugmentConfig.from_mapping(dict(rotate_sigma_deg=19.8))
  assert abs(_z_std(dev["angle"],
                    _host_geometry_draws(n, s, wider)["angle"])) > 4


def test_sampled_texture_parameters_have_the_host_distribution(monkeypatch):
  """Each texture op's parameter, read from the host's own functions (the
  box the host blacks out, the k it blurs with, its gamma table, its noise
  weight) vs the device's `sample_params` draws; the ops' rates vs the
  configured probabilities (the host's rule: `rng.random() < p`)."""
  n, s = 4000, 48
  config = A.AugmentConfig.from_mapping(dict(blur_max_ratio=0.25))
  dev = jax.tree.map(np.asarray, jax.jit(lambda k: D.sample_batch_params(
      k, n, s, config))(jax.random.PRNGKey(21)))
  for flag, prob in (("occlude", 0.4), ("blur", 0.3), ("gamma", 0.2),
                     ("noise", 0.2), ("grey", 0.2), ("flip", 0.5)):
    rate = dev[flag].mean()
    assert abs(rate - prob) < 4 * np.sqrt(prob * (1 - prob) / n), flag
  rngs = [np.random.default_rng([22, i]) for i in range(n)]
  # Occlusion: the black box the host draws on a picture without black.
  ones = np.ones((s, s, 3), np.uint8)
  boxes = []
  for rng in rngs[:2000]:
    ys, xs = np.nonzero(A.occlude(ones, rng)[..., 0] == 0)
    boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
  boxes = np.array(boxes)
  for j, name in enumerate(("x0", "y0", "x1", "y1")):
    _same_distribution(dev["occlusion_box"][:, j], boxes[:, j], name)
  # Blur: the kernel the host passes to box_blur.
  seen = []
  monkeypatch.setattr(A, "box_blur", lambda image, k: seen.append(k))
  for rng in rngs:
    A.blur(ones, rng, config.blur_max_ratio)
  _same_distribution(dev["blur_k"], np.array(seen), "blur k")
  assert max(seen) == D.max_blur_kernel(s, config.blur_max_ratio) == 11
  # Gamma: the host's table at 128 vs the device's g through the formula.
  values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, -1)
  host_g = np.array([A.gamma(values, rng)[8, 0, 0] for rng in rngs])
  dev_g = np.floor(255 * (128 / 255) ** dev["gamma_value"].astype(np.float64))
  _same_distribution(dev_g, host_g, "gamma at 128")
  # Noise: the host's weight, read off a black image (max = floor(255 a)).
  zeros = np.zeros((16, 16, 3), np.uint8)
  host_a = np.array([A.noise_blend(zeros, rng, 0.5).max() for rng in rngs])
  dev_a = np.floor(dev["noise_alpha"].astype(np.float64) * 255)
  _same_distribution(dev_a, host_a, "noise alpha")


def _texture_stats(crops):
  """Per-crop statistics each texture op moves: black fraction
  (occlusion), mean (gamma, noise, occlusion), roughness (blur, noise),
  channel spread (grey)."""
  x = np.asarray(crops).astype(np.float64)
  return dict(
      black=(x == 0).all(-1).mean((1, 2)),
      mean=x.mean((1, 2, 3)),
      rough=np.abs(np.diff(x, axis=2)).mean((1, 2, 3)),
      spread=np.abs(x[..., 0] - x[..., 2]).mean((1, 2)))


def _host_samples(record, image, s, n, seed, **augment):
  config = pipeline.CropConfig(
      crop_size=s, num_points=68, train=True, crop_mode="points",
      augment=A.AugmentConfig.from_mapping(augment or None))
  return [pipeline.make_sample(record, image, 0, config,
                               np.random.default_rng([seed, i]))
          for i in range(n)]


def _summary(landmarks, crops):
  """Per-sample statistics of the landmarks (centroid, spread, point 0)
  and of the crops (_texture_stats)."""
  lm = np.asarray(landmarks, np.float64)
  centre = lm.mean(1)
  spread = np.sqrt(((lm - centre[:, None]) ** 2).sum(-1).mean(1))
  return dict(cx=centre[:, 0], cy=centre[:, 1], lm_spread=spread,
              p0x=lm[:, 0, 0], p0y=lm[:, 0, 1], **_texture_stats(crops))


def test_full_augmentation_has_the_host_distribution():
  """End to end on one face, default augmentation: host make_sample
  (decode, crop, augment) vs pre-crop + DeviceAugment. The landmarks'
  centroid, spread and first point, and the crops' pixel mean, roughness,
  channel spread and black fraction (the picture has no black pixel, so
  black = occluded) have the host's distributions; the rates of "some
  black left" (occlusion not covered by the later noise, ~0.33) and "no
  channel spread" (grey, the last op, 0.2) too. 48 px crops, so the box
  blur (k <= 2) is part of it."""
  n, s = 2000, 48
  image = _smooth_noise(120, 130, 13, lo=30, hi=240)
  points = _face_points((62.0, 58.0), 27.0, 14)    # k = 48 / 33.75 = 1.42
  record = _record(points)
  host = _host_samples(record, image, s, n, 15)
  sample = pipeline.precrop_sample(record, image, 0, _crop_config(s))
  dev = jax.tree.map(np.asarray, jax.jit(_device(s).__call__)(
      D.stack_samples([sample] * n), jax.random.PRNGKey(16)))
  h = _summary(np.stack([x["landmarks"] for x in host]),
               np.stack([x["image"] for x in host]))
  d = _summary(dev["landmarks"], dev["image"])
  for name in h:
    _same_distribution(d[name], h[name], name)
  assert abs(_z(d["black"] > 0, h["black"] > 0)) < 4
  assert abs(_z(d["spread"] == 0, h["spread"] == 0)) < 4
  assert abs(np.mean(h["spread"] == 0) - 0.2) < 0.03
  # Negative control: occlusion 0.5 instead of 0.4 (host side) is flagged.
  more = _host_samples(record, image, s, n, 17, occlusion_prob=0.5)
  more = _texture_stats(np.stack([x["image"] for x in more]))
  assert abs(_z(d["black"] > 0, more["black"] > 0)) > 4


# --------------------------------------------------------- 1 vs 8 devices --


_DEVICES_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {repo!r})
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec
    from training import mesh as mesh_lib
    from tests import test_device_augment as t
    assert jax.device_count() == 8, jax.devices()
    batch = t.sharding_batch()
    da = t._device(32)
    rng = jax.random.fold_in(jax.random.PRNGKey(7), 3)  # seed 7, step 3
    out = {{}}
    for n in (1, 8):
      mesh = mesh_lib.make_mesh(jax.devices()[:n])
      data = NamedSharding(mesh, PartitionSpec("data"))
      fn = jax.jit(da.__call__, in_shardings=(data, NamedSharding(
          mesh, PartitionSpec())), out_shardings=data)
      got = fn(jax.device_put(batch, data), rng)
      assert len(got["image"].sharding.device_set) == n
      for k, v in got.items():
        out[f"{{n}}/{{k}}"] = np.asarray(v)
    np.savez(sys.argv[1], **out)
""")


def sharding_batch(b=8, s=32):
  """8 different pre-crop samples (the subprocess of the test below)."""
  samples = []
  for i in range(b):
    image = _smooth_noise(80, 90, 20 + i)
    points = _face_points((45.0 + i, 40.0), 18.0, 30 + i)
    samples.append(pipeline.precrop_sample(_record(points), image, i,
                                           _crop_config(s)))
  return D.stack_samples(samples)


def test_one_and_eight_devices_give_identical_crops(tmp_path):
  script = tmp_path / "devices.py"
  script.write_text(_DEVICES_SCRIPT.format(repo=REPO))
  out = tmp_path / "out.npz"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(script), str(out)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = dict(np.load(out))
  keys = [k[2:] for k in r if k.startswith("1/")]
  assert {"image", "landmarks", "crop_to_image", "visible"} <= set(keys)
  for k in keys:
    np.testing.assert_array_equal(r["8/" + k], r["1/" + k], err_msg=k)
  # ... and the draws differ between samples (keys per position), and are
  # augmented (not the plain crops).
  assert len({r["1/image"][i].tobytes() for i in range(8)}) == 8
  assert len({r["1/crop_to_image"][i].tobytes() for i in range(8)}) == 8


# ------------------------------------------------------- reduced decode --


def _dots_jpeg(path, size, dots, sigma):
  yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float64)
  g = np.full(yy.shape, 20.0)
  for x, y in dots:
    g += 220.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rgb = np.repeat(np.clip(np.rint(g), 0, 255).astype(np.uint8)[..., None], 3,
                  -1)
  Image.fromarray(rgb).save(path, quality=95, subsampling=0)


def _centroids(gray, expected, radius):
  yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]]
  out = []
  for x, y in expected:
    w = np.clip(gray - 20.0, 0, None) * (((xx - x) ** 2 + (yy - y) ** 2)
                                          < radius ** 2)
    out.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
  return np.array(out)


def test_draft_reduction_choice():
  assert [pipeline.draft_reduction(k) for k in
          (2.0, 1.0, 0.6, 0.5, 0.3, 0.25, 0.2, 0.13, 0.12, 0.01)] == [
              1, 1, 1, 2, 2, 4, 4, 4, 8, 8]


def test_reduced_jpeg_decode_maps_landmarks(tmp_path):
  """A 5-point face 400 px wide in an 1000 x 900 JPEG, cropped to 64 px
  (k = 0.128): decoded at 1/4 (libjpeg DCT scaling); the dots' centroids
  are where the landmarks map, in the reduced image (through
  transforms.reduction_map) and in the pre-crop the loader builds."""
  path = str(tmp_path / "dots.jpg")
  dots = np.array([[300.0, 300.0], [700.0, 300.0], [500.0, 480.0],
                   [360.5, 700.0], [640.25, 699.75]])
  _dots_jpeg(path, (1000, 900), dots, sigma=12.0)
  record = records.FaceRecord(path, dots.astype(np.float32))
  config = pipeline.CropConfig(crop_size=64, num_points=5, train=True,
                               crop_mode="points", augment_on="device",
                               precrop_size=D.precrop_size(64))
  make = pipeline._StarMake(config)  # pylint: disable=protected-access
  decoded = make.load(record)
  assert isinstance(decoded, pipeline.DecodedImage)
  assert decoded.reduction == 4 and decoded.pixels.shape == (225, 250, 3)
  reduced_dots = T.apply_affine(T.invert_affine(T.reduction_map(4)), dots)
  found = _centroids(decoded.pixels[..., 0].astype(float), reduced_dots, 10)
  # 0.5 original px = 1/8 reduced px.
  np.testing.assert_allclose(T.apply_affine(T.reduction_map(4), found), dots,
                             atol=0.5)
  sample = make(record, decoded, 0, None)
  assert sample["image"].shape == (128, 128, 3)
  found = _centroids(sample["image"][..., 0].astype(float),
                     sample["landmarks"], 4)
  np.testing.assert_allclose(found, sample["landmarks"], atol=0.1)
  np.testing.assert_allclose(
      T.apply_affine(sample["crop_to_image"], sample["landmarks"]), dots,
      atol=1e-3)
  # The full decode gives the same pre-crop up to the reduced decode's
  # smoothing (no shift: the centroids agree within 0.1 pre-crop px).
  full = pipeline.make_sample(record, record.load_image(), 0, config, None)
  found_full = _centroids(full["image"][..., 0].astype(float),
                          full["landmarks"], 4)
  np.testing.assert_allclose(found_full, found, atol=0.1)
  # Other formats decode at full size.
  png = str(tmp_path / "dots.png")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.open(path).save(png)
  assert pipeline.decode_reduced(png, 4).reduction == 1


# ------------------------------------------------------------- config --


def test_config_errors_say_what_was_expected():
  with pytest.raises(errors.UserError, match="augment_on must be one of"):
    D.check_augment_on("gpu")
  with pytest.raises(errors.UserError, match="precrop_margin must be"):
    D.precrop_size(64, 0.9)
  with pytest.raises(errors.UserError, match="augment_on"):
    _device(32)({"image": jnp.zeros((1, 64, 64, 3), jnp.uint8)},
                jax.random.PRNGKey(0))
  batch = _device(32).dummy_batch(1, 68)
  with pytest.raises(errors.UserError, match="are 64 px, expected 48"):
    _device(32, margin=1.5)(batch, jax.random.PRNGKey(0))
  assert D.precrop_size(256) == 512 and D.precrop_size(64, 1.75) == 112


# ------------------------------------------------- training and resume --


def _tiny_device_config(max_steps):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.augment_on = "device"
  c.data.synthetic.num_train = 16
  c.data.synthetic.num_eval = 4
  c.data.synthetic.image_size = 48
  c.data.crop_size = 32
  c.data.num_workers = 0
  c.model.update(dict(num_stacks=1, depth=1, width=8, conv3x3="xla"))
  c.batch_size = 4
  c.max_steps = max_steps
  c.optimizer.learning_rate = 1e-2
  c.optimizer.decay_epochs = ()
  c.eval_every_epochs = 0
  c.checkpoint_every_steps = 0
  c.log_every_steps = 1
  c.progress_every_steps = 100
  c.async_checkpoints = False
  c.compilation_cache_dir = ""
  return c


def _losses(workdir):
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [r["train/loss"] for r in rows if "train/loss" in r]


def test_device_mode_training_falls_and_resumes_exactly(tmp_path):
  """configs/default.py, tiny, augment_on="device", through the Python
  API: the loss falls over 16 steps, and a run restarted from the step-8
  checkpoint of that run (a copy of its workdir without the later
  checkpoint: what a killed run leaves) ends with the same parameters bit
  for bit: the crops of step t depend only on the seed, t and the batch
  position, and the pre-crop order resumes with the grain state."""
  import shutil  # pylint: disable=g-import-not-at-top
  from star_jax import method as star_method  # pylint: disable=g-import-not-at-top
  from training import loop  # pylint: disable=g-import-not-at-top
  steps = 16
  config = _tiny_device_config(steps)
  config.checkpoint_every_steps = 8
  straight_dir = str(tmp_path / "straight")
  straight = loop.train(star_method.StarMethod(config), config, straight_dir)
  losses = _losses(straight_dir)
  assert len(losses) == steps and np.all(np.isfinite(losses))
  assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses

  killed_dir = str(tmp_path / "killed")
  shutil.copytree(straight_dir, killed_dir)
  shutil.rmtree(os.path.join(killed_dir, "checkpoints", str(steps)))
  assert sorted(os.listdir(os.path.join(killed_dir, "checkpoints"))) == ["8"]
  resumed = loop.train(star_method.StarMethod(config), config, killed_dir)
  assert int(resumed.step) == steps
  for a, b in zip(jax.tree.leaves((straight.params, straight.model_state)),
                  jax.tree.leaves((resumed.params, resumed.model_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _losses(killed_dir)[steps:] == losses[8:]

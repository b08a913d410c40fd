"""Tests for star_jax.loss against independent float64 NumPy references."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance as scipy_distance

from landmarks import distribution
from star_jax import loss

# ----------------------------------------------------------------------------
# Independent float64 NumPy references (written from the paper's equations).


def ref_grid(h, w):
  return np.linspace(-1, 1, w), np.linspace(-1, 1, h)


def ref_pca(heatmap):
  """One heatmap [H, W] -> mean (2,), cov (2, 2), eigh (ascending, columns)."""
  heatmap = np.asarray(heatmap, np.float64)
  h, w = heatmap.shape
  xs, ys = ref_grid(h, w)
  gx, gy = np.meshgrid(xs, ys)  # [H, W] each: gx[i, j] = xs[j].
  p = heatmap / max(heatmap.sum(), 1e-6)
  mean = np.array([(p * gx).sum(), (p * gy).sum()])
  d = np.stack([gx - mean[0], gy - mean[1]], -1).reshape(-1, 2)
  num = (p.reshape(-1, 1, 1) * d[:, :, None] * d[:, None, :]).sum(0)
  v1 = p.sum() + 1e-5
  v2 = (p ** 2).sum() + 1e-5
  cov = num / (v1 - v2 / v1)
  evals, evecs = np.linalg.eigh(cov)
  return mean, cov, evals, evecs


def ref_distance(name, e):
  e = np.asarray(e, np.float64)
  a = np.abs(e)
  if name == "l1":
    return a
  if name == "l2":
    return e ** 2
  if name == "smooth_l1":
    return np.where(a < 0.01, 50.0 * e ** 2, a - 0.005)
  if name == "wing":
    omega, eps = 0.01, 2.0
    c = omega - omega * np.log(1 + omega / eps)
    return np.where(a < omega, omega * np.log(1 + a / eps), a - c)
  if name == "awing":
    return ref_awing(a, 0.0)
  raise AssertionError(name)


def ref_awing(delta, y, omega=14.0, theta=0.5, eps=1.0, alpha=2.1):
  p = alpha - y
  big_a = (omega * (1 / (1 + (theta / eps) ** p)) * p
           * (theta / eps) ** (p - 1) / eps)
  big_c = theta * big_a - omega * np.log(1 + (theta / eps) ** p)
  return np.where(delta < theta, omega * np.log(1 + (delta / eps) ** p),
                  big_a * delta - big_c)


def ref_star(heatmaps, landmarks, distance="smooth_l1", w=1.0,
             restriction="value", value_form="code", clamp=None):
  heatmaps = np.asarray(heatmaps, np.float64)
  b, n = heatmaps.shape[:2]
  total = 0.0
  for i, j in itertools.product(range(b), range(n)):
    mean, _, evals, evecs = ref_pca(heatmaps[i, j])
    if clamp is not None:
      evals = np.clip(evals, *clamp)
    e = np.asarray(landmarks[i, j], np.float64) - mean
    term = 0.0
    for k in range(2):
      term += ref_distance(distance, evecs[:, k] @ e) / np.sqrt(evals[k] + 1e-5)
    if restriction == "value":
      term += w * (np.abs(evals).sum() if value_form == "code"
                   else evals.sum() / 2)
    total += term
  return total / (b * n)


def gaussian_blobs(rng, b, n, h, w):
  """Random anisotropic blobs (well away from degenerate) [B, N, H, W]."""
  xs, ys = ref_grid(h, w)
  gx, gy = np.meshgrid(xs, ys)
  out = np.zeros((b, n, h, w))
  for i, j in itertools.product(range(b), range(n)):
    cx, cy = rng.uniform(-0.5, 0.5, 2)
    angle = rng.uniform(0, np.pi)
    s1, s2 = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
    rot = np.array([[np.cos(angle), -np.sin(angle)],
                    [np.sin(angle), np.cos(angle)]])
    prec = rot @ np.diag([1 / s1 ** 2, 1 / s2 ** 2]) @ rot.T
    d = np.stack([gx - cx, gy - cy], -1)
    out[i, j] = np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, prec, d))
  return out + 0.01 * rng.random(out.shape)


def degenerate_heatmaps(h=8, w=8):
  one_hot = np.zeros((h, w))
  one_hot[2, 5] = 1.0
  two_points = np.zeros((h, w))
  two_points[1, 1] = two_points[1, 6] = 1.0
  return {
      "all_zero": np.zeros((h, w)),
      "constant": np.ones((h, w)),
      "one_hot": one_hot,
      "one_hot_corner": np.pad(np.ones((1, 1)), ((0, h - 1), (0, w - 1))),
      "tiny_sum": np.full((h, w), 1e-9),
      "two_points": two_points,
  }


# ----------------------------------------------------------------------------
# Soft-argmax and PCA.


def test_soft_argmax_one_hot_and_reference():
  h, w = 5, 9  # Non-square: x must use W, y must use H.
  hm = np.zeros((1, 2, h, w), np.float32)
  hm[0, 0, 1, 7] = 3.0
  hm[0, 1] = np.random.default_rng(0).random((h, w))
  out = np.asarray(distribution.soft_argmax(hm))
  xs, ys = ref_grid(h, w)
  np.testing.assert_allclose(out[0, 0], [xs[7], ys[1]], atol=1e-6)
  mean, _, _, _ = ref_pca(hm[0, 1])
  np.testing.assert_allclose(out[0, 1], mean, atol=1e-6)
  assert out.dtype == np.float32


def test_distribution_pca_matches_reference():
  rng = np.random.default_rng(1)
  hm = gaussian_blobs(rng, 2, 3, 12, 10).astype(np.float32)
  pca = distribution.distribution_pca(hm)
  for i, j in itertools.product(range(2), range(3)):
    mean, cov, evals, evecs = ref_pca(hm[i, j])
    np.testing.assert_allclose(pca.mean[i, j], mean, atol=1e-6)
    np.testing.assert_allclose(pca.covariance[i, j], cov, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(pca.eigenvalues[i, j], evals, rtol=1e-4,
                               atol=1e-7)
    cos = np.abs(np.sum(np.asarray(pca.eigenvectors[i, j]) * evecs, axis=0))
    np.testing.assert_allclose(cos, 1.0, atol=1e-4)


def test_constant_heatmap_covariance_is_isotropic_grid_variance():
  # Hand-computed: uniform on linspace(-1, 1, 8)^2, mean 0, variance of the
  # grid sum(x^2)/64 (per axis 8 * sum(xs^2) / 64), Bessel factor
  # 1/(V1 - V2/V1) with V1 = 1 + 1e-5, V2 = 1/64 + 1e-5.
  xs = np.linspace(-1, 1, 8)
  var = np.mean(xs ** 2)
  v1, v2 = 1 + 1e-5, 1 / 64 + 1e-5
  expected = var / (v1 - v2 / v1)
  pca = distribution.distribution_pca(np.ones((1, 1, 8, 8), np.float32))
  np.testing.assert_allclose(pca.eigenvalues[0, 0], [expected, expected],
                             rtol=1e-5)
  np.testing.assert_allclose(pca.eigenvectors[0, 0], np.eye(2), atol=1e-6)


# ----------------------------------------------------------------------------
# Closed-form 2x2 eigen-decomposition.


def _random_test_matrices(rng, count):
  """SPD of many scales, isotropic, near-degenerate, diagonal, rank-1."""
  q = count // 5
  scale = 10.0 ** rng.uniform(-6, 2, (q, 1, 1))
  a = rng.normal(size=(q, 2, 2))
  spd = scale * (a @ np.swapaxes(a, 1, 2) + 1e-3 * np.eye(2))
  iso = 10.0 ** rng.uniform(-6, 2, (q, 1, 1)) * np.eye(2)
  iso = np.concatenate([iso, np.zeros((1, 2, 2))])
  base = 10.0 ** rng.uniform(-4, 1, (q, 1, 1))
  pert = rng.normal(size=(q, 2, 2)) * base * 10.0 ** rng.uniform(-9, -3,
                                                                   (q, 1, 1))
  near = base * np.eye(2) + 0.5 * (pert + np.swapaxes(pert, 1, 2))
  diag = np.zeros((q, 2, 2))
  diag[:, 0, 0] = rng.uniform(0, 2, q)
  diag[:, 1, 1] = rng.uniform(0, 2, q)
  v = rng.normal(size=(q, 2, 1))
  rank1 = v @ np.swapaxes(v, 1, 2)
  return np.concatenate([spd, iso, near, diag, rank1]).astype(np.float32)


def test_symmetric_eigh_2x2_matches_numpy_eigh():
  rng = np.random.default_rng(2)
  mats = _random_test_matrices(rng, 12000)
  assert mats.shape[0] >= 10000
  evals, evecs = jax.jit(distribution.symmetric_eigh_2x2)(mats)
  evals = np.asarray(evals, np.float64)
  evecs = np.asarray(evecs, np.float64)
  ref_vals, ref_vecs = np.linalg.eigh(mats.astype(np.float64))
  norm = np.abs(ref_vals).max(-1, keepdims=True)
  # Eigenvalues: absolute error at float32 rounding of the matrix norm.
  err = np.abs(evals - ref_vals).max(-1) / np.maximum(norm[:, 0], 1e-30)
  assert err.max() < 4e-6, err.max()
  # Eigenvectors: orthonormal and reconstructing the matrix, always.
  eye = np.einsum("nki,nkj->nij", evecs, evecs)
  np.testing.assert_allclose(eye, np.broadcast_to(np.eye(2), eye.shape),
                             atol=1e-6)
  recon = np.einsum("nik,nk,njk->nij", evecs, evals, evecs)
  err = np.abs(recon - mats).max((-2, -1)) / np.maximum(norm[:, 0], 1e-30)
  assert err.max() < 4e-6, err.max()
  # |cos| with numpy's eigenvectors where they are well defined.
  gap = (ref_vals[:, 1] - ref_vals[:, 0]) / np.maximum(norm[:, 0], 1e-30)
  defined = gap > 1e-3
  assert defined.sum() > 5000
  cos = np.abs(np.sum(evecs * ref_vecs, axis=1))[defined]
  np.testing.assert_allclose(cos, 1.0, atol=1e-3)
  # Isotropic matrices give the coordinate axes exactly.
  iso = np.abs(mats[:, 0, 1]) == 0
  iso &= mats[:, 0, 0] == mats[:, 1, 1]
  np.testing.assert_array_equal(evecs[iso], np.broadcast_to(np.eye(2),
                                                             evecs[iso].shape))


def test_symmetric_eigh_2x2_gradients_finite_at_isotropy():
  def f(m):
    vals, vecs = distribution.symmetric_eigh_2x2(m)
    return jnp.sum(vals * jnp.array([1.0, 2.0])) + jnp.sum(vecs * vecs[::-1])
  for m in [np.zeros((2, 2)), np.eye(2), 3 * np.eye(2)]:
    g = jax.grad(f)(jnp.asarray(m, jnp.float32))
    assert np.all(np.isfinite(g))


# ----------------------------------------------------------------------------
# STAR loss values.


@pytest.mark.parametrize("distance", loss.DISTANCES)
@pytest.mark.parametrize("restriction,value_form", [
    ("value", "code"), ("value", "paper"), ("detach", "code"),
    ("none", "code")])
def test_star_loss_matches_reference(distance, restriction, value_form):
  rng = np.random.default_rng(3)
  hm = gaussian_blobs(rng, 2, 3, 10, 10).astype(np.float32)
  lm = rng.uniform(-0.8, 0.8, (2, 3, 2)).astype(np.float32)
  got = loss.star_loss(hm, lm, distance=distance, w=0.7,
                       restriction=restriction, value_form=value_form)
  want = ref_star(hm, lm, distance, 0.7, restriction, value_form)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), want, rtol=2e-4)


def test_star_loss_eigenvalue_clamp_matches_reference():
  rng = np.random.default_rng(4)
  hm = gaussian_blobs(rng, 1, 4, 10, 10).astype(np.float32)
  lm = rng.uniform(-0.8, 0.8, (1, 4, 2)).astype(np.float32)
  clamp = (1e-2, 5e-2)  # Tight, so that both bounds are active.
  got = loss.star_loss(hm, lm, eigenvalue_clamp=clamp)
  want = ref_star(hm, lm, clamp=clamp)
  np.testing.assert_allclose(float(got), want, rtol=2e-4)
  assert abs(want - ref_star(hm, lm)) > 1e-3  # The clamp changed something.


def test_star_loss_hand_computed_isotropic_case():
  # Constant 8x8 heatmap: mean 0, l1 = l2 = lam (see the PCA test), axes as
  # eigenvectors. Target (0.3, -0.2), l1 distance, code restriction:
  # (0.3 + 0.2) / sqrt(lam + 1e-5) + 2 * lam.
  xs = np.linspace(-1, 1, 8)
  lam = np.mean(xs ** 2) / ((1 + 1e-5) - (1 / 64 + 1e-5) / (1 + 1e-5))
  want = 0.5 / np.sqrt(lam + 1e-5) + 2 * lam
  got = loss.star_loss(np.ones((1, 1, 8, 8), np.float32),
                       np.array([[[0.3, -0.2]]], np.float32), distance="l1")
  np.testing.assert_allclose(float(got), want, rtol=1e-5)


def test_distances_hand_computed():
  e = jnp.array([0.005, -0.02, 0.0])
  np.testing.assert_allclose(loss.smooth_l1_distance(e), [1.25e-3, 0.015, 0.0],
                             rtol=1e-6)
  # Wing: continuous at omega.
  omega = 0.01
  lo = loss.wing_distance(jnp.array(omega * (1 - 1e-6)))
  hi = loss.wing_distance(jnp.array(omega * (1 + 1e-6)))
  np.testing.assert_allclose(lo, hi, atol=1e-7)
  # AWing: value and slope continuous at theta (its design property).
  f = lambda x: loss.awing_distance(x)
  t = 0.5
  np.testing.assert_allclose(f(jnp.array(t - 1e-4)), f(jnp.array(t + 1e-4)),
                             rtol=1e-3)
  np.testing.assert_allclose(jax.grad(f)(t - 1e-3), jax.grad(f)(t + 1e-3),
                             rtol=1e-2)
  for name in loss.DISTANCES:
    x = np.linspace(-1.5, 1.5, 101)
    np.testing.assert_allclose(loss.distance_fn(name)(jnp.asarray(x)),
                               ref_distance(name, x), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("distance", loss.DISTANCES)
def test_coordinate_loss_matches_reference(distance):
  rng = np.random.default_rng(5)
  pred = rng.uniform(-1, 1, (3, 4, 2))
  target = pred + rng.normal(scale=0.05, size=pred.shape)
  target[0, 0] = pred[0, 0]  # Zero error: finite value and gradient.
  err = target - pred
  want_norm = ref_distance(distance, np.linalg.norm(err, axis=-1)).mean()
  want_coord = ref_distance(distance, err).mean()
  got_norm = loss.coordinate_loss(pred, target, distance=distance)
  got_coord = loss.coordinate_loss(pred, target, distance=distance,
                                   on="coordinates")
  np.testing.assert_allclose(float(got_norm), want_norm, rtol=1e-5)
  np.testing.assert_allclose(float(got_coord), want_coord, rtol=1e-5)
  g = jax.grad(lambda p: loss.coordinate_loss(p, target, distance=distance))(
      jnp.asarray(pred, jnp.float32))
  assert np.all(np.isfinite(g))


# ----------------------------------------------------------------------------
# Gradients.


def _central_difference(f, x, direction, h):
  return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


@pytest.mark.parametrize("distance,restriction,value_form", [
    ("smooth_l1", "value", "code"), ("l2", "value", "paper"),
    ("l1", "none", "code"), ("wing", "value", "code"),
    ("awing", "detach", "code"), ("smooth_l1", "detach", "code")])
def test_star_loss_grad_matches_finite_differences(distance, restriction,
                                                   value_form):
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    hm = jnp.asarray(gaussian_blobs(rng, 2, 2, 8, 8))
    lm = jnp.asarray(rng.uniform(-0.8, 0.8, (2, 2, 2)))
    f = jax.jit(lambda h, l: loss.star_loss(h, l, distance=distance,
                                            restriction=restriction,
                                            value_form=value_form))
    gh, gl = jax.jit(jax.grad(f, argnums=(0, 1)))(hm, lm)
    assert gh.dtype == jnp.float64
    for _ in range(3):
      dh = jnp.asarray(rng.normal(size=hm.shape))
      dl = jnp.asarray(rng.normal(size=lm.shape))
      if restriction != "detach":  # detach: grad is not the derivative of f.
        fd = _central_difference(lambda h: f(h, lm), hm, dh, 1e-6)
        np.testing.assert_allclose(jnp.sum(gh * dh), fd, rtol=1e-5, atol=1e-9)
      fd = _central_difference(lambda l: f(hm, l), lm, dl, 1e-6)
      np.testing.assert_allclose(jnp.sum(gl * dl), fd, rtol=1e-5, atol=1e-9)


def _square_symmetrised(x):
  """Average of x over the 8 symmetries of the square (last two axes)."""
  views = [x, np.flip(x, -1), np.flip(x, -2), np.flip(x, (-2, -1))]
  views += [np.swapaxes(v, -2, -1) for v in views]
  return sum(views) / 8


def test_star_loss_l2_grad_at_and_near_isotropy():
  # With d = e^2, eq. 6 is e^T (S + eps I)^(-1/2) e, smooth at l1 == l2.
  # (a) Exactly isotropic heatmap, any direction: the derivative exists and
  #     must be exact (also along directions that keep it isotropic).
  # (b) Slightly anisotropic heatmap (relative gap ~1e-4), any direction: the
  #     generic branch must stay accurate close to the degeneracy.
  with jax.enable_x64(True):
    rng = np.random.default_rng(7)
    lm = jnp.array([[[0.3, -0.2]]], jnp.float64)
    f = jax.jit(lambda h: loss.star_loss(h, lm, distance="l2"))
    grad = jax.jit(jax.grad(f))
    base = _square_symmetrised(rng.random((1, 1, 8, 8)))
    pca = distribution.distribution_pca(jnp.asarray(base))
    assert pca.eigenvalues[0, 0, 0] == pca.eigenvalues[0, 0, 1]
    g = grad(jnp.asarray(base))
    for k in range(4):
      d = rng.normal(size=base.shape)
      d = jnp.asarray(_square_symmetrised(d) if k % 2 else d)
      np.testing.assert_allclose(jnp.sum(g * d),
                                 _central_difference(f, jnp.asarray(base), d,
                                                     1e-5),
                                 rtol=1e-6, atol=1e-10)
    near = jnp.asarray(base + 1e-4 * rng.random(base.shape))
    vals = distribution.distribution_pca(near).eigenvalues[0, 0]
    assert 0 < (vals[1] - vals[0]) / vals[1] < 1e-3
    g = grad(near)
    for _ in range(3):
      d = jnp.asarray(rng.normal(size=base.shape))
      np.testing.assert_allclose(jnp.sum(g * d),
                                 _central_difference(f, near, d, 1e-7),
                                 rtol=1e-5, atol=1e-9)


def test_detach_gradient_equals_constant_eigen_formulation():
  rng = np.random.default_rng(8)
  hm = gaussian_blobs(rng, 2, 3, 10, 10).astype(np.float32)
  lm = rng.uniform(-0.8, 0.8, (2, 3, 2)).astype(np.float32)
  evals = np.zeros((2, 3, 2))
  evecs = np.zeros((2, 3, 2, 2))
  for i, j in itertools.product(range(2), range(3)):
    _, _, evals[i, j], evecs[i, j] = ref_pca(hm[i, j])

  def manual(h):  # Only the mean depends on h; eigen terms are constants.
    e = jnp.asarray(lm) - distribution.soft_argmax(h)
    proj = jnp.einsum("bnki,bnk->bni", jnp.asarray(evecs, jnp.float32), e)
    return jnp.mean(jnp.sum(
        loss.smooth_l1_distance(proj)
        / jnp.sqrt(jnp.asarray(evals, jnp.float32) + 1e-5), -1))

  f = lambda h: loss.star_loss(h, lm, restriction="detach")
  np.testing.assert_allclose(jax.jit(f)(hm), jax.jit(manual)(hm), rtol=1e-5)
  g_detach = jax.jit(jax.grad(f))(hm)
  np.testing.assert_allclose(g_detach, jax.jit(jax.grad(manual))(hm),
                             rtol=1e-3, atol=1e-6)
  # And it differs from the undetached gradient (the test can fail).
  g_none = jax.jit(jax.grad(
      lambda h: loss.star_loss(h, lm, restriction="none")))(hm)
  assert np.abs(np.asarray(g_none) - np.asarray(g_detach)).max() > 1e-3


@functools.partial(jax.jit, static_argnums=(2, 3))
def _star_value_and_grads(h, l, distance, restriction):
  return jax.value_and_grad(
      lambda h, l: loss.star_loss(h, l, distance=distance,
                                  restriction=restriction),
      argnums=(0, 1))(h, l)


_dr_grad = jax.jit(jax.grad(loss.distribution_regularization))


@pytest.mark.parametrize("name", sorted(degenerate_heatmaps()))
def test_no_nan_or_inf_on_degenerate_heatmaps(name):
  hm = degenerate_heatmaps()[name]
  batch = jnp.asarray(np.stack([hm, hm.T])[None], jnp.float32)  # [1, 2, 8, 8]
  lm = jnp.array([[[0.3, -0.2], [-0.5, 0.1]]], jnp.float32)
  combos = [(d, "value") for d in loss.DISTANCES]
  combos += [("smooth_l1", "detach"), ("smooth_l1", "none"), ("l2", "detach")]
  for distance, restriction in combos:
    value, (gh, gl) = _star_value_and_grads(batch, lm, distance, restriction)
    assert np.isfinite(value), (distance, restriction)
    assert np.all(np.isfinite(gh)) and np.all(np.isfinite(gl)), (
        distance, restriction)
  for fn in (distribution.soft_argmax, distribution.distribution_pca):
    for leaf in jax.tree_util.tree_leaves(jax.jit(fn)(batch)):
      assert np.all(np.isfinite(leaf))
  g = _dr_grad(batch, lm)
  assert np.all(np.isfinite(g))


def test_tiny_sum_heatmap_is_finite_where_public_formula_is_not():
  # Two pixels of 5e-10 (raw sum 1e-9 < 1e-6): p sums to 1e-3, V2 > V1^2, so
  # V1 - V2/V1 < 0 and the covariance has a negative eigenvalue below -eps:
  # sqrt(l + eps) of the public code is NaN; we floor l at 0.
  two = degenerate_heatmaps()["two_points"]
  hm = 5e-10 * np.stack([two, two.T])[None]  # [1, 2, 8, 8]
  _, _, evals, _ = ref_pca(hm[0, 0])
  assert evals[0] + 1e-5 < 0  # The reference would NaN.
  pca = jax.jit(distribution.distribution_pca)(hm.astype(np.float32))
  np.testing.assert_allclose(pca.eigenvalues[0, 0], evals, rtol=1e-3,
                             atol=1e-6)
  for distance in loss.DISTANCES:
    v, (g, _) = _star_value_and_grads(hm.astype(np.float32),
                                      jnp.zeros((1, 2, 2)), distance, "value")
    assert np.isfinite(v) and np.all(np.isfinite(g)), distance


# ----------------------------------------------------------------------------
# jit, vmap, dtypes, validation.


def test_jit_and_vmap_agree_with_eager():
  rng = np.random.default_rng(9)
  hm = gaussian_blobs(rng, 3, 2, 8, 8).astype(np.float32)
  lm = rng.uniform(-0.8, 0.8, (3, 2, 2)).astype(np.float32)
  eager = loss.star_loss(hm, lm)
  jitted = jax.jit(loss.star_loss, static_argnames=("distance",))(
      hm, lm, distance="smooth_l1")
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  per_example = jax.vmap(lambda h, l: loss.star_loss(h[None], l[None]))(hm, lm)
  np.testing.assert_allclose(jnp.mean(per_example), eager, rtol=1e-6)
  np.testing.assert_allclose(
      per_example, loss.star_loss_per_point(hm, lm).mean(-1), rtol=1e-6)


def test_bf16_inputs_computed_in_float32():
  rng = np.random.default_rng(10)
  hm = jnp.asarray(gaussian_blobs(rng, 2, 2, 8, 8), jnp.bfloat16)
  lm = jnp.asarray(rng.uniform(-0.8, 0.8, (2, 2, 2)), jnp.bfloat16)
  got = loss.star_loss(hm, lm)
  assert got.dtype == jnp.float32
  want = ref_star(np.asarray(hm, np.float64), np.asarray(lm, np.float64))
  # Exact to float32 on the bf16 values; bf16 arithmetic would be ~1e-2 off.
  np.testing.assert_allclose(float(got), want, rtol=2e-4)
  assert distribution.soft_argmax(hm).dtype == jnp.float32
  assert loss.awing_heatmap_loss(hm, hm).dtype == jnp.float32


def test_bad_inputs_raise_value_error():
  hm = np.ones((2, 3, 8, 8), np.float32)
  lm = np.zeros((2, 3, 2), np.float32)
  with pytest.raises(ValueError, match=r"\[B, N, H, W\]"):
    loss.star_loss(hm[0], lm)
  with pytest.raises(ValueError, match=r"\[B, N, 2\]"):
    loss.star_loss(hm, lm[:, :2])
  with pytest.raises(ValueError, match="non-negative"):
    loss.star_loss(-hm, lm)
  with pytest.raises(ValueError, match="unknown distance 'huber'"):
    loss.star_loss(hm, lm, distance="huber")
  with pytest.raises(ValueError, match="restriction"):
    loss.star_loss(hm, lm, restriction="clip")
  with pytest.raises(ValueError, match="value_form"):
    loss.star_loss(hm, lm, value_form="mean")
  with pytest.raises(ValueError, match="eigenvalue_clamp"):
    loss.star_loss(hm, lm, eigenvalue_clamp=(1.0, 0.1))
  with pytest.raises(ValueError, match="same"):
    loss.awing_heatmap_loss(hm, hm[:, :2])
  # Under jit: shapes are still checked, values (tracers) are not.
  with pytest.raises(ValueError, match=r"\[B, N, 2\]"):
    jax.jit(loss.star_loss)(hm, lm[:, :2])
  assert np.isfinite(jax.jit(distribution.soft_argmax)(-hm)).all()


# ----------------------------------------------------------------------------
# Heatmap losses: AWing with weight map, DR.


def ref_maxpool3(x):
  h, w = x.shape[-2:]
  padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)],
                  constant_values=-np.inf)
  windows = [padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)]
  return np.max(np.stack(windows), axis=0)


def test_awing_heatmap_loss_matches_reference():
  rng = np.random.default_rng(11)
  target = rng.random((2, 3, 8, 8)) ** 4  # Mostly small, some >= 0.2.
  pred = target + rng.normal(scale=0.4, size=target.shape)  # Both branches.
  delta = np.abs(pred - target)
  assert (delta < 0.5).any() and (delta >= 0.5).any()
  weight = 10 * (ref_maxpool3(target) >= 0.2) + 1
  want = (ref_awing(delta, target) * weight).mean()
  got = loss.awing_heatmap_loss(pred.astype(np.float32),
                                target.astype(np.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  no_weight = loss.awing_heatmap_loss(pred.astype(np.float32),
                                      target.astype(np.float32),
                                      use_weight_map=False)
  np.testing.assert_allclose(float(no_weight), ref_awing(delta, target).mean(),
                             rtol=1e-5)
  # At pred == target AWing is at its minimum: zero, finite, zero gradient.
  t32 = target.astype(np.float32)
  value, grad = jax.value_and_grad(loss.awing_heatmap_loss)(t32, t32)
  assert float(value) == 0.0 and np.all(grad == 0.0)


def test_awing_weight_map_hand_computed():
  target = np.zeros((1, 1, 5, 5), np.float32)
  target[0, 0, 0, 0] = 0.5  # Corner: dilates to the 2x2 top-left block.
  target[0, 0, 4, 2] = 0.1  # Below the 0.2 threshold: no effect.
  want = np.ones((5, 5))
  want[:2, :2] = 11
  np.testing.assert_array_equal(loss.awing_weight_map(target)[0, 0], want)


def test_gaussian_heatmaps_sigma_in_pixels():
  w = 33
  g = np.asarray(loss.gaussian_heatmaps(jnp.zeros((1, 1, 2)), w, w, sigma=2.0),
                 np.float64)[0, 0]
  xs = np.linspace(-1, 1, w)
  var_x = (g.sum(0) * xs ** 2).sum()
  # sigma = 2 px, one px = 2 / (w - 1) on the grid.
  np.testing.assert_allclose(np.sqrt(var_x), 2 * 2 / (w - 1), rtol=1e-3)
  np.testing.assert_allclose(g.sum(), 1.0, rtol=1e-6)


def test_distribution_regularization_matches_scipy_js():
  rng = np.random.default_rng(12)
  hm = rng.random((2, 2, 9, 7)) ** 3
  hm[0, 0, :4] = 0.0  # Zero entries must be handled.
  lm = rng.uniform(-0.7, 0.7, (2, 2, 2))
  want = []
  xs, ys = ref_grid(9, 7)
  gx, gy = np.meshgrid(xs, ys)
  for i, j in itertools.product(range(2), range(2)):
    q = np.exp(-0.5 * (((gx - lm[i, j, 0]) / (2 / 6)) ** 2
                       + ((gy - lm[i, j, 1]) / (2 / 8)) ** 2))
    p = hm[i, j] / hm[i, j].sum()
    want.append(scipy_distance.jensenshannon(p.ravel(), q.ravel()) ** 2)
  got = loss.distribution_regularization(hm.astype(np.float32),
                                         lm.astype(np.float32), sigma=1.0)
  np.testing.assert_allclose(float(got), np.mean(want), rtol=1e-4)
  # A heatmap equal to its target Gaussian has zero divergence.
  target = loss.gaussian_heatmaps(lm.astype(np.float32), 9, 7)
  np.testing.assert_allclose(
      loss.distribution_regularization(target, lm.astype(np.float32)), 0.0,
      atol=1e-6)

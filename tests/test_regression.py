"""Tests of star_jax/regression.py (STAR for coordinate regression) + wiring."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from landmarks import coordinates
from star_jax import loss as loss_lib
from star_jax import method
from star_jax import objective
from star_jax import regression
from training import errors

EPS = 1e-5
DISTANCES = loss_lib.DISTANCES


# ------------------------------------------------ NumPy float64 references ----

def np_distance(name, e):
  a = np.abs(e)
  if name == "l1":
    return a
  if name == "l2":
    return e * e
  if name == "smooth_l1":
    s = 0.01
    return np.where(a < s, 0.5 * e * e / s, a - 0.5 * s)
  if name == "wing":
    omega, epsilon = 0.01, 2.0
    c = omega - omega * np.log(1 + omega / epsilon)
    return np.where(a < omega, omega * np.log(1 + a / epsilon), a - c)
  if name == "awing":  # Adaptive Wing at target 0: exponent alpha.
    omega, theta, epsilon, alpha = 14.0, 0.5, 1.0, 2.1
    big_a = (omega / (1 + (theta / epsilon) ** alpha) * alpha
             * (theta / epsilon) ** (alpha - 1) / epsilon)
    c = theta * big_a - omega * np.log(1 + (theta / epsilon) ** alpha)
    return np.where(a < theta, omega * np.log(1 + (a / epsilon) ** alpha),
                    big_a * a - c)
  raise ValueError(name)


def np_star(mean, cov, target, distance="smooth_l1", w=1.0,
            restriction="value", value_form="code", clamp=None):
  """Eq. 6 (+ restriction) with numpy.linalg.eigh, per point."""
  lam, vec = np.linalg.eigh(cov)                  # ascending, columns.
  if clamp is not None:
    lam = np.clip(lam, *clamp)
  e = target - mean
  proj = np.einsum("...ki,...k->...i", vec, e)
  out = np.sum(np_distance(distance, proj) / np.sqrt(np.maximum(lam, 0) + EPS),
               -1)
  if restriction == "value":
    out = out + w * (np.sum(np.abs(lam), -1) if value_form == "code"
                     else 0.5 * np.sum(lam, -1))
  return out


def np_nll(mean, cov, target):
  e = target - mean
  maha = np.einsum("...i,...ij,...j->...", e, np.linalg.inv(cov), e)
  return 0.5 * maha + 0.5 * np.linalg.slogdet(cov)[1] + np.log(2 * np.pi)


def np_heatmap_moments(maps):
  """Eq. 1 and eq. 4 (V1, V2 with eps 1e-5) of `[B, N, H, W]`, float64."""
  maps = np.asarray(maps, np.float64)
  h, w = maps.shape[-2:]
  p = maps / np.maximum(maps.sum((-2, -1), keepdims=True), 1e-6)
  gx, gy = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
  mean = np.stack([(p * gx).sum((-2, -1)), (p * gy).sum((-2, -1))], -1)
  dx = gx - mean[..., 0, None, None]
  dy = gy - mean[..., 1, None, None]
  cov = np.empty(mean.shape + (2,))
  cov[..., 0, 0] = (p * dx * dx).sum((-2, -1))
  cov[..., 1, 1] = (p * dy * dy).sum((-2, -1))
  cov[..., 0, 1] = cov[..., 1, 0] = (p * dx * dy).sum((-2, -1))
  v1 = p.sum((-2, -1)) + EPS
  v2 = (p * p).sum((-2, -1)) + EPS
  return mean, cov / (v1 - v2 / v1)[..., None, None]


def random_moments(rng, shape, scale=0.1):
  """Means in [-1, 1], targets near them, SPD covariances from random L."""
  mean = rng.uniform(-0.8, 0.8, shape + (2,))
  target = mean + scale * rng.standard_normal(shape + (2,))
  l = np.zeros(shape + (2, 2))
  l[..., 0, 0] = rng.uniform(0.02, 0.4, shape)
  l[..., 1, 1] = rng.uniform(0.02, 0.4, shape)
  l[..., 1, 0] = rng.uniform(-0.4, 0.4, shape)
  return mean, l @ np.swapaxes(l, -1, -2), target


def rotation(theta):
  c, s = np.cos(theta), np.sin(theta)
  return np.array([[c, -s], [s, c]])


# -------------------------------------------------------------- (R1) ----

def test_cholesky_gives_positive_definite_covariances_random_and_extreme():
  rng = np.random.default_rng(0)
  random = 3.0 * rng.standard_normal((2000, 3))
  values = [-np.inf, -1e30, -1e4, -50.0, -5.0, 0.0, 5.0, 50.0, 1e4, 1e30,
            np.inf]
  extreme = np.array(list(itertools.product(values, repeat=3)))
  for params in (random, extreme):
    chol, cov = regression.cholesky_covariance(
        jnp.asarray(params, jnp.float32))
    chol = np.asarray(chol, np.float64)
    cov = np.asarray(cov, np.float64)
    assert np.all(np.isfinite(cov))
    np.testing.assert_array_equal(chol[:, 0, 1], 0.0)     # lower triangular.
    assert np.all(chol[:, 0, 0] >= regression.MIN_STD * (1 - 1e-6))
    assert np.all(chol[:, 1, 1] >= regression.MIN_STD * (1 - 1e-6))
    np.testing.assert_allclose(cov, chol @ np.swapaxes(chol, 1, 2),
                               rtol=1e-6, atol=0)
    # The float32 matrices themselves, in float64: eigenvalues > 0.
    assert np.all(np.linalg.eigvalsh(cov) > 0), np.linalg.eigvalsh(cov).min()


def test_cholesky_matches_its_closed_form_and_interpretation():
  p = np.array([[0.3, -1.7, -0.4], [2.0, 0.5, 1.0]])
  chol, cov = regression.cholesky_covariance(jnp.asarray(p), min_std=0.01)
  softplus = np.log1p(np.exp(p))
  l11, l22 = 0.01 + softplus[:, 0], 0.01 + softplus[:, 2]
  rho = 100.0 * np.tanh(p[:, 1] / 100.0)
  l21 = l22 * rho
  np.testing.assert_allclose(np.asarray(chol)[:, 1, 0], l21, rtol=1e-6)
  cov = np.asarray(cov, np.float64)
  np.testing.assert_allclose(np.sqrt(cov[:, 0, 0]), l11, rtol=1e-6)
  np.testing.assert_allclose(cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1]),
                             rho / np.sqrt(1 + rho**2), rtol=1e-5)
  np.testing.assert_allclose(np.linalg.det(cov), (l11 * l22) ** 2, rtol=1e-5)
  with pytest.raises(ValueError, match="min_std"):
    regression.cholesky_covariance(jnp.zeros((3,)), min_std=0.0)


# -------------------------------------------------------------- (R3) ----

@pytest.mark.parametrize("distance", DISTANCES)
def test_regression_star_equals_heatmap_star_on_the_heatmaps_moments(distance):
  rng = np.random.default_rng(1)
  b, n, h = 2, 5, 12
  # Anisotropic blobs plus a floor: eigenvalues well apart and small.
  ys, xs = np.mgrid[0:h, 0:h].astype(np.float64)
  maps = np.empty((b, n, h, h))
  for i, j in np.ndindex(b, n):
    cx, cy = rng.uniform(3, h - 4, 2)
    a = rotation(rng.uniform(0, np.pi)) @ np.diag(rng.uniform(0.8, 3.0, 2))
    inv = np.linalg.inv(a @ a.T)
    d = np.stack([xs - cx, ys - cy], -1)
    maps[i, j] = np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, inv, d))
  maps += 0.01 * rng.uniform(size=maps.shape)
  mean, cov = np_heatmap_moments(maps)
  gt = np.clip(mean + 0.05 * rng.standard_normal(mean.shape), -1, 1)
  options = [dict(), dict(restriction="detach"), dict(value_form="paper"),
             dict(w=0.3), dict(eigenvalue_clamp=(1e-2, 5e-2))]
  with jax.enable_x64(True):
    for kw in options:
      want = loss_lib.star_loss_per_point(jnp.asarray(maps), jnp.asarray(gt),
                                          distance=distance, **kw)
      got = regression.star_regression_loss_per_point(
          jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(gt),
          distance=distance, **kw)
      assert got.dtype == jnp.float64
      np.testing.assert_allclose(np.asarray(got), np.asarray(want),
                                 rtol=1e-9, err_msg=str(kw))
      # Same dependence on the target, too.
      g_want = jax.grad(lambda t: loss_lib.star_loss(  # pylint: disable=cell-var-from-loop
          jnp.asarray(maps), t, distance=distance, **kw))(jnp.asarray(gt))
      g_got = jax.grad(lambda t: regression.star_regression_loss(  # pylint: disable=cell-var-from-loop
          jnp.asarray(mean), jnp.asarray(cov), t, distance=distance,
          **kw))(jnp.asarray(gt))
      np.testing.assert_allclose(np.asarray(g_got), np.asarray(g_want),
                                 rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("distance", DISTANCES)
def test_star_regression_equals_numpy_eigh_reference(distance):
  rng = np.random.default_rng(2)
  mean, cov, target = random_moments(rng, (64, 7))
  for kw in (dict(), dict(value_form="paper", w=2.5), dict(restriction="detach"),
             dict(eigenvalue_clamp=(0.01, 0.05))):
    got = regression.star_regression_loss_per_point(
        jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32),
        jnp.asarray(target, jnp.float32), distance=distance, **kw)
    np_kw = {("clamp" if k == "eigenvalue_clamp" else k): v
             for k, v in kw.items()}
    want = np_star(mean, cov, target, distance, **np_kw)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-6,
                               err_msg=str(kw))
  total = regression.star_regression_loss(
      jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32),
      jnp.asarray(target, jnp.float32), distance=distance)
  np.testing.assert_allclose(float(total),
                             np_star(mean, cov, target, distance).mean(),
                             rtol=2e-4)


def test_star_regression_hand_computed_and_rotation_invariant():
  # Sigma = R diag(0.04, 0.01) R^T at 30 degrees, e = R (0.1, 0.02):
  # projections 0.1 (on the 0.04 axis) and 0.02 (on the 0.01 axis).
  r = rotation(np.pi / 6)
  cov = r @ np.diag([0.04, 0.01]) @ r.T
  e = r @ np.array([0.1, 0.02])
  mean = np.array([0.2, -0.3])
  value = regression.star_regression_loss_per_point(
      jnp.asarray(mean[None]), jnp.asarray(cov[None]),
      jnp.asarray((mean + e)[None]), distance="l1", w=1.0)
  hand = 0.1 / np.sqrt(0.04 + EPS) + 0.02 / np.sqrt(0.01 + EPS) + 0.05
  np.testing.assert_allclose(float(value[0]), hand, rtol=1e-5)
  # Turning error and covariance together changes nothing, for every d.
  rng = np.random.default_rng(3)
  mean, cov, target = random_moments(rng, (50,))
  rot = rotation(rng.uniform(0, 2 * np.pi, 50))          # [2, 2, 50].
  rot = np.moveaxis(rot, -1, 0)
  e_rot = np.einsum("bij,bj->bi", rot, target - mean)
  cov_rot = rot @ cov @ np.swapaxes(rot, 1, 2)
  for distance in DISTANCES:
    a = regression.star_regression_loss_per_point(
        jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(target),
        distance=distance)
    b = regression.star_regression_loss_per_point(
        jnp.asarray(mean), jnp.asarray(cov_rot), jnp.asarray(mean + e_rot),
        distance=distance)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4,
                               err_msg=distance)


def test_star_regression_refuses_no_restriction_and_bad_shapes():
  m, c, t = jnp.zeros((2, 2)), jnp.tile(jnp.eye(2), (2, 1, 1)), jnp.ones((2, 2))
  with pytest.raises(ValueError, match="without bound"):
    regression.star_regression_loss(m, c, t, restriction="none")
  with pytest.raises(ValueError, match="covariance must be"):
    regression.star_regression_loss(m, c[:, :1], t)
  with pytest.raises(ValueError, match="unknown distance"):
    regression.star_regression_loss(m, c, t, distance="huber")


def test_star_restriction_bounds_the_predicted_eigenvalue():
  # One axis, |e| = 0.2 (linear part of smooth-l1): d / sqrt(l + eps) + w l
  # is smallest at about l = (d / (2 w))^(2/3).
  d = 0.2 - 0.005
  ls = np.geomspace(1e-4, 10, 4001)
  cov = np.zeros((ls.size, 2, 2))
  cov[:, 0, 0] = ls
  cov[:, 1, 1] = 1.0                   # the other axis: zero error.
  target = np.tile([0.2, 0.0], (ls.size, 1))
  value = np.asarray(regression.star_regression_loss_per_point(
      jnp.zeros((ls.size, 2)), jnp.asarray(cov, jnp.float32),
      jnp.asarray(target, jnp.float32)))
  best = ls[np.argmin(value)]
  np.testing.assert_allclose(best, (d / 2.0) ** (2.0 / 3.0), rtol=0.02)


# -------------------------------------------------------------- (R4) ----

def test_gaussian_nll_equals_numpy_reference():
  rng = np.random.default_rng(4)
  mean, cov, target = random_moments(rng, (32, 9))
  got = regression.gaussian_nll_per_point(
      jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32),
      jnp.asarray(target, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), np_nll(mean, cov, target),
                             rtol=1e-4, atol=1e-4)
  # At e = 0 and Sigma = s^2 I: log(2 pi) + 2 log s.
  zero = regression.gaussian_nll(jnp.zeros((1, 2)),
                                 0.09 * jnp.eye(2)[None], jnp.zeros((1, 2)))
  np.testing.assert_allclose(float(zero), np.log(2 * np.pi) + 2 * np.log(0.3),
                             rtol=1e-6)


def test_smooth_l1_mean_loss_is_eq2_on_the_mean():
  rng = np.random.default_rng(5)
  mean = rng.uniform(-1, 1, (3, 4, 2))
  target = mean + rng.normal(0, 0.02, mean.shape)
  norm = np.linalg.norm(target - mean, axis=-1)
  want = np.mean(np_distance("smooth_l1", norm))
  got = regression.smooth_l1_mean_loss(jnp.asarray(mean, jnp.float32),
                                       jnp.asarray(target, jnp.float32))
  np.testing.assert_allclose(float(got), want, rtol=1e-4)


# --------------------------------------------------------- gradients ----

def _losses_of_params(params, mean, target, distance, restriction):
  _, cov = regression.cholesky_covariance(params)
  return (regression.star_regression_loss(mean, cov, target, distance=distance,
                                          restriction=restriction),
          regression.gaussian_nll(mean, cov, target))


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradients_are_finite_including_isotropy_and_zero_error(distance):
  rng = np.random.default_rng(6)
  random = rng.normal(0, 2, (16, 3))
  isotropic = np.array([[0.3, 0.0, 0.3], [-2.0, 0.0, -2.0]])  # Sigma = s^2 I.
  extreme = np.array([[50.0, 1e4, -50.0], [-1e4, -1e4, 1e4], [30, -30, 30]])
  for params in (random, isotropic, extreme):
    params = jnp.asarray(params, jnp.float32)
    k = params.shape[0]
    mean = jnp.asarray(rng.uniform(-0.5, 0.5, (k, 2)), jnp.float32)
    for target in (mean, mean + 0.05):        # zero and non-zero error.
      for restriction in ("value", "detach"):
        for which in (0, 1):
          fn = lambda p, m, i=which: _losses_of_params(  # pylint: disable=cell-var-from-loop
              p, m, target, distance, restriction)[i]
          gp, gm = jax.grad(fn, argnums=(0, 1))(params, mean)
          assert np.all(np.isfinite(np.asarray(gp))), (params, restriction)
          assert np.all(np.isfinite(np.asarray(gm))), (params, restriction)
  # "detach": the covariance parameters get no gradient; "value": they do.
  params = jnp.asarray(random, jnp.float32)
  mean = jnp.zeros((16, 2))
  g_detach = jax.grad(lambda p: _losses_of_params(
      p, mean, mean + 0.1, distance, "detach")[0])(params)
  g_value = jax.grad(lambda p: _losses_of_params(
      p, mean, mean + 0.1, distance, "value")[0])(params)
  np.testing.assert_array_equal(np.asarray(g_detach), 0.0)
  assert np.any(np.asarray(g_value) != 0.0)


# ------------------------------------------------------- model wiring ----

def tiny_config(name, num_stacks=2):
  c = common.star()
  c.data.name = "fake"
  c.data.scheme = "300w"
  c.data.crop_size = 32
  c.model.num_stacks = num_stacks
  c.model.depth = 1
  c.model.width = 8
  c.model.use_aam = False
  c.model.head = "regression"
  c.model.regression_min_std = 1e-3
  c.loss.regression = name
  c.eval.normaliser = "300w"
  c.batch_size = 4
  c.eval_batch_size = 4
  c.optimizer.learning_rate = 3e-3
  c.ema.enabled = False
  c.compilation_cache_dir = ""
  return c


class RandomData:
  """A fixed batch of random crops and random points in them."""

  def __init__(self, n=4, s=32, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(4, s - 5, (n, 68, 2)).astype(np.float32)
    c2i = np.tile(np.array([[2.0, 0, 5], [0, 2.0, 7]], np.float32), (n, 1, 1))
    self.batch = {
        "image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
        "landmarks": pts,
        "landmarks_original": 2 * pts + np.array([5, 7], np.float32),
        "visible": np.ones((n, 68), bool),
        "crop_to_image": c2i, "valid": np.ones((n,), bool),
        "index": np.arange(n, dtype=np.int32)}

  def num_train_examples(self):
    return len(self.batch["image"])

  def eval_groups(self, split, indices):
    del split, indices
    return {}


def test_regression_model_outputs_and_parameter_tree():
  config = tiny_config("star")
  m = method.StarMethod(config, data=RandomData())
  batch = m.dummy_batch(2)
  params, state = jax.jit(m.init_variables)(jax.random.PRNGKey(0), batch)
  assert "regression_head" in params
  assert "heatmap_head_0" in params                   # feeds stack 2.
  assert "heatmap_head_1" not in params               # no unused head.
  (out,) = jax.jit(m.forward)(params, state, batch)
  assert sorted(out) == ["cholesky", "covariance", "mean"]
  cov = np.asarray(out["covariance"], np.float64)
  assert np.all(np.linalg.eigvalsh(cov) > 0)
  # The head starts at sigma = INIT_STD on both axes, nearly uncorrelated.
  np.testing.assert_allclose(np.sqrt(cov[..., 0, 0]), regression.INIT_STD,
                             rtol=0.2)
  # Predictions are the mean, mapped back like the soft-argmax.
  crop = method.decode_crop_points([out], 32)
  np.testing.assert_allclose(
      np.asarray(crop), ((np.asarray(out["mean"]) + 1) * 32 - 1) / 2,
      rtol=1e-6)
  # The heatmap head's model is the one it always was.
  heat = method.model_from_config(common.star(), m.scheme)
  assert heat.head == "heatmap"


def test_config_errors_are_user_errors():
  for key, value, match in (
      ("model.head", "points", "model.head"),
      ("model.use_aam", True, "use_aam=False"),
      ("loss.regression", "huber", "loss.regression"),
      ("loss.star", False, "loss.regression=smooth_l1"),
      ("loss.restriction", "none", "restriction"),
      ("loss.dr_weight", 1.0, "dr_weight")):
    config = tiny_config("star")
    section, field = key.split(".")
    config[section][field] = value
    with pytest.raises(errors.UserError, match=match):
      method.StarMethod(config, data=RandomData())


@pytest.mark.parametrize("name", objective.REGRESSION_LOSSES)
def test_training_steps_lower_each_regression_loss(name):
  from training import loop  # pylint: disable=g-import-not-at-top
  from training import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config(name, num_stacks=1)   # stacks: the model test's.
  data = RandomData()
  m = method.StarMethod(config, data=data)
  trainer = loop.Trainer(m, config)
  state = trainer.init_state()
  batch = mesh_lib.global_batch(trainer.mesh, data.batch)
  losses = []
  for _ in range(4):          # metrics["loss"] is the loss before the update.
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0], losses
  assert {"loss_coordinates", "std_px", "nme"} <= set(metrics)
  if name == "star":
    # Evaluation decodes the mean: pred = crop_to_image(denormalised mean).
    out = jax.jit(m.eval_step)(state.params, state.model_state, data.batch)
    (head,) = m.model.apply({"params": state.params, **state.model_state},
                            data.batch["image"], train=False)
    crop = coordinates.denormalise_landmarks(head["mean"], 32)
    np.testing.assert_allclose(np.asarray(out["pred"]),
                               2 * np.asarray(crop) + np.array([5, 7]),
                               rtol=1e-5, atol=1e-4)
    gt = data.batch["landmarks_original"].astype(np.float64)
    pred = np.asarray(out["pred"], np.float64)
    nme = (np.linalg.norm(pred - gt, axis=-1).mean(-1)
           / np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1))
    np.testing.assert_allclose(np.asarray(out["nme"]), nme, rtol=1e-4)

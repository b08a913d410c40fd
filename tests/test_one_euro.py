"""Tests for landmarks/one_euro.py against a scalar float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landmarks import one_euro
from training import errors


class _LowPass:
  """The paper's LowPassFilter (Figure 4), one scalar."""

  def __init__(self):
    self.first = True
    self.hat_prev = 0.0

  def filter(self, x: float, alpha: float) -> float:
    if self.first:
      self.first = False
      hat = x
    else:
      hat = alpha * x + (1.0 - alpha) * self.hat_prev
    self.hat_prev = hat
    return hat


class _ReferenceOneEuro:
  """The paper's OneEuroFilter pseudo-code for one scalar signal."""

  def __init__(self, min_cutoff, beta, d_cutoff):
    self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
    self.x, self.dx = _LowPass(), _LowPass()
    self.first = True
    self.last_t = None

  @staticmethod
  def alpha(rate, cutoff):
    tau = 1.0 / (2.0 * math.pi * cutoff)
    te = 1.0 / rate
    return 1.0 / (1.0 + tau / te)

  def __call__(self, value, t, scale=1.0):
    if self.first:
      self.first = False
      dx = 0.0
      rate = 1.0
    else:
      rate = 1.0 / (t - self.last_t)
      dx = (value - self.x.hat_prev) * rate
    self.last_t = t
    edx = self.dx.filter(dx, self.alpha(rate, self.d_cutoff))
    cutoff = self.min_cutoff + self.beta * abs(edx) / scale
    return self.x.filter(value, self.alpha(rate, cutoff))


def _reference(xs, ts, min_cutoff, beta, d_cutoff, scales=None):
  """Per-element scalar loops over a `[T, ...]` sequence."""
  xs = np.asarray(xs, np.float64)
  flat = xs.reshape(len(xs), -1)
  out = np.zeros_like(flat)
  for j in range(flat.shape[1]):
    f = _ReferenceOneEuro(min_cutoff, beta, d_cutoff)
    for i in range(len(flat)):
      s = 1.0 if scales is None else float(scales[i])
      out[i, j] = f(float(flat[i, j]), float(ts[i]), s)
  return out.reshape(xs.shape)


def _run(filt, xs, ts=None, scales=None):
  out = []
  for i, x in enumerate(xs):
    kwargs = {} if scales is None else {"scale": scales[i]}
    out.append(filt(x, None if ts is None else ts[i], **kwargs))
  return np.stack(out)


@pytest.mark.parametrize("beta", [0.0, 0.7, 20.0])
def test_equals_scalar_reference_uniform_and_non_uniform(beta):
  rng = np.random.default_rng(0)
  xs = np.cumsum(rng.normal(0, 1, size=(40, 5, 2)), axis=0) + rng.normal(
      0, 0.3, size=(40, 5, 2))
  uniform = np.arange(40) / 30.0
  jittered = np.cumsum(rng.uniform(0.005, 0.08, size=40))
  for ts in (uniform, jittered):
    got = _run(one_euro.OneEuroFilter(1.3, beta, 0.8, 30.0), xs, ts)
    np.testing.assert_allclose(got, _reference(xs, ts, 1.3, beta, 0.8),
                               rtol=1e-12, atol=1e-12)


def test_default_timestamps_are_one_over_frequency():
  rng = np.random.default_rng(1)
  xs = rng.normal(size=(25, 3))
  got = _run(one_euro.OneEuroFilter(2.0, 0.5, 1.0, frequency=60.0), xs)
  np.testing.assert_allclose(
      got, _reference(xs, np.arange(25) / 60.0, 2.0, 0.5, 1.0), rtol=1e-12,
      atol=1e-12)


def test_scale_equals_filtering_scaled_values():
  """f(x, scale=s) == s * f(x / s) for constant s, and = the reference with
  the speed divided by a per-frame scale when s varies."""
  rng = np.random.default_rng(2)
  xs = np.cumsum(rng.normal(0, 4, size=(30, 4, 2)), axis=0) + 300.0
  s = 57.0
  scaled = _run(one_euro.OneEuroFilter(1.0, 3.0, 1.0, 25.0), xs,
                scales=[s] * 30)
  unit = _run(one_euro.OneEuroFilter(1.0, 3.0, 1.0, 25.0), xs / s)
  np.testing.assert_allclose(scaled, s * unit, rtol=1e-12)
  scales = rng.uniform(40, 80, size=30)
  got = _run(one_euro.OneEuroFilter(1.0, 3.0, 1.0, 25.0), xs, scales=scales)
  np.testing.assert_allclose(
      got, _reference(xs, np.arange(30) / 25.0, 1.0, 3.0, 1.0, scales),
      rtol=1e-12)
  # Translation-invariant even with a changing scale.
  shifted = _run(one_euro.OneEuroFilter(1.0, 3.0, 1.0, 25.0), xs + 1000.0,
                 scales=scales)
  np.testing.assert_allclose(shifted - 1000.0, got, atol=1e-9)


def test_reduces_jitter_on_noisy_track():
  rng = np.random.default_rng(3)
  t = np.arange(200) / 30.0
  # A slow path (<= 2 px/s): the lag (about speed / (2 pi fc)) stays well
  # under the noise, so the filtered track is also closer to the path.
  clean = np.stack([10 * np.sin(0.2 * t), 6 * np.cos(0.3 * t)], -1)
  noisy = clean + rng.normal(0, 1.0, size=clean.shape)
  out = _run(one_euro.OneEuroFilter(1.0, 0.01, 1.0, 30.0), noisy, t)

  def jitter(x):
    return np.std(np.diff(x - clean, axis=0))
  assert jitter(out) < 0.4 * jitter(noisy)
  assert np.sqrt(np.mean((out - clean) ** 2)) < np.sqrt(
      np.mean((noisy - clean) ** 2))


def test_step_response_is_first_order_low_pass_without_beta():
  """beta = 0: after a unit step the remaining fraction after k samples is
  exactly (1 - alpha)^k, alpha = 1 / (1 + fs / (2 pi min_cutoff))."""
  fs, fc = 30.0, 2.0
  filt = one_euro.OneEuroFilter(fc, 0.0, 1.0, fs)
  filt(np.zeros(3))
  alpha = 1.0 / (1.0 + fs / (2 * np.pi * fc))
  for k in range(1, 15):
    y = filt(np.ones(3))
    np.testing.assert_allclose(1.0 - y, (1.0 - alpha) ** k, rtol=1e-12)


def test_beta_lags_less_after_step():
  fs = 30.0
  slow = one_euro.OneEuroFilter(1.0, 0.0, 1.0, fs)
  fast = one_euro.OneEuroFilter(1.0, 2.0, 1.0, fs)
  for f in (slow, fast):
    f(np.array([0.0]))
  remaining_slow, remaining_fast = [], []
  for _ in range(10):
    remaining_slow.append(1.0 - slow(np.array([1.0]))[0])
    remaining_fast.append(1.0 - fast(np.array([1.0]))[0])
  assert all(f < s for f, s in zip(remaining_fast, remaining_slow))
  assert remaining_fast[4] < 0.5 * remaining_slow[4]


def test_first_sample_passes_and_reset_forgets():
  filt = one_euro.OneEuroFilter(1.0, 1.0, 1.0, 25.0)
  np.testing.assert_array_equal(filt(np.array([3.0, 4.0])), [3.0, 4.0])
  assert filt(np.array([5.0, 6.0]))[0] < 5.0
  filt.reset()
  np.testing.assert_array_equal(filt(np.array([9.0, 9.0]), t=7.0), [9.0, 9.0])
  # A new shape after reset is fine; without reset it is an error.
  filt.reset()
  filt(np.zeros((2, 2)))
  with pytest.raises(ValueError, match="shape"):
    filt(np.zeros(3))


def test_timestamps_must_increase():
  filt = one_euro.OneEuroFilter()
  filt(np.zeros(2), t=1.0)
  with pytest.raises(ValueError, match="increase"):
    filt(np.zeros(2), t=1.0)


@pytest.mark.parametrize("kwargs", [{"min_cutoff": 0.0}, {"beta": -1.0},
                                    {"d_cutoff": -0.1},
                                    {"frequency": float("nan")}])
def test_filter_rejects_bad_parameters(kwargs):
  with pytest.raises(ValueError):
    one_euro.OneEuroFilter(**kwargs)


def test_settings_from_mapping():
  s = one_euro.OneEuroSettings.from_mapping({"min_cutoff": 2, "beta": 0})
  assert (s.min_cutoff, s.beta, s.d_cutoff) == (2.0, 0.0, 1.0)
  assert isinstance(s.min_cutoff, float)
  f = s.make_filter(50.0)
  assert (f.min_cutoff, f.beta, f.d_cutoff, f.frequency) == (2.0, 0.0, 1.0,
                                                             50.0)


@pytest.mark.parametrize("values, match", [
    ({"beta": -0.5}, "beta"),
    ({"min_cutoff": 0}, "min_cutoff"),
    ({"d_cutoff": "1"}, "d_cutoff"),
    ({"min_cutoff": True}, "min_cutoff"),
    ({"beta": float("inf")}, "beta"),
    ({"mincutoff": 1.0}, "unknown"),
])
def test_settings_reject_bad_values(values, match):
  with pytest.raises(errors.UserError, match=match):
    one_euro.OneEuroSettings.from_mapping(values)

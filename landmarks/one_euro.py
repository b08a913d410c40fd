"""The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) over arrays.

A first-order low-pass filter whose cut-off rises with the signal's speed:
slow movements (and a still face's jitter) are smoothed hard, fast ones pass
with little lag. Per sample, with Te the time since the previous sample:

  alpha(fc) = 1 / (1 + tau / Te),  tau = 1 / (2 pi fc)
  dx        = (x - x_hat_prev) / Te                (speed, units / s)
  dx_hat    = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx_hat_prev
  fc        = min_cutoff + beta |dx_hat|           (Hz)
  x_hat     = alpha(fc) x + (1 - alpha(fc)) x_hat_prev

the paper's algorithm exactly (its Figure 4 pseudo-code: the speed is taken
against the previous FILTERED value, the first sample passes unchanged with
dx_hat = 0). Every element of the array is filtered independently (its own
speed and cut-off), so one filter smooths all `[N, 2]` landmark coordinates.

Units. min_cutoff and d_cutoff are frequencies in Hz, whatever the units of
x. beta turns a speed into a frequency, so it is in Hz per (x-unit / s): its
effect depends on the units of x. For landmarks in pixels the same beta would
act differently on a 100 px and a 1000 px face; the tracker
(landmarks/tracking.py) therefore passes `scale` = the face size in pixels,
and the filter measures the speed in face sizes per second: with a constant
scale s, `f(x, scale=s) == s * f(x / s)` (tested). The scale enters only the
speed term: the low-pass itself is linear, so filtering pixels directly is
the same as filtering x / s and multiplying back, and it stays
translation-invariant when s changes from frame to frame (dividing positions
by a changing s would turn face-size noise into position noise proportional
to the distance from the image origin).

Defaults (`OneEuroSettings`), for landmarks in face-size units at video rates
(25-60 frames per second), picked with the paper's tuning procedure
(min_cutoff with beta = 0 on a still face, then beta against the lag on a
moving one) on bench/video_jitter.py's procedural sequences:
  * d_cutoff = 1 Hz: the paper's value for the low-pass of the speed
    estimate (the paper reports not needing to tune it).
  * min_cutoff = 0.5 Hz: the cut-off of a still face. The time constant
    1 / (2 pi fc) is about 0.3 s, so a still face is averaged over a few
    tenths of a second and its frame-to-frame jitter mostly disappears; a
    lower value smooths little more but makes the start of a movement lag.
  * beta = 20 per face size: a head moving at 0.2 face sizes per second (an
    ordinary movement) raises the cut-off by 4 Hz, which cuts the lag of a
    first-order low-pass from about 0.3 s to a few tens of ms at 25 fps.
    Smaller beta smooths moving faces more but the lag then costs more
    accuracy than the jitter it removes; larger beta lets more jitter
    through while moving.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional

import numpy as np

from training import errors


def smoothing_factor(cutoff, period) -> np.ndarray:
  """alpha = 1 / (1 + tau / Te), tau = 1 / (2 pi cutoff) (elementwise)."""
  tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
  return 1.0 / (1.0 + tau / np.asarray(period, np.float64))


class OneEuroFilter:
  """One-Euro filter over float arrays of a fixed shape (e.g. `[N, 2]`).

  Args:
    min_cutoff: cut-off at zero speed, Hz (> 0).
    beta: cut-off increase per unit of speed, Hz per (x-unit / s) (>= 0);
      with `scale`, per (scale-unit / s), see the module docstring.
    d_cutoff: cut-off of the speed estimate's low-pass, Hz (> 0).
    frequency: sampling rate in Hz used when a call gives no timestamp.
  """

  def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0,
               d_cutoff: float = 1.0, frequency: float = 25.0):
    for name, value, low in (("min_cutoff", min_cutoff, 0.0),
                             ("d_cutoff", d_cutoff, 0.0),
                             ("frequency", frequency, 0.0)):
      if not value > low or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not beta >= 0 or not math.isfinite(beta):
      raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    self.min_cutoff = float(min_cutoff)
    self.beta = float(beta)
    self.d_cutoff = float(d_cutoff)
    self.frequency = float(frequency)
    self.reset()

  def reset(self) -> None:
    """Forgets the past: the next sample passes unchanged."""
    self._x_hat: Optional[np.ndarray] = None
    self._dx_hat: Optional[np.ndarray] = None
    self._t: Optional[float] = None

  @property
  def last(self) -> Optional[np.ndarray]:
    """The last filtered value (None before the first sample)."""
    return None if self._x_hat is None else self._x_hat.copy()

  def __call__(self, x, t: Optional[float] = None,
               scale: float = 1.0) -> np.ndarray:
    """Filters one sample; returns the filtered float64 array.

    Args:
      x: the sample, any shape (the same at every call until `reset`).
      t: its time in seconds; None = the previous time + 1 / frequency (0 for
        the first sample). Times must increase.
      scale: x-units per speed unit (> 0): the speed entering the cut-off is
        |dx_hat| / scale. The face size in pixels for pixel landmarks.
    """
    x = np.array(x, np.float64)
    if self._x_hat is None:
      t = 0.0 if t is None else float(t)
      self._x_hat, self._dx_hat, self._t = x, np.zeros_like(x), t
      return x.copy()
    if x.shape != self._x_hat.shape:
      raise ValueError(f"sample shape {x.shape} differs from the filter's "
                       f"{self._x_hat.shape}; call reset() for a new signal")
    if not scale > 0 or not math.isfinite(scale):
      raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    t = self._t + 1.0 / self.frequency if t is None else float(t)
    period = t - self._t
    if not period > 0:
      raise ValueError(f"timestamps must increase: {t} after {self._t}")
    dx = (x - self._x_hat) / period
    a_d = smoothing_factor(self.d_cutoff, period)
    self._dx_hat = a_d * dx + (1.0 - a_d) * self._dx_hat
    cutoff = self.min_cutoff + self.beta * np.abs(self._dx_hat) / scale
    a = smoothing_factor(cutoff, period)
    self._x_hat = a * x + (1.0 - a) * self._x_hat
    self._t = t
    return self._x_hat.copy()


@dataclasses.dataclass(frozen=True)
class OneEuroSettings:
  """The One-Euro parameters (module docstring: units and defaults).

  Attributes:
    min_cutoff: Hz, > 0.
    beta: Hz per (face size / s), >= 0 (0 = a fixed low-pass at min_cutoff).
    d_cutoff: Hz, > 0.
  """

  min_cutoff: float = 0.5
  beta: float = 20.0
  d_cutoff: float = 1.0

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if (isinstance(value, bool) or not isinstance(value, numbers.Real)
          or not math.isfinite(value)):
        raise errors.UserError(
            f"one_euro.{field.name} must be a finite number, got {value!r}")
      if value < 0 or (value == 0 and field.name != "beta"):
        raise errors.UserError(
            f"one_euro.{field.name} must be "
            f"{'>= 0' if field.name == 'beta' else '> 0'} "
            f"({'Hz per face size per second' if field.name == 'beta' else 'Hz'}"
            f"), got {value!r}")
      object.__setattr__(self, field.name, float(value))

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> "OneEuroSettings":
    """Settings from a dict (e.g. a config); missing keys keep the defaults.

    Raises:
      UserError: an unknown key, a non-number, or a value out of range.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise errors.UserError(
          f"unknown One-Euro setting(s) {unknown}; expected some of "
          f"{sorted(names)}")
    return cls(**dict(values))

  def make_filter(self, frequency: float) -> OneEuroFilter:
    """A fresh filter with these settings at `frequency` Hz."""
    return OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff, frequency)

"""Progress lines with steps/s and ETA on stdout (plain Python, no tensorflow)."""

from __future__ import annotations

import datetime
import time
from typing import Optional


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  return str(datetime.timedelta(seconds=seconds))


class Progress:
  """Reports `step/total, steps/s, ETA` every `every_steps` steps.

  The rate is measured since the previous report, so compilation time of the
  first step only affects the first line.
  """

  def __init__(self, total_steps: int, start_step: int = 0,
               every_steps: int = 50, enabled: bool = True, printer=print):
    self.total_steps = int(total_steps)
    self.every_steps = max(1, int(every_steps))
    self.enabled = enabled
    self.printer = printer
    self._last_step = int(start_step)
    self._last_time = time.monotonic()
    self.steps_per_sec: Optional[float] = None

  def update(self, step: int, extra: str = "") -> Optional[str]:
    if step % self.every_steps and step != self.total_steps:
      return None
    now = time.monotonic()
    dt, ds = now - self._last_time, step - self._last_step
    self._last_time, self._last_step = now, step
    if ds <= 0 or dt <= 0:
      return None
    self.steps_per_sec = ds / dt
    eta = (self.total_steps - step) / self.steps_per_sec
    line = (f"step {step}/{self.total_steps} "
            f"({100.0 * step / max(self.total_steps, 1):.1f}%), "
            f"{self.steps_per_sec:.2f} steps/s, ETA {format_duration(eta)}")
    if extra:
      line += ", " + extra
    if self.enabled:
      self.printer(line, flush=True)
    return line

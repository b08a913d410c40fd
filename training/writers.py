"""Metric writers: TensorBoard event files (tensorboardX) and JSON lines.

`metrics.jsonl` is the record of a run that the code reads back (figures,
tests, scripts): one JSON object per write, `{"step", "time", **scalars}`,
non-finite values as strings. The TensorBoard event files
(`tensorboard/events.out.tfevents.*`, for `tensorboard --logdir WORKDIR`)
are written with `tensorboardX.SummaryWriter`, which needs neither
tensorflow nor tensorboard. `MetricWriter` fans scalars out to both (and
optionally stdout), on process 0 only.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping


def _import_tensorboardx():
  """`import tensorboardX` without the torch import it attempts.

  tensorboardX's writer module tries `import torch` at import time only to
  accept torch tensors as values (we pass floats). Where torch is installed
  (CI installs it for the PyTorch comparisons) that import costs ~4 s of
  every training process's start. Unless torch is already loaded, it is
  shown as absent for the duration of this one import (a `None` entry in
  `sys.modules` makes `import torch` raise ImportError, which tensorboardX
  catches) and the entry is removed afterwards, so a later `import torch`
  anywhere else loads it normally.
  """
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  sys.modules["torch"] = None
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  finally:
    if sys.modules.get("torch", 0) is None:
      del sys.modules["torch"]
  return tensorboardX


tensorboardX = _import_tensorboardx()


class EventFileWriter:
  """Scalars to a new TensorBoard event file in `logdir`.

  A resumed run opens a new file; TensorBoard merges the files of a logdir.
  `path` is the file written.
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    before = set(os.listdir(logdir))
    # flush_secs: the background thread also flushes on its own.
    self._writer = tensorboardX.SummaryWriter(logdir=logdir, flush_secs=30)
    self._writer.flush()
    new = sorted(set(os.listdir(logdir)) - before)
    self.path = os.path.join(logdir, new[-1]) if new else None

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    wall_time = time.time()
    for tag, value in scalars.items():
      self._writer.add_scalar(str(tag), float(value), global_step=int(step),
                              walltime=wall_time)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class JsonlWriter:
  """Appends `{"step": s, **scalars}` lines to a file (metrics.jsonl)."""

  def __init__(self, path: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.path = path
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    row = {"step": int(step), "time": round(time.time(), 3)}
    for k, v in scalars.items():
      v = float(v)
      row[k] = v if math.isfinite(v) else str(v)  # JSON has no NaN/inf.
    self._file.write(json.dumps(row) + "\n")

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Writes scalars to TensorBoard events and metrics.jsonl in `workdir`.

  Only process 0 writes (other processes get a no-op writer), so multi-host
  runs produce one set of files.
  """

  def __init__(self, workdir: str, *, enabled: bool = True,
               echo: bool = False):
    self.enabled = enabled
    self.echo = echo
    self._writers = []
    if enabled:
      self._writers = [EventFileWriter(os.path.join(workdir, "tensorboard")),
                       JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    scalars = {k: float(v) for k, v in scalars.items()}
    for w in self._writers:
      w.write_scalars(step, scalars)
    if self.echo and self.enabled:
      text = ", ".join(f"{k}={v:.6g}" for k, v in sorted(scalars.items()))
      print(f"[step {step}] {text}", flush=True)

  def flush(self):
    for w in self._writers:
      w.flush()

  def close(self):
    for w in self._writers:
      w.close()

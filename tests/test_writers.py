"""Tests of training/writers.py: event files read back independently, JSONL.

The event files come from tensorboardX; they are read here by a reader
written in this file from the formats' definitions (TFRecord framing with
masked CRC-32C, the `Event` / `Summary` protobuf fields), and by
TensorBoard's own EventAccumulator when tensorboard is installed.
"""

import json
import os
import struct

import pytest

from training import writers


# ----------------------------------------------- independent event reader ----

def _crc32c(data: bytes) -> int:
  """Bit-by-bit CRC-32C (Castagnoli), no table."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def _masked_crc32c(data: bytes) -> int:
  crc = _crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc32c_reference_known_values():
  assert _crc32c(b"123456789") == 0xE3069283
  assert _crc32c(bytes(32)) == 0x8A9136AA   # RFC 3720 test vector.


def _records(path):
  """TFRecords: uint64 length, masked CRC of it, data, masked CRC of data."""
  data = open(path, "rb").read()
  i, out = 0, []
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    assert struct.unpack("<I", data[i + 8:i + 12])[0] == _masked_crc32c(
        data[i:i + 8])
    payload = data[i + 12:i + 12 + n]
    assert struct.unpack("<I", data[i + 12 + n:i + 16 + n])[0] == (
        _masked_crc32c(payload))
    out.append(payload)
    i += 16 + n
  return out


def _varint(b, i):
  v, shift = 0, 0
  while True:
    v |= (b[i] & 0x7F) << shift
    shift += 7
    i += 1
    if not b[i - 1] & 0x80:
      return v, i


def _fields(b):
  """(field number, value) of a protobuf message (wire types 0, 1, 2, 5)."""
  i = 0
  while i < len(b):
    key, i = _varint(b, i)
    field, wire = key >> 3, key & 7
    if wire == 0:
      v, i = _varint(b, i)
    elif wire == 1:
      v, i = b[i:i + 8], i + 8
    elif wire == 5:
      v, i = b[i:i + 4], i + 4
    elif wire == 2:
      n, i = _varint(b, i)
      v, i = b[i:i + n], i + n
    else:
      raise ValueError(wire)
    yield field, v


def _scalar_events(path):
  """[(step, tag, value)] of the file's Event.summary.value.simple_value;
  also checks that the first event is the file version."""
  events = []
  for k, record in enumerate(_records(path)):
    fields = dict(_fields(record))   # Event: wall_time 1, step 2, summary 5
    if k == 0:
      assert fields[3] == b"brain.Event:2"
      continue
    step = fields.get(2, 0)
    for f, value_msg in _fields(fields[5]):       # Summary.value = 1
      assert f == 1
      value = dict(_fields(value_msg))            # tag 1, simple_value 2
      events.append((step, value[1].decode(),
                     struct.unpack("<f", value[2])[0]))
  return events


def _event_file(logdir):
  files = [f for f in os.listdir(logdir) if f.startswith("events.out.")]
  assert len(files) == 1, files
  return os.path.join(logdir, files[0])


def _f32(x):
  return struct.unpack("<f", struct.pack("<f", x))[0]


WRITTEN = [(10, {"train/loss": 1.25, "eval/nme": 0.0402}),
           (20, {"train/loss": -3.5}),
           (2**40, {"train/loss": 7.0})]
EXPECTED = sorted((step, tag, _f32(v)) for step, scalars in WRITTEN
                  for tag, v in scalars.items())


def _write(logdir):
  w = writers.EventFileWriter(str(logdir))
  for step, scalars in WRITTEN:
    w.write_scalars(step, scalars)
  w.close()
  return w


def test_event_file_read_back_by_an_independent_reader(tmp_path):
  w = _write(tmp_path)
  path = _event_file(tmp_path)
  assert w.path == path
  assert sorted(_scalar_events(path)) == EXPECTED


def test_event_file_read_back_by_tensorboard(tmp_path):
  accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  _write(tmp_path)
  acc = accumulator.EventAccumulator(_event_file(tmp_path))
  acc.Reload()
  got = sorted((e.step, tag, e.value) for tag in acc.Tags()["scalars"]
               for e in acc.Scalars(tag))
  assert got == EXPECTED


def test_metric_writer_jsonl_and_nonfinite(tmp_path):
  mw = writers.MetricWriter(str(tmp_path))
  mw.write_scalars(5, {"a": 1.0, "b": float("nan")})
  mw.write_scalars(6, {"a": 2})
  mw.close()
  rows = writers.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [5, 6]
  assert rows[0]["a"] == 1.0 and rows[0]["b"] == "nan" and rows[1]["a"] == 2.0
  with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
    for line in f:
      json.loads(line)  # strict JSON per line.
  events = _scalar_events(_event_file(tmp_path / "tensorboard"))
  assert [(s, t, v) for s, t, v in events if t == "a"] == [(5, "a", 1.0),
                                                          (6, "a", 2.0)]
  nan = [v for s, t, v in events if t == "b"]
  assert len(nan) == 1 and nan[0] != nan[0]


def test_disabled_writer_writes_nothing(tmp_path):
  mw = writers.MetricWriter(str(tmp_path / "w"), enabled=False)
  mw.write_scalars(1, {"a": 1.0})
  mw.close()
  assert not os.path.exists(tmp_path / "w")


def test_import_does_not_load_torch_and_torch_still_imports():
  """tensorboardX's import-time `import torch` (~4 s) is skipped, nothing
  else changes: torch (when installed) imports normally afterwards."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import importlib.util, sys\n"
          "from training import writers\n"
          "print('LOADED', 'torch' in sys.modules)\n"
          "print('ENTRY', 'torch' in sys.modules and sys.modules['torch'])\n"
          "if importlib.util.find_spec('torch') is not None:\n"
          "  import torch\n"
          "  print('TORCH', torch.zeros(2).sum().item())\n")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                        text=True, timeout=120,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.returncode == 0, proc.stderr
  assert "LOADED False" in proc.stdout and "ENTRY False" in proc.stdout
  if "TORCH" in proc.stdout:
    assert "TORCH 0.0" in proc.stdout

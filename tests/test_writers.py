"""Tests of training/writers.py: TFRecord framing, Event protobufs, JSONL."""

import json
import os
import struct

import numpy as np
import pytest

from training import writers


def _crc32c_bitwise(data: bytes) -> int:
  """Independent bit-by-bit CRC-32C (no table)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def test_crc32c_known_values():
  assert writers.crc32c(b"123456789") == 0xE3069283
  assert writers.crc32c(b"") == 0
  # RFC 3720 (iSCSI) test vector: 32 bytes of zeros.
  assert writers.crc32c(bytes(32)) == 0x8A9136AA
  rng = np.random.RandomState(0)
  for n in (1, 7, 100):
    data = rng.bytes(n)
    assert writers.crc32c(data) == _crc32c_bitwise(data)


def test_masked_crc_formula():
  crc = 0xE3069283
  rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
  assert writers.masked_crc32c(b"123456789") == (rotated + 0xA282EAD8) % 2**32


def test_scalar_event_bytes_by_hand():
  got = writers.encode_scalar_event(3, {"a": 0.5}, wall_time=1.0)
  value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 0.5)   # tag=1, simple=2
  summary = b"\x0a" + bytes([len(value)]) + value          # Summary.value=1
  expected = (b"\x09" + struct.pack("<d", 1.0) +           # wall_time=1
              b"\x10\x03" +                                # step=2
              b"\x2a" + bytes([len(summary)]) + summary)   # summary=5
  assert got == expected


def test_varint_of_large_and_negative_steps_round_trip():
  for step in (0, 127, 128, 300, 2**40, -1):
    event = writers.decode_event(writers.encode_scalar_event(step, {"x": 1}))
    assert event["step"] == step


def test_event_file_round_trip(tmp_path):
  w = writers.EventFileWriter(str(tmp_path))
  w.write_scalars(10, {"train/loss": 1.25, "eval/nme": 0.0402})
  w.write_scalars(20, {"train/loss": -3.5})
  w.close()
  files = os.listdir(tmp_path)
  assert len(files) == 1 and files[0].startswith("events.out.tfevents.")
  events = writers.read_events(os.path.join(tmp_path, files[0]))
  assert events[0]["file_version"] == "brain.Event:2"
  assert events[1]["step"] == 10
  assert events[1]["scalars"]["train/loss"] == 1.25
  assert events[1]["scalars"]["eval/nme"] == pytest.approx(0.0402, rel=1e-7)
  assert events[2] == {"step": 20, "scalars": {"train/loss": -3.5},
                       "wall_time": events[2]["wall_time"]}


def test_corrupted_record_is_detected(tmp_path):
  w = writers.EventFileWriter(str(tmp_path))
  w.write_scalars(1, {"x": 2.0})
  w.close()
  path = w.path
  data = bytearray(open(path, "rb").read())
  data[-6] ^= 0xFF  # flip a byte inside the last record's payload.
  open(path, "wb").write(bytes(data))
  with pytest.raises(ValueError, match="bad data checksum"):
    writers.read_events(path)


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
  tb = os.listdir(os.path.join(tmp_path, "tensorboard"))
  events = writers.read_events(os.path.join(tmp_path, "tensorboard", tb[0]))
  assert [e["step"] for e in events[1:]] == [5, 6]


def test_disabled_writer_writes_nothing(tmp_path):
  mw = writers.MetricWriter(str(tmp_path / "w"), enabled=False)
  mw.write_scalars(1, {"a": 1.0})
  mw.close()
  assert not os.path.exists(tmp_path / "w")

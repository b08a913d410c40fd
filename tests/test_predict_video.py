"""Tests of star_jax/predict_video.py: settings, tracking through predict."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from landmarks import video
from star_jax import predict
from star_jax import predict_video
from tests import test_predict
from training import errors

S = 64
SIZE = (96, 128)                         # frame height, width.


def _two_blob_fn(crops):
  """Two points: the brightness centroids of the red and the green channel."""
  ys, xs = np.mgrid[:crops.shape[1], :crops.shape[2]]
  out = []
  for channel in (0, 1):
    w = crops[..., channel].astype(np.float64)
    total = np.maximum(w.sum((1, 2)), 1e-9)
    out.append(np.stack([(w * xs).sum((1, 2)) / total,
                         (w * ys).sum((1, 2)) / total], -1))
  return np.stack(out, 1)


def _blob_frames(folder, centres):
  """Frames: a red blob at each centre, a green one 16 px right, 12 down."""
  folder.mkdir(parents=True)
  yy, xx = np.mgrid[:SIZE[0], :SIZE[1]]
  for i, (cx, cy) in enumerate(centres):
    frame = np.zeros(SIZE + (3,), np.float64)
    for channel, dx, dy in ((0, 0.0, 0.0), (1, 16.0, 12.0)):
      frame[..., channel] = 255 * np.exp(
          -((xx - cx - dx) ** 2 + (yy - cy - dy) ** 2) / (2 * 3.0 ** 2))
    Image.fromarray(np.round(frame).astype(np.uint8)).save(
        folder / f"frame{i}.png")


class _BoxDetector:
  """Always one box around the first frame's blobs; counts its calls."""
  min_face_size = 20

  def __init__(self, box):
    self.box, self.calls = box, 0

  def __call__(self, image):
    self.calls += 1
    return [test_predict._FakeDetection(self.box, 0.9)]  # pylint: disable=protected-access


def test_settings_come_from_the_config_then_the_flags():
  s = predict_video.tracker_settings(
      {"smooth": True, "one_euro_min_cutoff": 0.7, "one_euro_beta": 3.0,
       "one_euro_d_cutoff": 2.0, "max_spread": 0.0},
      {"one_euro_beta": 9.0, "one_euro_d_cutoff": None, "smooth": False})
  assert (s.one_euro.min_cutoff, s.one_euro.beta, s.one_euro.d_cutoff) == (
      0.7, 9.0, 2.0)
  assert s.smooth is False and s.max_spread == math.inf   # 0 = no test.
  assert predict_video.tracker_settings({}, {"max_spread": 0.05}
                                        ).max_spread == 0.05
  with pytest.raises(errors.UserError, match="unknown predict setting"):
    predict_video.tracker_settings({"one_euro_gamma": 1.0})
  with pytest.raises(errors.UserError, match="min_cutoff"):
    predict_video.tracker_settings({"one_euro_min_cutoff": -1.0})


def test_frames_tracked_from_the_previous_landmarks(tmp_path):
  # Blobs move 2 px a frame; the detector's box is right only on frame 0.
  # Tracking must follow them from the previous landmarks (detector called
  # once) and, unsmoothed, find both blobs on every frame.
  centres = [(40.0 + 2 * i, 44.0 + 0.5 * i) for i in range(12)]
  _blob_frames(tmp_path / "frames", centres)
  p = predict.Predictor(_two_blob_fn, S, crop_mode="points",
                        points_margin=3.0, batch_size=4)
  detector = _BoxDetector([10.0, 10.0, 90.0, 90.0])
  settings = predict_video.tracker_settings({}, {"smooth": False})
  summary = predict_video.predict_video(
      p, str(tmp_path / "frames"), str(tmp_path / "out"), "clip",
      detector=detector, detector_name="fake", settings=settings,
      overlay=False)
  assert detector.calls == 1
  assert (summary["frames"], summary["detected"], summary["tracked"]) == (
      12, 1, 11)
  table = video.read_csv(str(tmp_path / "out" / "clip.csv"))
  truth = np.array([[[cx, cy], [cx + 16.0, cy + 12.0]] for cx, cy in centres])
  np.testing.assert_allclose(table["landmarks"], truth, atol=0.05)
  assert table["status"] == ["detected"] + ["tracked"] * 11
  rows = [json.loads(line)
          for line in open(tmp_path / "out" / "clip.jsonl")]
  assert rows[1]["box_source"] == "previous_landmarks"
  # Smoothing on: the same raw points, smoothed ones lag the motion.
  smooth = predict_video.predict_video(
      p, str(tmp_path / "frames"), str(tmp_path / "out2"), "clip",
      detector=_BoxDetector([10.0, 10.0, 90.0, 90.0]), detector_name="fake",
      settings=predict_video.tracker_settings({"one_euro_beta": 0.0}),
      overlay=False)
  assert smooth["tracked"] == 11
  smoothed = video.read_csv(str(tmp_path / "out2" / "clip.csv"))["landmarks"]
  lag = truth[1:, :, 0] - smoothed[1:, :, 0]
  assert np.all(lag > 0.5)             # behind a face moving to the right.


def test_cli_video_without_a_face_fails_others_go_on(tmp_path, capsys,
                                                     monkeypatch):
  blank = tmp_path / "blank"
  blank.mkdir()
  for i in range(3):
    Image.fromarray(np.zeros(SIZE + (3,), np.uint8)).save(
        blank / f"f{i}.png")
  good = tmp_path / "good"
  _blob_frames(good, [(40.0, 44.0), (42.0, 44.0)])
  p = predict.Predictor(_two_blob_fn, S, crop_mode="points",
                        points_margin=3.0, batch_size=1)
  monkeypatch.setattr(predict.Predictor, "from_path",
                      classmethod(lambda cls, *a, **k: p))

  class _DetectBright:
    min_face_size = 20

    def __call__(self, image):
      if image.max() == 0:
        return []
      return [test_predict._FakeDetection([10.0, 10.0, 90.0, 90.0], 1.0)]  # pylint: disable=protected-access

  monkeypatch.setattr(predict, "make_detector", lambda *a: _DetectBright())
  out = tmp_path / "out"
  code = predict.main(["--frames", str(blank), "--frames", str(good) + "/",
                       "--out", str(out), "--no_overlay"])
  err = capsys.readouterr().err
  assert code == 1
  assert "no face found in any of the 3 frames" in err and "blank" in err
  assert sorted(os.listdir(out)) == ["blank.csv", "blank.jsonl", "good.csv",
                                     "good.jsonl"]
  assert video.read_csv(str(out / "good.csv"))["status"] == ["detected",
                                                             "tracked"]
  # A missing video is reported, not a traceback.
  code = predict.main(["--video", str(tmp_path / "nope.mp4"), "--out",
                       str(out)])
  assert code == 1 and "does not exist" in capsys.readouterr().err

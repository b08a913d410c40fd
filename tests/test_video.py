"""Tests for landmarks/video.py: synthetic videos and frame folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from landmarks import tracking
from landmarks import video
from training import errors

cv2 = pytest.importorskip("cv2")

W, H, FRAMES, FPS = 64, 48, 12, 10.0


def _square_frame(k: int) -> np.ndarray:
  """RGB frame k: frame 0 pure red; a bright square moving right after."""
  im = np.zeros((H, W, 3), np.uint8)
  if k == 0:
    im[..., 0] = 255
  else:
    im[16:32, 4 * k:4 * k + 16] = 255
  return im


def _square_centre(k: int) -> np.ndarray:
  return np.array([4 * k + 7.5, 23.5])


def _write_video(path, frames, fps=FPS):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                           (W, H))
  assert writer.isOpened()
  for f in frames:
    writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  writer.release()


@pytest.fixture
def square_video(tmp_path):
  path = tmp_path / "in" / "square.mp4"
  path.parent.mkdir()
  _write_video(path, [_square_frame(k) for k in range(FRAMES)])
  return str(path)


def test_video_frames_count_order_colour_and_time(square_video):
  source = video.open_frames(square_video)
  assert source.kind == "video" and source.fps == pytest.approx(FPS)
  frames = list(source)
  assert [i for i, _, _ in frames] == list(range(FRAMES))
  assert [t for _, t, _ in frames] == pytest.approx(
      [k / FPS for k in range(FRAMES)])
  first = frames[0][2]
  assert first.shape == (H, W, 3) and first.dtype == np.uint8
  # Pure red in RGB order (BGR would put 255 in the last channel).
  mean = first.reshape(-1, 3).mean(0)
  assert mean[0] > 230 and mean[1] < 30 and mean[2] < 30
  # The bright square is where it was drawn (codec error allowed).
  for k in range(1, FRAMES):
    grey = frames[k][2].mean(-1)
    ys, xs = np.nonzero(grey > 128)
    np.testing.assert_allclose([xs.mean(), ys.mean()], _square_centre(k),
                               atol=1.0)
  # An fps given by the caller wins.
  assert [t for _, t, _ in video.read_frames(square_video, fps=5)][:3] == [
      0.0, 0.2, 0.4]


def test_folder_natural_order_skips_unreadable(tmp_path, capsys):
  folder = tmp_path / "frames"
  folder.mkdir()
  for k in (10, 2, 1):
    Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(
        folder / f"frame{k}.png")
  (folder / "frame3.png").write_bytes(b"not a png")
  (folder / "notes.txt").write_text("ignored")
  source = video.open_frames(str(folder), fps=4)
  assert source.names == ["frame1.png", "frame2.png", "frame3.png",
                          "frame10.png"]
  frames = list(source)
  assert [(i, t, int(f[0, 0, 0])) for i, t, f in frames] == [
      (0, 0.0, 1), (1, 0.25, 2), (3, 0.75, 10)]
  assert [name for name, _ in source.problems] == ["frame3.png"]
  assert "frame3.png" in capsys.readouterr().err


def test_natural_key():
  names = ["f10.png", "f2.png", "F1.png", "f2b.png", "f02.png"]
  assert sorted(names, key=video.natural_key) == [
      "F1.png", "f02.png", "f2.png", "f2b.png", "f10.png"]


def test_unreadable_inputs_raise_user_error(tmp_path):
  with pytest.raises(errors.UserError, match="does not exist"):
    video.open_frames(str(tmp_path / "missing.mp4"))
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"garbage" * 20)
  with pytest.raises(errors.UserError, match="bad.mp4.*expected a video"):
    video.open_frames(str(bad))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "a.txt").write_text("x")
  with pytest.raises(errors.UserError, match="empty holds no image files"):
    video.open_frames(str(empty))
  with pytest.raises(errors.UserError, match="fps"):
    video.open_frames(str(tmp_path), fps=0)


def _results():
  pts = np.array([[1.25, 2.5], [3.0, 4.125]])
  return [
      {"frame": 0, "time": 0.0, "status": "no_face", "landmarks": None},
      {"frame": 1, "time": 0.04, "status": "detected", "landmarks": pts},
      {"frame": 2, "time": 0.08, "status": "tracked",
       "landmarks": pts + 0.0004},
      {"frame": 3, "time": 0.12, "status": "no_face", "landmarks": None},
  ]


def test_csv_columns_and_round_trip(tmp_path):
  path = str(tmp_path / "a.csv")
  w = video.CsvWriter(path)
  for r in _results():
    w.write(r)
  w.close()
  lines = open(path).read().splitlines()
  assert lines[0] == "frame,time,status,x0,y0,x1,y1"
  assert lines[1] == "0,0.000000,no_face,,,,"
  assert lines[2] == "1,0.040000,detected,1.250,2.500,3.000,4.125"
  back = video.read_csv(path)
  np.testing.assert_array_equal(back["frame"], [0, 1, 2, 3])
  np.testing.assert_allclose(back["time"], [0, 0.04, 0.08, 0.12])
  assert back["status"] == ["no_face", "detected", "tracked", "no_face"]
  assert np.isnan(back["landmarks"][[0, 3]]).all()
  np.testing.assert_allclose(back["landmarks"][1], _results()[1]["landmarks"])
  np.testing.assert_allclose(back["landmarks"][2],
                             _results()[2]["landmarks"], atol=5e-4)


def test_csv_without_faces(tmp_path):
  path = str(tmp_path / "a.csv")
  w = video.CsvWriter(path)
  w.write(_results()[0])
  w.close()
  assert open(path).read().splitlines() == ["frame,time,status",
                                            "0,0.000000,no_face"]


class _SquareModel:
  """Fake predict/detect: 4 points at the corners of the bright square."""

  def __init__(self):
    self.detect_calls = 0

  def _corners(self, image):
    ys, xs = np.nonzero(image.mean(-1) > 128)
    if not len(xs) or len(xs) > 0.5 * image.shape[0] * image.shape[1]:
      return None
    return np.array([[xs.min(), ys.min()], [xs.max(), ys.min()],
                     [xs.max(), ys.max()], [xs.min(), ys.max()]], float)

  def detect_fn(self, image):
    self.detect_calls += 1
    c = self._corners(image)
    return [] if c is None else [(tracking.points_box(c), 1.0)]

  def predict_fn(self, image, box=None, points=None):
    c = self._corners(image)
    if c is None:
      raise ValueError("no square in the crop")
    return {"landmarks": c, "spread": 0.01}


def test_process_video_writes_three_files(square_video, tmp_path):
  model = _SquareModel()
  tracker = tracking.Tracker(model.predict_fn, model.detect_fn, fps=FPS)
  out = tmp_path / "out"
  before = set(os.listdir(tmp_path / "in"))
  summary = video.process_video(square_video, tracker, str(out), "sq")
  assert sorted(os.listdir(out)) == ["sq.csv", "sq.jsonl", "sq_overlay.mp4"]
  assert set(os.listdir(tmp_path / "in")) == before
  # Frame 0 (red) has no face; then detected once, tracked to the end.
  assert summary["frames"] == FRAMES and summary["faces"] == FRAMES - 1
  assert (summary["no_face"], summary["detected"], summary["tracked"]) == (
      1, 1, FRAMES - 2)
  assert summary["lost"] == 0 and summary["re_detected"] == 0
  lines = [json.loads(x) for x in open(out / "sq.jsonl")]
  assert [x["status"] for x in lines] == ["no_face", "detected"] + [
      "tracked"] * (FRAMES - 2)
  back = video.read_csv(str(out / "sq.csv"))
  for k in range(1, FRAMES):
    np.testing.assert_allclose(back["landmarks"][k],
                               np.asarray(lines[k]["landmarks"]), atol=1e-3)
  # Raw landmarks follow the square.
  for k in range(1, FRAMES):
    centre = np.asarray(lines[k]["landmarks_raw"]).mean(0)
    np.testing.assert_allclose(centre, _square_centre(k), atol=1.0)
  # The overlay has every frame, at the source size and fps.
  overlay = video.open_frames(str(out / "sq_overlay.mp4"))
  assert overlay.fps == pytest.approx(FPS)
  frames = [f for _, _, f in overlay]
  assert len(frames) == FRAMES and frames[0].shape == (H, W, 3)


def test_process_video_refuses_input_folder_and_bad_stem(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for k in range(3):
    Image.fromarray(_square_frame(k + 1)).save(folder / f"{k}.png")
  model = _SquareModel()
  tracker = tracking.Tracker(model.predict_fn, model.detect_fn)
  with pytest.raises(errors.UserError, match="input's folder"):
    video.process_video(str(folder), tracker, str(folder), "x")
  with pytest.raises(errors.UserError, match="stem"):
    video.process_video(str(folder), tracker, str(tmp_path / "o"), "../x")
  assert sorted(os.listdir(folder)) == ["0.png", "1.png", "2.png"]
  assert not (tmp_path / "o").exists()
  summary = video.process_video(str(folder), tracker, str(tmp_path / "o"),
                                "x", overlay=False, fps=2)
  assert summary["frames"] == 3 and set(summary["paths"]) == {"jsonl", "csv"}
  assert video.read_csv(summary["paths"]["csv"])["time"].tolist() == [
      0.0, 0.5, 1.0]


def test_process_video_without_readable_frames_writes_nothing(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  (folder / "a.png").write_bytes(b"broken")
  model = _SquareModel()
  tracker = tracking.Tracker(model.predict_fn, model.detect_fn)
  with pytest.raises(errors.UserError, match="no readable frame"):
    video.process_video(str(folder), tracker, str(tmp_path / "o"), "x")
  assert not (tmp_path / "o").exists()


def test_draw_landmarks_colours_and_positions():
  frame = np.zeros((40, 50, 3), np.uint8)
  pts = np.array([[10.0, 5.0], [40.2, 30.4], [np.nan, 3.0]])
  out = video.draw_landmarks(frame, pts, "tracked")
  assert frame.max() == 0    # The input is not drawn on.
  np.testing.assert_array_equal(out[5, 10], [0, 255, 0])
  np.testing.assert_array_equal(out[30, 40], [0, 255, 0])
  # Radius 1 (anti-aliased): every lit pixel is next to a finite point.
  lit = np.argwhere(out.max(-1) > 0)[:, ::-1]
  near = np.linalg.norm(lit[:, None] - np.rint(pts[None, :2]), axis=-1)
  assert near.min(1).max() <= 2.5 and len(lit) >= 2
  detected = video.draw_landmarks(frame, pts[:1], "detected")
  np.testing.assert_array_equal(detected[5, 10], [255, 160, 0])

"""Tests for landmarks/tracking.py with a fake model on a moving point set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landmarks import one_euro
from landmarks import tracking
from training import errors

H, W = 160, 200
NUM_POINTS = 12


def _truth(num_frames: int, scale: float = 1.0, shift=(0.0, 0.0)):
  """`[T, N, 2]` points of a ring (radius 25 px) on a slow smooth path."""
  t = np.arange(num_frames) / 25.0
  angles = 2 * np.pi * np.arange(NUM_POINTS) / NUM_POINTS
  ring = 25.0 * np.stack([np.cos(angles), np.sin(angles)], -1)
  centre = np.stack([100 + 20 * np.sin(0.8 * t), 80 + 10 * np.cos(0.5 * t)],
                    -1)
  pts = centre[:, None, :] + ring[None]
  return pts * scale + np.asarray(shift)


def _image(index: int, scale: int = 1) -> np.ndarray:
  """A blank frame that carries its index in pixel (0, 0)."""
  im = np.zeros((H * scale, W * scale, 3), np.uint8)
  im[0, 0, 0], im[0, 0, 1] = index % 256, index // 256
  return im


def _index(image) -> int:
  return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


class FakeModel:
  """predict_fn / detect_fn over known points, with recorded calls.

  predict_fn returns the true points of the frame + N(0, noise^2) (a fixed
  draw per frame and crop kind) and raises ValueError when the crop's centre
  is more than 40 % of the face size from the face (the face left the crop).
  `events[frame]` changes what a points-crop on that frame gives:
  "spread" (spread 0.5), "raise" (ValueError), "outside" (points moved off
  the image). `no_face` frames: no detection, and any crop gives spread 0.9.
  """

  def __init__(self, truth, noise=1.0, events=None, no_face=(),
               scale=1.0, shift=(0.0, 0.0)):
    self.truth = truth
    self.noise = noise
    self.events = dict(events or {})
    self.no_face = set(no_face)
    self.scale, self.shift = scale, np.asarray(shift)
    self.predict_calls = []   # (frame, "box" | "points", array)
    self.detect_calls = []    # frames

  def box(self, k):
    return tracking.points_box(self.truth[k])

  def detect_fn(self, image):
    k = _index(image)
    self.detect_calls.append(k)
    if k in self.no_face:
      return []
    b = self.box(k)
    # A worse, smaller box first (order must not matter), then the face.
    return [(b * 0.5 + 3, 0.3), (b, 0.9)]

  def predict_fn(self, image, box=None, points=None):
    k = _index(image)
    kind, arr = ("box", box) if box is not None else ("points", points)
    self.predict_calls.append((k, kind, np.array(arr, np.float64)))
    crop = (np.asarray(box, np.float64).reshape(2, 2).mean(0) if box is not None
            else tracking.points_box(points).reshape(2, 2).mean(0))
    truth = self.truth[k]
    centre = truth.mean(0)
    if np.linalg.norm(crop - centre) > 0.4 * tracking.face_size(truth):
      raise ValueError("the face is not in the crop")
    # Noise in units of the scene (scaled with the scene).
    rng = np.random.default_rng([k, kind == "box"])
    pred = truth + self.noise * self.scale * rng.standard_normal(truth.shape)
    spread = 0.02
    if k in self.no_face:
      spread = 0.9
    elif kind == "points":
      event = self.events.get(k)
      if event == "spread":
        spread = 0.5
      elif event == "raise":
        raise ValueError("box outside the image")
      elif event == "outside":
        pred = pred + np.array([W * self.scale, 0.0])
    return {"landmarks": pred, "spread": spread}


def _run(model, num_frames, settings=None, scale=1, fps=25.0):
  tracker = tracking.Tracker(model.predict_fn, model.detect_fn, settings,
                             fps=fps)
  return tracker, [tracker.step(_image(k, scale)) for k in range(num_frames)]


def test_detects_once_then_follows_previous_raw_points():
  truth = _truth(30)
  model = FakeModel(truth)
  tracker, results = _run(model, 30)
  assert model.detect_calls == [0]
  assert [r["status"] for r in results] == ["detected"] + ["tracked"] * 29
  # Frame 0: the best detector box; frames k >= 1: the RAW points of k - 1.
  k0, kind0, box0 = model.predict_calls[0]
  assert (k0, kind0) == (0, "box")
  np.testing.assert_array_equal(box0, model.box(0))
  np.testing.assert_array_equal(results[0]["box"], model.box(0))
  assert results[0]["box_source"] == "detector"
  for k in range(1, 30):
    frame, kind, pts = model.predict_calls[k]
    assert (frame, kind) == (k, "points")
    np.testing.assert_array_equal(pts, results[k - 1]["landmarks_raw"])
    if k >= 2:   # (Frame 0's smoothed points are its raw points.)
      assert not np.allclose(pts, results[k - 1]["landmarks"])
    assert results[k]["box_source"] == "previous_landmarks"
    np.testing.assert_array_equal(
        results[k]["box"], tracking.points_box(results[k - 1]["landmarks_raw"]))
  assert tracker.counts == {"tracked": 29, "detected": 1, "no_face": 0,
                            "lost": 0, "re_detected": 0, "detector_calls": 1}
  assert [r["time"] for r in results] == [k / 25.0 for k in range(30)]


def test_redetects_exactly_when_the_track_is_lost():
  truth = _truth(20)
  truth[9:] += np.array([60.0, 0.0])   # The face jumps: it leaves the crop.
  model = FakeModel(truth, events={5: "spread", 13: "outside", 16: "raise"})
  tracker, results = _run(model, 20, tracking.TrackerSettings(max_spread=0.1))
  assert model.detect_calls == [0, 5, 9, 13, 16]
  statuses = [r["status"] for r in results]
  assert [k for k, s in enumerate(statuses) if s == "detected"] == [
      0, 5, 9, 13, 16]
  assert all(s in ("detected", "tracked") for s in statuses)
  lost = {k: r["lost"] for k, r in enumerate(results) if r["lost"]}
  assert sorted(lost) == [5, 9, 13, 16]
  assert "spread 0.5" in lost[5]
  assert "not in the crop" in lost[9]
  assert "outside the image" in lost[13]
  assert "box outside" in lost[16]
  # On a re-detected frame the crop came from the detector, on that frame.
  for k in (5, 9, 13, 16):
    calls = [c for c in model.predict_calls if c[0] == k]
    assert [c[1] for c in calls] == ["points", "box"]
    np.testing.assert_array_equal(calls[1][2], model.box(k))
    # The filter restarted: the first smoothed sample is the raw one.
    np.testing.assert_array_equal(results[k]["landmarks"],
                                  results[k]["landmarks_raw"])
  assert tracker.counts["lost"] == 4 and tracker.counts["re_detected"] == 4


def test_frames_without_a_face_are_reported():
  truth = _truth(12)
  model = FakeModel(truth, no_face={3, 4, 5, 10})
  tracker, results = _run(model, 12, tracking.TrackerSettings(max_spread=0.1))
  statuses = [r["status"] for r in results]
  assert statuses == ["detected", "tracked", "tracked", "no_face", "no_face",
                      "no_face", "detected", "tracked", "tracked", "tracked",
                      "no_face", "detected"]
  # Lost at 3 and 10 (a track existed); 4, 5 had no track to lose.
  assert [k for k, r in enumerate(results) if r["lost"]] == [3, 10]
  assert model.detect_calls == [0, 3, 4, 5, 6, 10, 11]
  for k in (3, 4, 5, 10):
    r = results[k]
    assert r["landmarks"] is None and r["landmarks_raw"] is None
    assert r["box"] is None and r["reason"] == "no face detected"
  np.testing.assert_array_equal(results[6]["landmarks"],
                                results[6]["landmarks_raw"])
  assert tracker.counts["no_face"] == 4
  assert tracker.counts["lost"] == 2 and tracker.counts["re_detected"] == 2


def test_rejected_detection_is_no_face():
  truth = _truth(3)
  model = FakeModel(truth)

  def bad_detect(image):
    return [(model.box(_index(image)) + 500.0, 1.0)]   # Nowhere near.
  tracker = tracking.Tracker(model.predict_fn, bad_detect)
  r = tracker.step(_image(0))
  assert r["status"] == "no_face" and "not in the crop" in r["reason"]
  assert not tracker.has_track


def test_smoothing_reduces_jitter_and_can_be_off():
  truth = _truth(120)
  model = FakeModel(truth, noise=1.5)
  _, results = _run(model, 120)
  raw = np.stack([r["landmarks_raw"] for r in results])
  smooth = np.stack([r["landmarks"] for r in results])

  def jitter(x):
    return np.std(np.diff(x - truth, axis=0))
  assert jitter(smooth) < 0.5 * jitter(raw)
  off = tracking.TrackerSettings(smooth=False)
  _, plain = _run(FakeModel(truth, noise=1.5), 120, off)
  for a, b in zip(plain, results):
    np.testing.assert_array_equal(a["landmarks"], a["landmarks_raw"])
    np.testing.assert_array_equal(a["landmarks_raw"], b["landmarks_raw"])


def test_smoothing_is_one_euro_in_face_size_units():
  """The smoothed track = the One-Euro filter with scale = the longer side
  of the previous frame's raw landmark box (the current one at detection),
  at the frames' times."""
  truth = _truth(25)
  settings = tracking.TrackerSettings(
      one_euro=one_euro.OneEuroSettings(min_cutoff=0.7, beta=3.0,
                                        d_cutoff=1.2))
  tracker = tracking.Tracker(FakeModel(truth).predict_fn,
                             FakeModel(truth).detect_fn, settings)
  times = np.cumsum(np.r_[0.0, np.random.default_rng(0).uniform(
      0.02, 0.06, 24)])
  results = [tracker.step(_image(k), times[k]) for k in range(25)]
  filt = one_euro.OneEuroFilter(0.7, 3.0, 1.2, 25.0)
  for k, r in enumerate(results):
    x1, y1, x2, y2 = tracking.points_box(
        results[max(k - 1, 0)]["landmarks_raw"])
    size = max(x2 - x1, y2 - y1)
    assert r["face_size"] == pytest.approx(size, rel=1e-12)
    np.testing.assert_allclose(
        r["landmarks"], filt(r["landmarks_raw"], times[k], scale=size),
        rtol=1e-12)


def test_same_smoothing_at_any_resolution_and_position():
  """Scene x4 (points, image, noise) and shifted: smoothed x4 and shifted."""
  truth = _truth(40)
  _, small = _run(FakeModel(truth, noise=1.0), 40)
  shift = (37.0, -11.0)
  big_truth = _truth(40, scale=4.0, shift=shift)
  _, big = _run(FakeModel(big_truth, noise=1.0, scale=4.0, shift=shift), 40,
                scale=4)
  for a, b in zip(small, big):
    assert a["status"] == b["status"]
    np.testing.assert_allclose(b["landmarks"], 4.0 * a["landmarks"] + shift,
                               rtol=1e-9, atol=1e-9)


def test_no_spread_test_by_default():
  truth = _truth(8)
  model = FakeModel(truth, events={5: "spread"})
  tracker, results = _run(model, 8)
  assert model.detect_calls == [0] and results[5]["spread"] == 0.5
  assert results[5]["status"] == "tracked"


def test_deterministic():
  truth = _truth(15)
  _, a = _run(FakeModel(truth, events={7: "raise"}), 15)
  _, b = _run(FakeModel(truth, events={7: "raise"}), 15)
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for key in ra:
      if isinstance(ra[key], np.ndarray):
        np.testing.assert_array_equal(ra[key], rb[key])
      else:
        assert ra[key] == rb[key]


def test_best_detection_ties():
  boxes = [([0, 0, 10, 10], 0.5), ([50, 0, 70, 20], 0.9),
           ([20, 0, 40, 20], 0.9), ([5, 5, 15, 15], 0.9)]
  box, score = tracking.best_detection(boxes)
  np.testing.assert_array_equal(box, [20, 0, 40, 20])   # Tie: leftmost.
  assert score == 0.9
  box, _ = tracking.best_detection([([0, 0, 10, 10], 0.9),
                                    ([30, 0, 60, 30], 0.9)])
  np.testing.assert_array_equal(box, [30, 0, 60, 30])   # Tie: larger area.
  assert tracking.best_detection([]) is None


def test_fraction_outside():
  pts = np.array([[0, 0], [199, 159], [200, 10], [-0.1, 5], [np.nan, 3]])
  assert tracking.fraction_outside(pts, 200, 160) == pytest.approx(0.6)


def test_track_iterates_frame_tuples():
  truth = _truth(6)
  model = FakeModel(truth)
  frames = [(k + 10, 0.1 * k, _image(k)) for k in range(6)]
  out = list(tracking.track(frames, model.predict_fn, model.detect_fn))
  assert [r["frame"] for r in out] == list(range(10, 16))
  assert [r["time"] for r in out] == [0.1 * k for k in range(6)]


@pytest.mark.parametrize("values", [{"max_spread": -1.0}, {"max_spread": "a"},
                                    {"smooth": 1}, {"one_euro": {"beta": -1}},
                                    {"max_speed": 3}])
def test_settings_reject_bad_values(values):
  with pytest.raises(errors.UserError):
    tracking.TrackerSettings.from_mapping(values)


def test_settings_from_mapping():
  s = tracking.TrackerSettings.from_mapping(
      {"max_spread": math.inf, "one_euro": {"beta": 0.0}, "smooth": False})
  assert s.max_spread == math.inf and s.one_euro.beta == 0.0
  assert s.one_euro.min_cutoff == one_euro.OneEuroSettings().min_cutoff
  assert s.smooth is False


def test_malformed_prediction_is_an_error_not_a_lost_track():
  tracker = tracking.Tracker(lambda image, box=None, points=None: {
      "landmarks": np.zeros((3, 3))}, lambda image: [([0, 0, 5, 5], 1.0)])
  with pytest.raises(ValueError, match="expected \\[N, 2\\]"):
    tracker.step(_image(0))

"""Frames in, per-frame landmarks out: video / image-folder sources, writers.

Sources (`open_frames`, `read_frames`): a video file read with OpenCV
(`cv2.VideoCapture`, frames converted BGR -> RGB; fps from the file, 25 when
the file does not say) or a folder of image files (decoded with Pillow as
the rest of the project, sorted by name in natural order so frame2 < frame10;
fps from the argument, 25 by default). Each frame is (index, time_s, RGB
uint8 [H, W, 3]); time = index / fps. A missing or undecodable video, or a
folder without image files, raises UserError naming it and what is
expected; an unreadable image in a folder is reported on stderr by name and
skipped (its index is not reused, so times stay right).

Writers, one file each, for `landmarks.tracking` results:
  * `<stem>.jsonl`: one JSON object per frame (every field of the result;
    arrays as lists, pixels rounded to 1e-3).
  * `<stem>.csv`: `frame,time,status,x0,y0,...,x{N-1},y{N-1}` with the
    smoothed landmarks (original pixels, (x, y), pixel centres at integers);
    empty cells for frames without a face. `read_csv` reads it back.
  * `<stem>_overlay.mp4`: the frames with the landmarks drawn (cv2.circle;
    green = tracked, orange = detected on this frame), mp4v codec.

`process_video(source, tracker, out_dir, stem)` runs a
`landmarks.tracking.Tracker` over a source and writes the three files into
`out_dir` only (never next to the input: out_dir may not be the input's
folder).

OpenCV (`opencv-python-headless`) is imported only inside the functions that
need it; without it, a video source or an overlay raises UserError saying
what to install.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from data import records as records_lib
from data.readers import common as readers_common
from training import errors

DEFAULT_FPS = 25.0
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg",
                    ".mpeg", ".wmv")
_COLOURS = {"tracked": (0, 255, 0), "detected": (255, 160, 0)}  # RGB.

Frame = Tuple[int, float, np.ndarray]


def import_cv2():
  """cv2, or a UserError saying how to install it."""
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        "reading or writing video needs OpenCV: pip install "
        f"opencv-python-headless==4.14.0.94 ({e})") from None
  return cv2


def natural_key(name: str) -> Tuple:
  """Sort key with digit runs compared as numbers: frame2 < frame10."""
  parts = re.split(r"(\d+)", name)
  return tuple((0, int(p), p) if p.isdigit() else (1, p.lower(), p)
               for p in parts if p)


def _check_fps(fps) -> Optional[float]:
  if fps is None:
    return None
  if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) \
      or not math.isfinite(fps) or fps <= 0:
    raise errors.UserError(f"fps must be a number > 0, got {fps!r}")
  return float(fps)


class FrameSource:
  """An opened, checked frame source; iterate for (index, time_s, frame).

  Attributes:
    path: the video file or folder.
    kind: "video" or "folder".
    fps: frames per second used for the times.
    names: the folder's image file names in order (None for a video).
    count: frames the file says it has / images in the folder (a video's
      count may be approximate or 0 when unknown).
    problems: (file name, message) of each frame skipped so far.
  """

  def __init__(self, path: str, fps: Optional[float] = None):
    fps = _check_fps(fps)
    self.path = path
    self.problems: List[Tuple[str, str]] = []
    if os.path.isdir(path):
      self.kind = "folder"
      self.names = sorted((f for f in os.listdir(path)
                           if readers_common.is_image_file(f)
                           and os.path.isfile(os.path.join(path, f))),
                          key=natural_key)
      if not self.names:
        raise errors.UserError(
            f"frames folder {path} holds no image files; expected frames "
            f"named in order (e.g. frame0001.png) with extensions "
            f"{', '.join(readers_common.IMAGE_EXTENSIONS)}")
      self.fps = fps or DEFAULT_FPS
      self.count = len(self.names)
    elif os.path.isfile(path):
      self.kind = "video"
      self.names = None
      cv2 = import_cv2()
      capture = cv2.VideoCapture(path)
      try:
        ok = capture.isOpened()
        if ok:
          ok, _ = capture.read()
        file_fps = capture.get(cv2.CAP_PROP_FPS) if ok else 0.0
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT) if ok else 0.0
      finally:
        capture.release()
      if not ok:
        raise errors.UserError(
            f"cannot read video {path}: OpenCV could not decode a frame; "
            f"expected a video file ({', '.join(VIDEO_EXTENSIONS)}, any "
            "codec FFmpeg reads) or a folder of image frames")
      if fps is None:
        fps = (float(file_fps) if math.isfinite(file_fps) and file_fps > 0
               else DEFAULT_FPS)
      self.fps = fps
      self.count = int(count) if math.isfinite(count) and count > 0 else 0
    else:
      raise errors.MissingInputError(
          f"{path} does not exist; expected a video file or a folder of "
          "image frames")

  def __iter__(self) -> Iterator[Frame]:
    if self.kind == "folder":
      yield from self._folder_frames()
    else:
      yield from self._video_frames()

  def _folder_frames(self) -> Iterator[Frame]:
    for index, name in enumerate(self.names):
      path = os.path.join(self.path, name)
      try:
        image = records_lib.as_rgb_uint8(records_lib.decode_image_file(path),
                                         path)
      except (OSError, ValueError) as e:
        self.problems.append((name, str(e)))
        print(f"warning: skipped frame {name} in {self.path}: {e}",
              file=sys.stderr)
        continue
      yield index, index / self.fps, image

  def _video_frames(self) -> Iterator[Frame]:
    cv2 = import_cv2()
    capture = cv2.VideoCapture(self.path)
    try:
      index = 0
      while True:
        ok, bgr = capture.read()
        if not ok:
          break
        if bgr.ndim == 2:
          rgb = np.repeat(bgr[..., None], 3, axis=-1)
        else:
          rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        yield index, index / self.fps, np.ascontiguousarray(rgb, np.uint8)
        index += 1
    finally:
      capture.release()


def open_frames(path: str, fps: Optional[float] = None) -> FrameSource:
  """A checked FrameSource (UserError now, not when iterating)."""
  return FrameSource(path, fps)


def read_frames(path: str, fps: Optional[float] = None) -> Iterator[Frame]:
  """(index, time_s, RGB uint8 frame) of a video file or an image folder."""
  return iter(open_frames(path, fps))


# ---------------------------------------------------------------- writers --

def _rounded(value, decimals=3):
  if value is None:
    return None
  if isinstance(value, np.ndarray):
    return np.round(value.astype(np.float64), decimals).tolist()
  if isinstance(value, (float, np.floating)):
    return round(float(value), 6)
  if isinstance(value, np.integer):
    return int(value)
  return value


def result_to_json(result: Mapping[str, Any]) -> Dict[str, Any]:
  """A tracking result as JSON-ready values (arrays -> lists)."""
  return {k: _rounded(v) for k, v in result.items()}


class JsonlWriter:
  """One JSON object per line, one line per frame."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, "w")

  def write(self, result: Mapping[str, Any]) -> None:
    self._f.write(json.dumps(result_to_json(result)) + "\n")

  def close(self) -> None:
    self._f.close()


def csv_header(num_points: int) -> List[str]:
  return ["frame", "time", "status"] + [
      f"{c}{i}" for i in range(num_points) for c in ("x", "y")]


class CsvWriter:
  """`frame,time,status,x0,y0,...` rows (smoothed landmarks).

  The point count comes from the first frame with a face: rows before it are
  held back until then (a video without any face gets the three columns).
  """

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, "w", newline="")
    self._writer = csv.writer(self._f)
    self._num_points: Optional[int] = None
    self._pending: List[Mapping[str, Any]] = []

  def write(self, result: Mapping[str, Any]) -> None:
    points = result.get("landmarks")
    if self._num_points is None:
      if points is None:
        self._pending.append(result)
        return
      self._num_points = len(points)
      self._writer.writerow(csv_header(self._num_points))
      for r in self._pending:
        self._row(r)
      self._pending = []
    self._row(result)

  def _row(self, result: Mapping[str, Any]) -> None:
    points = result.get("landmarks")
    row = [int(result["frame"]), f"{float(result['time']):.6f}",
           result["status"]]
    if points is None:
      row += [""] * (2 * (self._num_points or 0))
    else:
      points = np.asarray(points, np.float64).reshape(-1, 2)
      if len(points) != self._num_points:
        raise ValueError(f"frame {result['frame']} has {len(points)} "
                         f"landmarks, earlier frames {self._num_points}")
      row += [f"{v:.3f}" for v in points.reshape(-1)]
    self._writer.writerow(row)

  def close(self) -> None:
    if self._num_points is None:
      self._writer.writerow(csv_header(0))
      for r in self._pending:
        self._row(r)
    self._f.close()


def read_csv(path: str) -> Dict[str, Any]:
  """Reads a CsvWriter file: frame int [F], time [F], status list, and
  landmarks float64 [F, N, 2] (NaN where the cells are empty)."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows or rows[0][:3] != ["frame", "time", "status"]:
    raise errors.UserError(f"{path}: expected a header frame,time,status,"
                           "x0,y0,... (a landmarks.video CSV)")
  n = (len(rows[0]) - 3) // 2
  frames, times, statuses, points = [], [], [], []
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 3 + 2 * n:
      raise errors.UserError(f"{path}:{line}: {len(row)} cells, expected "
                             f"{3 + 2 * n}")
    frames.append(int(row[0]))
    times.append(float(row[1]))
    statuses.append(row[2])
    points.append([float(v) if v != "" else np.nan for v in row[3:]])
  return {"frame": np.asarray(frames, np.int64),
          "time": np.asarray(times, np.float64), "status": statuses,
          "landmarks": np.asarray(points, np.float64).reshape(-1, n, 2)}


def draw_landmarks(frame: np.ndarray, points: Optional[np.ndarray],
                   status: str = "tracked", label: Optional[str] = None
                   ) -> np.ndarray:
  """A copy of the RGB frame with filled circles at the points (cv2)."""
  cv2 = import_cv2()
  out = np.ascontiguousarray(frame, np.uint8).copy()
  h, w = out.shape[:2]
  radius = max(1, int(round(max(h, w) / 320)))
  colour = _COLOURS.get(status, (255, 0, 0))
  if points is not None:
    for x, y in np.asarray(points, np.float64).reshape(-1, 2):
      if np.isfinite(x) and np.isfinite(y):
        cv2.circle(out, (int(round(x)), int(round(y))), radius, colour, -1,
                   cv2.LINE_AA)
  if label:
    scale = max(0.3, max(h, w) / 1000)
    cv2.putText(out, label, (3, int(12 * scale / 0.4)),
                cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
  return out


class OverlayWriter:
  """An mp4v `.mp4` of the frames with their landmarks drawn.

  The size is the first frame's; a later frame of another size (image
  folders) is resized to it.
  """

  def __init__(self, path: str, fps: float):
    self.path = path
    self.fps = float(fps)
    self._writer = None
    self._size = None

  def write(self, frame: np.ndarray, result: Mapping[str, Any]) -> None:
    cv2 = import_cv2()
    drawn = draw_landmarks(frame, result.get("landmarks"), result["status"],
                           f"{result['frame']} {result['status']}")
    h, w = drawn.shape[:2]
    if self._writer is None:
      self._size = (w, h)
      self._writer = cv2.VideoWriter(self.path,
                                     cv2.VideoWriter_fourcc(*"mp4v"),
                                     self.fps, self._size)
      if not self._writer.isOpened():
        raise errors.UserError(
            f"cannot write {self.path}: this OpenCV build has no mp4v "
            "encoder; pass overlay=False (or install "
            "opencv-python-headless)")
    if (w, h) != self._size:
      drawn = cv2.resize(drawn, self._size, interpolation=cv2.INTER_AREA)
    self._writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.release()


# ----------------------------------------------------------------- driver --

def _check_stem(stem: str) -> None:
  if (not isinstance(stem, str) or not stem or stem in (".", "..")
      or "/" in stem or "\\" in stem or os.sep in stem):
    raise errors.UserError(
        f"stem {stem!r} must be a plain file name without folders (the "
        "outputs are <out_dir>/<stem>.jsonl, .csv, _overlay.mp4)")


def _check_out_dir(out_dir: str, source: FrameSource) -> None:
  inputs = (source.path if source.kind == "folder"
            else os.path.dirname(os.path.abspath(source.path)))
  if os.path.realpath(out_dir) == os.path.realpath(inputs):
    raise errors.UserError(
        f"output folder {out_dir} is the input's folder ({inputs}); choose a "
        "separate output folder (nothing is written next to the inputs)")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise errors.UserError(f"output folder {out_dir} is a file")


def output_paths(out_dir: str, stem: str) -> Dict[str, str]:
  return {"jsonl": os.path.join(out_dir, stem + ".jsonl"),
          "csv": os.path.join(out_dir, stem + ".csv"),
          "overlay": os.path.join(out_dir, stem + "_overlay.mp4")}


def process_video(source, tracker, out_dir: str, stem: str,
                  overlay: bool = True, fps: Optional[float] = None
                  ) -> Dict[str, Any]:
  """Tracks every frame of `source` and writes the outputs into `out_dir`.

  Args:
    source: a video file or image folder path, or a FrameSource.
    tracker: a landmarks.tracking.Tracker (reset first: a new sequence).
    out_dir: output folder (created; not the input's folder).
    stem: output file stem.
    overlay: also write `<stem>_overlay.mp4`.
    fps: frame rate for the times (None: the video's, 25 for a folder).

  Returns:
    A summary: source, kind, fps, frames, faces (frames with landmarks),
    tracked, detected, no_face, lost, re_detected, detector_calls, skipped
    (unreadable frame files, by name) and paths (what was written).

  Raises:
    UserError: bad source, stem or out_dir (before anything is written), or
      a source without a readable frame (nothing written).
  """
  if not isinstance(source, FrameSource):
    source = open_frames(source, fps)
  _check_stem(stem)
  _check_out_dir(out_dir, source)
  paths = output_paths(out_dir, stem)
  if not overlay:
    del paths["overlay"]
  tracker.reset()
  writers = []
  frames = 0
  try:
    for index, t, image in source:
      if not writers:
        os.makedirs(out_dir, exist_ok=True)
        writers = [JsonlWriter(paths["jsonl"]), CsvWriter(paths["csv"])]
        if overlay:
          writers.append(OverlayWriter(paths["overlay"], source.fps))
      result = tracker.step(image, t, index)
      writers[0].write(result)
      writers[1].write(result)
      if overlay:
        writers[2].write(image, result)
      frames += 1
  finally:
    for w in writers:
      w.close()
  if not frames:
    raise errors.UserError(
        f"no readable frame in {source.path}"
        + (f" ({len(source.problems)} unreadable image files)"
           if source.problems else "") + "; nothing written")
  counts = tracker.counts
  return {
      "source": os.path.abspath(source.path), "kind": source.kind,
      "fps": source.fps, "frames": frames,
      "faces": counts["tracked"] + counts["detected"],
      "tracked": counts["tracked"], "detected": counts["detected"],
      "no_face": counts["no_face"], "lost": counts["lost"],
      "re_detected": counts["re_detected"],
      "detector_calls": counts["detector_calls"],
      "skipped": [name for name, _ in source.problems],
      "paths": paths,
  }

"""Shared pieces of the dataset readers: problem reports, listings, checks.

Every reader returns a `DatasetListing`: the `FaceRecord`s it could read and the
`Problem`s it met (a corrupt image, a malformed annotation line, a missing image
file, implausible landmarks). Problems are logged with `logging.warning` as
they are found, counted and the offending face is skipped; nothing is dropped
silently. Errors that make the whole listing meaningless (a missing folder, a
file with the wrong number of landmarks for the set) raise instead.

Label sanity (`apply_sanity`, the readers' `sanity` option, `SANITY_MODES`):
the checks of data/sanity.py run on the faces a reader could read; each face
that fails is reported at its annotation (file, line) with the image and the
reason, then left out ("skip") or kept ("keep").
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from data import records as records_lib
from data import sanity as sanity_lib
from training import errors

FaceRecord = records_lib.FaceRecord

# How much a reader checks each image while listing (images are never kept).
#   "none":   trust the annotation;
#   "exists": the file must exist (one stat per image; the default);
#   "verify": Pillow must recognise the file and `Image.verify()` must pass
#             (reads the file, catches truncated/corrupt PNGs and non-images);
#   "decode": decode every image fully (slow; catches everything).
IMAGE_CHECKS = ("none", "exists", "verify", "decode")

# What a reader does with faces whose labels fail data/sanity.py's checks:
#   "skip": report them in `problems` and leave them out (the default);
#   "keep": report them in `problems` and list them anyway;
#   "off":  do not check.
SANITY_MODES = ("skip", "keep", "off")

# Image file endings every reader and tool accepts (compared lower-cased).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp",
                    ".tif", ".tiff")


def is_image_file(path: str) -> bool:
  """Whether `path` ends in one of IMAGE_EXTENSIONS (any letter case)."""
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Problem:
  """One bad item in a dataset: which file, which line (1-based) and why."""
  path: str
  message: str
  line: Optional[int] = None

  def __str__(self) -> str:
    where = self.path if self.line is None else f"{self.path}:{self.line}"
    return f"{where}: {self.message}"


class ProblemLog:
  """Collects problems for one listing; logs each one as it is added."""

  def __init__(self, dataset: str):
    self.dataset = dataset
    self.problems: List[Problem] = []

  def add(self, path: str, message: str, line: Optional[int] = None) -> None:
    problem = Problem(str(path), message, line)
    logging.warning("%s: %s", self.dataset, problem)
    self.problems.append(problem)


@dataclasses.dataclass
class DatasetListing(Sequence[FaceRecord]):
  """What `read_dataset` returns: the records plus the problems met.

  Behaves as a read-only list of `FaceRecord` (len, indexing, iteration), so
  `for record in read_dataset(...)` works; `problems` lists every skipped item
  with file and line, and `summary()` is a printable report.
  """
  records: List[FaceRecord]
  problems: List[Problem] = dataclasses.field(default_factory=list)
  name: str = ""
  split: str = ""

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index):
    return self.records[index]

  def __iter__(self) -> Iterator[FaceRecord]:
    return iter(self.records)

  def summary(self) -> str:
    lines = [f"{self.name} [{self.split}]: {len(self.records)} faces, "
             f"{len(self.problems)} problems (faces skipped or set incomplete)"]
    lines += [f"  {p}" for p in self.problems]
    return "\n".join(lines)


def missing_error(dataset: str, path: str, layout: str,
                  source: str) -> FileNotFoundError:
  """The error for a missing file/folder: names the expected layout, source."""
  return errors.MissingInputError(
      f"{dataset}: {path!r} does not exist.\n"
      f"Expected layout:\n{layout.rstrip()}\n"
      f"Where the data comes from: {source}")


def require(path: str, dataset: str, layout: str, source: str) -> str:
  """Returns `path` if it exists, else raises `missing_error`."""
  if not os.path.exists(path):
    raise missing_error(dataset, path, layout, source)
  return path


def first_existing(candidates: Sequence[str]) -> Optional[str]:
  """The first path of `candidates` that exists, or None."""
  for candidate in candidates:
    if os.path.exists(candidate):
      return candidate
  return None


def find_first(candidates: Sequence[str], dataset: str, layout: str,
               source: str) -> str:
  """The first existing path of `candidates`; else `missing_error` naming the
  first (preferred) candidate."""
  found = first_existing(candidates)
  if found is None:
    raise missing_error(dataset, candidates[0], layout, source)
  return found


def check_image_mode(mode: str) -> None:
  """Raises ValueError unless `mode` is one of `IMAGE_CHECKS`."""
  if mode not in IMAGE_CHECKS:
    raise ValueError(
        f"check_images must be one of {IMAGE_CHECKS}, got {mode!r}")


def check_sanity_mode(mode: str) -> None:
  """Raises ValueError unless `mode` is one of `SANITY_MODES`."""
  if mode not in SANITY_MODES:
    raise errors.UserError(
        f"sanity must be one of {SANITY_MODES}, got {mode!r}")


def apply_sanity(records: Sequence[FaceRecord],
                 where: Sequence[Tuple[str, Optional[int]]], log: ProblemLog,
                 mode: str, *, set_checks: bool,
                 groups: Optional[Sequence[Any]] = None,
                 sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None
                 ) -> List[FaceRecord]:
  """Runs data/sanity.py on a reader's records; returns the records to list.

  Args:
    records: the faces the reader could read.
    where: per record `(annotation file, 1-based line or None)`, where a
      flagged face is reported: the place to fix the label.
    log: the reader's problem log.
    mode: one of `SANITY_MODES`.
    set_checks: also run the per-set position/scale test (for sets of
      pre-cropped faces only; data/sanity.py).
    groups: per record a key; the set test compares faces within a group.
    sizes: per record `(width, height)` or None; None reads the image headers.
  """
  check_sanity_mode(mode)
  if mode == "off" or not records:
    return list(records)
  result = sanity_lib.check_records(records, sizes=sizes,
                                    set_checks=set_checks, groups=groups)
  suffix = " (kept: sanity='keep')" if mode == "keep" else ""
  for flag in result.flags:
    record = records[flag.index]
    image = record.image_path
    if record.image_key is not None:
      image = f"{image}[{record.image_key}]"
    path, line = where[flag.index]
    log.add(path, f"image {image!r}: implausible landmarks: {flag.reason}"
            f"{suffix}", line)
  if mode == "keep":
    return list(records)
  return [records[i] for i in result.keep]


def check_image(path: str, mode: str, log: ProblemLog,
                line: Optional[int] = None,
                where: Optional[str] = None) -> bool:
  """Checks one image file per `IMAGE_CHECKS`; reports and returns False if bad.

  `where`/`line` name the annotation that refers to the image (so the report
  says which annotation line pointed at a missing file).
  """
  check_image_mode(mode)
  if mode == "none":
    return True
  prefix = "" if where is None else f"image {path!r}: "
  report_path = path if where is None else where
  if not os.path.isfile(path):
    log.add(report_path, prefix + "image file not found", line)
    return False
  if mode == "exists":
    return True
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    if mode == "verify":
      with Image.open(path) as im:
        im.verify()
    else:
      records_lib.decode_image_file(path)
  except Exception as e:  # Pillow raises many types for corrupt files.
    log.add(report_path, prefix + f"corrupt image ({type(e).__name__}: {e})",
            line)
    return False
  return True


def points_box(landmarks: np.ndarray,
               visible: Optional[np.ndarray] = None) -> np.ndarray:
  """Tight box `(x_min, y_min, x_max, y_max)` of the visible, finite points."""
  points = np.asarray(landmarks, np.float64)
  keep = np.all(np.isfinite(points), axis=-1)
  if visible is not None and np.any(keep & visible):
    keep = keep & visible
  if not np.any(keep):
    raise ValueError("cannot derive a box: no finite landmark")
  points = points[keep]
  return np.concatenate([points.min(0), points.max(0)]).astype(np.float32)


def xywh_to_box(xywh) -> np.ndarray:
  x, y, w, h = (float(v) for v in xywh)
  return np.array([x, y, x + w, y + h], np.float32)


def check_num_points(landmarks: np.ndarray, expected: Optional[int],
                     path: str, dataset: str) -> None:
  """Raises ValueError when a file holds another point count than the set."""
  if expected is not None and landmarks.shape[0] != expected:
    raise ValueError(
        f"{dataset}: {path!r} has {landmarks.shape[0]} landmarks, expected "
        f"{expected} for this set; wrong file in the folder, or pass "
        f"num_points=... if this is intended")


def make_record(image_path: str, landmarks, *, visible=None, box=None,
                center=None, scale=None, attributes=None, subset: str = "",
                image_key=None, image_loader=None) -> FaceRecord:
  """A FaceRecord with the schema's dtypes (float32 points, bool flags)."""
  landmarks = np.asarray(landmarks, np.float32).reshape(-1, 2)
  if visible is None:
    visible = np.all(np.isfinite(landmarks), axis=-1)
  visible = np.asarray(visible, bool).reshape(landmarks.shape[0])
  return FaceRecord(
      image_path=str(image_path),
      landmarks=landmarks,
      visible=visible,
      box=None if box is None else np.asarray(box, np.float32).reshape(4),
      center=None if center is None else np.asarray(center,
                                                    np.float32).reshape(2),
      scale=None if scale is None else float(scale),
      attributes=dict(attributes or {}),
      subset=subset,
      image_key=image_key,
      image_loader=image_loader)


def parse_floats(tokens: Sequence[str]) -> np.ndarray:
  """Parses numbers; raises ValueError naming the first bad token."""
  values = []
  for token in tokens:
    try:
      values.append(float(token))
    except ValueError:
      raise ValueError(f"not a number: {token!r}") from None
  return np.array(values, np.float64)


def parsed_lines(lines: Sequence[str], parse: Callable[[str], Any],
                 log: ProblemLog, path: str, *, first_line: int = 1,
                 what: str = "annotation line"
                 ) -> Iterator[Tuple[int, Any]]:
  """Yields `(line number, parse(text))` for the lines of a text annotation.

  Args:
    lines: every line of the file (`read_lines(path)`).
    parse: text -> parsed value; raises ValueError saying what is wrong.
    log: where a line that does not parse is reported (file, 1-based line,
      "malformed <what>: <reason>"); the line is then skipped.
    path: the file, for the report.
    first_line: 1-based number of the first line to parse (after headers).
    what: what a line is, for the report.
  Blank lines are skipped without a report.
  """
  for number in range(first_line, len(lines) + 1):
    text = lines[number - 1]
    if not text.strip():
      continue
    try:
      value = parse(text)
    except ValueError as e:
      log.add(path, f"malformed {what}: {e}", number)
      continue
    yield number, value


def read_lines(path: str) -> List[str]:
  """Reads a text annotation file (utf-8, tolerant of a BOM and CRLF)."""
  with open(path, "r", encoding="utf-8-sig", errors="strict") as f:
    return f.read().splitlines()


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
  if split not in splits:
    raise errors.UserError(
        f"{dataset}: unknown split {split!r}; expected one of {list(splits)}")

"""Shared pieces of the dataset readers: problem reports, listings, checks.

Every reader returns a `DatasetListing`: the `FaceRecord`s it could read and the
`Problem`s it met (a corrupt image, a malformed annotation line, a missing image
file, implausible landmarks). Problems are logged with `logging.warning` as
they are found, counted and the offending face is skipped; nothing is dropped
silently. Errors that make the whole listing meaningless (a missing folder,
an annotation file that cannot be read, a set where no face has the set's
landmark count) raise `training.errors.UserError` (MissingInputError for a
missing path) instead, with a message naming the file.

Hostile input (random bytes, truncated or empty files, wrong column counts,
NaN / inf / huge numbers, symbolic-link loops, images whose header claims a
huge size) never raises anything else out of a reader, and input files are
only ever opened for reading. The shared pieces every reader uses for that:
  * `read_lines`: a line that is not UTF-8 text is reported and read as blank;
    an unreadable file (a folder, a looping link, no permission) is a
    UserError naming it.
  * `parsed_lines`: a line that does not parse is reported at its number; an
    annotation file without any line is reported as empty.
  * `check_face` (`face_problem`): every face's numbers before it is listed:
    landmarks (the visible ones finite; none farther than `FAR_OUTSIDE` image
    sides outside the image, or `MAX_COORDINATE` px from the origin when the
    reader does not know the image size), box, centre and scale.
  * `PointCount`: a face with another landmark count than the set's is
    reported and skipped; only a set where no face has it raises.
  * `check_image` / `file_problem` / `image_error_message`: a missing image,
    a folder or a dangling or looping link in its place, an undecodable
    image, one over Pillow's decompression-bomb limit, each reported by name.

Label sanity (`apply_sanity`, the readers' `sanity` option, `SANITY_MODES`):
the checks of data/sanity.py run on the faces a reader could read; each face
that fails is reported at its annotation (file, line) with the image and the
reason, then left out ("skip") or kept ("keep").
"""

from __future__ import annotations

import collections
import dataclasses
import json
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

# A coordinate farther outside the image than this many image sides is a
# broken label (an overflow, a unit mix-up, a fuzzed file), not a face cut by
# the frame; `check_face` rejects it by name.
FAR_OUTSIDE = 10.0
# Where a reader does not read the image size while listing: the same
# rejection for coordinates farther than this from the origin (10 times a
# 100,000 px side; far beyond any photograph Pillow decodes by default).
MAX_COORDINATE = 1e6
# At most this many lines that are not text are reported one by one per file.
MAX_BINARY_LINE_REPORTS = 10


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
  what = "does not exist"
  if os.path.islink(path):
    what = "is a symbolic link that does not resolve (broken, or a loop)"
  return errors.MissingInputError(
      f"{dataset}: {path!r} {what}.\n"
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


MISSING = "does not exist"


def file_problem(path: str) -> Optional[str]:
  """Why `path` is not a regular file to read, or None when it is one.

  A phrase that follows "it": `MISSING`, "is a folder, not a file", ...

  Distinguishes what a user fixes differently: nothing there, a folder, a
  symbolic link that resolves to nothing (dangling, or a loop), a device or
  pipe (reading one could block forever).
  """
  if os.path.isfile(path):
    return None
  if os.path.islink(path):
    return "is a symbolic link that does not resolve (broken, or a loop)"
  if os.path.isdir(path):
    return "is a folder, not a file"
  if os.path.lexists(path):
    return "is not a regular file (a device, pipe or socket)"
  return MISSING


def is_too_large(error: BaseException) -> bool:
  """Whether a decode failure is Pillow's decompression-bomb guard.

  Pillow raises DecompressionBombError over twice `Image.MAX_IMAGE_PIXELS`
  (a small file whose header claims e.g. 100000 x 100000 pixels would need
  tens of GB decoded) and only warns between the limit and twice it;
  `records.decode_image_file` turns that warning into an error too.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return isinstance(error, (Image.DecompressionBombError,
                            Image.DecompressionBombWarning))


def image_error_message(error: BaseException) -> str:
  """What a Pillow failure on an image file means, for a problem report:
  "too large" (`is_too_large`), any other failure "corrupt"."""
  if is_too_large(error):
    return (f"image too large to decode ({error}); Pillow's limit is "
            "PIL.Image.MAX_IMAGE_PIXELS")
  return f"corrupt image ({type(error).__name__}: {error})"


def check_image(path: str, mode: str, log: ProblemLog,
                line: Optional[int] = None,
                where: Optional[str] = None) -> bool:
  """Checks one image file per `IMAGE_CHECKS`; reports and returns False if bad.

  `where`/`line` name the annotation that refers to the image (so the report
  says which annotation line pointed at a missing file). "exists" rejects a
  folder or an unresolvable link in the image's place too (one `stat`, no
  decoding: images stay lazily decoded).
  """
  check_image_mode(mode)
  if mode == "none":
    return True
  prefix = "" if where is None else f"image {path!r}: "
  report_path = path if where is None else where
  problem = file_problem(path)
  if problem is not None:
    what = "not found" if problem == MISSING else problem
    log.add(report_path, prefix + f"image file {what}", line)
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
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    log.add(report_path, prefix + image_error_message(cause), line)
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


def _first_indices(mask: np.ndarray, limit: int = 5) -> str:
  indices = np.flatnonzero(mask)
  text = ", ".join(str(i) for i in indices[:limit])
  return text + (f" and {indices.size - limit} more" if indices.size > limit
                 else "")


def _coordinate_range(size: Optional[Tuple[float, float]]
                      ) -> Tuple[np.ndarray, np.ndarray, str]:
  """`(low, high, description)` of the coordinates a label may have."""
  if size is None:
    return (np.full(2, -MAX_COORDINATE), np.full(2, MAX_COORDINATE),
            f"farther than {MAX_COORDINATE:g} px from the origin")
  side = np.array([float(size[0]), float(size[1])])
  return (-FAR_OUTSIDE * side, (1.0 + FAR_OUTSIDE) * side,
          f"more than {FAR_OUTSIDE:g} image sides outside the "
          f"{side[0]:g}x{side[1]:g} image")


def face_problem(landmarks, *, visible=None, box=None, center=None,
                 scale=None, size: Optional[Tuple[float, float]] = None
                 ) -> Optional[str]:
  """Why a face's numbers cannot be used, or None when they can.

  The checks every reader runs before listing a face (whatever its `sanity`
  mode: these faces would put NaN or overflow into training, they are not
  merely implausible):
    * landmarks are `[N, 2]`, N > 0, with at least one finite point;
    * every point marked visible (all, when `visible` is None) is finite;
      points marked not visible may be NaN (menpo / COCO "not annotated");
    * no finite point, box corner or centre lies more than `FAR_OUTSIDE`
      image sides outside the image (`size` = (width, height)), or farther
      than `MAX_COORDINATE` px from the origin when `size` is None;
    * box (4 values), centre (2) and scale are finite; scale > 0.
  """
  points = np.asarray(landmarks, np.float64)
  if points.ndim != 2 or points.shape[-1] != 2 or points.shape[0] == 0:
    return f"expected [N, 2] landmarks, got shape {points.shape}"
  finite = np.all(np.isfinite(points), axis=-1)
  marked = (np.ones(points.shape[0], bool) if visible is None
            else np.asarray(visible, bool).reshape(-1))
  if marked.shape[0] != points.shape[0]:
    return (f"{marked.shape[0]} visibility flags for {points.shape[0]} "
            "landmarks")
  if not np.any(finite):
    return "no finite landmark"
  if np.any(marked & ~finite):
    return ("non-finite coordinates (NaN or inf) at points "
            f"{_first_indices(marked & ~finite)}")
  low, high, beyond = _coordinate_range(size)
  far = finite & np.any((points < low) | (points > high), axis=-1)
  if np.any(far):
    i = int(np.flatnonzero(far)[0])
    return (f"point {i} at ({points[i, 0]:.6g}, {points[i, 1]:.6g}) lies "
            f"{beyond} (points {_first_indices(far)})")
  for what, value, count in (("box", box, 4), ("centre", center, 2)):
    if value is None:
      continue
    try:
      values = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
      return f"{what} {value!r} is not {count} numbers"
    if values.size != count:
      return f"{what} has {values.size} values, expected {count}"
    if not np.all(np.isfinite(values)):
      return f"{what} {values.tolist()} has non-finite values"
    xy = values.reshape(-1, 2)
    if np.any((xy < low) | (xy > high)):
      return f"{what} {values.tolist()} lies {beyond}"
  if scale is not None:
    try:
      value = float(scale)
    except (TypeError, ValueError):
      return f"scale {scale!r} is not a number"
    if not (np.isfinite(value) and 0 < value <= MAX_COORDINATE / 200):
      return (f"scale {value!r} must be a finite number > 0 (the face box "
              "is 200 * scale px wide)")
  return None


def check_face(log: ProblemLog, path: str, line: Optional[int], landmarks,
               *, image: Optional[str] = None, **numbers) -> bool:
  """`face_problem` with a report: False (and a problem at `path`:`line`
  naming `image`) when the face cannot be used.

  Args:
    log: the reader's problem log.
    path, line: the annotation that holds the face (where to fix it).
    landmarks: `[N, 2]` points as read.
    image: the image the face belongs to, for the report.
    **numbers: `visible`, `box`, `center`, `scale`, `size` of `face_problem`.
  """
  problem = face_problem(landmarks, **numbers)
  if problem is None:
    return True
  prefix = "" if image is None else f"image {image!r}: "
  log.add(path, f"{prefix}unusable landmarks: {problem}", line)
  return False


def most_common_count(counts: Sequence[int]) -> Optional[int]:
  """The most frequent landmark count (the first seen on a tie), or None.

  The set's count when the user gives none: taken from every face rather
  than the first, so one corrupt first face does not reject all the others.
  """
  if not counts:
    return None
  return collections.Counter(counts).most_common(1)[0][0]


class PointCount:
  """A set's landmark count: faces with another count are reported, skipped.

  One corrupt file among many (a fuzzed or truncated .pts, a stray line)
  must not stop a listing; a folder where no face has the count is the wrong
  data, and `check_some` raises then.
  """

  def __init__(self, dataset: str, expected: Optional[int]):
    self.dataset = dataset
    self.expected = expected
    self.matched = 0
    self.wrong: List[Tuple[str, int]] = []

  def accepts(self, landmarks: np.ndarray, log: ProblemLog, path: str,
              line: Optional[int] = None, what: str = "") -> bool:
    """True if `landmarks` has the set's count; else reports, False.

    `path`, `line` and `what` (e.g. "annotation 3") say where the face is.
    """
    count = int(np.shape(landmarks)[0])
    if self.expected is None or count == self.expected:
      self.matched += 1
      return True
    where = path if line is None else f"{path}:{line}"
    self.wrong.append((f"{where} {what}".rstrip(), count))
    prefix = f"{what}: " if what else ""
    log.add(path, f"{prefix}{count} landmarks, expected {self.expected} for "
            "this set; face skipped", line)
    return False

  def check_some(self) -> None:
    """UserError when faces were read but none has the set's count."""
    if self.wrong and not self.matched:
      where, count = self.wrong[0]
      raise errors.UserError(
          f"{self.dataset}: no face has {self.expected} landmarks, the count "
          f"expected for this set: {where} has {count} landmarks "
          f"({len(self.wrong)} face(s) with another count); wrong file in "
          "the folder, or pass num_points=... if this is intended")


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
    lines: every line of the file (`read_lines(path, log)`).
    parse: text -> parsed value; raises ValueError saying what is wrong.
    log: where a line that does not parse is reported (file, 1-based line,
      "malformed <what>: <reason>"); the line is then skipped.
    path: the file, for the report.
    first_line: 1-based number of the first line to parse (after headers).
    what: what a line is, for the report.
  Blank lines are skipped without a report. A file without any non-blank
  line from `first_line` on is reported once (an empty or truncated file).
  A ValueError of `parse` is a malformed line, and so is an OverflowError
  (`int()` of an infinite value).
  """
  seen = False
  for number in range(first_line, len(lines) + 1):
    text = lines[number - 1]
    if not text.strip():
      continue
    seen = True
    try:
      value = parse(text)
    except (ValueError, OverflowError) as e:
      log.add(path, f"malformed {what}: {e}", number)
      continue
    yield number, value
  if not seen and not any(p.path == path for p in log.problems):
    log.add(path, f"no {what}s: the file is empty"
            + (f" after its {first_line - 1} header line(s)"
               if first_line > 1 and len(lines) >= first_line - 1 else ""))


def _text_line(raw: bytes) -> Optional[str]:
  """A line's text, or None if it is not UTF-8 text (or holds a NUL byte)."""
  if b"\0" in raw:
    return None
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return None


def read_lines(path: str, log: Optional[ProblemLog] = None) -> List[str]:
  """Reads a text annotation file (utf-8, tolerant of a BOM and CRLF).

  Lines end at "\\n", "\\r\\n" or "\\r" (as an editor numbers them). A line
  that is not UTF-8 text (binary data: invalid UTF-8 or a NUL byte) is
  reported to `log` at its number ("not UTF-8 text") and returned blank, so
  the other lines keep their numbers and are still read; the first
  `MAX_BINARY_LINE_REPORTS` such lines are reported one by one, the rest in
  one report. A file where such lines are more than that and most of the
  lines is not a text file: one report, and no lines. Without a `log` a
  line that is not text raises UserError naming the file and line.

  Raises:
    UserError: the file cannot be read (missing, a folder, a looping
      symbolic link, no permission), naming it; or, without `log`, a line
      that is not text.
  """
  problem = file_problem(path)
  if problem is not None and problem != MISSING:
    raise errors.UserError(f"cannot read {path!r}: it {problem}")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.MissingInputError(
        f"cannot read {path!r}: it {MISSING}") from None
  except OSError as e:
    raise errors.UserError(
        f"cannot read {path!r}: {e.strerror or e}") from None
  if data.startswith(b"\xef\xbb\xbf"):
    data = data[3:]
  lines, binary = [], []
  for number, raw in enumerate(data.splitlines(), start=1):
    text = _text_line(raw)
    if text is None:
      if log is None:
        raise errors.UserError(
            f"{path}:{number}: not UTF-8 text (a binary file, or another "
            "encoding?)")
      binary.append(number)
      text = ""
    lines.append(text)
  if (len(binary) > MAX_BINARY_LINE_REPORTS and
      2 * len(binary) > sum(1 for l in lines if l.strip()) + len(binary)):
    log.add(path, f"not a text file: {len(binary)} of {len(lines)} lines are "
            "not UTF-8 text (binary data?); file skipped")
    return []
  if binary:
    for number in binary[:MAX_BINARY_LINE_REPORTS]:
      log.add(path, "not UTF-8 text (a binary file, or another encoding?); "
              "line skipped", number)
    if len(binary) > MAX_BINARY_LINE_REPORTS:
      log.add(path, f"{len(binary) - MAX_BINARY_LINE_REPORTS} more lines "
              "that are not UTF-8 text skipped")
  return lines


def read_json(path: str, expected: str = "a JSON file") -> Any:
  """The JSON value in `path` (an annotation file; `expected` says what it
  should hold, for the messages).

  Raises:
    UserError (a ValueError) naming the file for anything that is not UTF-8
    JSON (random bytes, a truncated or empty file, nesting deep enough to
    exhaust the parser's recursion) or cannot be read (a folder, a looping
    symbolic link, no permission). Python's json accepts NaN and Infinity;
    the readers' `check_face` rejects them where a point is visible.
  """
  problem = file_problem(path)
  if problem is not None:
    raise errors.UserError(f"{path}: cannot read: it {problem}; expected "
                           f"{expected}")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise errors.UserError(f"{path}: cannot read ({e.strerror or e}); "
                           f"expected {expected}") from None
  if not data.strip():
    raise errors.UserError(f"{path}: the file is empty; expected {expected}")
  try:
    return json.loads(data.decode("utf-8-sig"))
  except UnicodeDecodeError as e:
    raise errors.UserError(f"{path}: not UTF-8 text, so not JSON ({e}); "
                           f"expected {expected}") from None
  except json.JSONDecodeError as e:
    raise errors.UserError(f"{path}: not valid JSON ({e}); expected "
                           f"{expected}") from None
  except RecursionError:
    raise errors.UserError(f"{path}: JSON nested too deeply to read; "
                           f"expected {expected}") from None


def check_split(dataset: str, split: str, splits: Sequence[str]) -> None:
  if split not in splits:
    raise errors.UserError(
        f"{dataset}: unknown split {split!r}; expected one of {list(splits)}")

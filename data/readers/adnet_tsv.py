"""The ADNet/STAR `.tsv` metadata, read and written (registered as "adnet_tsv").

Where the data comes from: the public STAR code (github.com/ZhenglinZhou/STAR)
and its parent ADNet (github.com/huangyangyu/ADNet) train from these files,
released with that code for WFLW, 300W and COFW; the images are the official
ones (see the wflw / 300w / cofw readers).

Expected layout: `root/<split>.tsv` (e.g. `root/train.tsv`, `root/test.tsv`),
image paths inside it relative to `image_dir` (default `root`). `root` may also
be the .tsv file itself.

One face per line, tab separated:

  image path | 5 points "x1,y1,...,x5,y5" | N points "x1,y1,...,xN,yN" |
  scale | center_x | center_y | optional flags "pose,expression,illumination,
  make-up,occlusion,blur" (WFLW)

`scale` and the centre follow the public crop: the face box is `200 * scale`
pixels wide and `(center_x, center_y)` maps to the crop centre. The public
loader (ZhenglinZhou/STAR and huangyangyu/ADNet,
lib/dataset/alignmentDataset.py) reads the file with
`pandas.read_csv(tsv, sep="\\t")`, which takes the first line as a header;
we detect a header (a first line whose scale field is not a
number) and skip it, and `write_tsv(..., header=True)` writes one so files we
write lose no face in the public loader. Path clean-up as STAR's loader
(ADNet's has none): backslashes become '/', and the prefixes `./rawImages/`
and the original authors' `//msr-facestore/Workspace/MSRA_EP_Allergan/users/
yanghuan/training_data/wflw/rawImages/` are removed (STAR removes exactly these
two strings; we remove any `//msr-facestore/.../rawImages/` prefix).

Coordinates are used as written. The released metadata files are downloads
(Google Drive / Baidu links in huangyangyu/ADNet README.md); no public script
shows how they were made from the official annotations, so whether the 300W
`.pts` values were shifted by -1 in them cannot be checked from code (it does
not change NME; see ibug_300w.py). The public flip treats 68/98-point sets as
0-based pixel centres (`x -> w - 1 - x`) and COFW's 29 points with
`x -> w - x` (STAR lib/dataset/augmentation.py `Flip`).

The 5 points are kept in `attributes["landmarks_5"]` (`[5, 2]` float32); see
`five_points` for what they are and how we make them when writing.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Optional

import numpy as np

from data.readers import common

NAME = "adnet_tsv"
FLAG_NAMES = ("pose", "expression", "illumination", "makeup", "occlusion",
              "blur")
HEADER = ("image_path", "landmarks_5pts", "landmarks_target", "scale",
          "center_w", "center_h", "tags")
SOURCE = ("the metadata released with github.com/ZhenglinZhou/STAR "
          "(and github.com/huangyangyu/ADNet)")
LAYOUT = """\
  root/<split>.tsv      (e.g. train.tsv, test.tsv; tab separated)
  image_dir/<paths listed in the .tsv>
"""
_PREFIXES = (re.compile(r"^//msr-facestore/.*?/rawImages/"),
             re.compile(r"^\./rawImages/"))


def clean_path(path: str) -> str:
  """The public loader's path clean-up (see module docstring)."""
  path = path.replace("\\", "/")
  for prefix in _PREFIXES:
    path = prefix.sub("", path)
  return path


def _points(field: str, what: str) -> np.ndarray:
  values = common.parse_floats(field.split(","))
  if values.size % 2:
    raise ValueError(f"{what}: odd number of coordinates ({values.size})")
  return values.reshape(-1, 2)


def parse_line(text: str) -> dict:
  """Parses one metadata line; raises ValueError saying what is wrong."""
  fields = text.rstrip("\r\n").split("\t")
  if len(fields) not in (6, 7):
    raise ValueError(f"expected 6 or 7 tab-separated fields, got {len(fields)}")
  five = _points(fields[1], "5 points")
  if five.shape[0] != 5:
    raise ValueError(f"5 points field has {five.shape[0]} points")
  landmarks = _points(fields[2], "landmarks")
  scale, cx, cy = common.parse_floats(fields[3:6])
  flags = {}
  if len(fields) == 7 and fields[6].strip():
    values = common.parse_floats(fields[6].split(","))
    if values.size != len(FLAG_NAMES):
      raise ValueError(f"expected {len(FLAG_NAMES)} flags, got {values.size}")
    if not np.all((values == 0) | (values == 1)):
      raise ValueError(f"flags must be 0 or 1, got {values.tolist()}")
    flags = {n: int(v) for n, v in zip(FLAG_NAMES, values)}
  return dict(path=clean_path(fields[0]), five=five, landmarks=landmarks,
              scale=scale, center=np.array([cx, cy]), flags=flags)


def _is_header(text: str) -> bool:
  """True for a first line whose scale field (4th) is not a number."""
  fields = text.split("\t")
  if len(fields) < 4:
    return False
  try:
    float(fields[3])
    return False
  except ValueError:
    return True


def read(root: str, split: str, *, image_dir: Optional[str] = None,
         num_points: Optional[int] = None,
         check_images: str = "exists") -> common.DatasetListing:
  """Lists the faces of `root/<split>.tsv` (or of the .tsv `root`).

  Args:
    root: folder with `<split>.tsv`, or a .tsv path.
    split: the file stem (any name) when `root` is a folder.
    image_dir: folder the image paths are relative to (default: the folder
      of the .tsv). Absolute paths are used as they are.
    num_points: expected points per face; default: the most common count
      in the file. A face with another count is reported and skipped;
      UserError when no face has it (wrong metadata file).
    check_images: see `common.IMAGE_CHECKS`.
  """
  if root.endswith(".tsv"):
    path = common.require(root, NAME, LAYOUT, SOURCE)
  else:
    common.require(root, NAME, LAYOUT, SOURCE)
    path = common.require(os.path.join(root, f"{split}.tsv"), NAME, LAYOUT,
                          SOURCE)
  image_dir = image_dir if image_dir is not None else os.path.dirname(path)
  log = common.ProblemLog(NAME)
  records = []
  lines = common.read_lines(path, log)
  first_line = 2 if lines and _is_header(lines[0]) else 1
  faces = list(common.parsed_lines(lines, parse_line, log, path,
                                   first_line=first_line,
                                   what="metadata line"))
  if num_points is None:
    num_points = common.most_common_count(
        [face["landmarks"].shape[0] for _, face in faces])
  counts = common.PointCount(NAME, num_points)
  for number, face in faces:
    if not counts.accepts(face["landmarks"], log, path, number):
      continue
    image_path = os.path.join(image_dir, face["path"])
    if not common.check_face(log, path, number, face["landmarks"],
                             image=image_path, center=face["center"],
                             scale=face["scale"]):
      continue
    problem = common.face_problem(face["five"])
    if problem is not None:
      log.add(path, f"image {image_path!r}: unusable 5 points: {problem}",
              number)
      continue
    if not common.check_image(image_path, check_images, log, number, path):
      continue
    attributes = dict(face["flags"])
    attributes["landmarks_5"] = face["five"].astype(np.float32)
    records.append(common.make_record(
        image_path, face["landmarks"], center=face["center"],
        scale=face["scale"], attributes=attributes, subset=split))
  counts.check_some()
  return common.DatasetListing(records, log.problems, NAME, split)


def five_points(landmarks: np.ndarray) -> np.ndarray:
  """5 points `[5, 2]`: eye, eye, nose tip, mouth corner, mouth corner.

  What the public code fixes: the order. STAR/ADNet flip the 5 points with the
  pairs (0, 1) and (3, 4) (STAR lib/dataset/augmentation.py, `Flip`) and
  align them to the template `std_lmk_5pts` (lib/dataset/alignmentDataset.py):
  the eye on the image's left, the eye on the right, the nose tip, the
  mouth corner on the left, the one on the right.

  What no public source defines: how the released metadata derived them from
  the 98/68 points; neither repository has the script. They only matter for
  the public `crop_op=False` path (`GetAlignMatrix`); every public config
  (huangyangyu/ADNet conf/alignment.py) sets `crop_op=True` and crops from
  scale/centre, so they do not affect public training or evaluation.

  Our documented choice (used by `write_tsv` when a record has no
  `attributes["landmarks_5"]`): WFLW 98: pupils 96, 97, nose tip 54, mouth
  corners 76, 82. 300W 68 (no pupils): eye-contour means 36-41 and 42-47,
  nose tip 30, mouth corners 48, 54. 5-point sets are returned as they are;
  any other count raises ValueError.
  """
  p = np.asarray(landmarks, np.float64)
  n = p.shape[0]
  if n == 98:
    idx = [p[96], p[97], p[54], p[76], p[82]]
  elif n == 68:
    idx = [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]
  elif n == 5:
    idx = list(p)
  else:
    raise ValueError(f"no 5-point rule for {n} landmarks; put the 5 points in "
                     "record.attributes['landmarks_5']")
  return np.stack(idx).astype(np.float32)


def center_scale_from_box(box) -> tuple:
  """Crop parameters of a box: (centre `[2]`, min(w, h) / 200 * 1.05).

  As STAR's demo.py (ZhenglinZhou/STAR, `process`) crops from the tight box of
  68 dlib points. How the released metadata got their scale/centre is not in
  public code; this rule is what `write_tsv` uses for records without them.
  """
  x0, y0, x1, y1 = (float(v) for v in box)
  scale = min(x1 - x0, y1 - y0) / 200.0 * 1.05
  return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), scale


def _format_points(points: np.ndarray) -> str:
  return ",".join(repr(float(v)) for v in np.asarray(points).reshape(-1))


def write_tsv(records: Iterable[common.FaceRecord], path: str, *,
              image_dir: Optional[str] = None, header: bool = False) -> int:
  """Writes records as ADNet/STAR metadata; returns the number of lines written.

  Image paths are written relative to `image_dir` when given. Each record
  needs `center`/`scale`, or a `box` (then `center_scale_from_box`). The 5
  points come from `attributes["landmarks_5"]` or `five_points`. WFLW flags
  are written when the record has all six. Values are written with `repr`, so
  float32 values read back exactly. `header=True` writes a first line of
  column names (the public loader consumes the first line as a header).
  """
  lines = []
  for record in records:
    if record.center is not None and record.scale is not None:
      center, scale = record.center, record.scale
    elif record.box is not None:
      center, scale = center_scale_from_box(record.box)
    else:
      raise ValueError(f"{record.image_path}: needs center/scale or a box to "
                       "write ADNet metadata")
    five = record.attributes.get("landmarks_5")
    five = five_points(record.landmarks) if five is None else five
    image_path = record.image_path
    if image_dir is not None:
      image_path = os.path.relpath(image_path, image_dir)
    fields = [image_path, _format_points(five),
              _format_points(record.landmarks), repr(float(scale)),
              repr(float(center[0])), repr(float(center[1]))]
    if all(n in record.attributes for n in FLAG_NAMES):
      fields.append(",".join(str(int(record.attributes[n]))
                             for n in FLAG_NAMES))
    lines.append("\t".join(fields))
  with open(path, "w", encoding="utf-8") as f:
    if header:
      f.write("\t".join(HEADER) + "\n")
    for line in lines:
      f.write(line + "\n")
  return len(lines)

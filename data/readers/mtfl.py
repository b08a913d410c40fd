"""MTFL text annotations: "aflw_m" (MTFL / AFLW-M) and "mtfl" (the shared copy).

Where the data comes from: MTFL, http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html
(`MTFL.zip`, Zhang et al., ECCV 2014): 10,000 training faces (LFW + web) and
2,995 test faces from AFLW, 5 points. The unsupervised-landmark papers call
the AFLW test faces "AFLW_M" (DVE and SCE-MAE train on a 10,122-face recrop of
AFLW instead; that set's CSV is not read here).

Expected layout under `root`:

  root/training.txt        `path x1 x2 x3 x4 x5 y1 y2 y3 y4 y5 gender smile
  root/testing.txt          glasses pose` per face (path relative to root,
  root/lfw_5590/ ...        backslashes allowed), e.g. `lfw_5590\\X.jpg`
  root/net_7876/ ...
  root/AFLW/ ...

Points: left eye centre, right eye centre, nose tip, left mouth corner, right
mouth corner, pixels of the image as written. Attributes (MTFL coding, kept as
written): gender 1 male / 2 female, smile 1 yes / 2 no, glasses 1 yes / 2 no,
pose 1..5 (left profile .. right profile).

"mtfl" reads the copy in ../shared/data/mtfl: `training.txt` only (the shared
copy has 7,650 of the 10,000 training faces as 80x80 crops, see its README)
and lines with the 10 coordinates but no attributes; both line forms are
accepted by either name. Boxes: tight box of the 5 points (a small box; crops
enlarge it).

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks and the per-set position/scale test of data/sanity.py. The faces are
crops, so position and scale in the image are consistent within one source
folder (`lfw_5590/`, `net_7876/`, `AFLW/`; the folders are cropped
differently), and the set test compares each face with its folder.
"""

from __future__ import annotations

import os

import numpy as np

from data.readers import common

NUM_POINTS = 5
ATTRIBUTES = ("gender", "smile", "glasses", "pose")
FILES = {"train": "training.txt", "test": "testing.txt"}
SPLITS = tuple(FILES)
SOURCE = "http://mmlab.ie.cuhk.edu.hk/projects/TCDCN.html (MTFL.zip)"
LAYOUT = """\
  root/training.txt, root/testing.txt
      (path x1..x5 y1..y5 [gender smile glasses pose])
  root/<image folders named in the .txt>
"""


def parse_line(text: str) -> dict:
  """Parses one MTFL line; raises ValueError saying what is wrong."""
  fields = text.split()
  if len(fields) not in (11, 15):
    raise ValueError("expected a path, 10 coordinates and optionally 4 "
                     f"attributes (11 or 15 fields), got {len(fields)}")
  numbers = common.parse_floats(fields[1:])
  points = numbers[:10].reshape(2, NUM_POINTS).T  # x1..x5, y1..y5
  attributes = {}
  if len(fields) == 15:
    codes = numbers[10:]
    if not np.all((codes == np.round(codes)) & (np.abs(codes) < 100)):
      raise ValueError(f"attributes must be small integer codes, got "
                       f"{codes.tolist()}")
    attributes = {a: int(v) for a, v in zip(ATTRIBUTES, codes)}
  return dict(path=fields[0].replace("\\", "/"), landmarks=points,
              attributes=attributes)


def source_folder(path: str) -> str:
  """The first folder of an annotation's image path ("" if none): the group
  whose faces share one crop."""
  return path.split("/")[0] if "/" in path else ""


def read_mtfl_file(name: str, root: str, split: str, check_images: str,
                   layout: str = LAYOUT, source: str = SOURCE,
                   sanity: str = "skip") -> common.DatasetListing:
  """Lists `root/<training|testing>.txt` under the reader name `name`."""
  common.check_split(name, split, SPLITS)
  common.require(root, name, layout, source)
  path = common.require(os.path.join(root, FILES[split]), name, layout, source)
  common.check_sanity_mode(sanity)
  log = common.ProblemLog(name)
  records, where, groups = [], [], []
  for number, face in common.parsed_lines(common.read_lines(path, log),
                                          parse_line, log, path):
    image_path = os.path.join(root, face["path"])
    if not common.check_face(log, path, number, face["landmarks"],
                             image=image_path):
      continue
    if not common.check_image(image_path, check_images, log, number, path):
      continue
    records.append(common.make_record(
        image_path, face["landmarks"], box=common.points_box(face["landmarks"]),
        attributes=face["attributes"], subset=split))
    where.append((path, number))
    groups.append(source_folder(face["path"]))
  records = common.apply_sanity(records, where, log, sanity, set_checks=True,
                                groups=groups)
  return common.DatasetListing(records, log.problems, name, split)


def read_aflw_m(root: str, split: str, *, check_images: str = "exists",
                sanity: str = "skip") -> common.DatasetListing:
  """MTFL / AFLW_M: "train" = training.txt, "test" = testing.txt (AFLW)."""
  return read_mtfl_file("aflw_m", root, split, check_images, sanity=sanity)


def read_shared(root: str, split: str = "train", *,
                check_images: str = "exists",
                sanity: str = "skip") -> common.DatasetListing:
  """The shared 80x80 MTFL training copy (../shared/data/mtfl); train only."""
  if split != "train":
    raise ValueError(
        f"mtfl: the shared copy has only the training half (split 'train'); "
        f"got {split!r}. For the AFLW test faces use read_dataset('aflw_m', "
        f"<MTFL root>, 'test') with the full MTFL download ({SOURCE}).")
  return read_mtfl_file(
      "mtfl", root, split, check_images,
      "  root/training.txt + root/lfw_5590/, root/net_7876/\n",
      "../shared/data/mtfl (see its README.md); the full set: " + SOURCE,
      sanity)

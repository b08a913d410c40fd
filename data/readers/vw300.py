"""300VW (300 Videos in the Wild): 68 points per frame; registered as "300vw".

Where the data comes from: https://ibug.doc.ic.ac.uk/resources/300-VW/
(114 videos, each `vid.avi` plus `annot/NNNNNN.pts`; Shen et al., ICCVW 2015).

The download holds videos, not frames: extract the frames next to the
annotations, numbered like them (first frame 000001), e.g.

  ffmpeg -i root/001/vid.avi -start_number 1 root/001/frames/%06d.png

Expected layout under `root`:

  root/<video>/annot/000001.pts ...
  root/<video>/frames/000001.<png|jpg>   (also accepted: imgs/ or images/,
                                          the name mmpose's converter uses)

Splits: "train" = the 50 training videos, "test1", "test2", "test3" = the
three test categories of the 300VW protocol (31, 19 and 14 videos: well-lit /
real-world interaction / arbitrary conditions), "test" their union, "all"
every video folder found under `root` (official or not). The lists below were
compared entry by entry with two public copies, which agree with each other:
open-mmlab/mmpose tools/dataset_converters/300vw2coco.py (`Base300VW`:
`videos_test_1/2/3`, train = `videos_full` minus the tests) and
D-X-Y/landmark-detection SBR/cache_data/generate_300VW.py (`test_1_dirs`,
`test_2_dirs`, `test_3_dirs`, `train_dirs`). An official video of the split
that is missing under `root` is reported (one problem per split listing them),
not raised.

Unreliable frames: mmpose's converter skips a list of "broken" frames per
video (`Base300VW.broken_frames`; a copy ships as mmpose's
tests/data/300vw/broken_frames.npy). Pass such a mapping as `exclude_frames`
to drop them; the count excluded is logged.

Points: `.pts` 1-based, returned 0-based (`one_based=True`, see pts.py);
mmpose keeps the values as written (`one_based=False` reproduces that).
Boxes: tight box of the points.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Iterable, Mapping, Optional

from data.readers import common
from data.readers import pts as pts_lib
from training import errors

NAME = "300vw"
NUM_POINTS = 68
TEST_CATEGORIES = {
    "test1": ("114", "124", "125", "126", "150", "158", "401", "402", "505",
              "506", "507", "508", "509", "510", "511", "514", "515", "518",
              "519", "520", "521", "522", "524", "525", "537", "538", "540",
              "541", "546", "547", "548"),
    "test2": ("203", "208", "211", "212", "213", "214", "218", "224", "403",
              "404", "405", "406", "407", "408", "409", "412", "550", "551",
              "553"),
    "test3": ("410", "411", "516", "517", "526", "528", "529", "530", "531",
              "533", "557", "558", "559", "562"),
}
TRAIN_VIDEOS = (
    "001", "002", "003", "004", "007", "009", "010", "011", "013", "015",
    "016", "017", "018", "019", "020", "022", "025", "027", "028", "029",
    "031", "033", "034", "035", "037", "039", "041", "043", "044", "046",
    "047", "048", "049", "053", "057", "059", "112", "113", "115", "119",
    "120", "123", "138", "143", "144", "160", "204", "205", "223", "225")
SPLIT_VIDEOS = dict(
    TEST_CATEGORIES, train=TRAIN_VIDEOS,
    test=tuple(v for vs in TEST_CATEGORIES.values() for v in vs))
SPLITS = ("train", "test", "test1", "test2", "test3", "all")
FRAME_FOLDERS = ("frames", "imgs", "images")
SOURCE = "https://ibug.doc.ic.ac.uk/resources/300-VW/"
LAYOUT = """\
  root/<video>/annot/000001.pts ...
  root/<video>/frames/000001.png ...
      (frames extracted from vid.avi with ffmpeg, numbered from 000001;
       imgs/ or images/ also accepted)
"""


def _videos(root: str, split: str, log: common.ProblemLog):
  """The video folders of `split` found under `root` (sorted)."""
  if not os.path.isdir(root):
    raise errors.UserError(f"{NAME}: {root!r} is not a folder; expected the "
                           f"folder holding the video folders:\n{LAYOUT}")
  found = sorted(d for d in os.listdir(root)
                 if os.path.isdir(os.path.join(root, d, "annot")))
  if split == "all":
    return found
  wanted = set(SPLIT_VIDEOS[split])
  missing = sorted(wanted - set(found))
  if missing and len(missing) < len(wanted):
    log.add(root, f"split {split!r}: {len(missing)} of the {len(wanted)} "
            f"official videos have no <video>/annot/ folder here: "
            f"{', '.join(missing)} (incomplete download?)")
  return [v for v in found if v in wanted]


def read(root: str, split: str, *, check_images: str = "exists",
         one_based: bool = True, frame_folder: Optional[str] = None,
         exclude_frames: Optional[Mapping[str, Iterable[int]]] = None
         ) -> common.DatasetListing:
  """Lists annotated 300VW frames of `split` (see module docstring).

  Args:
    root: folder holding the video folders (`001/`, `002/`, ...).
    split: one of `SPLITS`.
    check_images: see `common.IMAGE_CHECKS`.
    one_based: subtract 1 from the `.pts` values (see pts.py).
    frame_folder: name of the frames folder inside each video folder
      (default: the first of `FRAME_FOLDERS` that exists).
    exclude_frames: {video: frame numbers} to leave out, e.g. mmpose's
      broken-frame list.
  Returns:
    A `DatasetListing`; `record.subset` is the video, `attributes["frame"]`
    the frame number.
  """
  common.check_split(NAME, split, SPLITS)
  common.require(root, NAME, LAYOUT, SOURCE)
  exclude = {str(video): {int(f) for f in frames}
             for video, frames in (exclude_frames or {}).items()}
  log = common.ProblemLog(NAME)
  videos = _videos(root, split, log)
  if not videos:
    video = "<video>" if split == "all" else SPLIT_VIDEOS[split][0]
    raise common.missing_error(NAME, os.path.join(root, video, "annot"),
                               LAYOUT, SOURCE)
  records = []
  counts = common.PointCount(NAME, NUM_POINTS)
  excluded = 0
  for video in videos:
    folders = (frame_folder,) if frame_folder else FRAME_FOLDERS
    frames = common.first_existing(
        [os.path.join(root, video, f) for f in folders])
    if frames is None:
      log.add(os.path.join(root, video), "no frames folder ("
              f"{'/'.join(folders)}); extract the frames of vid.avi (module "
              "docstring); video skipped")
      continue
    for path in sorted(glob.glob(os.path.join(root, video, "annot", "*.pts"))):
      stem = os.path.splitext(os.path.basename(path))[0]
      if not (stem.isascii() and stem.isdigit()):
        log.add(path, "annotation name is not a frame number (NNNNNN.pts)")
        continue
      if int(stem) in exclude.get(video, ()):
        excluded += 1
        continue
      landmarks = pts_lib.read_pts_or_report(path, one_based, log)
      if landmarks is None:
        continue
      if not counts.accepts(landmarks, log, path):
        continue
      image_path = pts_lib.image_with_stem(os.path.join(frames, stem))
      if image_path is None:
        log.add(path, f"no frame {stem}.* in {frames}")
        continue
      if not common.check_face(log, path, None, landmarks, image=image_path):
        continue
      if not common.check_image(image_path, check_images, log, None, path):
        continue
      records.append(common.make_record(
          image_path, landmarks, box=common.points_box(landmarks),
          subset=video, attributes={"frame": int(stem)}))
  counts.check_some()
  if exclude:
    logging.info("%s [%s]: %d frames left out by exclude_frames", NAME, split,
                 excluded)
  return common.DatasetListing(records, log.problems, NAME, split)

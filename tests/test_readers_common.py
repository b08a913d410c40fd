"""Tests for data/readers/common.py, plus shared-data helpers for tests."""

import os

import numpy as np
from PIL import Image
import pytest

from data import sanity
from data.readers import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")


def shared_path(*parts: str) -> str:
  """Path under ../shared/data, or pytest.skip with the reason."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    pytest.skip(f"real data sample {path} not present (see "
                "../shared/data/README.md)")
  return path


def upright(points):
  """Random fixture points with the eyes swapped where the mouth lies above
  the eye line, so generated faces pass data/sanity.py's eye-line check (the
  readers skip faces that fail it)."""
  points = np.array(points, copy=True)
  scheme = sanity.scheme_for(len(points))
  if sanity.eye_mouth_problems(points, scheme):
    a, b = (list(group) for group in scheme.pupils)
    points[a + b] = points[b + a]
  return points


def hand_parse_pts(path):
  """Reads a .pts file with plain string handling (independent of pts.py)."""
  with open(path) as f:
    text = f.read()
  body = text[text.index("{") + 1:text.index("}")]
  return np.array([[float(v) for v in line.split()]
                   for line in body.strip().splitlines()])


def test_points_box_hand_computed():
  points = np.array([[3.0, 4.0], [-1.0, 10.0], [7.5, 2.0], [np.nan, np.nan]])
  np.testing.assert_array_equal(common.points_box(points), [-1, 2, 7.5, 10])
  visible = np.array([True, False, True, True])
  np.testing.assert_array_equal(common.points_box(points, visible),
                                [3, 2, 7.5, 4])
  with pytest.raises(ValueError, match="no finite"):
    common.points_box(np.full((3, 2), np.nan))
  np.testing.assert_array_equal(common.xywh_to_box([1, 2, 3, 4]), [1, 2, 4, 6])


def test_check_image_modes(tmp_path):
  log = common.ProblemLog("x")
  good = str(tmp_path / "good.png")
  Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(good)
  truncated = str(tmp_path / "truncated.png")
  with open(good, "rb") as f:
    data = f.read()
  with open(truncated, "wb") as f:
    f.write(data[:len(data) // 2])
  for mode in ("exists", "verify", "decode"):
    assert common.check_image(good, mode, log)
  assert common.check_image(truncated, "exists", log)
  assert not common.check_image(truncated, "verify", log, 7, "ann.txt")
  assert not common.check_image(str(tmp_path / "none.png"), "exists", log)
  assert common.check_image(str(tmp_path / "none.png"), "none", log)
  assert [p.line for p in log.problems] == [7, None]
  assert str(log.problems[0]).startswith("ann.txt:7: image ")
  assert "truncated.png" in str(log.problems[0])
  with pytest.raises(ValueError, match="check_images"):
    common.check_image(good, "maybe", log)


def test_listing_is_a_sequence_with_a_report():
  record = common.make_record("a.png", [[1, 2], [3, 4]])
  listing = common.DatasetListing([record], [common.Problem("b.txt", "bad", 3)],
                                  "toy", "train")
  assert len(listing) == 1 and listing[0] is record
  assert list(listing) == [record]
  assert "toy [train]: 1 faces, 1 problems" in listing.summary()
  assert "b.txt:3: bad" in listing.summary()
  assert record.landmarks.dtype == np.float32 and record.visible.all()


def test_parsed_lines_reports_bad_lines_and_skips_blanks():
  lines = ["header", "1 2", "", "x 3", "  ", "4 5"]

  def parse(text):
    return tuple(common.parse_floats(text.split()))

  log = common.ProblemLog("toy")
  got = list(common.parsed_lines(lines, parse, log, "toy.txt", first_line=2,
                                 what="point line"))
  assert got == [(2, (1.0, 2.0)), (6, (4.0, 5.0))]
  assert [(p.path, p.line) for p in log.problems] == [("toy.txt", 4)]
  assert str(log.problems[0]) == ("toy.txt:4: malformed point line: "
                                  "not a number: 'x'")


def test_find_first_prefers_order_and_names_the_first_when_missing(tmp_path):
  (tmp_path / "b").write_text("")
  (tmp_path / "c").write_text("")
  candidates = [str(tmp_path / n) for n in ("a", "b", "c")]
  assert common.find_first(candidates, "toy", "  layout\n", "src") == (
      candidates[1])
  with pytest.raises(FileNotFoundError) as e:
    common.find_first([str(tmp_path / "x"), str(tmp_path / "y")], "toy",
                      "  root/x\n", "the toy source")
  assert "'" + str(tmp_path / "x") + "'" in str(e.value)
  assert "root/x" in str(e.value) and "the toy source" in str(e.value)

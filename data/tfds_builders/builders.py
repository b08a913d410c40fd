"""tfds builders for WFLW, 300W and COFW (manual download; array_record)."""

from __future__ import annotations

from data.readers import cofw as cofw_reader
from data.readers import ibug_300w as ibug_300w_reader
from data.readers import wflw as wflw_reader
from data.tfds_builders import landmark_builder


class LandmarksWflw(landmark_builder.LandmarkBuilder):
  """WFLW, 98 points; splits train (7,500) and test (2,500)."""

  name = "landmarks_wflw"
  READER = "wflw"
  READ = staticmethod(wflw_reader.read)
  NUM_POINTS = 98
  ATTRIBUTES = wflw_reader.ATTRIBUTES
  SPLITS = ("train", "test")
  LAYOUT_MARKER = "WFLW_images"
  HOMEPAGE = wflw_reader.SOURCE
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download WFLW_images.tar.gz and WFLW_annotations.tar.gz from
{wflw_reader.SOURCE} and put them (or their extracted folders
WFLW_images/ and WFLW_annotations/) in manual_dir."""


class Landmarks300w(landmark_builder.LandmarkBuilder):
  """300W, 68 points; splits train (3,148), common (554), challenge (135)."""

  name = "landmarks_300w"
  READER = "300w"
  READ = staticmethod(ibug_300w_reader.read)
  NUM_POINTS = 68
  SPLITS = ("train", "common", "challenge")
  LAYOUT_MARKER = "ibug"
  HOMEPAGE = ibug_300w_reader.SOURCE
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the afw, helen, lfpw and ibug archives from {ibug_300w_reader.SOURCE}
and put them (or the extracted afw/, helen/, lfpw/, ibug/ folders, side by
side) in manual_dir. Boxes are the tight boxes of the points."""


class LandmarksCofw(landmark_builder.LandmarkBuilder):
  """COFW colour, 29 points with occlusion; splits train (1,345), test (507)."""

  name = "landmarks_cofw"
  READER = "cofw"
  READ = staticmethod(cofw_reader.read)
  NUM_POINTS = 29
  SPLITS = ("train", "test")
  LAYOUT_MARKER = "COFW_train_color.mat"
  HOMEPAGE = cofw_reader.SOURCE
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download COFW_color.zip from {cofw_reader.SOURCE} and put it (or the
extracted COFW_train_color.mat and COFW_test_color.mat) in manual_dir."""

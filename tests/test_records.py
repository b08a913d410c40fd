"""Tests of data/records.py: image decoding refuses what it cannot use.

A file that is not an image, and an image whose header claims more pixels
than Pillow's decompression-bomb limit (89M: Pillow itself only warns up to
twice that and then decodes it all into memory), raise a ValueError naming
the file; a normal image decodes to uint8 RGB.
"""

import numpy as np
import pytest
from PIL import Image

from data import records
from data.readers import common as readers_common
from tests import test_readers_fuzz


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow: warning, error.
def test_images_over_the_pixel_limit_are_refused_by_name(tmp_path, side):
  assert Image.MAX_IMAGE_PIXELS < side * side
  path = tmp_path / "huge.png"
  test_readers_fuzz.huge_png(str(path), side, side)
  with pytest.raises(ValueError, match="too large to decode.*huge.png") as e:
    records.decode_image_file(str(path))
  # The readers' and predict's reports call both sizes "too large" too.
  assert readers_common.image_error_message(e.value.__cause__).startswith(
      "image too large to decode")


def test_random_bytes_and_a_real_image(tmp_path):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(np.random.RandomState(0).bytes(300))
  with pytest.raises(ValueError, match="cannot decode image.*bad.jpg"):
    records.decode_image_file(str(bad))
  good = tmp_path / "grey.png"
  pixels = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20)
  Image.fromarray(pixels).save(good)
  rgb = records.FaceRecord(image_path=str(good),
                           landmarks=np.zeros((0, 2), np.float32)).load_image()
  assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
  np.testing.assert_array_equal(rgb[..., 1], pixels)

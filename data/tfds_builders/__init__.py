"""tfds builders (array_record, no tensorflow needed) for WFLW, 300W, COFW.

Build:  python -m data.prepare --dataset wflw --manual_dir DIR --data_dir DIR
Read:   data.readers.read_dataset("tfds:wflw", DATA_DIR, "test")
"""

from __future__ import annotations

from data.tfds_builders.builders import Landmarks300w
from data.tfds_builders.builders import LandmarksCofw
from data.tfds_builders.builders import LandmarksWflw

# reader name -> builder class
BUILDERS = {"wflw": LandmarksWflw, "300w": Landmarks300w, "cofw": LandmarksCofw}


def builder_class(dataset: str):
  if dataset not in BUILDERS:
    raise ValueError(f"no tfds builder for {dataset!r}; expected one of "
                     f"{list(BUILDERS)}")
  return BUILDERS[dataset]


def build(dataset: str, manual_dir: str, data_dir: str,
          image_storage: str = "encoded"):
  """Builds `dataset` into `data_dir` as array_record; returns the builder.

  `image_storage` is the builder config: "encoded" (file bytes) or "pixels".
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = builder_class(dataset)(data_dir=data_dir, config=image_storage,
                                   file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder

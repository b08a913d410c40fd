r"""Builds a landmark set into tfds array_record files (no tensorflow needed).

  python -m data.prepare --dataset wflw --manual_dir ~/downloads/wflw \
      --data_dir ~/tensorflow_datasets

`manual_dir` holds the official archives or their extracted folders (see
data/tfds_builders/builders.py for each set). Afterwards
`data.readers.read_dataset("tfds:wflw", data_dir, "test")` lists the built set
(records whose images are read from the array_record files).
"""

from __future__ import annotations

from absl import app
from absl import flags

from data import readers
from data import tfds_builders

_DATASET = flags.DEFINE_enum("dataset", None, list(tfds_builders.BUILDERS),
                             "Which set to build.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Folder with the official archives or their extracted folders.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir to write to.")
_IMAGE_STORAGE = flags.DEFINE_enum(
    "image_storage", "encoded", ["encoded", "pixels"],
    "encoded: the image files' bytes; pixels: decoded RGB (much larger).")


def main(argv):
  del argv
  builder = tfds_builders.build(_DATASET.value, _MANUAL_DIR.value,
                                _DATA_DIR.value, _IMAGE_STORAGE.value)
  print(f"built {builder.name}/{builder.builder_config.name} "
        f"{builder.version} in {builder.data_dir}")
  for split in builder.SPLITS:
    listing = readers.read_dataset(f"tfds:{_DATASET.value}", _DATA_DIR.value,
                                   split, config=builder.builder_config.name)
    print(f"  {split}: {len(listing)} faces")
  for split, problems in builder.problems.items():
    for problem in problems:
      print(f"  skipped in {split}: {problem}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["dataset", "manual_dir", "data_dir"])
  app.run(main)

"""Reads a set built by `python -m data.prepare` (tfds array_record) as records.

`read_dataset("tfds:wflw", data_dir, split)` returns the same FaceRecords as
the raw reader (same order: sorted by the stored listing index), except that
each record's `image_loader` is a `TfdsImageLoader` that reads the image from
the built set, so loaders can read either raw folders or built sets.
`image_path` keeps the path the image had when the set was built and
`image_key` is `(split, position in the data source)`.

Splits: the stored ones (wflw: train, test; 300w: train, common, challenge;
cofw: train, test) plus the derived ones of the raw readers: wflw
"test_<attribute>" (filtered by the stored flags) and 300w "full"
(common + challenge). Absent box/center/scale (stored as NaN) become None.
Layout: `<data_dir>/landmarks_<name>/<config>/<version>/*.array_record*`.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Dict, Optional

import numpy as np

from data.readers import common

SOURCE = ("python -m data.prepare --dataset <name> --manual_dir ... "
          "--data_dir ...")
DERIVED_SPLITS = {
    "wflw": {f"test_{a}": ("test", a) for a in
             ("pose", "expression", "illumination", "makeup", "occlusion",
              "blur")},
    "300w": {"full": (("common", "challenge"), None)},
}
CONFIGS = ("encoded", "pixels")

_SOURCES: Dict[tuple, object] = {}
_LOCK = threading.Lock()


def builder_name(name: str) -> str:
  return f"landmarks_{name}"


def find_config(data_dir: str, name: str, config: Optional[str]) -> str:
  folder = os.path.join(data_dir, builder_name(name))
  built = [c for c in CONFIGS if os.path.isdir(os.path.join(folder, c))]
  if config is not None:
    if config not in built:
      raise common.missing_error(f"tfds:{name}", os.path.join(folder, config),
                                 f"  {folder}/<config>/<version>/\n", SOURCE)
    return config
  if not built:
    raise common.missing_error(f"tfds:{name}", folder,
                               f"  {folder}/{{encoded,pixels}}/<version>/\n",
                               SOURCE)
  return built[0]


def data_source(data_dir: str, name: str, config: str, split: str):
  """The (per-process cached) tfds data source of one built split."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  key = (os.getpid(), data_dir, name, config, split)
  with _LOCK:
    if key not in _SOURCES:
      _SOURCES[key] = tfds.data_source(f"{builder_name(name)}/{config}",
                                       data_dir=data_dir, split=split)
    return _SOURCES[key]


def decode_example(example: dict, config: str) -> np.ndarray:
  """The RGB uint8 `[H, W, 3]` image of a stored example."""
  shape = tuple(int(v) for v in example["image_shape"])
  data = np.asarray(example["image"], np.uint8)
  if config == "pixels":
    return data.reshape(shape)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(io.BytesIO(data.tobytes())) as im:
    return np.asarray(im.convert("RGB"))


class TfdsImageLoader:
  """Picklable loader: decodes example `position` of a built split lazily."""

  def __init__(self, data_dir: str, name: str, config: str, split: str,
               position: int):
    self.data_dir, self.name, self.config = data_dir, name, config
    self.split, self.position = split, int(position)

  def __call__(self, record=None) -> np.ndarray:
    """The image; ValueError naming the set and position for whatever a
    damaged built set raises (the input pipeline reports a ValueError by
    path and goes on)."""
    try:
      source = data_source(self.data_dir, self.name, self.config, self.split)
      return decode_example(source[self.position], self.config)
    except Exception as e:  # array_record / Pillow raise many types.
      raise ValueError(
          f"cannot read image {self.position} of tfds:{self.name} "
          f"{self.config}/{self.split} in {self.data_dir!r} "
          f"({type(e).__name__}: {e})") from e

  def __eq__(self, other):
    return isinstance(other, TfdsImageLoader) and vars(self) == vars(other)

  def __repr__(self):
    return (f"TfdsImageLoader({self.data_dir!r}, {self.name!r}, "
            f"{self.config!r}, {self.split!r}, {self.position})")


def _maybe(value: np.ndarray):
  value = np.asarray(value, np.float32)
  return None if np.any(np.isnan(value)) else value


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read(name: str, data_dir: str, split: str, *,
         config: Optional[str] = None,
         check_images: str = "none") -> common.DatasetListing:
  """Lists a built set's `split` as FaceRecords (see module docstring).

  `config` is "encoded" or "pixels" (default: whichever was built, encoded
  first). `check_images` is accepted for a uniform call and not used: images
  were decoded once when the set was built, and corrupt ones left out.
  """
  del check_images
  # Imported here: tfds_builders loads tensorflow_datasets (seconds), which
  # only a built set needs.
  from data import tfds_builders  # pylint: disable=g-import-not-at-top
  attribute_names = tfds_builders.builder_class(name).ATTRIBUTES
  common.require(data_dir, f"tfds:{name}", "  <data_dir>/landmarks_<name>/\n",
                 SOURCE)
  config = find_config(data_dir, name, config)
  known = (tuple(tfds_builders.builder_class(name).SPLITS) +
           tuple(DERIVED_SPLITS.get(name, {})))
  common.check_split(f"tfds:{name}", split, known)
  stored, flag = DERIVED_SPLITS.get(name, {}).get(split, (split, None))
  stored = (stored,) if isinstance(stored, str) else stored
  records = []
  for stored_split in stored:
    source = data_source(data_dir, name, config, stored_split)
    rows = []
    for position in range(len(source)):
      example = source[position]
      attributes = {a: int(v) for a, v in zip(attribute_names,
                                              example["attributes"])}
      if flag is not None and not attributes[flag]:
        continue
      scale = float(example["scale"])
      rows.append((int(example["index"]), common.make_record(
          _text(example["path"]), example["landmarks"],
          visible=example["visible"], box=_maybe(example["box"]),
          center=_maybe(example["center"]),
          scale=None if np.isnan(scale) else scale, attributes=attributes,
          subset=_text(example["subset"]), image_key=(stored_split, position),
          image_loader=TfdsImageLoader(data_dir, name, config, stored_split,
                                       position))))
    records += [r for _, r in sorted(rows, key=lambda row: row[0])]
  return common.DatasetListing(records, [], f"tfds:{name}", split)

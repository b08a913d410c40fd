"""The tfds builder shared by WFLW, 300W and COFW: our readers -> array_record.

Works without tensorflow: every feature is a `tfds.features.Tensor` (or
Text), the files are `array_record`, and the built set is read with
`tfds.data_source` (random access, what grain wants). `tfds.features.Image`
and `as_dataset()` need tensorflow and are not used.

Features per face (N points, A attribute flags of the set):

  image        uint8 [None]: "encoded" config (default): the image file's
               bytes as on disk (JPEG/PNG; COFW's in-.mat images are PNG
               encoded), decoded with Pillow on read; "pixels" config: the
               decoded RGB pixels, flattened (large: ~3 bytes per pixel).
  image_shape  int32 [3]     decoded (H, W, 3)
  landmarks    float32 [N, 2] original pixels;  visible  bool [N]
  box          float32 [4]   (x_min, y_min, x_max, y_max), NaN if absent
  center       float32 [2]   NaN if absent;     scale    float32, NaN if absent
  attributes   int32 [A]     the set's per-face flags (ATTRIBUTES order)
  path         text          source image path (as listed when built)
  subset       text          the record's subset label
  index        int64         position in the reader's listing (tfds shuffles
                             the stored order; readers sort by this)

Users put the official archives (or their extracted folders) in `manual_dir`;
archives (.zip, .tar, .tar.gz, .tgz) are extracted into
`<data_dir>/downloads/extracted/<builder>/`, never next to the inputs.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import tarfile
import zipfile
from typing import Dict, Optional, Sequence, Tuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from data.readers import common as readers_common
from data import records as records_lib

IMAGE_STORAGE = ("encoded", "pixels")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def _find_layout(top: str, marker: str, depth: int = 3) -> Optional[str]:
  """The folder at most `depth` levels under `top` that contains `marker`."""
  for current, dirs, _ in os.walk(top):
    rel = os.path.relpath(current, top)
    level = 0 if rel == "." else rel.count(os.sep) + 1
    if os.path.exists(os.path.join(current, marker)):
      return current
    if level >= depth:
      dirs[:] = []
  return None


def _extract_archives(manual_dir: str, target: str) -> None:
  for name in sorted(os.listdir(manual_dir)):
    path = os.path.join(manual_dir, name)
    if not name.endswith(ARCHIVE_SUFFIXES):
      continue
    logging.info("extracting %s into %s", path, target)
    if name.endswith(".zip"):
      with zipfile.ZipFile(path) as z:
        z.extractall(target)
    else:
      with tarfile.open(path) as t:
        t.extractall(target, filter="data")


def encode_png(pixels: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def image_feature(record: records_lib.FaceRecord,
                  storage: str) -> Tuple[np.ndarray, np.ndarray]:
  """(flat uint8 image feature, int32 [3] decoded shape) of one record."""
  if storage == "encoded" and record.image_loader is None:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    with open(record.image_path, "rb") as f:
      data = f.read()
    with Image.open(io.BytesIO(data)) as im:
      width, height = im.size
      im.load()  # a full decode: a corrupt file is skipped now, not at training
    return (np.frombuffer(data, np.uint8),
            np.array([height, width, 3], np.int32))
  pixels = record.load_image()
  shape = np.array(pixels.shape, np.int32)
  if storage == "encoded":
    return np.frombuffer(encode_png(pixels), np.uint8), shape
  return pixels.reshape(-1), shape


def _or_nan(value, shape) -> np.ndarray:
  if value is None:
    return np.full(shape, np.nan, np.float32)
  return np.asarray(value, np.float32).reshape(shape)


class LandmarkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set the class attributes below and `name`."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release (from data.readers)."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="encoded",
                              description="image file bytes (default)"),
      tfds.core.BuilderConfig(name="pixels",
                              description="decoded RGB pixels, flattened"),
  ]
  READER: str = ""               # data.readers name (stored as metadata)
  READ = None                    # its read(root, split) function
  NUM_POINTS: int = 0
  ATTRIBUTES: Sequence[str] = ()
  SPLITS: Sequence[str] = ()     # reader splits stored as tfds splits
  LAYOUT_MARKER: str = ""        # a path that exists in the extracted root
  HOMEPAGE: str = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds 4.9.10's default probes `importlib_resources` (not installed here)
    # for any builder defined inside a package; the file path is all it needs.
    return epath.Path(inspect.getfile(cls))

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    # split -> [readers.Problem]: what the last build skipped, and why.
    self.problems: Dict[str, list] = {}

  def _info(self) -> tfds.core.DatasetInfo:
    n, a = self.NUM_POINTS, len(self.ATTRIBUTES)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        "image_shape": tfds.features.Tensor(shape=(3,), dtype=np.int32),
        "landmarks": tfds.features.Tensor(shape=(n, 2), dtype=np.float32),
        "visible": tfds.features.Tensor(shape=(n,), dtype=np.bool_),
        "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
        "scale": tfds.features.Tensor(shape=(), dtype=np.float32),
        "attributes": tfds.features.Tensor(shape=(a,), dtype=np.int32),
        "path": tfds.features.Text(),
        "subset": tfds.features.Text(),
        "index": tfds.features.Tensor(shape=(), dtype=np.int64),
    })
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=features,
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(attributes=list(self.ATTRIBUTES),
                                        reader=self.READER))

  def dataset_root(self, manual_dir: str) -> str:
    """The folder in the reader's layout: in manual_dir or extracted from it."""
    found = _find_layout(manual_dir, self.LAYOUT_MARKER)
    if found is not None:
      return found
    target = os.path.join(str(self.data_dir_root), "downloads", "extracted",
                          self.name)
    found = _find_layout(target, self.LAYOUT_MARKER) if os.path.isdir(
        target) else None
    if found is None:
      os.makedirs(target, exist_ok=True)
      _extract_archives(manual_dir, target)
      found = _find_layout(target, self.LAYOUT_MARKER)
    if found is None:
      raise FileNotFoundError(
          f"{self.name}: no {self.LAYOUT_MARKER!r} found in manual_dir "
          f"{manual_dir!r} nor in its archives.\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return found

  def _split_generators(self, dl_manager):
    root = self.dataset_root(str(dl_manager.manual_dir))
    return {split: self._generate_examples(root, split)
            for split in self.SPLITS}

  def _generate_examples(self, root: str, split: str):
    listing = self.READ(root, split)
    problems = self.problems.setdefault(split, [])
    problems += listing.problems
    if listing.problems:
      logging.warning("%s", listing.summary())
    storage = self.builder_config.name
    for index, record in enumerate(listing):
      try:
        image, shape = image_feature(record, storage)
      except (ValueError, OSError) as e:
        problems.append(readers_common.Problem(record.image_path,
                                        f"corrupt image, not stored ({e})"))
        logging.warning("%s: %s", self.name, problems[-1])
        continue
      yield index, {
          "image": image,
          "image_shape": shape,
          "landmarks": record.landmarks.astype(np.float32),
          "visible": np.asarray(record.visible, np.bool_),
          "box": _or_nan(record.box, (4,)),
          "center": _or_nan(record.center, (2,)),
          "scale": np.float32(np.nan if record.scale is None else record.scale),
          "attributes": np.array([int(record.attributes.get(k, 0))
                                  for k in self.ATTRIBUTES], np.int32),
          "path": record.image_path,
          "subset": record.subset,
          "index": np.int64(index),
      }

"""Device-mode pre-crops cached as array_record (a tfds builder), for epochs 2+.

With `augment_on="device"` the host's training sample of record i is a pure
function of the record and the crop settings: no randomness (the train step
augments, data/device_augment.py), so it is the same in every epoch. The
cache computes it once (decode, reduced JPEG decode, pre-crop; the sample the
uncached loader makes, undecodable images replaced and flagged the same way)
and stores it in `array_record` files through a tfds builder (uint8 /
float32 `Tensor` features, no tensorflow, as data/tfds_builders). Reading a
cached sample is one record read: no JPEG decode, no resampling.

Layout: `<data_dir>/star_precrops/<key>/<version>/`, `key` a hash of the
records (paths, container keys, labels, boxes; each image file's size and
mtime) and of every setting the pre-crop depends on (`cache_key`), so a
changed set or setting builds a new cache instead of reading a stale one.
A record's `image_loader` enters the key by its repr; one whose repr names
a memory address (a new key in every process) is refused with a UserError.
Examples are stored in record order (shuffling disabled); the loader keeps
its own sampler, so batches, their order and the checkpointed iterator state
are those of the uncached loader (tested bit for bit).

Size: raw pixels, `P * P * 3` bytes per face (P = 2 S: 786 KB at S = 256,
2.3 GB for yt68's 2,951 training faces). Multi-host: each process builds
(or finds) the cache in its `data_dir`; a shared `data_dir` must be built
once first (`build` from one process), since two processes building the
same key at once race.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Dict, Sequence

import numpy as np

from data import pipeline
from data import records as records_lib
from training import errors

BUILDER_NAME = "star_precrops"
VERSION = "1.0.0"
FEATURE_KEYS = ("image", "landmarks", "visible", "crop_to_image",
                "precrop_to_crop", "precrop_box", "landmarks_original",
                "valid", "index", "decode_failed")

_SOURCES: Dict[tuple, object] = {}
_LOCK = threading.Lock()


def _setting_text(config: pipeline.CropConfig) -> str:
  """The crop settings a pre-crop depends on, as text (the cache key)."""
  return (f"S={config.crop_size} P={config.precrop_size} "
          f"N={config.num_points} mode={config.crop_mode} "
          f"margin={config.points_margin!r} antialias={config.antialias} "
          f"draft_max={pipeline.MAX_DRAFT_REDUCTION}")


# A default object repr (`<... at 0x7f...>`): another value in every process.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _loader_text(loader) -> str:
  """repr of a record's image_loader, refused when it holds an address.

  The key must be the same in every process and run; a loader whose repr
  names a memory address (a plain class, a lambda, functools.partial of a
  function) would give a new key, and a new multi-GB cache, each time.
  """
  text = repr(loader)
  if _ADDRESS.search(text):
    raise errors.UserError(
        f"the pre-crop cache cannot key records whose image_loader has no "
        f"stable repr ({text}): give the loader's class a __repr__ of its "
        "settings (a dataclass has one), or leave "
        "config.data.precrop_cache_dir empty")
  return text


def _record_text(record: records_lib.FaceRecord) -> bytes:
  """A record's identity for the cache key: path, key, labels, file stat."""
  parts = [record.image_path, repr(record.image_key),
           _loader_text(record.image_loader)]
  for value in (record.landmarks, record.visible, record.box, record.center):
    parts.append("-" if value is None else
                 np.asarray(value, np.float64).tobytes().hex())
  parts.append(repr(record.scale))
  if record.image_loader is None:
    try:
      st = os.stat(record.image_path)
      parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    except OSError:
      parts.append("missing")
  return "|".join(parts).encode()


def cache_key(records: Sequence[records_lib.FaceRecord],
              config: pipeline.CropConfig) -> str:
  """A 16-hex-digit name for the cache of `records` under `config`."""
  digest = hashlib.sha256(f"{VERSION} {_setting_text(config)}".encode())
  for r in records:
    digest.update(_record_text(r))
  return digest.hexdigest()[:16]


def _builder_class():
  """The tfds builder (defined on first use: tfds takes seconds to import)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  import inspect  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class PrecropCache(tfds.core.GeneratorBasedBuilder,
                     skip_registration=True):
    """Pre-crop samples of one record list (split "train", record order)."""

    name = BUILDER_NAME
    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      # As data/tfds_builders/landmark_builder.py: tfds 4.9.10's default
      # probes importlib_resources, absent here.
      return epath.Path(inspect.getfile(cls))

    def __init__(self, *, records, crop_config, key, **kwargs):
      self._records = list(records)
      self._crop_config = crop_config
      super().__init__(config=tfds.core.BuilderConfig(name=key), **kwargs)

    def _info(self):
      p, n = self._crop_config.precrop_size, self._crop_config.num_points
      t = tfds.features.Tensor
      return tfds.core.DatasetInfo(
          builder=self, disable_shuffling=True,
          description=f"pre-crops: {_setting_text(self._crop_config)}",
          features=tfds.features.FeaturesDict({
              # Raw bytes, not tfds' default int64 list (7 ms to parse).
              "image": t(shape=(p, p, 3), dtype=np.uint8,
                         encoding=tfds.features.Encoding.BYTES),
              "landmarks": t(shape=(n, 2), dtype=np.float32),
              "visible": t(shape=(n,), dtype=np.bool_),
              "crop_to_image": t(shape=(2, 3), dtype=np.float32),
              "precrop_to_crop": t(shape=(2, 3), dtype=np.float32),
              "precrop_box": t(shape=(4,), dtype=np.float32),
              "landmarks_original": t(shape=(n, 2), dtype=np.float32),
              "valid": t(shape=(), dtype=np.bool_),
              "index": t(shape=(), dtype=np.int32),
              "decode_failed": t(shape=(), dtype=np.bool_),
          }))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      make = pipeline._StarMake(self._crop_config)  # pylint: disable=protected-access
      transform = pipeline._SampleTransform(  # pylint: disable=protected-access
          self._records, make, make.empty, train=True)
      for i, record in enumerate(self._records):
        sample = transform.random_map((i, record), None)
        yield i, {k: sample[k] for k in FEATURE_KEYS}

  return PrecropCache


def check_config(config: pipeline.CropConfig) -> None:
  """ValueError unless `config` describes device-mode training pre-crops."""
  if not config.precrops:
    raise ValueError("the pre-crop cache holds device-mode training samples "
                     "(train=True, augment_on='device')")


def build(records: Sequence[records_lib.FaceRecord],
          config: pipeline.CropConfig, data_dir: str) -> str:
  """Builds the cache of `records` in `data_dir` unless it exists; returns
  its key. Undecodable images are replaced as in the loader (next record,
  `decode_failed`); 17 in a row raise ValueError, as there."""
  check_config(config)
  key = cache_key(records, config)
  builder = _builder_class()(records=records, crop_config=config, key=key,
                             data_dir=os.path.expanduser(data_dir),
                             file_format="array_record")
  builder.download_and_prepare()
  return key


def data_source(data_dir: str, key: str):
  """The (per-process cached) random-access source of a built cache."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  folder = os.path.expanduser(data_dir)
  cache_id = (os.getpid(), folder, key)
  with _LOCK:
    if cache_id not in _SOURCES:
      _SOURCES[cache_id] = tfds.data_source(
          f"{BUILDER_NAME}/{key}:{VERSION}", data_dir=folder, split="train")
    return _SOURCES[cache_id]


class CachedPrecrops:
  """Picklable `(index, record) -> sample` reading the cache (grain op body).

  The source is opened lazily in each process (grain workers included).
  """

  def __init__(self, data_dir: str, key: str, num_records: int):
    self.data_dir, self.key, self.num_records = data_dir, key, num_records

  def __call__(self, index: int) -> Dict[str, np.ndarray]:
    source = data_source(self.data_dir, self.key)
    if len(source) != self.num_records:
      raise ValueError(
          f"pre-crop cache {self.key} in {self.data_dir!r} holds "
          f"{len(source)} samples, the loader has {self.num_records} records: "
          "delete the folder to rebuild it")
    example = source[int(index)]
    return {k: np.asarray(example[k]) for k in FEATURE_KEYS}

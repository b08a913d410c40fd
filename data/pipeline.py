"""grain input pipelines: FaceRecords -> decoded, cropped, augmented batches.

One loader per use:
  * `make_landmark_loader`: STAR training/eval batches at S = 256/128/64.
  * `make_sce_landmark_loader`: SCE-MAE 96 px landmark crops (DVE protocol).
  * `make_pretrain_loader`: image-only MAE batches `{"image": uint8 [B, 96, 96, 3]}`.

A landmark batch is the dict of README "Conventions": `image` uint8
`[B, S, S, 3]`, `landmarks` float32 `[B, N, 2]` (crop px), `visible` bool
`[B, N]`, `crop_to_image` float32 `[B, 2, 3]`, `landmarks_original` float32
`[B, N, 2]` (the record's points in the batch's point order, i.e. flip-permuted
with the crop when the augmentation flipped: `crop_to_image` applied to
`landmarks` gives them back), `valid` bool `[B]`, `index` int32 `[B]` (record
index, -1 for padding), plus `decode_failed` bool `[B]` (see below).

Order and determinism. Records are read through `grain.python.DataLoader` with
an `IndexSampler`: training shuffles every epoch from `seed` (a new order per
epoch, the same for the same seed) and repeats forever (batches may straddle an
epoch boundary); evaluation reads once in order. Each sample's augmentation
draws from the per-record `numpy.random.Generator` grain derives from `seed` and
the sample's global position, so batches do not depend on `num_workers`.

Multi-host. `batch_size` is per process. The records are split into
`jax.process_count()` contiguous shards (grain `ShardOptions`), shard
`jax.process_index()` for this process; the shards are disjoint and, for
evaluation (padded to a multiple of `batch_size * process_count`), cover
every record once.

Checkpointing. `iter(loader)` returns a grain iterator with `get_state()`
(bytes) and `set_state(state)`; a new loader built with the same arguments and
set to a saved state yields the same remaining batches (orbax can save it
with `grain.python.PyGrainCheckpointSave`).

Worker processes. With `num_workers > 0` grain starts child processes. In an
absl program build the loader inside `main` (after `app.run` has parsed the
flags): grain's workers read absl flags and fail with an "unparsed flags"
error otherwise. Outside absl (tests, notebooks) we parse the flags with
defaults before the loader starts (`_ensure_absl_flags_parsed`).

Device mode (`augment_on="device"`, issue #18). Training samples are then
un-augmented pre-crops (`precrop_sample`: `image` uint8 `[P, P, 3]`, P =
ceil(precrop_margin * S), landmarks in pre-crop pixels, plus
`precrop_to_crop` and `precrop_box`) that data/device_augment.py flips,
warps and re-textures inside the jitted train step; faces more than 2x
larger than the crop are decoded from JPEG at 1/2, 1/4 or 1/8 (`draft`,
`decode_reduced`). No randomness is left on the host, so the samples can be
cached once for all epochs (`precrop_cache_dir`, data/precrop_cache.py).
Evaluation batches are the same in both modes.

Bad images. A record whose image cannot be decoded is reported by path with
`logging.warning` (in the worker) and never dropped silently: in training it is
replaced by the next decodable record (deterministic: index + 1, + 2, ...)
and the sample has `decode_failed=True`; in evaluation the slot becomes a
padding sample (`valid=False`, `decode_failed=True`). Count them with
`batch["decode_failed"].sum()`; `data.inspect` lists them before training.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import multiprocessing
import signal
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import grain.python as grain
import numpy as np

from data import augment as augment_lib
from data import records as records_lib
from data import schemes as schemes_lib
from data import transforms
from training import errors

MAX_REPLACEMENTS = 16
SCE_SIZE = 96
SCE_RESIZE = 136


# ------------------------------------------------------------------ sources --


class RecordSource(grain.RandomAccessDataSource):
  """Random access over FaceRecords, optionally padded with empty slots.

  `source[i]` is `(i, record)` for `i < len(records)` and `(-1, None)` for the
  padding slots after them.
  """

  def __init__(self, records: Sequence[records_lib.FaceRecord],
               padded_length: Optional[int] = None):
    self._records = list(records)
    if not self._records:
      raise ValueError("no records given to the input pipeline")
    self._length = padded_length or len(self._records)
    if self._length < len(self._records):
      raise ValueError(f"padded_length {padded_length} < {len(self._records)} records")
    digest = hashlib.sha1()
    for r in self._records:
      digest.update(f"{r.image_path}|{r.image_key}".encode())
    self._fingerprint = digest.hexdigest()[:12]

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int):
    index = int(index)
    if index < len(self._records):
      return index, self._records[index]
    return -1, None

  @property
  def records(self):
    return self._records

  def __repr__(self) -> str:  # stable across processes (part of grain's state)
    return (f"RecordSource(n={len(self._records)}, padded={self._length}, "
            f"fingerprint={self._fingerprint})")


# ------------------------------------------------------------------ samples --


def _empty_sample(crop_size: int, num_points: int) -> Dict[str, np.ndarray]:
  return dict(
      image=np.zeros((crop_size, crop_size, 3), np.uint8),
      landmarks=np.zeros((num_points, 2), np.float32),
      visible=np.zeros((num_points,), bool),
      crop_to_image=np.eye(3, dtype=np.float32)[:2],
      landmarks_original=np.zeros((num_points, 2), np.float32),
      valid=np.asarray(False),
      index=np.asarray(-1, np.int32),
      decode_failed=np.asarray(False))


def _visible(record) -> np.ndarray:
  if record.visible is None:
    return np.ones((record.num_points,), bool)
  return np.asarray(record.visible, bool)


def _load_or_none(record, load=None) -> Optional[np.ndarray]:
  """The record's image, or None (reported by path) when it cannot be used.

  `load(record)` decodes instead of `record.load_image()` when given (the
  device-mode reduced decode). Any exception of the record's loader counts
  (Pillow, h5py and tfds raise many types, and a custom `image_loader` may
  raise anything): one bad file must not kill a worker and with it the run.
  """
  try:
    return load(record) if load is not None else record.load_image()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("input pipeline: cannot use image %s (%s); %s",
                    record.image_path, e, "see batch['decode_failed']")
    return None


@dataclasses.dataclass(frozen=True)
class CropConfig:
  """How a record becomes a sample (shared by the STAR loaders)."""
  crop_size: int = 256
  num_points: int = 98
  train: bool = False
  augment: augment_lib.AugmentConfig = augment_lib.AugmentConfig()
  crop_mode: str = "auto"
  points_margin: float = transforms.POINTS_MARGIN
  antialias: bool = False       # transforms.warp_affine's pre-reduction.
  # "host": augment here (data/augment.py); "device": training samples are
  # pre-crops of `precrop_size` px that data/device_augment.py augments in
  # the train step (evaluation samples are the same in both modes).
  augment_on: str = "host"
  precrop_size: int = 0

  @property
  def precrops(self) -> bool:
    """True where samples are device-mode pre-crops (training only)."""
    return self.train and self.augment_on == "device"


# --------------------------------------------------- device-mode pre-crops --


@dataclasses.dataclass(frozen=True)
class DecodedImage:
  """Pixels decoded at 1 / `reduction` of the file's size (JPEG DCT scaling).

  Reduced pixel i averages original pixels r i ... r i + r - 1, so it maps to
  original pixels with `transforms.reduction_map(reduction)` (checked on
  JPEG dots in tests/test_device_augment.py).
  """
  pixels: np.ndarray
  reduction: int = 1


MAX_DRAFT_REDUCTION = 8   # libjpeg's DCT scaling: 1/2, 1/4, 1/8.


def draft_reduction(image_to_crop_scale: float) -> int:
  """The JPEG decode reduction r for a face the crop scales by `s` (crop px
  per image px): the largest of 1, 2, 4, 8 with `r s <= 1`, so the reduced
  face still has at least the crop's resolution. r > 1 only when the face
  is more than 2x larger in the image than in the (pre-)crop."""
  s = float(image_to_crop_scale)
  r = 1
  while r < MAX_DRAFT_REDUCTION and s > 0 and 2 * r * s <= 1.0:
    r *= 2
  return r


def decode_reduced(path: str, reduction: int) -> DecodedImage:
  """Decodes an image file, a JPEG at 1 / `reduction` scale (`Image.draft`).

  Other formats, and JPEGs PIL cannot draft (e.g. several tiles), decode
  at full size (`reduction` 1 in the result). Errors as
  `records.decode_image_file`: ValueError naming the file (too large,
  corrupt), FileNotFoundError passed through.
  """
  pixels, got = records_lib.decode_image_file_reduced(path, int(reduction))
  return DecodedImage(records_lib.as_rgb_uint8(pixels, path), got)


def precrop_sample(record, image: np.ndarray, index: int, config: CropConfig,
                   reduction: int = 1) -> Dict[str, np.ndarray]:
  """The device-mode training sample: a P x P pre-crop, no augmentation.

  The pre-crop holds the plain S x S crop in its middle and a margin around
  it (P = `config.precrop_size`, data/device_augment.py says why the default
  margin is 2) for the flip, rotation, zoom and shift that the train step
  draws. Two ways, by the crop's scale k (crop px per original px):
    * `copies_original_pixels(k, P)`, k >= ~(P - 1) / (P - 4) (the crop
      enlarges the face): P x P original pixels, copied (no resampling) from
      the integer offset nearest the crop centre (`_copied_precrop`); the
      device warp then reads the original pixels exactly as the host warp
      does (same taps, same border rule, `precrop_box` = the part inside the
      image). The slice covers more than the margin: P original px are >= P
      crop px.
    * otherwise: the widened crop resampled at the crop's scale with
      `transforms.warp_affine` (PIL bilinear, `config.antialias` as the host
      path), from `image` decoded at 1 / `reduction` (`decode_reduced`;
      `_resampled_precrop`). The device warp then resamples once more (zoom
      ~ 1): two bilinear interpolations instead of the host's one (softer
      crops, measured in data/device_augment.py's docstring: the price of a
      fixed-size pre-crop at crop resolution).
  Pixels outside the image are black in both, as in host mode.

  Returns:
    the batch-dict entries of data/device_augment.py's docstring: `image`
    uint8 [P, P, 3], `landmarks` (pre-crop px), `visible`, `crop_to_image`
    (pre-crop -> original px), `precrop_to_crop`, `precrop_box`,
    `landmarks_original`, `valid`, `index`, `decode_failed`.
  """
  s, p = config.crop_size, config.precrop_size
  if p < s:
    raise ValueError(f"precrop_size {p} < crop_size {s}")
  center, scale = transforms.record_center_scale(record, config.crop_mode,
                                                 config.points_margin)
  crop_m = transforms.crop_matrix(center, scale, s)       # original -> crop
  landmarks = np.asarray(record.landmarks, np.float64)
  if reduction == 1 and copies_original_pixels(float(crop_m[0, 0]), p):
    pre, box, precrop_to_image = _copied_precrop(image, center, p)
    precrop_to_crop = transforms.compose(crop_m, precrop_to_image)
  else:
    pre, box, precrop_to_image, precrop_to_crop = _resampled_precrop(
        image, crop_m, s, p, reduction, config.antialias)
  points = transforms.apply_affine(
      transforms.invert_affine(precrop_to_image), landmarks)
  return dict(
      image=pre,
      landmarks=points.astype(np.float32),
      visible=_visible(record),
      crop_to_image=precrop_to_image.astype(np.float32),
      precrop_to_crop=precrop_to_crop.astype(np.float32),
      precrop_box=box.astype(np.float32),
      landmarks_original=landmarks.astype(np.float32),
      valid=np.asarray(True),
      index=np.asarray(index, np.int32),
      decode_failed=np.asarray(False))


def copies_original_pixels(k: float, precrop_size: int) -> bool:
  """True where P x P original pixels hold the whole pre-crop region of a
  crop of scale `k` (crop px per original px): half-side (P - 1) / 2 in
  crop px, i.e. (P - 1) / (2 k) original px, within the slice's
  (P - 1) / 2 less 0.5 (the integer offset) and 1 (the bilinear taps)."""
  half = (precrop_size - 1) / 2.0
  return k * (half - 1.5) >= half


def _copied_precrop(image: np.ndarray, center, p: int):
  """P x P original pixels about `center` (black outside the image).

  Returns (uint8 [P, P, 3], precrop_box [4] (the part inside the image,
  inclusive; empty when none is), precrop -> original [2, 3]).
  """
  h, w = image.shape[:2]
  x0 = int(np.floor(center[0] - (p - 1) / 2.0 + 0.5))
  y0 = int(np.floor(center[1] - (p - 1) / 2.0 + 0.5))
  pre = np.zeros((p, p, 3), np.uint8)
  xa, xb = max(0, x0), min(w, x0 + p)
  ya, yb = max(0, y0), min(h, y0 + p)
  if xa < xb and ya < yb:
    pre[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    box = np.array([xa - x0, ya - y0, xb - x0 - 1, yb - y0 - 1], np.float64)
  else:  # the face's surroundings are all outside the image.
    box = np.array([0.0, 0.0, -1.0, -1.0])
  return pre, box, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])


def _resampled_precrop(image: np.ndarray, crop_m: np.ndarray, s: int, p: int,
                       reduction: int, antialias: bool):
  """The crop widened to P px about its centre, at the crop's scale, from
  `image` decoded at 1 / `reduction` (transforms.warp_affine: PIL bilinear).

  Returns (uint8 [P, P, 3], precrop_box [4] (all of it), precrop ->
  original [2, 3], precrop -> crop [2, 3] (a shift by -(P - S) / 2)).
  """
  d = (p - s) / 2.0
  image_to_precrop = transforms.compose(
      np.array([[1.0, 0.0, d], [0.0, 1.0, d]]), crop_m)
  decoded_to_precrop = transforms.compose(
      image_to_precrop, transforms.reduction_map(int(reduction)))
  pre = transforms.warp_affine(image, decoded_to_precrop, p, antialias)
  return (pre, np.array([0.0, 0.0, p - 1.0, p - 1.0]),
          transforms.invert_affine(image_to_precrop),
          np.array([[1.0, 0.0, -d], [0.0, 1.0, -d]]))


def _empty_precrop_sample(config: CropConfig) -> Dict[str, np.ndarray]:
  """A padding slot in device mode's pre-crop layout."""
  p, s = config.precrop_size, config.crop_size
  d = (p - s) / 2.0
  sample = _empty_sample(p, config.num_points)
  sample["precrop_to_crop"] = np.array([[1, 0, -d], [0, 1, -d]], np.float32)
  sample["precrop_box"] = np.array([0, 0, p - 1, p - 1], np.float32)
  return sample


def make_sample(record, image: np.ndarray, index: int, config: CropConfig,
                rng: Optional[np.random.Generator],
                reduction: int = 1) -> Dict[str, np.ndarray]:
  """One STAR sample (crop, augmentation when training) as a dict of arrays.

  With `config.augment_on == "device"` a training sample is the pre-crop of
  `precrop_sample` (`image` decoded at 1 / `reduction`; no randomness here:
  the train step augments); evaluation samples never change.
  """
  if record.num_points != config.num_points:
    raise ValueError(f"{record.image_path}: {record.num_points} landmarks, the "
                     f"loader expects {config.num_points}")
  if config.precrops:
    return precrop_sample(record, image, index, config, reduction)
  center, scale = transforms.record_center_scale(record, config.crop_mode,
                                                 config.points_margin)
  crop_m = transforms.crop_matrix(center, scale, config.crop_size)
  landmarks = np.asarray(record.landmarks, np.float64)
  visible = _visible(record)
  if config.train:
    scheme = schemes_lib.get_scheme(config.num_points)
    crop, points, visible, m = augment_lib.augment(
        image, landmarks, visible, crop_m, config.crop_size, scheme, rng,
        config.augment, config.antialias)
    if np.linalg.det(m[:, :2]) < 0:  # flipped: points are permuted
      landmarks = landmarks[np.asarray(scheme.flip_permutation)]
  else:
    m = crop_m
    crop = transforms.warp_affine(image, m, config.crop_size, config.antialias)
    points = transforms.apply_affine(m, landmarks).astype(np.float32)
  return dict(
      image=crop,
      landmarks=points.astype(np.float32),
      visible=np.asarray(visible, bool),
      crop_to_image=transforms.invert_affine(m).astype(np.float32),
      landmarks_original=landmarks.astype(np.float32),
      valid=np.asarray(True),
      index=np.asarray(index, np.int32),
      decode_failed=np.asarray(False))


@functools.cache
def leave_stop_signals_to_the_main_process() -> None:
  """In a grain worker process: ignore SIGTERM and SIGINT (once per process).

  A scheduler's SIGTERM (SLURM, a terminal's Ctrl-C) reaches every process
  of the group; the training loop saves a checkpoint on it
  (training/preemption.py), which needs the workers alive until it has
  closed them. A worker left to SIGTERM's default action dies at once, and
  a batch it had copied to shared memory but not yet handed over is never
  unlinked ("leaked shared_memory objects" at exit). Every grain transform
  of a training or evaluation loader calls this first (the pipelines here,
  the toy method of tests/test_loop.py). Nothing changes in the main
  process (`num_workers=0`).
  """
  if multiprocessing.parent_process() is None:
    return
  for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)


class _SampleTransform(grain.RandomMapTransform):
  """grain op: `(index, record)` -> sample dict (runs in the workers)."""

  def __init__(self, records, make, empty, train: bool):
    self._records = records
    self._make = make      # (record, image, index, rng) -> dict
    self._empty = empty    # () -> dict
    self._train = train
    self._load = getattr(make, "load", None)  # optional (record) -> image

  def random_map(self, element, rng: np.random.Generator):
    leave_stop_signals_to_the_main_process()
    index, record = element
    if record is None:
      return self._empty()
    image = _load_or_none(record, self._load)
    if image is not None:
      return self._make(record, image, index, rng)
    if not self._train:
      sample = self._empty()
      sample["decode_failed"] = np.asarray(True)
      sample["index"] = np.asarray(index, np.int32)
      return sample
    n = len(self._records)
    for k in range(1, min(MAX_REPLACEMENTS, n - 1) + 1):
      j = (index + k) % n
      image = _load_or_none(self._records[j], self._load)
      if image is not None:
        sample = self._make(self._records[j], image, j, rng)
        sample["decode_failed"] = np.asarray(True)
        return sample
    raise ValueError(f"{MAX_REPLACEMENTS + 1} consecutive records from index "
                     f"{index} ({record.image_path}) cannot be decoded; check "
                     "the dataset with `python -m data.inspect`")


class _CachedSampleTransform(grain.MapTransform):
  """grain op: `(index, record)` -> the cached device-mode sample of
  `index` (data/precrop_cache.py); what `_SampleTransform` would make."""

  def __init__(self, read):
    self._read = read      # index -> sample dict (precrop_cache.CachedPrecrops)

  def map(self, element):
    leave_stop_signals_to_the_main_process()
    index, _ = element
    return self._read(index)


class _StarMake:
  """Picklable `(record, image, index, rng) -> sample` for the STAR loaders."""

  def __init__(self, config: CropConfig):
    self.config = config

  def load(self, record):
    """Decodes `record`: as `record.load_image()`, except for device-mode
    training samples from image files, where a face more than 2x larger
    than its crop is decoded at reduced scale (`draft_reduction`; JPEG only,
    `decode_reduced`)."""
    c = self.config
    if not c.precrops or record.image_loader is not None:
      return record.load_image()
    try:
      center, scale = transforms.record_center_scale(record, c.crop_mode,
                                                     c.points_margin)
      k = float(transforms.crop_matrix(center, scale, c.crop_size)[0, 0])
    except ValueError:  # make_sample raises it with the record's name.
      return record.load_image()
    r = draft_reduction(k)
    if r == 1:
      return record.load_image()
    return decode_reduced(record.image_path, r)

  def __call__(self, record, image, index, rng):
    if isinstance(image, DecodedImage):
      return make_sample(record, image.pixels, index, self.config, rng,
                         image.reduction)
    return make_sample(record, image, index, self.config, rng)

  def empty(self):
    if self.config.precrops:
      return _empty_precrop_sample(self.config)
    return _empty_sample(self.config.crop_size, self.config.num_points)


# ------------------------------------------------------------------ loaders --


def _ensure_absl_flags_parsed():
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _process_shard(shard_index: Optional[int], shard_count: Optional[int]
                   ) -> Tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  return int(shard_index), int(shard_count)


def _build_loader(records, transform_factory, *, train: bool, batch_size: int,
                  seed: int, num_workers: int, num_epochs: Optional[int],
                  shard_index: Optional[int], shard_count: Optional[int],
                  worker_buffer_size: int):
  """Shared DataLoader assembly (sampler, sharding, padding, batching)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_workers < 0:
    raise ValueError(f"num_workers must be >= 0, got {num_workers}")
  shard_index, shard_count = _process_shard(shard_index, shard_count)
  n = len(records)
  if train:
    if n < shard_count:
      raise ValueError(f"{n} records cannot be split over {shard_count} processes")
    source = RecordSource(records)
  else:
    step = batch_size * shard_count
    source = RecordSource(records, padded_length=max(1, math.ceil(n / step)) * step)
  sampler = grain.IndexSampler(
      num_records=len(source),
      shard_options=grain.ShardOptions(shard_index, shard_count,
                                       drop_remainder=True),
      shuffle=train,
      num_epochs=num_epochs if num_epochs is not None else (None if train else 1),
      seed=int(seed))
  if num_workers > 0:
    _ensure_absl_flags_parsed()
  operations = [transform_factory(source.records),
                grain.Batch(batch_size, drop_remainder=train)]
  return grain.DataLoader(data_source=source, sampler=sampler,
                          operations=operations, worker_count=num_workers,
                          worker_buffer_size=worker_buffer_size)


def make_landmark_loader(records: Sequence[records_lib.FaceRecord], *,
                         crop_size: int = 256,
                         scheme: Optional[schemes_lib.LandmarkScheme] = None,
                         train: bool, batch_size: int, seed: int = 0,
                         augment_config: Optional[Mapping[str, Any]] = None,
                         num_workers: int = 0, crop_mode: str = "auto",
                         points_margin: float = transforms.POINTS_MARGIN,
                         antialias: bool = False,
                         num_epochs: Optional[int] = None,
                         shard_index: Optional[int] = None,
                         shard_count: Optional[int] = None,
                         worker_buffer_size: int = 2,
                         augment_on: str = "host",
                         precrop_margin: float = 2.0,
                         precrop_cache_dir: Optional[str] = None
                         ) -> grain.DataLoader:
  """STAR batches (README "Conventions") from FaceRecords.

  Args:
    records: the faces (all with `scheme.num_points` landmarks).
    crop_size: S (256 for STAR; 128/64 for small runs).
    scheme: landmark scheme (flip permutation); default from the records.
    train: shuffle + augment + repeat (True) or one ordered, padded pass.
    batch_size: per-process batch size.
    seed: shuffling and augmentation seed.
    augment_config: dict of `augment.AugmentConfig` fields (train only).
    num_workers: grain worker processes (0 = in this process).
    crop_mode: "auto", "center_scale", "box" or "points" (`transforms`).
    points_margin: margin of the "points" crop.
    antialias: box pre-reduction of faces shrunk > 2x (transforms.warp_affine).
    num_epochs: default: forever (train) / 1 (eval).
    shard_index, shard_count: default `jax.process_index()/process_count()`.
    worker_buffer_size: batches prefetched per worker.
    augment_on: "host" (augmented S x S crops) or "device" (training
      batches of pre-crops, `precrop_sample`, that
      data/device_augment.DeviceAugment augments in the train step; eval
      batches are the same in both modes).
    precrop_margin: the pre-crop's side over S (device mode).
    precrop_cache_dir: device-mode training only: a folder where the
      pre-crops are built once (data/precrop_cache.py, array_record) and
      read in every epoch; the same batches as without it.

  Returns:
    a `grain.python.DataLoader`; `iter()` it for batches (dicts of numpy).
  """
  from data import device_augment  # pylint: disable=g-import-not-at-top
  device_augment.check_augment_on(augment_on)
  if not len(records):  # pylint: disable=g-explicit-length-test
    raise ValueError("make_landmark_loader: no records (check the reader's "
                     "problems list / the dataset path)")
  scheme = scheme or schemes_lib.get_scheme(records[0].num_points)
  config = CropConfig(
      crop_size=int(crop_size), num_points=scheme.num_points, train=bool(train),
      augment=augment_lib.AugmentConfig.from_mapping(augment_config),
      crop_mode=crop_mode, points_margin=float(points_margin),
      antialias=bool(antialias), augment_on=augment_on,
      precrop_size=device_augment.precrop_size(crop_size, precrop_margin))
  if crop_mode not in transforms.CROP_MODES:
    raise errors.UserError(f"crop_mode must be one of {transforms.CROP_MODES}, "
                           f"got {crop_mode!r}")
  make = _StarMake(config)
  factory = lambda recs: _SampleTransform(recs, make, make.empty, train)
  if precrop_cache_dir and config.precrops:
    from data import precrop_cache  # pylint: disable=g-import-not-at-top
    key = precrop_cache.build(records, config, precrop_cache_dir)
    read = precrop_cache.CachedPrecrops(precrop_cache_dir, key, len(records))
    factory = lambda recs: _CachedSampleTransform(read)
  return _build_loader(records, factory, train=train, batch_size=batch_size,
                       seed=seed, num_workers=num_workers, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_buffer_size=worker_buffer_size)


def make_eval_loader(records, *, crop_size: int = 256, batch_size: int,
                     **kwargs) -> grain.DataLoader:
  """`make_landmark_loader(train=False)`: one ordered pass, last batch padded."""
  return make_landmark_loader(records, crop_size=crop_size, train=False,
                              batch_size=batch_size, **kwargs)


# --------------------------------------------------------- SCE-MAE (96 px) --


def _resize_affine(src_size: float, dst_size: int) -> np.ndarray:
  """PIL resize of a square as an affine map on pixel-centre coordinates."""
  k = dst_size / src_size
  return np.array([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]])


def sce_crop(image: np.ndarray, landmarks: Optional[np.ndarray] = None,
             mode: str = "dve_celeba", margin: float = 1.25,
             size: int = SCE_SIZE):
  """SCE-MAE / DVE preprocessing to a `size` px face crop.

  Modes:
    "dve_celeba": CelebA aligned 178 x 218: rows 30..208 (a 178 x 178 square),
      resize to 136 (PIL bilinear, antialiased), centre crop 96 (DVE).
    "points": LABEL-DERIVED: the same with the square taken around the
      landmarks' box: side `L = round(max(w, h) * margin * 136 / 96)` px
      centred on the box, so the final 96 px window shows `max(w, h) *
      margin` px (outside the image is black). It places every face by its
      own ground truth, so it is not for self-supervised training or
      features (stage 2 refuses it unless asked explicitly).
    "center": the largest centred square of the image: the whole image of a
      pre-cropped set (MTFL / AFLW_M: resize 136, centre 96, the DVE
      protocol), or unlabelled frames. Never reads the landmarks.

  Returns:
    (uint8 [size, size, 3], landmarks float32 [N, 2] or None,
     crop_to_image float64 [2, 3]).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  if mode == "dve_celeba":
    if (h, w) != (218, 178):
      raise ValueError(f"dve_celeba expects CelebA aligned 178x218 images, got "
                       f"{w}x{h}; use mode='points'")
    x0, y0, side = 0, 30, 178
  elif mode == "points":
    if landmarks is None:
      raise ValueError("mode 'points' needs landmarks")
    center, scale = transforms.center_scale_from_points(landmarks, margin)
    side = max(2, int(round(200.0 * scale * SCE_RESIZE / size)))
    x0 = int(round(center[0] - side / 2.0))
    y0 = int(round(center[1] - side / 2.0))
  elif mode == "center":
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
  else:
    raise ValueError(f"sce_crop mode must be 'dve_celeba', 'points' or "
                     f"'center', got {mode!r}")
  square = Image.fromarray(image).crop((x0, y0, x0 + side, y0 + side))
  resized = square.resize((SCE_RESIZE, SCE_RESIZE), Image.Resampling.BILINEAR)
  off = (SCE_RESIZE - size) // 2
  out = np.asarray(resized)[off:off + size, off:off + size]
  m = transforms.compose(
      np.array([[1.0, 0.0, -off], [0.0, 1.0, -off]]),
      _resize_affine(side, SCE_RESIZE),
      np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]))
  points = None
  if landmarks is not None:
    points = transforms.apply_affine(m, landmarks).astype(np.float32)
  return out, points, transforms.invert_affine(m)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator,
                        size: int = SCE_SIZE, scale=(0.2, 1.0),
                        ratio=(3 / 4, 4 / 3), flip_prob: float = 0.5):
  """MAE augmentation (torchvision RandomResizedCrop + horizontal flip), images only.

  Area fraction ~ U(scale), log aspect ratio ~ U(log ratio), 10 tries, then the
  centre crop fallback; bicubic resize to `size`; flip with `flip_prob`.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = image.shape[:2]
  area = h * w
  box = None
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      i = int(rng.integers(0, h - ch + 1))
      j = int(rng.integers(0, w - cw + 1))
      box = (j, i, j + cw, i + ch)
      break
  if box is None:
    side = min(h, w)
    box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
  out = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC,
                                      box=box)
  out = np.asarray(out)
  if rng.random() < flip_prob:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


@dataclasses.dataclass(frozen=True)
class SceConfig:
  mode: str = "points"
  margin: float = 1.25
  size: int = SCE_SIZE
  num_points: int = 5
  train: bool = False        # landmark loader: random flip
  rrc_scale: Tuple[float, float] = (0.2, 1.0)


class _SceLandmarkMake:
  """`(record, image, index, rng) -> sample` at 96 px (DVE protocol)."""

  def __init__(self, config: SceConfig):
    self.config = config

  def __call__(self, record, image, index, rng):
    c = self.config
    crop, points, crop_to_image = sce_crop(image, record.landmarks, c.mode,
                                           c.margin, c.size)
    landmarks = np.asarray(record.landmarks, np.float32)
    visible = _visible(record)
    if c.train and rng.random() < 0.5:
      perm = np.asarray(schemes_lib.get_scheme(c.num_points).flip_permutation)
      crop = np.ascontiguousarray(crop[:, ::-1])
      flip = transforms.hflip_about(c.size)
      points = transforms.apply_affine(flip, points)[perm].astype(np.float32)
      crop_to_image = transforms.compose(crop_to_image, flip)  # flip is its own inverse
      landmarks, visible = landmarks[perm], visible[perm]
    return dict(image=crop, landmarks=points,
                visible=visible, crop_to_image=crop_to_image.astype(np.float32),
                landmarks_original=landmarks, valid=np.asarray(True),
                index=np.asarray(index, np.int32), decode_failed=np.asarray(False))

  def empty(self):
    return _empty_sample(self.config.size, self.config.num_points)


def make_sce_landmark_loader(records, *, train: bool, batch_size: int,
                             seed: int = 0, mode: str = "points",
                             margin: float = 1.25, num_workers: int = 0,
                             shard_index: Optional[int] = None,
                             shard_count: Optional[int] = None,
                             num_epochs: Optional[int] = None
                             ) -> grain.DataLoader:
  """96 px landmark batches (same dict as `make_landmark_loader`), DVE crops."""
  if not len(records):  # pylint: disable=g-explicit-length-test
    raise ValueError("make_sce_landmark_loader: no records")
  config = SceConfig(mode=mode, margin=float(margin),
                     num_points=records[0].num_points, train=bool(train))
  make = _SceLandmarkMake(config)
  factory = lambda recs: _SampleTransform(recs, make, make.empty, train)
  return _build_loader(records, factory, train=train, batch_size=batch_size,
                       seed=seed, num_workers=num_workers, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_buffer_size=2)


class _PretrainMake:
  """`(record, image, index, rng) -> {"image"}`: SCE crop, then RRC + flip."""

  def __init__(self, config: SceConfig):
    self.config = config

  def __call__(self, record, image, index, rng):
    c = self.config
    lm = None if c.mode == "center" else record.landmarks
    crop, _, _ = sce_crop(image, lm, c.mode, c.margin, c.size)
    return {"image": random_resized_crop(crop, rng, c.size, c.rrc_scale)}

  def empty(self):
    return {"image": np.zeros((self.config.size, self.config.size, 3), np.uint8)}


def image_records(paths: Sequence[str]) -> list:
  """FaceRecords for unlabelled images (no landmarks; use mode="center")."""
  empty = np.zeros((0, 2), np.float32)
  return [records_lib.FaceRecord(image_path=p, landmarks=empty) for p in paths]


def make_pretrain_loader(records, *, batch_size: int, seed: int = 0,
                         mode: str = "center", margin: float = 1.25,
                         num_workers: int = 0,
                         rrc_scale: Tuple[float, float] = (0.2, 1.0),
                         shard_index: Optional[int] = None,
                         shard_count: Optional[int] = None,
                         num_epochs: Optional[int] = None) -> grain.DataLoader:
  """Image-only MAE pretraining batches `{"image": uint8 [B, 96, 96, 3]}`.

  Each image is cropped with `sce_crop(mode)` ("dve_celeba", "points" with
  the records' landmarks, or "center" for unlabelled frames, see
  `image_records`), then random-resized-cropped and flipped. Undecodable
  images are replaced by the next record and logged (no `decode_failed` key
  in this image-only batch; the warning names the file).
  """
  config = SceConfig(mode=mode, margin=float(margin), rrc_scale=tuple(rrc_scale))
  make = _PretrainMake(config)

  def factory(recs):
    return _PretrainTransform(recs, make)

  return _build_loader(records, factory, train=True, batch_size=batch_size,
                       seed=seed, num_workers=num_workers, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count,
                       worker_buffer_size=2)


class _PretrainTransform(_SampleTransform):

  def __init__(self, records, make):
    super().__init__(records, make, make.empty, train=True)

  def random_map(self, element, rng):
    sample = super().random_map(element, rng)
    sample.pop("decode_failed", None)
    return sample

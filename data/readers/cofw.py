"""COFW (Caltech Occluded Faces in the Wild), colour version: 29 points.

Where the data comes from: http://www.vision.caltech.edu/xpburgos/ICCV13/
(`COFW_color.zip`: `COFW_train_color.mat`, 1,345 faces, and
`COFW_test_color.mat`, 507 faces; Burgos-Artizzu et al., ICCV 2013).

Expected layout under `root`:

  root/COFW_train_color.mat
  root/COFW_test_color.mat

The files are MATLAB v7.3, i.e. HDF5, read with h5py. MATLAB stores arrays
column-major, so h5py sees every array with its axes reversed:

  IsTr / IsT          (1, N) object references, each to a uint8 image stored
                      as (3, W, H) for colour or (W, H) for grey -> transposed
                      to (H, W, 3) / (H, W);
  phisTr / phisT      (87, N): per face 29 x, then 29 y, then 29 occlusion flags
                      (1 = occluded);
  bboxesTr / bboxesT  (4, N): per face x, y, w, h.

This layout is the one public loaders rely on: HRNet
(HRNet/HRNet-Facial-Landmark-Detection lib/datasets/cofw.py) takes
`phisTr[i][0:58].reshape(2, -1).T` as the points after `hdf5storage.loadmat`
(which undoes the transposition), and PIPNet (jhb86253817/PIPNet
lib/preprocess.py) reads `bboxesT` as `x_min, y_min, width, height`.

Pixel convention. The set ships as MATLAB files, but no documentation we
could find says whether the points are 1-based, and no public loader we read
shifts them: HRNet and PIPNet use `phis` as written (HRNet handles COFW
exactly like its WFLW/300W tables); the ADNet/STAR COFW metadata are downloads
made by no public script, so their convention cannot be read from code. The
one difference in public code: STAR flips COFW points with `x -> w - x` but
68/98-point sets with `x -> w - 1 - x` (ZhenglinZhou/STAR
lib/dataset/augmentation.py, `Flip`). We therefore use the values as written
by default, which reproduces the public loaders; `one_based=True` subtracts 1
from the points and the box corner for users who want the MATLAB reading
(NME is unaffected when ground truth and training targets share the
convention).

Images stay inside the .mat: records carry a `CofwImageLoader` (a picklable
module-level class holding the file path, the image dataset name and index;
it opens the file lazily in whichever process decodes the image).

Label sanity (`sanity`, common.SANITY_MODES, default "skip"): the per-face
checks of data/sanity.py (points inside the image, mouth below the eye line);
not the per-set position/scale test (faces anywhere in arbitrary photos).
Image sizes come from the image datasets' shapes, without decoding.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, Tuple

import numpy as np

from data import records as records_lib
from data.readers import common
from training import errors

NAME = "cofw"
NUM_POINTS = 29
SPLITS = ("train", "test")
KEYS = {"train": ("IsTr", "phisTr", "bboxesTr"), "test": ("IsT", "phisT",
                                                          "bboxesT")}
FILES = {"train": "COFW_train_color.mat", "test": "COFW_test_color.mat"}
SOURCE = "http://www.vision.caltech.edu/xpburgos/ICCV13/ (COFW_color.zip)"
LAYOUT = """\
  root/COFW_train_color.mat   (MATLAB v7.3 / HDF5: IsTr, phisTr, bboxesTr)
  root/COFW_test_color.mat    (IsT, phisT, bboxesT)
"""

# One open h5py file per (process, path): handles are not picklable, so the
# loader keeps only the path and opens lazily in the process that decodes.
_OPEN_FILES: Dict[tuple, object] = {}
_LOCK = threading.Lock()


def _open(path: str):
  import h5py  # pylint: disable=g-import-not-at-top
  key = (os.getpid(), path)
  with _LOCK:
    if key not in _OPEN_FILES:
      _OPEN_FILES[key] = h5py.File(path, "r")
    return _OPEN_FILES[key]


def read_image(path: str, images_key: str, index: int) -> np.ndarray:
  """Decodes image `index` of `images_key` in a COFW .mat: `[H, W(, 3)]`.

  Raises:
    ValueError: naming the file and image, for whatever h5py raises on a
      truncated or corrupt file (OSError, KeyError, RuntimeError, ...): the
      input pipeline reports a ValueError by path and goes on.
  """
  try:
    f = _open(path)
    reference = f[images_key][()].reshape(-1)[index]
    data = np.asarray(f[reference][()])
  except Exception as e:  # h5py raises many types for broken files.
    raise ValueError(f"cannot read image {index} of {images_key} in {path!r} "
                     f"({type(e).__name__}: {e})") from e
  if data.ndim not in (2, 3):
    raise ValueError(f"image {index} of {images_key} in {path!r} has shape "
                     f"{data.shape}, expected (3, W, H) or (W, H)")
  return np.transpose(data)  # MATLAB column-major -> [H, W(, 3)]


def image_size(f, reference) -> Tuple[int, int]:
  """`(width, height)` of the image `reference` points to in the open .mat.

  The dataset is stored `(3, W, H)` or `(W, H)` (module docstring).
  """
  shape = f[reference].shape
  if len(shape) not in (2, 3):
    raise ValueError(f"image dataset of shape {shape}, expected (3, W, H) or "
                     "(W, H)")
  return int(shape[-2]), int(shape[-1])


def _box(xywh: np.ndarray) -> np.ndarray:
  """`x, y, w, h` -> corners, in float64 (no float32 overflow to check)."""
  x, y, w, h = np.asarray(xywh, np.float64)
  return np.array([x, y, x + w, y + h])


class CofwImageLoader:
  """Picklable image loader for a record whose image is inside a COFW .mat."""

  def __init__(self, path: str, images_key: str, index: int):
    self.path = path
    self.images_key = images_key
    self.index = int(index)

  def __call__(self, record=None) -> np.ndarray:
    return read_image(self.path, self.images_key, self.index)

  def __eq__(self, other):
    return (isinstance(other, CofwImageLoader) and
            (self.path, self.images_key, self.index) ==
            (other.path, other.images_key, other.index))

  def __repr__(self):
    return f"CofwImageLoader({self.path!r}, {self.images_key!r}, {self.index})"


def read(root: str, split: str, *, check_images: str = "exists",
         one_based: bool = False,
         sanity: str = "skip") -> common.DatasetListing:
  """Lists COFW faces of `split` ("train" or "test").

  Args:
    root: folder with `COFW_{train,test}_color.mat`.
    split: one of `SPLITS`.
    check_images: see `common.IMAGE_CHECKS`; "decode" decodes every image
      from the .mat ("verify" checks as "exists": the images are inside it).
    one_based: subtract 1 from points and box corner (module docstring).
    sanity: see `common.SANITY_MODES`.
  """
  import h5py  # pylint: disable=g-import-not-at-top
  common.check_split(NAME, split, SPLITS)
  common.check_image_mode(check_images)
  common.check_sanity_mode(sanity)
  common.require(root, NAME, LAYOUT, SOURCE)
  path = common.require(os.path.join(root, FILES[split]), NAME, LAYOUT, SOURCE)
  images_key, phis_key, boxes_key = KEYS[split]
  log = common.ProblemLog(NAME)
  problem = common.file_problem(path)
  if problem is not None:
    raise errors.UserError(f"{NAME}: cannot read {path!r}: it {problem}")
  try:
    with h5py.File(path, "r") as f:
      missing = [k for k in KEYS[split] if k not in f]
      if missing:
        raise errors.UserError(f"{NAME}: {path!r} lacks {missing}; expected "
                               "the colour COFW files (MATLAB v7.3)")
      phis = np.asarray(f[phis_key][()], np.float64)
      boxes = np.asarray(f[boxes_key][()], np.float64)
      references = np.asarray(f[images_key][()]).reshape(-1)
      sizes, size_errors = [], {}
      for i, ref in enumerate(references):
        try:
          sizes.append(image_size(f, ref))
        except Exception as e:  # h5py: a dangling or corrupt reference.
          sizes.append(None)
          size_errors[i] = f"{type(e).__name__}: {e}"
  except errors.UserError:
    raise
  except Exception as e:  # h5py raises OSError, KeyError, RuntimeError...
    raise errors.UserError(
        f"{NAME}: cannot open {path!r} as HDF5 (MATLAB v7.3): "
        f"{type(e).__name__}: {e}. Expected layout:\n{LAYOUT}") from e
  if phis.ndim != 2 or phis.shape[0] != 3 * NUM_POINTS:
    raise errors.UserError(
        f"{NAME}: {path}:{phis_key} has shape {phis.shape}, expected "
        f"({3 * NUM_POINTS}, N): 29 x, 29 y, 29 occlusion flags per face")
  num = phis.shape[1]
  num_images = references.size
  if boxes.shape != (4, num) or num_images != num:
    raise errors.UserError(
        f"{NAME}: {path}: {num} faces in {phis_key} but {boxes_key} "
        f"{boxes.shape} and {num_images} images")
  shift = 1.0 if one_based else 0.0
  records, where, record_sizes = [], [], []
  for i in range(num):
    if i in size_errors:
      log.add(path, f"image {i}: cannot read its image dataset "
              f"({size_errors[i]})")
      continue
    x, y, occluded = np.split(phis[:, i], 3)
    landmarks = np.stack([x, y], axis=-1) - shift
    if not common.check_face(log, path, None, landmarks,
                             image=f"{path}[{i}]", box=_box(boxes[:, i]),
                             size=sizes[i]):
      continue
    box = common.xywh_to_box(boxes[:, i]) - np.float32(shift)
    loader = CofwImageLoader(path, images_key, i)
    if check_images == "decode":
      try:
        records_lib.as_rgb_uint8(loader(), f"{path}[{images_key}][{i}]")
      except Exception as e:  # h5py/numpy raise many types for broken data.
        log.add(path, f"image {i}: cannot decode ({type(e).__name__}: {e})")
        continue
    records.append(common.make_record(
        path, landmarks, visible=occluded == 0,
        box=box, subset=split, image_key=i,
        image_loader=loader))
    where.append((path, None))
    record_sizes.append(sizes[i])
  records = common.apply_sanity(records, where, log, sanity, set_checks=False,
                                sizes=record_sizes)
  return common.DatasetListing(records, log.problems, NAME, split)

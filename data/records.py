"""The one record schema every dataset reader yields.

A `FaceRecord` describes one annotated face. Readers never decode images while
listing a dataset: `record.load_image()` decodes on demand (in grain workers), so
records are cheap, picklable and can be listed for 100k-image sets in seconds.

Conventions (all readers):
  * `landmarks` are `(x, y)` in pixels of the original image, origin top-left,
    pixel centres at integer coordinates, float32 `[N, 2]`.
  * `visible[i]` is True where point i is visible; sets with occlusion flags
    (COFW, WFLW's occlusion attribute is per face, not per point) fill it, others
    leave all True.
  * `box` is `(x_min, y_min, x_max, y_max)` in the same pixels, or None.
  * `center`/`scale` follow the ADNet/STAR metadata: the face box is
    `200 * scale` pixels wide and `center` maps to the crop centre; None when the
    set does not provide them (the crop derives them from the box or the points).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Mapping, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class FaceRecord:
  """One face: where its image is, its landmarks and what else the set annotates.

  Attributes:
    image_path: path of the source image file (for container formats such as
      COFW's .mat, the container path; `image_key` then says which image).
    landmarks: float32 `[N, 2]`, `(x, y)` original pixels.
    visible: bool `[N]`, True where the point is visible.
    box: float32 `[4]` `(x_min, y_min, x_max, y_max)` or None.
    center: float32 `[2]` `(cx, cy)` or None.
    scale: face box width / 200, or None.
    attributes: named per-face flags, e.g. WFLW's pose/expression/... (0/1).
    subset: the split or subset the face belongs to ("train", "common", ...).
    image_key: index/key of the image inside a container file, or None.
    image_loader: a picklable callable `(record) -> uint8 [H, W, 3]` RGB used by
      `load_image`; None means "decode `image_path` with Pillow".
  """

  image_path: str
  landmarks: np.ndarray
  visible: Optional[np.ndarray] = None
  box: Optional[np.ndarray] = None
  center: Optional[np.ndarray] = None
  scale: Optional[float] = None
  attributes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  subset: str = ""
  image_key: Any = None
  image_loader: Any = None

  @property
  def num_points(self) -> int:
    return int(self.landmarks.shape[0])

  def load_image(self) -> np.ndarray:
    """Decodes the image: uint8 `[H, W, 3]` RGB (grey images are expanded)."""
    if self.image_loader is not None:
      image = self.image_loader(self)
    else:
      image = decode_image_file(self.image_path)
    return as_rgb_uint8(image, self.image_path)


def decode_image_file(path: str) -> np.ndarray:
  """Decodes an image file with Pillow; raises ValueError naming the file."""
  return decode_image_file_reduced(path, 1)[0]


def decode_image_file_reduced(path: str, reduction: int):
  """(pixels, r): a JPEG decoded at 1 / `reduction` scale by libjpeg's DCT
  scaling (`Image.draft`; r = the reduction PIL achieved), any other file,
  or a JPEG PIL cannot draft, at full size (r = 1).

  Raises ValueError naming the file (corrupt, or too large: Pillow only
  warns between its pixel limit and twice it, then decodes the whole image
  into memory; such an image is refused like a larger one, a face crop never
  needs 89M pixels); FileNotFoundError is passed through.
  """
  import warnings  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  got = 1
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path) as im:
        if reduction > 1 and im.format == "JPEG":
          w, h = im.size
          result = im.draft("RGB", (max(1, w // reduction),
                                    max(1, h // reduction)))
          if result is not None:
            got = int(round(w / result[1][2]))
        return np.asarray(im.convert("RGB")), got
  except FileNotFoundError:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ValueError(f"image too large to decode {path!r}: {e}") from e
  except Exception as e:  # Pillow raises many types for corrupt files.
    raise ValueError(f"cannot decode image {path!r}: {e}") from e


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
  """Returns `image` as uint8 `[H, W, 3]`; grey `[H, W]`/`[H, W, 1]` is repeated."""
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(
        f"{name}: expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], "
        f"got shape {image.shape}")
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  elif image.shape[-1] == 4:
    image = image[..., :3]
  if image.dtype != np.uint8:
    if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
      image = image * 255.0
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return image


def training_listing(records, with_labels: bool = True
                     ) -> list[tuple[str, str]]:
  """What a run trained on, for the checkpoint's data fingerprint.

  One `(key, label_hash)` per record, in the records' order: `key` is the
  image path relative to the common folder of all the records' paths (so a
  dataset moved or mounted elsewhere as a whole keeps its fingerprint), with
  `#<image_key>` for container formats and `@<n>` for the n-th further face
  of the same image; `label_hash` is the first 16 hex digits of the SHA-256
  of the landmarks, visibility, box, centre and scale (float32 bytes), or ""
  with `with_labels=False` (self-supervised runs: their training never reads
  the landmarks, and neither does their fingerprint).

  `training.fingerprint` hashes this listing and, on resume, says which
  files were added, removed or relabelled.
  """
  paths = [os.path.abspath(r.image_path) for r in records]
  root = ""
  if paths:
    root = os.path.commonpath(paths)
    if len(paths) == 1 or root in paths:
      root = os.path.dirname(root)
  seen: dict[str, int] = {}
  out = []
  for r, path in zip(records, paths):
    key = os.path.relpath(path, root) if root else path
    if r.image_key is not None:
      key += f"#{r.image_key}"
    n = seen.get(key, 0)
    seen[key] = n + 1
    if n:
      key += f"@{n}"
    label = ""
    if with_labels:
      h = hashlib.sha256()
      for part in (r.landmarks, r.visible, r.box, r.center, r.scale):
        if part is None:
          h.update(b"-")
        else:
          h.update(np.asarray(part, np.float32).tobytes())
          h.update(b"|")
      label = h.hexdigest()[:16]
    out.append((key, label))
  return out

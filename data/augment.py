"""STAR training augmentation: one affine warp, then texture changes.

Geometry (public STAR code, `lib/dataset/augmentation.py`), composed into the
crop matrix so the image is resampled once:

    image_to_crop = G o F o C

  * C: the crop (`transforms.crop_matrix`).
  * F: horizontal flip about the crop centre with probability `flip_prob`; the
    points are re-indexed with the scheme's flip permutation. The public code
    flips the original image and mirrors the crop centre; mirroring about the
    crop centre after cropping is the same map.
  * G: rotation N(0, 18 deg) and zoom N(1, 0.1) about the crop centre
    `((S-1)/2, (S-1)/2)`, then a shift N(0, 0.05 * (S - 1)) px per axis (the
    public code uses `align_corners=True` sizes, 0.05 * 255 px at 256).

Texture (in this order, each with its own probability, as the public code):
occlusion rectangle (0.4), box blur (0.3), gamma (0.2), noise blend (0.2),
grey (0.2). Magnitudes as the public code:
  * occlusion: black rectangle, height ratio rh ~ U(0.2, 0.8), width ratio
    rh - 0.2 + U(0, 0.4), sides S/2 * ratio, centre uniform in the crop.
  * blur: k x k box filter, k = int(S * U(0, 0.05)), only when k > 1
    (borders reflected without repeating the edge, as cv2.blur).
  * gamma: U(0.25, 1) or U(1, 4) with equal chance; `floor(255 (x/255)^g)`.
  * noise: `floor((1 - a) x + a n)` with n uniform uint8 noise, a ~ U(0, 0.5).
  * grey: ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B), repeated to 3
    channels. (The public code converts its BGR array with RGB2GRAY, i.e. with
    the R and B weights swapped; we use the right weights for RGB.)

Everything is drawn from a `numpy.random.Generator`, so one seed gives one
output (the pipeline derives the generator from (seed, epoch, index)).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from data import schemes as schemes_lib
from data import transforms


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Probabilities and magnitudes (defaults: the public STAR code)."""
  flip_prob: float = 0.5
  shift_sigma: float = 0.05      # x (S - 1) px
  rotate_sigma_deg: float = 18.0
  scale_sigma: float = 0.1
  occlusion_prob: float = 0.4
  blur_prob: float = 0.3
  blur_max_ratio: float = 0.05   # kernel <= S * ratio
  gamma_prob: float = 0.2
  noise_prob: float = 0.2
  noise_max_alpha: float = 0.5
  gray_prob: float = 0.2

  @classmethod
  def from_mapping(cls, config: Optional[Mapping[str, Any]]) -> "AugmentConfig":
    """From a dict / ConfigDict (unknown keys are an error); None -> defaults."""
    if config is None:
      return cls()
    if isinstance(config, cls):
      return config
    config = dict(config.items()) if hasattr(config, "items") else dict(config)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
      raise ValueError(f"unknown augmentation keys {unknown}; known: {sorted(known)}")
    out = cls(**{k: float(v) for k, v in config.items()})
    for f in dataclasses.fields(out):
      v = getattr(out, f.name)
      if f.name.endswith("_prob") and not 0.0 <= v <= 1.0:
        raise ValueError(f"{f.name} must be in [0, 1], got {v}")
      if v < 0:
        raise ValueError(f"{f.name} must be >= 0, got {v}")
    return out


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------- geometry --


def sample_geometry(rng: np.random.Generator, crop_size: int,
                    config: AugmentConfig, can_flip: bool = True):
  """Draws the crop-space map `G o F`.

  Returns:
    (matrix [2, 3] crop -> augmented crop, flipped: bool).
  """
  c = (crop_size - 1) / 2.0
  flipped = bool(can_flip and rng.random() < config.flip_prob)
  f = transforms.hflip_about(crop_size) if flipped else np.eye(3)[:2]
  shift = rng.normal(0.0, config.shift_sigma, size=2) * (crop_size - 1)
  angle = rng.normal(0.0, np.deg2rad(config.rotate_sigma_deg))
  zoom = rng.normal(1.0, config.scale_sigma)
  g = transforms.similarity_about((c, c), angle, zoom, shift)
  return transforms.compose(g, f), flipped


def augment_geometry(image: np.ndarray, landmarks: np.ndarray,
                     visible: np.ndarray, image_to_crop: np.ndarray,
                     crop_size: int, scheme: Optional[schemes_lib.LandmarkScheme],
                     rng: np.random.Generator, config: AugmentConfig,
                     antialias: bool = False):
  """Flip + similarity composed with the crop; one bilinear warp.

  Args:
    image: uint8 `[H, W, 3]` original image.
    landmarks: `[N, 2]` original pixels.
    visible: bool `[N]`.
    image_to_crop: `[2, 3]` the plain crop map.
    crop_size: S.
    scheme: gives the flip permutation; None disables flipping.
    rng: numpy Generator.
    config: AugmentConfig.
    antialias: transforms.warp_affine's box pre-reduction (data.antialias).

  Returns:
    (crop uint8 [S, S, 3], landmarks float32 [N, 2] crop px (flip-permuted),
     visible bool [N] (permuted), image_to_crop float64 [2, 3]).
  """
  if scheme is not None and scheme.num_points != landmarks.shape[0]:
    raise ValueError(f"scheme {scheme.name} has {scheme.num_points} points, "
                     f"landmarks have {landmarks.shape[0]}")
  geo, flipped = sample_geometry(rng, crop_size, config, scheme is not None)
  m = transforms.compose(geo, image_to_crop)
  crop = transforms.warp_affine(image, m, crop_size, antialias)
  points = transforms.apply_affine(m, landmarks)
  visible = np.asarray(visible, bool)
  if flipped:
    perm = np.asarray(scheme.flip_permutation)
    points, visible = points[perm], visible[perm]
  return crop, points.astype(np.float32), visible, m


# ----------------------------------------------------------------- texture --


def occlude(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Black rectangle (public `add_occ`)."""
  h, w = image.shape[:2]
  rh = 0.2 + 0.6 * rng.random()
  rw = rh - 0.2 + 0.4 * rng.random()
  cx = int((w - 1) * rng.random())
  cy = int((h - 1) * rng.random())
  dh, dw = int(h / 2 * rh), int(w / 2 * rw)
  x0, y0 = max(0, cx - dw // 2), max(0, cy - dh // 2)
  x1, y1 = min(w - 1, cx + dw // 2), min(h - 1, cy + dh // 2)
  image = image.copy()
  image[y0:y1 + 1, x0:x1 + 1] = 0
  return image


def box_blur(image: np.ndarray, k: int) -> np.ndarray:
  """k x k mean filter, anchor k // 2, reflect-101 borders, rounded (cv2.blur).

  scipy's `uniform_filter` with mode "mirror" is the same window and border
  rule (the tests check it against a direct float64 loop).
  """
  if k <= 1:
    return image
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  area = k * k
  mean = ndimage.uniform_filter(image.astype(np.float32), size=(k, k, 1),
                                mode="mirror")
  total = np.rint(mean * area)  # the exact integer window sum
  # total / area is exact at ties (n + 0.5), and rint rounds half to even as
  # cv2's cvRound.
  return np.rint(total / np.float32(area)).astype(np.uint8)


def blur(image: np.ndarray, rng: np.random.Generator,
         max_ratio: float) -> np.ndarray:
  """Box blur with a random kernel (public `add_blur`)."""
  k = int((image.shape[0] + image.shape[1]) / 2 * max_ratio * rng.random())
  return box_blur(image, k)


def gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Random gamma in [0.25, 1) or [1, 4) (public `add_gamma`)."""
  if rng.random() < 0.5:
    g = 0.25 + 0.75 * rng.random()
  else:
    g = 1.0 + 3.0 * rng.random()
  table = ((np.arange(256) / 255.0) ** g * 255.0).astype(np.uint8)
  return table[image]


def noise_blend(image: np.ndarray, rng: np.random.Generator,
                max_alpha: float) -> np.ndarray:
  """Blend with uniform uint8 noise (public `add_nose_fusion`)."""
  noise = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
  alpha = max_alpha * rng.random()
  out = (1.0 - alpha) * image + alpha * noise
  return out.astype(np.uint8)


def to_gray(image: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma of RGB, rounded, as 3 equal channels."""
  y = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
  return np.repeat(y[..., None], 3, axis=-1)


def augment_texture(image: np.ndarray, rng: np.random.Generator,
                    config: AugmentConfig) -> np.ndarray:
  """Occlusion, blur, gamma, noise, grey, each with its probability."""
  if rng.random() < config.occlusion_prob:
    image = occlude(image, rng)
  if rng.random() < config.blur_prob:
    image = blur(image, rng, config.blur_max_ratio)
  if rng.random() < config.gamma_prob:
    image = gamma(image, rng)
  if rng.random() < config.noise_prob:
    image = noise_blend(image, rng, config.noise_max_alpha)
  if rng.random() < config.gray_prob:
    image = to_gray(image)
  return image


def augment(image: np.ndarray, landmarks: np.ndarray, visible: np.ndarray,
            image_to_crop: np.ndarray, crop_size: int,
            scheme: Optional[schemes_lib.LandmarkScheme],
            rng: np.random.Generator, config: AugmentConfig,
            antialias: bool = False):
  """The full STAR training augmentation of one face (geometry, then texture).

  Returns the same tuple as `augment_geometry`.
  """
  crop, points, visible, m = augment_geometry(
      image, landmarks, visible, image_to_crop, crop_size, scheme, rng, config,
      antialias)
  return augment_texture(crop, rng, config), points, visible, m

"""Face crops as 2x3 affine maps, warped once with PIL's bilinear sampler.

Coordinates (README "Conventions"): `(x, y)` pixels, origin top-left, pixel
centres at integer coordinates, in the original image and in the crop alike.
Every crop is an affine map `image_to_crop` `[2, 3]` (`p_crop = A p + t`); its
inverse `crop_to_image` maps predictions back to original pixels exactly.

Crop convention (public STAR code, `GetCropMatrix` with `align_corners=True`):
the face box is `200 * scale` px wide, so the zoom is `k = S / (200 * scale)`,
and the centre `(cx, cy)` maps to the crop centre `((S - 1) / 2, (S - 1) / 2)`,
i.e. the midpoint between the two middle pixel centres of an even crop:

    x_crop = k * (x - cx) + (S - 1) / 2,   y_crop = k * (y - cy) + (S - 1) / 2.

Where the centre and scale come from (`crop_mode`):
  * "center_scale": the record's `center`/`scale` (ADNet/STAR metadata).
  * "box": `scale = min(w, h) / 200 * 1.05`, centre = box centre (public code).
  * "points": for sets without boxes (yt68, 300W-style): the box is the
    landmarks' min/max; centre = its centre, `scale = max(w, h) / 200 *
    points_margin` with `points_margin = 1.25` by default. The landmark box has
    no forehead, so the margin keeps the whole face plus some context in the
    crop under the training rotations (N(0, 18 deg)) and zooms (N(1, 0.1)).
  * "auto": center_scale if the record has it, else box, else points.

Warping: PIL's `Image.transform(AFFINE, BILINEAR)` evaluates the output at
pixel centres `(i + 0.5, j + 0.5)` in a corner-origin frame and its bilinear
filter subtracts 0.5 again, i.e. PIL puts pixel centres at half-integers. We
convert our integer-centre matrix to that frame (`_pil_affine_coefficients`),
so a dot at a landmark lands exactly at the transformed landmark (tested).
Outside the image the crop is black (as cv2's `borderValue=0` in the public
code); no antialiasing when zooming out (as `cv2.warpPerspective`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from training import errors

BOX_SCALE_FACTOR = 1.05
POINTS_MARGIN = 1.25
CROP_MODES = ("auto", "center_scale", "box", "points")


# ----------------------------------------------------------------- matrices --


def to_3x3(m: np.ndarray) -> np.ndarray:
  """`[2, 3]` affine -> `[3, 3]` homogeneous (float64)."""
  m = np.asarray(m, np.float64)
  if m.shape == (3, 3):
    return m
  if m.shape != (2, 3):
    raise ValueError(f"expected an affine matrix [2, 3] or [3, 3], got {m.shape}")
  return np.concatenate([m, [[0.0, 0.0, 1.0]]], axis=0)


def invert_affine(m: np.ndarray) -> np.ndarray:
  """Inverse of a `[2, 3]` affine map (float64 `[2, 3]`)."""
  m = np.asarray(m, np.float64)
  a = m[:, :2]
  det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
  if not np.isfinite(det) or abs(det) < 1e-12:
    raise ValueError(f"affine map is not invertible (det {det}): {m.tolist()}")
  a_inv = np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]]) / det
  return np.concatenate([a_inv, -a_inv @ m[:, 2:]], axis=1)


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Maps `[..., 2]` points with a `[2, 3]` (or `[3, 3]`) affine map."""
  m = np.asarray(m, np.float64)
  points = np.asarray(points, np.float64)
  return points @ m[:2, :2].T + m[:2, 2]


def crop_matrix(center, scale: float, crop_size: int) -> np.ndarray:
  """Image -> crop `[2, 3]`: `center` to the crop centre, face box 200*scale px."""
  if not scale or not np.isfinite(scale) or scale <= 0:
    raise ValueError(f"crop scale must be a positive number, got {scale!r}")
  cx, cy = (float(v) for v in np.asarray(center).reshape(2))
  k = crop_size / (200.0 * float(scale))
  c = (crop_size - 1) / 2.0
  return np.array([[k, 0.0, c - k * cx], [0.0, k, c - k * cy]])


def similarity_about(center, angle: float = 0.0, zoom: float = 1.0,
                     shift=(0.0, 0.0)) -> np.ndarray:
  """`[2, 3]` map rotating by `angle` (rad) and zooming about `center`, then shifting.

  `p' = zoom * R(angle) (p - center) + center + shift` with
  `R = [[cos, -sin], [sin, cos]]` (the public code's `_compose_rotate_and_scale`
  with from_center = to_center); in image coordinates (y down) a positive angle
  turns clockwise on screen.
  """
  cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
  cx, cy = center
  a = np.array([[cos, -sin], [sin, cos]])
  t = np.array([cx, cy]) - a @ np.array([cx, cy]) + np.asarray(shift, np.float64)
  return np.concatenate([a, t[:, None]], axis=1)


def hflip_about(width: int) -> np.ndarray:
  """`[2, 3]` horizontal mirror of an image `width` px wide: x -> width - 1 - x."""
  return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def compose(*maps: np.ndarray) -> np.ndarray:
  """`compose(a, b, c)` = a o b o c (c applied first), as `[2, 3]`."""
  out = np.eye(3)
  for m in maps:
    out = out @ to_3x3(m)
  return out[:2]


# ------------------------------------------------------- centre and scale --


def center_scale_from_box(box, factor: float = BOX_SCALE_FACTOR
                          ) -> Tuple[np.ndarray, float]:
  """Public rule: `scale = min(w, h) / 200 * 1.05`, centre = box centre."""
  x0, y0, x1, y1 = (float(v) for v in np.asarray(box).reshape(4))
  w, h = x1 - x0, y1 - y0
  if not (w > 0 and h > 0):
    raise ValueError(f"face box (x_min, y_min, x_max, y_max) must have positive "
                     f"width and height, got {(x0, y0, x1, y1)}")
  return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), min(w, h) / 200.0 * factor


def center_scale_from_points(points, margin: float = POINTS_MARGIN,
                             visible: Optional[np.ndarray] = None
                             ) -> Tuple[np.ndarray, float]:
  """Box of the landmarks: centre = box centre, `scale = max(w, h)/200*margin`."""
  points = np.asarray(points, np.float64)
  if visible is not None and np.any(visible):
    points = points[np.asarray(visible, bool)]
  points = points[np.all(np.isfinite(points), axis=-1)]
  if points.shape[0] < 2:
    raise ValueError("need at least 2 finite landmarks to derive a face box")
  lo, hi = points.min(0), points.max(0)
  side = float(np.max(hi - lo))
  if side <= 0:
    raise ValueError(f"landmarks span no area (min {lo}, max {hi})")
  return (lo + hi) / 2, side / 200.0 * margin


def record_center_scale(record, crop_mode: str = "auto",
                        points_margin: float = POINTS_MARGIN
                        ) -> Tuple[np.ndarray, float]:
  """Centre and scale of a `FaceRecord` according to `crop_mode` (see module doc)."""
  if crop_mode not in CROP_MODES:
    raise errors.UserError(
        f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
  has_cs = record.center is not None and record.scale is not None
  if crop_mode == "center_scale" or (crop_mode == "auto" and has_cs):
    if not has_cs:
      raise ValueError(f"{record.image_path}: crop_mode 'center_scale' needs "
                       "record.center and record.scale; use 'box' or 'points'")
    return np.asarray(record.center, np.float64), float(record.scale)
  if crop_mode == "box" or (crop_mode == "auto" and record.box is not None):
    if record.box is None:
      raise ValueError(f"{record.image_path}: crop_mode 'box' needs record.box; "
                       "use 'points' for sets without boxes")
    return center_scale_from_box(record.box)
  return center_scale_from_points(record.landmarks, points_margin)


# ------------------------------------------------------------------ warping --


def _pil_affine_coefficients(image_to_crop: np.ndarray) -> Tuple[float, ...]:
  """PIL AFFINE data (crop -> image, half-integer pixel centres)."""
  inv = invert_affine(image_to_crop)  # crop -> image, integer centres
  a = inv[:, :2]
  # in_pil = in + 0.5, out_pil = out + 0.5:
  # in_pil = A (out_pil - 0.5) + t + 0.5.
  t = inv[:, 2] - a @ np.array([0.5, 0.5]) + 0.5
  return (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])


def reduction_factor(image_to_crop: np.ndarray) -> int:
  """Integer k for a box pre-reduction before a downscaling warp (1: none).

  The map's linear scale s (crop pixels per image pixel, sqrt |det|); for
  s < 1/2 the image is first averaged over k x k blocks, k = floor(1 / s), so
  the bilinear warp then samples at a ratio in (1/2, 1] and does not alias.
  """
  s = float(np.sqrt(abs(np.linalg.det(np.asarray(image_to_crop)[:, :2]))))
  return max(1, int(np.floor(1.0 / s))) if s > 0 else 1


def reduction_map(k: int) -> np.ndarray:
  """Reduced-image -> image pixels `[2, 3]` of PIL's `Image.reduce(k)`.

  Reduced pixel i averages image pixels k i ... k i + k - 1, so with pixel
  centres at integers its centre is at k i + (k - 1) / 2.
  """
  return np.array([[k, 0.0, (k - 1) / 2.0], [0.0, k, (k - 1) / 2.0]])


def warp_affine(image: np.ndarray, image_to_crop: np.ndarray,
                out_size, antialias: bool = False) -> np.ndarray:
  """Bilinear warp of uint8 `[H, W, C]` into `[S, S, C]` (or `(w, h)`), 0 outside.

  antialias: box-reduce the image first when the warp shrinks it more than
    2x (`reduction_factor`), so a large sharp face is averaged rather than
    point-sampled; the output geometry is the same map (`reduction_map`).
    Off by default, as the public code's cv2.warpAffine (config
    `data.antialias`).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if np.isscalar(out_size):
    out_size = (int(out_size), int(out_size))
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(f"warp_affine expects uint8 [H, W, C], got {image.dtype} "
                     f"{image.shape}")
  pil = Image.fromarray(image)
  m = np.asarray(image_to_crop, np.float64)
  k = reduction_factor(m) if antialias else 1
  if k > 1:
    pil = pil.reduce(k)
    m = compose(m, reduction_map(k))
  out = pil.transform(tuple(out_size), Image.Transform.AFFINE,
                      data=_pil_affine_coefficients(m),
                      resample=Image.Resampling.BILINEAR)
  return np.asarray(out)


def crop_face(image: np.ndarray, landmarks: np.ndarray, center, scale: float,
              crop_size: int, antialias: bool = False):
  """Crops a face without augmentation.

  Returns:
    (crop uint8 [S, S, 3], landmarks float32 [N, 2] in crop pixels,
     image_to_crop float64 [2, 3], crop_to_image float64 [2, 3]).
  """
  m = crop_matrix(center, scale, crop_size)
  crop = warp_affine(image, m, crop_size, antialias)
  return (crop, apply_affine(m, landmarks).astype(np.float32), m,
          invert_affine(m))

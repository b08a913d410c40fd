"""Draws a synthetic face: Pillow + NumPy pixels from the true points.

The face layer is drawn at twice the output size and box-filtered down; the
background is drawn at the output size. Layers: a skin polygon (jaw contour +
forehead), optional hair and neck, brows through the brow points, eyes (sclera,
iris, lash line through the eye points), a bridge line, tip highlight and
nostril curve for the nose, lips with the mouth interior; a lighting gradient
and a darker rim along the face boundary; a background with a colour gradient,
low-frequency texture, stripes and random clutter shapes; then blur and pixel
noise. Every landmark sits on a drawn feature (eye corners on the lash line,
contour points on the face edge), so the points are learnable from the image.

The image is always drawn from the TRUE points (never from the noisy
annotation), with draws from the face's appearance stream only.
"""

from __future__ import annotations

import dataclasses
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data import records
from data.synthetic import geometry as geometry_lib

_SUPERSAMPLE = 2


def _rand_colour(rng, lo=0, hi=255):
  return tuple(int(v) for v in rng.integers(lo, hi + 1, size=3))


_SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96],
    [160, 106, 70], [120, 78, 52], [90, 58, 40], [232, 190, 172]], np.float64)
_HAIR_TONES = np.array([
    [30, 22, 18], [70, 45, 30], [120, 85, 50], [200, 170, 110],
    [110, 40, 20], [150, 150, 150], [15, 15, 20]], np.float64)


def _background(rng, size: int) -> np.ndarray:
  """float32 `[size, size, 3]`: gradient + low-frequency texture + stripes."""
  base = rng.uniform(0, 255, size=3)
  coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
  gx, gy = rng.normal(0, 40, size=(2, 3)).astype(np.float32)
  img = (base.astype(np.float32)[None, None]
         + coords[None, :, None] * gx[None, None]
         + coords[:, None, None] * gy[None, None])
  cells = int(rng.integers(2, 9))
  low = rng.normal(0, rng.uniform(5, 45), size=(cells, cells, 3))
  low = np.clip(low + 128, 0, 255).astype(np.uint8)
  low = np.asarray(Image.fromarray(low).resize((size, size), Image.BILINEAR),
                   np.float32) - 128.0
  img = img + low
  if rng.uniform() < 0.4:  # Stripes / grating texture.
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.1, 0.6) * 8 / size
    ramp = np.arange(size, dtype=np.float32) * np.float32(freq)
    phase = (np.float32(np.cos(angle)) * ramp[None, :]
             + np.float32(np.sin(angle)) * ramp[:, None])
    amp = np.float32(rng.uniform(10, 40))
    img = img + (amp * np.sign(np.sin(phase)))[..., None]
  return img


def _draw_clutter(draw: ImageDraw.ImageDraw, rng, size: int):
  for _ in range(int(rng.integers(3, 13))):
    kind = rng.integers(4)
    colour = _rand_colour(rng)
    x0, y0 = rng.uniform(-0.2, 1.0, size=2) * size
    w, h = rng.uniform(0.05, 0.5, size=2) * size
    if kind == 0:
      draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
    elif kind == 1:
      draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    elif kind == 2:
      pts = rng.uniform(-0.1, 1.1, size=(int(rng.integers(3, 6)), 2)) * size
      draw.polygon([tuple(p) for p in pts], fill=colour)
    else:
      pts = rng.uniform(-0.1, 1.1, size=(2, 2)) * size
      draw.line([tuple(p) for p in pts], fill=colour,
                width=int(rng.integers(1, 5)))


def _hi(points: np.ndarray) -> List[Tuple[float, float]]:
  """Output pixels (centres at integers) -> supersampled canvas coordinates."""
  ss = _SUPERSAMPLE
  hp = np.asarray(points, np.float64) * ss + (ss - 1) / 2.0
  return [tuple(p) for p in hp]


def _shade(colour, factor):
  return tuple(min(255, max(0, int(c * factor))) for c in colour)


def render_geometry(geometry: geometry_lib.FaceGeometry, seed: int,
                    index: int, image_size: int) -> np.ndarray:
  """Draws `geometry` (true points) with the appearance of record `index`.

  Returns:
    uint8 `[image_size, image_size, 3]` RGB.
  """
  rng = geometry_lib.stream_rng(seed, index, geometry_lib.APPEARANCE)
  ss = _SUPERSAMPLE
  big = image_size * ss
  lm = geometry.landmarks
  unit = geometry.units_to_pixels * ss   # Pixels per face unit on the canvas.
  rot = geometry.rotation
  origin = geometry.translation

  def project(points3):  # Face units -> output pixels.
    return np.asarray(points3) @ rot[:2].T * geometry.units_to_pixels + origin

  # Background and clutter, directly at the output size.
  background = _background(rng, image_size)
  skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.85, 1.1, 3)
  skin = np.minimum(skin, 255.0)
  if np.linalg.norm(background.mean((0, 1)) - skin) < 60:
    background = 255.0 - background  # Keep the face separable from the wall.
  bg_img = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
  _draw_clutter(ImageDraw.Draw(bg_img), rng, image_size)

  # Face layer (flat colours) + its mask.
  skin_c = tuple(int(v) for v in skin)
  face_img = Image.new("RGB", (big, big), skin_c)
  mask = Image.new("L", (big, big), 0)
  draw = ImageDraw.Draw(face_img)
  mdraw = ImageDraw.Draw(mask)
  outline = _hi(geometry.outline)

  if rng.uniform() < 0.8:  # Neck (in shadow) below the jaw.
    neck_w = rng.uniform(0.45, 0.6)
    neck_top = project([[-neck_w, 0.5, -0.3], [neck_w, 0.5, -0.3]])
    down = project([[0, 3.0, -0.3]]) - project([[0, 0.5, -0.3]])
    neck = np.concatenate([neck_top, neck_top[::-1] + down], 0)
    neck_pts = _hi(neck)
    draw.polygon(neck_pts, fill=_shade(skin_c, rng.uniform(0.55, 0.75)))
    mdraw.polygon(neck_pts, fill=255)
  draw.polygon(outline, fill=skin_c)
  mdraw.polygon(outline, fill=255)
  # Face-only mask for the rim shading (without the neck).
  face_mask = Image.new("L", (big, big), 0)
  ImageDraw.Draw(face_mask).polygon(outline, fill=255)

  hair = _HAIR_TONES[rng.integers(len(_HAIR_TONES))] * rng.uniform(0.8, 1.2, 3)
  hair_c = tuple(min(255, int(v)) for v in hair)
  if rng.uniform() < 0.75:  # Hair over the top of the head.
    hairline_y = rng.uniform(-0.95, -0.6)
    start = int(rng.integers(1, 3))
    end = 17 + geometry_lib.NUM_FOREHEAD - start + 1
    top = geometry.outline[17 + start - 1:end]
    xs = np.linspace(-0.7, 0.7, 7)
    line3 = np.stack([xs, hairline_y + 0.15 * xs ** 2, -0.1 - 0.3 * xs ** 2],
                     -1)
    hair_poly = np.concatenate([top, project(line3)], 0)
    draw.polygon(_hi(hair_poly), fill=hair_c)

  # Brows and lash lines are always clearly darker than the skin.
  brow_c = _shade(hair_c, rng.uniform(0.6, 1.0)) if rng.uniform() < 0.7 else (
      _shade(skin_c, rng.uniform(0.3, 0.5)))
  brow_c = tuple(min(b, int(0.55 * s)) for b, s in zip(brow_c, skin_c))
  brow_w = max(2, int(round(unit * rng.uniform(0.04, 0.07))))
  for sl in (slice(17, 22), slice(22, 27)):
    draw.line(_hi(lm[sl]), fill=brow_c, width=brow_w, joint="curve")

  # Eyes: sclera, iris (clipped to the eye), lash line through the points.
  sclera_c = _shade((235, 232, 225), rng.uniform(0.85, 1.05))
  iris_c = _rand_colour(rng, 20, 140)
  lash_c = tuple(min(h, int(0.35 * s))
                 for h, s in zip(_shade(hair_c, 0.5), skin_c))
  lash_w = max(2, int(round(unit * 0.03)))
  gaze = rng.uniform(-0.25, 0.25, size=2)
  for sl in (slice(36, 42), slice(42, 48)):
    eye = lm[sl]
    pts = _hi(eye)
    if geometry.params["eye_closure"] < 0.85:
      # Sclera + iris on a small layer over the eye's box, pasted through
      # the eye polygon (so the iris is clipped by the lids).
      hp = np.asarray(pts)
      x0, y0 = np.floor(hp.min(0)).astype(int) - 1
      x1, y1 = np.ceil(hp.max(0)).astype(int) + 2
      local = [(x - x0, y - y0) for x, y in pts]
      eye_mask = Image.new("L", (x1 - x0, y1 - y0), 0)
      ImageDraw.Draw(eye_mask).polygon(local, fill=255)
      layer = Image.new("RGB", (x1 - x0, y1 - y0), sclera_c)
      centre = (eye[0] + eye[3]) / 2 + gaze * (eye[3] - eye[0]) * np.array(
          [1.0, 0.2])
      r = 0.22 * np.linalg.norm(eye[3] - eye[0]) * ss
      cx, cy = _hi(centre[None])[0]
      cx, cy = cx - x0, cy - y0
      ldraw = ImageDraw.Draw(layer)
      ldraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=iris_c)
      ldraw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2],
                    fill=(10, 10, 10))
      face_img.paste(layer, (int(x0), int(y0)), eye_mask)
    draw.line(pts + pts[:1], fill=lash_c, width=lash_w, joint="curve")

  # Nose: bridge shading line, tip highlight, nostril curve and holes.
  draw.line(_hi(lm[27:31]), fill=_shade(skin_c, 0.8),
            width=max(1, int(round(unit * 0.025))))
  tip = _hi(lm[30:31])[0]
  rt = unit * 0.035
  draw.ellipse([tip[0] - rt, tip[1] - rt, tip[0] + rt, tip[1] + rt],
               fill=_shade(skin_c, 1.15))
  nostril_c = _shade(skin_c, 0.45)
  for a, b in ((31, 32), (34, 35)):
    c = _hi(((lm[a] + lm[b]) / 2)[None])[0]
    rx, ry = unit * 0.04, unit * 0.02
    draw.ellipse([c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry], fill=nostril_c)
  draw.line(_hi(lm[31:36]), fill=_shade(skin_c, 0.55),
            width=max(1, int(round(unit * 0.02))), joint="curve")

  # Lips and mouth.
  lip = (np.array(skin_c) * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.8, 1.1)
         + rng.normal(0, 10, 3))
  lip_c = tuple(min(255, max(0, int(v))) for v in lip)
  outer = _hi(lm[48:60])
  draw.polygon(outer, fill=lip_c)
  inner = _hi(lm[60:68])
  draw.polygon(inner, fill=(40, 15, 20))
  if geometry.params["mouth_open"] > 0.05 and rng.uniform() < 0.7:
    teeth = np.concatenate([lm[60:65], (lm[[64, 65, 66, 67, 60]]
                                        + 2 * lm[[64, 63, 62, 61, 60]]) / 3], 0)
    draw.polygon(_hi(teeth), fill=(225, 220, 205))
  mouth_line = _hi(lm[[60, 61, 62, 63, 64, 65, 66, 67, 60]])
  draw.line(mouth_line, fill=_shade(lip_c, 0.45),
            width=max(1, int(round(unit * 0.015))))
  draw.line(outer + outer[:1], fill=_shade(lip_c, 0.75), width=1)

  # Down to the output size (box filter = anti-aliasing), then lighting: a
  # linear gradient over the face and a darker rim along its edge.
  face_img, mask, face_mask = (im.reduce(ss) for im in (face_img, mask,
                                                        face_mask))
  unit_out = geometry.units_to_pixels
  rim = np.asarray(face_mask.filter(ImageFilter.BoxBlur(unit_out * 0.12)),
                   np.float32) / 255.0
  coords = (np.arange(image_size, dtype=np.float32) - image_size / 2) / (
      unit_out * 1.5)
  light = rng.normal(size=2)
  light = light / np.linalg.norm(light) * rng.uniform(0.0, 0.35)
  gain = (1.0 + light[0] * coords[None, :] + light[1] * coords[:, None])
  gain = gain * (0.6 + 0.4 * rim) * rng.uniform(0.8, 1.15)
  alpha = np.asarray(mask, np.float32) / 255.0
  background = np.asarray(bg_img, np.float32)
  canvas = background + (np.asarray(face_img, np.float32) * gain[..., None]
                         - background) * alpha[..., None]
  out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
  if rng.uniform() < 0.5:
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
  image = np.asarray(out, np.float32)
  sigma = np.float32(rng.uniform(0.0, 8.0))
  image = image + rng.standard_normal(image.shape, np.float32) * sigma
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_face(seed: int, index: int,
                image_size: int = 128) -> Tuple[np.ndarray, np.ndarray]:
  """Renders face `index` of `seed`.

  Returns:
    `(image, landmarks)`: uint8 `[S, S, 3]` RGB and the TRUE float32 `[68, 2]`
    `(x, y)` pixels (no annotation noise).
  """
  geometry_lib.check_image_size(image_size)
  geometry = geometry_lib.face_geometry(seed, index, image_size)
  return render_geometry(geometry, seed, index, image_size), geometry.landmarks


# ------------------------------------------------------------- image loader


@dataclasses.dataclass(frozen=True)
class SyntheticImageLoader:
  """Picklable `FaceRecord.image_loader`: renders record `record.image_key`."""

  seed: int
  image_size: int

  def __call__(self, record: records.FaceRecord) -> np.ndarray:
    index = int(record.image_key)
    return render_geometry(
        geometry_lib.face_geometry(self.seed, index, self.image_size),
        self.seed, index, self.image_size)

"""Procedural 68-point faces: the data set that needs no download.

A face is a small parametric 3-D model written for this project (not fitted to
any data set): identity parameters (face width, chin length, jaw squareness, eye
spacing and size, brow height and arch, nose length/width/protrusion, mouth
width and lips, a small asymmetric jitter), expression parameters (mouth open,
smile, brow raise, eye closure) and a pose (yaw +-40, pitch +-20, roll +-25
degrees), projected with weak perspective (scale + translation). Points are in
the iBUG/300W 68-point order:

  0-16 jaw contour (0 on the image left), 17-21 brow on the image left,
  22-26 brow on the image right, 27-30 nose bridge down to the tip, 31-35 lower
  nose (nostrils), 36-41 eye on the image left (36 outer corner, clockwise),
  42-47 eye on the image right (45 outer corner), 48-59 outer lips (48, 54
  corners), 60-67 inner lips.

The contour points 0-16 are silhouette points, as annotators place them: each
one is the extreme point, in the image, of a 3-D "meridian" ellipse of the head
through the frontal contour point, so under yaw the contour slides onto the
visible face boundary instead of folding behind the cheek.

The image is drawn from the true points with Pillow + NumPy (the face layer at
twice the size and box-filtered down, the background at the output size): a
skin polygon (jaw contour + forehead), optional hair
and neck, brows through the brow points, eyes (sclera, iris, lash line through
the eye points), a bridge line, tip highlight and nostril curve for the nose,
lips with the mouth interior; lighting gradient and a darker rim along the face
boundary; a background with a colour gradient, low-frequency texture, stripes
and random clutter shapes; then blur and pixel noise. Every landmark sits on a
drawn feature: eye corners on the lash line, contour points on the face edge.

`contour_noise` reproduces the "semantic ambiguity" of the STAR paper: the
stored annotation of each contour point is moved along the local contour
tangent (the position along the edge is ambiguous, the position across it is
not) by N(0, (contour_noise * IOD)^2), IOD = the distance between the outer eye
corners 36 and 45 in pixels (the 300W normaliser). `point_noise` adds isotropic
N(0, (point_noise * IOD)^2) to every coordinate of every point. The image is
always rendered from the true shape; only the stored landmarks carry noise.

Everything is a deterministic function of `(seed, index)`: separate random
streams for geometry, appearance and annotation noise, so the noise knobs never
change the image and the same record always renders the same pixels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data import records

NUM_POINTS = 68
CONTOUR = np.arange(17)
OUTER_EYE_CORNERS = (36, 45)
SUBSET = "synthetic"

_YAW_DEG = 40.0
_PITCH_DEG = 20.0
_ROLL_DEG = 25.0
_SUPERSAMPLE = 2
_NUM_FOREHEAD = 9  # Outline points over the top of the head (not landmarks).

# Random streams per (seed, index): never share one between geometry, appearance
# and annotation noise, so that changing one never changes the others.
_GEOMETRY, _APPEARANCE, _ANNOTATION = 0, 1, 2


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), int(index), stream])


# ------------------------------------------------------------------ geometry


@dataclasses.dataclass(frozen=True)
class FaceGeometry:
  """One posed face in image pixels.

  Attributes:
    landmarks: float32 `[68, 2]` true `(x, y)` pixels (centres at integers).
    outline: float32 `[17 + 9, 2]` the head outline: jaw contour (= landmarks
      0-16) then the forehead arc, a closed polygon.
    depth: float32 `[68]` depth of the feature points towards the camera
      (face units, larger = nearer); drawing order hints only.
    yaw, pitch, roll: pose in degrees.
    units_to_pixels: pixels per face unit (1 unit = frontal inter-ocular
      distance of the mean face).
    rotation: float32 `[3, 3]` head rotation.
    translation: float32 `[2]` image position of the face origin (mid-eyes).
    params: the identity and expression parameters (a dict of floats).
  """

  landmarks: np.ndarray
  outline: np.ndarray
  depth: np.ndarray
  yaw: float
  pitch: float
  roll: float
  units_to_pixels: float
  rotation: np.ndarray
  translation: np.ndarray
  params: dict


def _sample_params(rng: np.random.Generator) -> dict:
  """Identity (shape) and expression parameters; mean face at factor 1 / 0."""
  u = rng.uniform
  p = dict(
      # Identity.
      jaw_half_width=0.85 * u(0.9, 1.1),
      chin_length=1.32 * u(0.9, 1.1),
      jaw_square=u(2.0, 3.2),  # Superellipse exponent: 2 = ellipse.
      head_top=1.15 * u(0.9, 1.1),
      outer_eye=0.5 * u(0.95, 1.05),
      inner_eye=0.22 * u(0.85, 1.15),
      eye_upper=0.06 * u(0.8, 1.25),
      eye_lower=0.045 * u(0.8, 1.25),
      brow_y=-0.16 + u(-0.04, 0.04),
      brow_arch=0.11 * u(0.6, 1.4),
      nose_tip_y=0.44 * u(0.9, 1.1),
      nose_width=0.14 * u(0.8, 1.25),
      nose_depth=0.38 * u(0.8, 1.2),
      mouth_y=0.81 * u(0.93, 1.07),
      mouth_half_width=0.29 * u(0.85, 1.15),
      upper_lip=u(0.7, 1.3),
      lower_lip=u(0.7, 1.3),
      # Expression (0 = neutral).
      mouth_open=0.0 if u() < 0.5 else u(0.0, 0.3),
      smile=0.0 if u() < 0.6 else u(0.0, 1.0),
      brow_raise=u(-0.3, 1.0),
      eye_closure=0.0 if u() < 0.7 else u(0.0, 1.0),
  )
  return p


def _mirror(points: np.ndarray) -> np.ndarray:
  out = np.array(points, np.float64)
  out[..., 0] *= -1.0
  return out


def face_points_3d(params: dict, jitter: np.ndarray | None = None) -> np.ndarray:
  """The 68 frontal 3-D points (features 17-67; rows 0-16 are the frontal contour).

  Face units: 1 = frontal inter-ocular distance of the mean face; origin between
  the outer eye corners; x to the image right, y down, z towards the camera.

  Args:
    params: identity and expression parameters (`_sample_params`).
    jitter: optional `[68, 3]` offsets added to the feature points 17-67.

  Returns:
    float64 `[68, 3]`.
  """
  p = params
  pts = np.zeros((NUM_POINTS, 3))
  # Contour (frontal): the jaw part of the outline, at silhouette depth.
  pts[:17, :2] = _frontal_outline(p)[:17]
  pts[:17, 2] = _SILHOUETTE_Z

  # Brows 17-21 (outer -> inner), mirrored to 22-26 (inner -> outer).
  k = np.arange(5) / 4.0
  bx = -(0.66 - (0.66 - 0.20) * k)
  by = (p["brow_y"] - 0.06 * p["brow_raise"]
        - p["brow_arch"] * np.sin(np.pi * (0.15 + 0.75 * k)))
  bz = -0.08 + 0.08 * k
  brow = np.stack([bx, by, bz], -1)
  pts[17:22] = brow
  pts[22:27] = _mirror(brow[::-1])

  # Nose bridge 27-30 (top -> tip) and lower nose 31-35 (image left -> right).
  k = np.arange(4) / 3.0
  depth_scale = p["nose_depth"] / 0.38
  pts[27:31] = np.stack(
      [np.zeros(4), 0.02 + (p["nose_tip_y"] - 0.02) * k,
       0.06 + (p["nose_depth"] - 0.06) * k], -1)
  nostril_y = p["nose_tip_y"] + 0.10
  pts[31:36] = np.stack([
      p["nose_width"] * np.array([-1.0, -0.5, 0.0, 0.5, 1.0]),
      nostril_y + np.array([-0.01, 0.01, 0.02, 0.01, -0.01]),
      depth_scale * np.array([0.10, 0.17, 0.22, 0.17, 0.10])], -1)

  # Eyes: 36 outer, 37-38 upper lid, 39 inner, 40-41 lower lid.
  xo, xi = -p["outer_eye"], -p["inner_eye"]
  w = xi - xo
  closure = p["eye_closure"]
  up = p["eye_upper"] * (1.0 - closure) - 0.8 * p["eye_lower"] * closure
  low = p["eye_lower"]
  eye = np.array([
      [xo, 0.0, -0.10],
      [xo + w / 3, -up, -0.03],
      [xo + 2 * w / 3, -up, -0.02],
      [xi, 0.005, -0.05],
      [xo + 2 * w / 3, low, -0.03],
      [xo + w / 3, low, -0.04],
  ])
  pts[36:42] = eye
  pts[42:48] = _mirror(eye[[3, 2, 1, 0, 5, 4]])

  # Mouth: outer 48-59 (48 left corner, clockwise), inner 60-67.
  my, mw = p["mouth_y"], p["mouth_half_width"] / 0.29
  ul, ll = p["upper_lip"], p["lower_lip"]
  op, sm = p["mouth_open"], p["smile"]
  outer = np.array([
      [-0.29, 0.0, -0.02],
      [-0.19, -0.06 * ul, 0.05],
      [-0.06, -0.10 * ul, 0.09],
      [0.0, -0.085 * ul, 0.10],
      [0.06, -0.10 * ul, 0.09],
      [0.19, -0.06 * ul, 0.05],
      [0.29, 0.0, -0.02],
      [0.19, 0.08 * ll + 0.6 * op, 0.05],
      [0.09, 0.13 * ll + 0.85 * op, 0.08],
      [0.0, 0.15 * ll + op, 0.09],
      [-0.09, 0.13 * ll + 0.85 * op, 0.08],
      [-0.19, 0.08 * ll + 0.6 * op, 0.05],
  ])
  inner = np.array([
      [-0.26, 0.0, 0.0],
      [-0.09, -0.005, 0.07],
      [0.0, -0.005, 0.08],
      [0.09, -0.005, 0.07],
      [0.26, 0.0, 0.0],
      [0.09, 0.005 + 0.85 * op, 0.07],
      [0.0, 0.005 + op, 0.08],
      [-0.09, 0.005 + 0.85 * op, 0.07],
  ])
  mouth = np.concatenate([outer, inner])
  mouth[:, 0] *= mw
  # Smile: corners up and out, the points next to them half as much.
  corners = np.array([0, 6, 12, 16])
  near = np.array([1, 5, 7, 11])
  mouth[corners, 1] -= 0.05 * sm
  mouth[corners, 0] *= 1.0 + 0.08 * sm
  mouth[near, 1] -= 0.025 * sm
  mouth[:, 1] += my
  pts[48:68] = mouth
  if jitter is not None:
    pts[17:] += jitter[17:]
  return pts


_SILHOUETTE_Z = -0.5    # Depth of the widest head section (behind the eyes).
_FRONT_Z = 0.1          # Depth of the front pole of the head meridians.
_HEAD_CENTRE = np.array([0.0, 0.3])


def _frontal_outline(p: dict) -> np.ndarray:
  """Frontal head outline `[17 + 9, 2]`: jaw 0-16 (superellipse) then forehead."""
  a, b, e = p["jaw_half_width"], p["chin_length"], p["jaw_square"]
  y0 = 0.05
  theta = np.pi * np.arange(17) / 16.0
  c, s = np.cos(theta), np.sin(theta)
  jaw = np.stack([-a * np.sign(c) * np.abs(c) ** (2.0 / e),
                  y0 + b * np.abs(s) ** (2.0 / e)], -1)
  # Opening the mouth drops the jaw below the mouth line.
  my = p["mouth_y"]
  weight = np.clip((jaw[:, 1] - my) / (y0 + b - my), 0.0, 1.0)
  jaw[:, 1] += 0.8 * p["mouth_open"] * weight
  psi = np.pi * np.arange(1, _NUM_FOREHEAD + 1) / (_NUM_FOREHEAD + 1)
  top = np.stack([a * np.cos(psi), y0 - p["head_top"] * np.sin(psi)], -1)
  return np.concatenate([jaw, top])


def _outline_normals(outline: np.ndarray) -> np.ndarray:
  """Outward unit normals of a closed polygon `[M, 2]` (central differences)."""
  tangent = np.roll(outline, -1, axis=0) - np.roll(outline, 1, axis=0)
  normal = np.stack([tangent[:, 1], -tangent[:, 0]], -1)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  outward = outline - outline.mean(axis=0)
  sign = np.sign(np.sum(normal * outward, axis=-1, keepdims=True))
  return normal * np.where(sign == 0, 1.0, sign)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """`R = Rz(roll) Rx(pitch) Ry(yaw)` (degrees); x right, y down, z to camera."""
  y, p, r = np.deg2rad([yaw, pitch, roll])
  ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0],
                 [-np.sin(y), 0, np.cos(y)]])
  rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)],
                 [0, np.sin(p), np.cos(p)]])
  rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0],
                 [0, 0, 1]])
  return rz @ rx @ ry


def silhouette(outline: np.ndarray, rotation: np.ndarray) -> np.ndarray:
  """Projected head outline under `rotation` (orthographic, face units).

  Outline point j lies on a 3-D meridian ellipse
  `m_j(t) = c_j + r_j n_j cos t + d z sin t` with `n_j` its outward frontal
  normal, `c_j = (q_j - r_j n_j, z_s)` on the head axis and front pole depth
  `z_s + d`. The silhouette point is the ellipse point furthest out along the
  projected normal `P R n_j`: `t* = atan2(d <m, P R z>, r_j <m, P R n_j>)`.

  Args:
    outline: `[M, 2]` frontal outline `q_j`.
    rotation: `[3, 3]`.

  Returns:
    `[M, 2]` projected silhouette points (before scale and translation).
  """
  normals = _outline_normals(outline)
  radius = np.sum((outline - _HEAD_CENTRE) * normals, axis=-1)
  depth = _FRONT_Z - _SILHOUETTE_Z
  centre = np.concatenate(
      [outline - radius[:, None] * normals,
       np.full((len(outline), 1), _SILHOUETTE_Z)], -1)
  n3 = np.concatenate([normals, np.zeros((len(outline), 1))], -1)
  proj = rotation[:2]
  pn = n3 @ proj.T                      # [M, 2]
  pz = proj[:, 2]                       # [2]
  m = pn / np.linalg.norm(pn, axis=-1, keepdims=True)
  t = np.arctan2(depth * (m @ pz), radius * np.sum(m * pn, -1))
  return (centre @ proj.T + radius[:, None] * np.cos(t)[:, None] * pn
          + depth * np.sin(t)[:, None] * pz[None, :])


def face_geometry(seed: int, index: int, image_size: int) -> FaceGeometry:
  """The posed face for record `index` of `seed` (no rendering)."""
  rng = _rng(seed, index, _GEOMETRY)
  params = _sample_params(rng)
  jitter = rng.normal(0.0, 0.01, size=(NUM_POINTS, 3))
  yaw = rng.uniform(-_YAW_DEG, _YAW_DEG)
  pitch = rng.uniform(-_PITCH_DEG, _PITCH_DEG)
  roll = rng.uniform(-_ROLL_DEG, _ROLL_DEG)
  scale = image_size * rng.uniform(0.24, 0.36)
  frac = rng.uniform(size=2)

  rotation = rotation_matrix(yaw, pitch, roll)
  pts3 = face_points_3d(params, jitter)
  projected = pts3 @ rotation[:2].T
  outline = silhouette(_frontal_outline(params), rotation)
  projected[:17] = outline[:17]
  depth = pts3 @ rotation[2]

  # Place the face so that every landmark is at least `margin` px inside.
  margin = 2.0
  lo, hi = projected.min(0) * scale, projected.max(0) * scale
  room = (image_size - 1 - 2 * margin) - (hi - lo)
  if np.any(room < 0):  # Too big for the image: shrink to fit.
    shrink = (image_size - 1 - 2 * margin) / np.max(hi - lo)
    scale *= shrink
    lo, hi = lo * shrink, hi * shrink
    room = np.maximum((image_size - 1 - 2 * margin) - (hi - lo), 0.0)
  translation = margin - lo + frac * room
  return FaceGeometry(
      landmarks=(projected * scale + translation).astype(np.float32),
      outline=(outline * scale + translation).astype(np.float32),
      depth=depth.astype(np.float32),
      yaw=float(yaw), pitch=float(pitch), roll=float(roll),
      units_to_pixels=float(scale),
      rotation=rotation.astype(np.float32),
      translation=translation.astype(np.float32),
      params=params)


# --------------------------------------------------------- annotation noise


def contour_tangents(landmarks: np.ndarray) -> np.ndarray:
  """Unit tangents `[17, 2]` of the contour polyline 0-16 at its points.

  Central differences inside, one-sided at the two ends.
  """
  c = np.asarray(landmarks, np.float64)[:17]
  tangent = np.empty_like(c)
  tangent[1:-1] = c[2:] - c[:-2]
  tangent[0] = c[1] - c[0]
  tangent[-1] = c[-1] - c[-2]
  return tangent / np.linalg.norm(tangent, axis=-1, keepdims=True)


def inter_ocular(landmarks: np.ndarray) -> float:
  """Outer-eye-corner distance (points 36, 45) in pixels."""
  a, b = OUTER_EYE_CORNERS
  return float(np.linalg.norm(landmarks[b] - landmarks[a]))


def annotate(landmarks: np.ndarray, seed: int, index: int,
             contour_noise: float = 0.0,
             point_noise: float = 0.0) -> np.ndarray:
  """The stored annotation: true points plus reproducible annotation noise.

  Contour points 0-16 move along their local tangent by
  N(0, (contour_noise * IOD)^2); every coordinate of every point then gets
  N(0, (point_noise * IOD)^2). The random draws depend only on
  `(seed, index)`, so changing a knob scales the same displacement.

  Args:
    landmarks: `[68, 2]` true points (pixels).
    seed, index: identify the record.
    contour_noise: tangential std in units of the inter-ocular distance.
    point_noise: isotropic std in units of the inter-ocular distance.

  Returns:
    float32 `[68, 2]`.
  """
  rng = _rng(seed, index, _ANNOTATION)
  along = rng.standard_normal(17)
  iso = rng.standard_normal((NUM_POINTS, 2))
  out = np.asarray(landmarks, np.float64).copy()
  iod = inter_ocular(out)
  if contour_noise:
    out[:17] += (contour_noise * iod * along)[:, None] * contour_tangents(
        landmarks)
  if point_noise:
    out += point_noise * iod * iso
  return out.astype(np.float32)


# ---------------------------------------------------------------- rendering


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


def render_geometry(geometry: FaceGeometry, seed: int, index: int,
                    image_size: int) -> np.ndarray:
  """Draws `geometry` (true points) with the appearance of record `index`.

  Returns:
    uint8 `[image_size, image_size, 3]` RGB.
  """
  rng = _rng(seed, index, _APPEARANCE)
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
    top = geometry.outline[17 + start - 1:17 + _NUM_FOREHEAD - start + 1]
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
  _check_size(image_size)
  geometry = face_geometry(seed, index, image_size)
  return render_geometry(geometry, seed, index, image_size), geometry.landmarks


# ------------------------------------------------------------------ records


@dataclasses.dataclass(frozen=True)
class SyntheticImageLoader:
  """Picklable `FaceRecord.image_loader`: renders record `record.image_key`."""

  seed: int
  image_size: int

  def __call__(self, record: records.FaceRecord) -> np.ndarray:
    index = int(record.image_key)
    return render_geometry(face_geometry(self.seed, index, self.image_size),
                           self.seed, index, self.image_size)


def _check_size(image_size):
  if not isinstance(image_size, (int, np.integer)) or image_size < 32:
    raise ValueError(
        f"image_size must be an integer >= 32 pixels, got {image_size!r}")


def make_records(num_faces: int, seed: int, image_size: int = 128,
                 contour_noise: float = 0.0,
                 point_noise: float = 0.0) -> List[records.FaceRecord]:
  """`num_faces` synthetic face records; images render on demand.

  Args:
    num_faces: number of records (record i is face `(seed, i)`).
    seed: data set seed.
    image_size: square image side in pixels (>= 32).
    contour_noise: std of the tangential annotation noise on the contour
      points 0-16, in units of the inter-ocular distance (0 = true points).
    point_noise: std of the isotropic annotation noise on all points, same
      units.

  Returns:
    `FaceRecord`s with `landmarks` = annotation (true + noise), `box` = the
    bounding box of the TRUE points, `subset` "synthetic", `image_key` = i,
    attributes `yaw`/`pitch`/`roll` (degrees, floats), and a picklable
    `SyntheticImageLoader` as `image_loader`.
  """
  if not isinstance(num_faces, (int, np.integer)) or num_faces < 0:
    raise ValueError(f"num_faces must be an integer >= 0, got {num_faces!r}")
  _check_size(image_size)
  for name, value in (("contour_noise", contour_noise),
                      ("point_noise", point_noise)):
    if not math.isfinite(value) or value < 0:
      raise ValueError(
          f"{name} is a standard deviation in inter-ocular units and must be "
          f"finite and >= 0, got {value!r}")
  loader = SyntheticImageLoader(seed=int(seed), image_size=int(image_size))
  out = []
  for i in range(int(num_faces)):
    g = face_geometry(seed, i, image_size)
    points = annotate(g.landmarks, seed, i, contour_noise, point_noise)
    box = np.concatenate([g.landmarks.min(0), g.landmarks.max(0)])
    out.append(records.FaceRecord(
        image_path=f"synthetic://seed={int(seed)}/size={int(image_size)}/{i}",
        landmarks=points,
        visible=np.ones(NUM_POINTS, bool),
        box=box.astype(np.float32),
        attributes={"yaw": g.yaw, "pitch": g.pitch, "roll": g.roll},
        subset=SUBSET,
        image_key=i,
        image_loader=loader))
  return out

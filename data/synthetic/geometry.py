"""The parametric 3-D face model, its pose and projection, and annotation noise.

A face is a small parametric 3-D model written for this project (not fitted to
any data set): identity parameters (face width, chin length, jaw squareness, eye
spacing and size, brow height and arch, nose length/width/protrusion, mouth
width and lips, a small asymmetric jitter), expression parameters (mouth open,
smile, brow raise, eye closure) and a pose (yaw +-40, pitch +-20, roll +-25
degrees), projected with weak perspective (scale + translation).

The contour points 0-16 are silhouette points, as annotators place them: each
one is the extreme point, in the image, of a 3-D "meridian" ellipse of the head
through the frontal contour point, so under yaw the contour slides onto the
visible face boundary instead of folding behind the cheek.

`annotate` turns the true points into the stored annotation (the noise model is
described in the package docstring, data/synthetic/__init__.py). Its
inter-ocular distance uses the normaliser points of the 68-point scheme
(data/schemes.py), the same ones the metrics use.

Every random draw comes from `stream_rng(seed, index, stream)`: geometry,
appearance (data/synthetic/render.py) and annotation noise never share a
stream, so changing one never changes the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data import ambiguity
from data import schemes
from training import errors

NUM_POINTS = 68
CONTOUR = np.arange(17)
NUM_FOREHEAD = 9  # Outline points over the top of the head (not landmarks).
_SCHEME = schemes.get_scheme(NUM_POINTS)  # iBUG/300W point order.

_YAW_DEG = 40.0
_PITCH_DEG = 20.0
_ROLL_DEG = 25.0

# Random streams per (seed, index).
GEOMETRY, APPEARANCE, ANNOTATION = 0, 1, 2


def stream_rng(seed: int, index: int, stream: int) -> np.random.Generator:
  """The generator of random `stream` for face `index` of data set `seed`."""
  return np.random.default_rng([int(seed), int(index), stream])


def check_image_size(image_size) -> None:
  """Raises UserError unless `image_size` is an integer >= 32."""
  if not isinstance(image_size, (int, np.integer)) or image_size < 32:
    raise errors.UserError(
        f"image_size must be an integer >= 32 pixels, got {image_size!r}")


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


def face_points_3d(params: dict,
                   jitter: np.ndarray | None = None) -> np.ndarray:
  """The 68 frontal 3-D points (rows 0-16: the frontal contour).

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
  """Frontal head outline `[17 + 9, 2]`: jaw 0-16 (superellipse), forehead."""
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
  psi = np.pi * np.arange(1, NUM_FOREHEAD + 1) / (NUM_FOREHEAD + 1)
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
  """`R = Rz(roll) Rx(pitch) Ry(yaw)`, degrees; x right, y down, z to camera."""
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
  rng = stream_rng(seed, index, GEOMETRY)
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

  The same tangents as the label-noise transform for real faces
  (`data.ambiguity.curve_tangents`).
  """
  return ambiguity.curve_tangents(landmarks, CONTOUR)


def inter_ocular(landmarks: np.ndarray) -> float:
  """The inter-ocular distance (outer eye corners) of `[68, 2]` points, pixels.

  The corner indices are the 68-point scheme's ocular normaliser
  (data/schemes.py), so the noise scale and the NME normaliser agree.
  """
  return float(schemes.normaliser_distance(_SCHEME, landmarks, "ocular"))


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
  rng = stream_rng(seed, index, ANNOTATION)
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

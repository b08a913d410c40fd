"""Procedural 68-point faces: a data set that needs no download.

Each face is a posed parametric 3-D head (geometry.py: identity, expression and
pose drawn per face, weak-perspective projection, contour points on the
silhouette) drawn with Pillow + NumPy (render.py: skin, hair, brows, eyes,
nose, lips, lighting, a cluttered background, blur and pixel noise), so every
landmark sits on a visible feature. Points are in the iBUG/300W 68-point order
(data/schemes.py, "300w68"):

  0-16 jaw contour (0 on the image left), 17-21 brow on the image left,
  22-26 brow on the image right, 27-30 nose bridge down to the tip, 31-35 lower
  nose (nostrils), 36-41 eye on the image left (36 outer corner, clockwise),
  42-47 eye on the image right (45 outer corner), 48-59 outer lips (48, 54
  corners), 60-67 inner lips.

Annotation noise controls label quality without changing the images.
`contour_noise` reproduces the "semantic ambiguity" of the STAR paper: the
stored annotation of each contour point is moved along the local contour
tangent (the position along the edge is ambiguous, the position across it is
not) by N(0, (contour_noise * IOD)^2), IOD = the inter-ocular normaliser of
the 68-point scheme (outer eye corners) in pixels. `point_noise` adds
isotropic N(0, (point_noise * IOD)^2) to every coordinate of every point. The
image is always rendered from the true shape; only the stored landmarks carry
noise.

Everything is a deterministic function of `(seed, index)`, with separate
random streams for geometry, appearance and annotation noise, so the noise
knobs never change the image and the same record always renders the same
pixels.

Usage:
  records = synthetic.make_records(256, seed=0, image_size=96,
                                   contour_noise=0.1)
  image, true_points = synthetic.render_face(seed=0, index=3, image_size=96)
As a dataset reader: data/readers/synthetic.py.
"""

from data.synthetic.faces import SUBSET
from data.synthetic.faces import make_records
from data.synthetic.geometry import CONTOUR
from data.synthetic.geometry import NUM_POINTS
from data.synthetic.geometry import FaceGeometry
from data.synthetic.geometry import annotate
from data.synthetic.geometry import contour_tangents
from data.synthetic.geometry import face_geometry
from data.synthetic.geometry import inter_ocular
from data.synthetic.render import SyntheticImageLoader
from data.synthetic.render import render_face
from data.synthetic.render import render_geometry

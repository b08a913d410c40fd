"""synthetic: the procedural 68-point faces of data/synthetic, as a reader.

The faces are generated, not read: record i of a listing is face `(seed, i)`,
its image rendered on demand by the record's `image_loader` (no files, no
download). `root` is ignored. `split` only names the listing; the faces are
fixed by `seed`, so a training and an evaluation listing differ by seed (the
configs use `data.synthetic.seed` and `eval_seed`). Landmarks are the 68
iBUG/300W points (data/schemes.py "300w68") plus the requested annotation
noise; boxes are the tight boxes of the true points.
"""

from __future__ import annotations

import math
import numbers

from data import synthetic
from data.readers import common
from training import errors

NAME = "synthetic"
NUM_POINTS = synthetic.NUM_POINTS
LAYOUT = """\
  (no files: the faces are generated; root is ignored, any split name only
  labels the listing)
  options: num_faces (> 0, required), seed (int, required),
           image_size (pixels, >= 32; default 128),
           contour_noise, point_noise (annotation noise std in inter-ocular
           units, >= 0; default 0)
"""


def _check(num_faces, seed, image_size, contour_noise, point_noise) -> None:
  """Raises UserError naming the first option out of range."""
  def integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)

  if not integer(num_faces) or num_faces <= 0:
    raise errors.UserError(
        f"{NAME}: num_faces must be an integer > 0 (how many faces to "
        f"generate), got {num_faces!r}")
  if not integer(seed):
    raise errors.UserError(f"{NAME}: seed must be an integer, got {seed!r}")
  if not integer(image_size) or image_size < 32:
    raise errors.UserError(
        f"{NAME}: image_size must be an integer >= 32 pixels, got "
        f"{image_size!r}")
  for option, value in (("contour_noise", contour_noise),
                        ("point_noise", point_noise)):
    if (not isinstance(value, numbers.Real) or not math.isfinite(value)
        or value < 0):
      raise errors.UserError(
          f"{NAME}: {option} is a standard deviation in inter-ocular units "
          f"and must be a finite number >= 0 (0 = exact points), got "
          f"{value!r}")


def read(root: str, split: str, *, num_faces: int, seed: int,
         image_size: int = 128, contour_noise: float = 0.0,
         point_noise: float = 0.0, **unused) -> common.DatasetListing:
  """Lists `num_faces` generated faces of `seed` (see the module docstring).

  Args:
    root: ignored (nothing is read).
    split: the listing's name only.
    num_faces: number of faces, > 0.
    seed: data set seed; face i of the listing is face `(seed, i)`.
    image_size: square image side in pixels, >= 32.
    contour_noise: std of the tangential noise on the contour points 0-16, in
      inter-ocular units.
    point_noise: std of the isotropic noise on every point, same units.
    **unused: reader options that concern files (`check_images`, ...);
      accepted so callers can pass one option set to every reader, ignored.

  Returns:
    A `DatasetListing` of `synthetic.make_records(...)` and no problems.

  Raises:
    UserError: an option out of range (the message names it).
  """
  del root, unused  # Nothing to read.
  _check(num_faces, seed, image_size, contour_noise, point_noise)
  records = synthetic.make_records(
      int(num_faces), seed=int(seed), image_size=int(image_size),
      contour_noise=float(contour_noise), point_noise=float(point_noise))
  return common.DatasetListing(records, [], NAME, split)

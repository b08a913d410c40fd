"""Landmark coordinate conventions shared by STAR and SCE-MAE.

Points are `(x, y)` pixels with the origin at the top-left corner and pixel
centres at integers. Decoders and regressors work in a normalised frame
[-1, 1]; `normalise_landmarks` / `denormalise_landmarks` go between the two,
`grid_centres` gives the normalised centres of a grid's cells, and the flip
helpers map points of a mirrored crop back (the scheme's flip permutation).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def grid_centres(n: int) -> np.ndarray:
  """`[n]` normalised centres of an n-cell axis: `(2 r + 1) / n - 1`."""
  return ((2.0 * np.arange(n) + 1.0) / n - 1.0).astype(np.float32)


def normalise_landmarks(points: jax.Array, crop_size: int,
                        align_corners: bool = False,
                        clamp: bool = False) -> jax.Array:
  """Crop pixels `[..., 2]` -> the normalised frame [-1, 1].

  align_corners=False (public STAR code, DVE): `(2p + 1) / S - 1`, the frame
  whose cells have their centres at `grid_centres(S)`; align_corners=True:
  `2p / (S - 1) - 1`. `clamp=True` clips to [-1, 1] (STAR's ground truth, as the
  public code); the SCE-MAE regressors keep points outside the crop.
  """
  if align_corners:
    x = 2.0 * points / (crop_size - 1.0) - 1.0
  else:
    x = (2.0 * points + 1.0) / crop_size - 1.0
  return jnp.clip(x, -1.0, 1.0) if clamp else x


def denormalise_landmarks(coords: jax.Array, crop_size: int,
                          align_corners: bool = False) -> jax.Array:
  """Inverse of `normalise_landmarks` (without the clamp): [-1, 1] -> pixels."""
  if align_corners:
    return (coords + 1.0) * (crop_size - 1.0) / 2.0
  return ((coords + 1.0) * crop_size - 1.0) / 2.0


def pixels_per_unit(crop_size: int, align_corners: bool = False) -> float:
  """Crop pixels per unit of the [-1, 1] grid (the slope of the map above)."""
  return (crop_size - 1.0 if align_corners else float(crop_size)) / 2.0


def denormalise_covariance(cov: jax.Array, crop_size: int,
                           align_corners: bool = False) -> jax.Array:
  """`[..., 2, 2]` covariance on the [-1, 1] grid -> crop pixels squared."""
  return cov * pixels_per_unit(crop_size, align_corners) ** 2


def covariance_to_original(cov: jax.Array, crop_to_image: jax.Array
                           ) -> jax.Array:
  """`[B, N, 2, 2]` crop-pixel covariances -> original pixels: A C A^T."""
  a = crop_to_image[..., :2]
  return jnp.einsum("bij,bnjk,blk->bnil", a, cov, a)


def crop_to_original(points: jax.Array, crop_to_image: jax.Array) -> jax.Array:
  """Applies `[B, 2, 3]` affine maps to `[B, N, 2]` points."""
  return (jnp.einsum("bij,bnj->bni", crop_to_image[..., :2], points)
          + crop_to_image[:, None, :, 2])


def flip_points(points: jax.Array, flip_permutation: Sequence[int],
                width: float) -> jax.Array:
  """Points of a horizontally mirrored crop -> points of the crop itself.

  Mirroring the pixel columns maps x to `(width - 1) - x` (pixel centres at
  integers), and the mirror's point i is the original point
  `flip_permutation[i]`: `out[..., i, :] = mirror(points[..., perm[i], :])`.
  An involution (the permutation is one), so the same map goes both ways.

  Args:
    points: `[..., N, 2]` (x, y) crop pixels.
    flip_permutation: `[N]` ints (data.schemes.LandmarkScheme).
    width: the crop width W in pixels.
  """
  perm = np.asarray(flip_permutation, np.int32)
  if perm.shape != (points.shape[-2],):
    raise ValueError(f"flip_permutation has {perm.shape[0]} entries, the "
                     f"points have {points.shape[-2]}")
  p = points[..., perm, :]
  return jnp.stack([(width - 1.0) - p[..., 0], p[..., 1]], axis=-1)


def flip_test_average(predict, images: jax.Array,
                      flip_permutation: Sequence[int]) -> jax.Array:
  """Horizontal-flip test-time augmentation.

  Args:
    predict: `images [B', S, S, C] -> crop points [B', N, 2]`; per-example
      (no batch statistics), called once on the crops and their mirrors
      concatenated.
    images: `[B, S, S, C]` crops.
    flip_permutation: the scheme's `[N]` flip permutation.

  Returns:
    `[B, N, 2]`: `(predict(x) + flip_points(predict(mirror(x)))) / 2`. For a
    mirror-symmetric crop the result is itself symmetric, and
    `result(mirror(x)) == flip_points(result(x))` for any `predict`.
  """
  b, width = images.shape[0], images.shape[2]
  both = predict(jnp.concatenate([images, images[:, :, ::-1]], axis=0))
  plain, mirrored = both[:b], both[b:]
  return 0.5 * (plain + flip_points(mirrored, flip_permutation, width))

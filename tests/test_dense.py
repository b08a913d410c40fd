"""Tests for sce_mae_jax.dense: cover-and-stride dense features."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sce_mae_jax import dense

P = 8
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MTFL = os.path.join(REPO_ROOT, "..", "shared", "data", "mtfl")


def mean_patch_encoder(images, patch_size=P):
  """Fake ViT: each token is the mean pixel of its patch, `[B, N, C]`."""
  b, h, w, c = images.shape
  t = images.reshape(b, h // patch_size, patch_size, w // patch_size,
                     patch_size, c)
  return t.mean(axis=(2, 4)).reshape(b, -1, c)


def _ref_dense(images, patch, stride, padding, align):
  """Independent float64 NumPy reference: a P x P average pool, stride s, of
  the padded image."""
  total = patch - stride
  before = total // 2 if align == "centre" else 0
  mode = {"edge": "edge", "reflect": "reflect", "zeros": "constant"}[padding]
  x = np.pad(np.asarray(images, np.float64),
             ((0, 0), (before, total - before), (before, total - before),
              (0, 0)), mode=mode)
  b, h, w, c = images.shape
  out = np.zeros((b, h // stride, w // stride, c))
  for r in range(h // stride):
    for q in range(w // stride):
      out[:, r, q] = x[:, r * stride:r * stride + patch,
                       q * stride:q * stride + patch].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("stride,padding,align,batching",
                         [(2, "edge", "centre", "vmap"),
                          (4, "reflect", "corner", "batch"),
                          (1, "zeros", "centre", "map"),
                          (8, "edge", "centre", "vmap")])
def test_dense_equals_numpy_average_pool(stride, padding, align, batching):
  images = np.random.RandomState(stride).rand(2, 16, 24, 3).astype(np.float32)
  fn = jax.jit(functools.partial(
      dense.cover_and_stride, mean_patch_encoder, patch_size=P, stride=stride,
      padding=padding, align=align, shift_batching=batching))
  got = np.asarray(fn(jnp.asarray(images)))
  assert got.shape == (2, 16 // stride, 24 // stride, 3)
  np.testing.assert_allclose(got, _ref_dense(images, P, stride, padding, align),
                             rtol=1e-5, atol=1e-6)
  if stride == P:  # s = P is the plain encoder output on the patch grid.
    np.testing.assert_allclose(
        got.reshape(2, -1, 3), mean_patch_encoder(jnp.asarray(images)),
        rtol=1e-6)


def test_dense_feature_centres_match_the_covered_pixels():
  # Encode the pixel coordinates themselves: away from the padded border, each
  # feature is the mean (x, y) of the pixels it covers, i.e. its centre.
  h, w = 32, 40
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  coords = np.stack([xs, ys], axis=-1)[None]
  for stride, align in [(2, "centre"), (4, "corner"), (1, "centre")]:
    got = np.asarray(dense.cover_and_stride(
        mean_patch_encoder, jnp.asarray(coords), P, stride, align=align))[0]
    centres = dense.dense_feature_centres((h, w), P, stride, align)
    interior = ((centres[..., 0] >= P) & (centres[..., 0] <= w - P) &
                (centres[..., 1] >= P) & (centres[..., 1] <= h - P))
    assert interior.sum() > 10
    np.testing.assert_allclose(got[interior], centres[interior], atol=1e-4)
  # Centre alignment with even P - s puts feature R at the centre of cell R.
  c = dense.dense_feature_centres((h, w), P, 2, "centre")
  np.testing.assert_allclose(c[3, 5], [5 * 2 + 0.5, 3 * 2 + 0.5])


def test_dense_on_a_real_face_image():
  path = os.path.join(MTFL, "training.txt")
  if not os.path.exists(path):
    pytest.skip(f"real data not found at {MTFL} (../shared/data/mtfl)")
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    rel = f.readline().split()[0].replace("\\", "/")
  image_path = os.path.join(MTFL, rel)
  if not os.path.exists(image_path):
    pytest.skip(f"MTFL image {image_path} missing")
  with Image.open(image_path) as im:
    image = np.asarray(im.convert("RGB"), np.float32)[None] / 255.0
  h, w = (image.shape[1] // P) * P, (image.shape[2] // P) * P
  image = image[:, :h, :w]
  got = dense.cover_and_stride(mean_patch_encoder, jnp.asarray(image), P, 2)
  np.testing.assert_allclose(got, _ref_dense(image, P, 2, "edge", "centre"),
                             rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise():
  images = jnp.zeros((1, 16, 16, 3))
  with pytest.raises(ValueError, match="divisor"):
    dense.cover_and_stride(mean_patch_encoder, images, P, 3)
  with pytest.raises(ValueError, match="multiple of the patch"):
    dense.cover_and_stride(mean_patch_encoder, jnp.zeros((1, 12, 16, 3)), P, 2)
  with pytest.raises(ValueError, match="patch tokens"):
    dense.cover_and_stride(lambda x: x.reshape(x.shape[0], -1, 3), images, P,
                           2)

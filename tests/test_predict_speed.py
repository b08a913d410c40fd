"""Tests of bench/predict_speed.py's pure helpers (the public PyTorch path).

The public demo path's crop (cv2.warpPerspective) must match our crop
(data.transforms) so both paths see the same faces, its torch decoder must
be STAR's soft-argmax, and its PyTorch models must have the JAX models'
parameter counts, or the speed comparison would compare different work.
Needs torch and OpenCV (bench-only extras); skipped without them.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import predict_speed
from data import transforms


def _test_image(blob_xy, height=300, width=400):
  """Smooth RGB image; channel 1 holds a Gaussian blob at `blob_xy`."""
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
  bx, by = blob_xy
  image = np.stack([
      127 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0),
      255 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * 6.0 ** 2)),
      (xx + yy) / (height + width) * 255], axis=-1)
  return image.round().astype(np.uint8)


def _blob_centroid(crop):
  g = crop[..., 1].astype(np.float64)
  g = g * (g > 20)
  ys, xs = np.mgrid[0:g.shape[0], 0:g.shape[1]]
  return np.array([(g * xs).sum(), (g * ys).sum()]) / g.sum()


def test_public_crop_matrix_hand_case():
  # Box 100 x 200 px: scale = 100 / 200 * 1.05 = 0.525, zoom k = 256 / 105.
  m = predict_speed.public_crop_matrix((10, 20, 110, 220), 256)
  k = 256 / 105.0
  np.testing.assert_allclose(m[2], [0, 0, 1])
  np.testing.assert_allclose(m[:2, :2], k * np.eye(2), rtol=1e-12)
  centre = m[:2, :2] @ [60.0, 120.0] + m[:2, 2]
  corner = m[:2, :2] @ [10.0, 20.0] + m[:2, 2]
  np.testing.assert_allclose(centre, [127.5, 127.5], atol=1e-9)
  np.testing.assert_allclose(corner, [127.5 - 50 * k, 127.5 - 100 * k],
                             atol=1e-9)


@pytest.mark.parametrize("box", [(150, 90, 260, 210),
                                 (120.5, 80.25, 300.75, 230.5)])
@pytest.mark.parametrize("crop_size", [96, 256])
def test_public_crop_equals_transforms_crop(box, crop_size):
  pytest.importorskip("cv2")
  blob = (201.3, 143.7)
  image = _test_image(blob)
  crop, m = predict_speed.public_crop(image, box, crop_size)
  ours = transforms.crop_matrix(*transforms.center_scale_from_box(box),
                                crop_size)
  np.testing.assert_allclose(m[:2], ours, atol=1e-9)
  reference = transforms.warp_affine(image, ours, crop_size)
  assert crop.shape == reference.shape == (crop_size, crop_size, 3)
  # Same bilinear samples up to rounding (cv2 interpolates in fixed point).
  assert np.abs(crop.astype(int) - reference.astype(int)).max() <= 1
  # The blob lands where the map sends it, in both crops: no half-pixel
  # offset between cv2's and our pixel-centre conventions.
  x1, y1, x2, y2 = box
  k = crop_size / (min(x2 - x1, y2 - y1) * 1.05)
  expected = (k * (np.array(blob) - [(x1 + x2) / 2, (y1 + y2) / 2])
              + (crop_size - 1) / 2)
  np.testing.assert_allclose(_blob_centroid(crop), expected, atol=0.05)
  np.testing.assert_allclose(_blob_centroid(reference), expected, atol=0.05)


def test_crop_to_image_points_inverts_the_crop():
  m = predict_speed.public_crop_matrix((10, 20, 110, 220), 256)
  points = np.array([[0.0, 0.0], [60.0, 120.0], [-5.5, 300.25]])
  in_crop = points @ m[:2, :2].T + m[:2, 2]
  np.testing.assert_allclose(
      predict_speed.crop_to_image_points(in_crop, m), points, atol=1e-9)
  # The crop centre is the box centre.
  np.testing.assert_allclose(
      predict_speed.crop_to_image_points([[127.5, 127.5]], m), [[60, 120]],
      atol=1e-9)


def _numpy_decode(heatmaps, crop_size):
  """float64 soft-argmax on linspace(-1, 1), then ((p + 1) S - 1) / 2."""
  h = np.asarray(heatmaps, np.float64)
  p = h / np.maximum(h.sum(axis=(-2, -1), keepdims=True), 1e-6)
  xs = np.linspace(-1, 1, h.shape[-1])
  ys = np.linspace(-1, 1, h.shape[-2])
  coords = np.stack([np.einsum("bnhw,w->bn", p, xs),
                     np.einsum("bnhw,h->bn", p, ys)], axis=-1)
  return ((coords + 1) * crop_size - 1) / 2


def test_torch_decode_equals_star_soft_argmax():
  torch = pytest.importorskip("torch")
  from landmarks import coordinates  # pylint: disable=g-import-not-at-top
  from landmarks import distribution  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  heatmaps = rng.rand(2, 5, 8, 6).astype(np.float32) ** 4
  heatmaps[1, 2] = 0.0                     # all-zero map: the 1e-6 floor.
  got = predict_speed.torch_decode(torch.from_numpy(heatmaps), 24).numpy()
  np.testing.assert_allclose(got, _numpy_decode(heatmaps, 24), atol=1e-4)
  star = coordinates.denormalise_landmarks(
      distribution.soft_argmax(heatmaps), 24, align_corners=False)
  np.testing.assert_allclose(got, np.asarray(star), atol=1e-4)
  # One-hot at row 3, column 4 of an 8 x 6 map, 24 px crop: grid point
  # x = -1 + 2 * 4 / 5 = 0.6, y = -1 + 2 * 3 / 7; pixels ((p + 1) 24 - 1) / 2.
  one_hot = np.zeros((1, 1, 8, 6), np.float32)
  one_hot[0, 0, 3, 4] = 2.0
  got = predict_speed.torch_decode(torch.from_numpy(one_hot), 24).numpy()
  np.testing.assert_allclose(
      got[0, 0], [(1.6 * 24 - 1) / 2, ((2 * 3 / 7) * 24 - 1) / 2], atol=1e-5)


def test_torch_models_have_the_jax_parameter_counts():
  pytest.importorskip("torch")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from data import schemes  # pylint: disable=g-import-not-at-top
  from star_jax import inference  # pylint: disable=g-import-not-at-top
  scheme = schemes.get_scheme("300w")
  # The paper-sized 68-point model with AAM: the public model's count.
  paper = predict_speed.torch_model(68, scheme.edges, 4, 4, 256, True)
  assert sum(p.numel() for p in paper.parameters()) == 13_368_708
  # The ready model (no AAM) against the JAX model of its config.
  config = predict_speed.model_config("ready")
  s = config.data.crop_size
  abstract = jax.eval_shape(
      lambda x: inference.model_from_config(config).init(
          jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct((1, s, s, 3), jnp.uint8))
  n_jax = sum(int(np.prod(x.shape))
              for x in jax.tree_util.tree_leaves(abstract["params"]))
  ready = predict_speed.torch_model(68, scheme.edges, 2, 3, 64, False)
  assert sum(p.numel() for p in ready.parameters()) == n_jax
  assert not hasattr(ready, "point_head")


def test_markdown_table_ratio_is_torch_time_over_row_time():
  def row(impl, model_ms):
    return predict_speed.Row(impl, "ready", 16, 16, 1.0, 10.0, 1.0, model_ms,
                             np.zeros(2))
  table = predict_speed.markdown_table([row("live", 8.0), row("torch", 28.0)])
  live, torch_row = table.splitlines()[2:4]
  # live: total 20 ms -> 50 faces/s; torch total 40 ms: 2x, model 3.5x.
  assert live.split("|")[9:13] == [" 20.0 ", " 50.00 ", " 2.00 ", " 3.50 "]
  assert torch_row.split("|")[11:13] == [" 1.00 ", " 1.00 "]

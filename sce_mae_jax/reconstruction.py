"""MAE reconstruction panels and the PNG grid (host side, NumPy + Pillow).

One row per image, four panels (columns), each `S x S`:
  0 input            the uint8 input crop.
  1 masked           the input with every masked patch painted `fill` exactly.
  2 reconstruction   the decoder's prediction of every patch, in pixels.
  3 reconstruction + visible
                     the prediction on masked patches, the input's own pixels
                     on visible patches (equal to panel 0 there, exactly).

Display of a norm_pix_loss model (MAE's visualisation of such models): the
decoder predicts per-patch standardised pixels, so a prediction is mapped back
with the mean and (unbiased) variance of the *ground-truth* patch in the
normalised image, `pred * sqrt(var + eps) + mean`, then un-normalised with the
ImageNet mean/std. For masked patches this borrows the hidden patch's mean
colour and contrast, i.e. the panel shows the predicted structure, not a
prediction of colour; it is for looking at, never for metrics.

Without norm_pix_loss the prediction is already in normalised-image space.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np

NORM_PIX_EPS = 1e-6
PANELS = ("input", "masked", "reconstruction", "reconstruction_visible")


def patchify(images: np.ndarray, p: int) -> np.ndarray:
  """`[B, H, W, C]` -> `[B, N, p * p * C]` (same order as mae.patchify)."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: np.ndarray, p: int) -> np.ndarray:
  """Inverse of `patchify` for a square grid."""
  b, n, d = patches.shape
  g = int(round(n ** 0.5))
  c = d // (p * p)
  x = patches.reshape(b, g, g, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * p, g * p, c)


def mask_to_pixels(mask: np.ndarray, p: int) -> np.ndarray:
  """Patch mask `[B, N]` -> pixel mask bool `[B, H, W]` (True = masked)."""
  b, n = mask.shape
  g = int(round(n ** 0.5))
  m = np.asarray(mask, bool).reshape(b, g, g)
  return np.repeat(np.repeat(m, p, axis=1), p, axis=2)


def prediction_to_pixels(pred: np.ndarray, images: np.ndarray, p: int,
                         norm_pix_loss: bool, mean: Sequence[float],
                         std: Sequence[float]) -> np.ndarray:
  """Decoder output `[B, N, p*p*3]` -> uint8 `[B, S, S, 3]` for display.

  Args:
    pred: predicted patches.
    images: uint8 `[B, S, S, 3]` inputs (their patch statistics un-normalise
      a norm_pix_loss prediction, module docstring).
    p: patch size.
    norm_pix_loss: whether `pred` is in per-patch standardised units.
    mean, std: the image normalisation (per channel, on [0, 1] pixels).
  """
  mean = np.asarray(mean, np.float64)
  std = np.asarray(std, np.float64)
  normed = (np.asarray(images, np.float64) / 255.0 - mean) / std
  pred = np.asarray(pred, np.float64)
  if norm_pix_loss:
    target = patchify(normed, p)
    mu = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True, ddof=1)
    pred = pred * np.sqrt(var + NORM_PIX_EPS) + mu
  pixels = (unpatchify(pred, p) * std + mean) * 255.0
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def reconstruction_panels(images: np.ndarray, pred: np.ndarray,
                          mask: np.ndarray, patch_size: int, *,
                          norm_pix_loss: bool = True,
                          mean: Sequence[float] = (0.485, 0.456, 0.406),
                          std: Sequence[float] = (0.229, 0.224, 0.225),
                          fill: Sequence[int] = (127, 127, 127)
                          ) -> Dict[str, np.ndarray]:
  """The four panels (module docstring), each uint8 `[B, S, S, 3]`."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"images must be uint8 [B, S, S, 3], got {images.dtype} "
                     f"{images.shape}")
  pixel_mask = mask_to_pixels(mask, patch_size)[..., None]
  fill = np.asarray(fill, np.uint8).reshape(1, 1, 1, 3)
  recon = prediction_to_pixels(pred, images, patch_size, norm_pix_loss, mean,
                               std)
  return {
      "input": images,
      "masked": np.where(pixel_mask, fill, images),
      "reconstruction": recon,
      "reconstruction_visible": np.where(pixel_mask, recon, images),
  }


def grid_of(panels: Dict[str, np.ndarray], pad: int = 2,
            background: int = 255) -> np.ndarray:
  """Rows = images, columns = PANELS; `pad` px of `background` around each.

  Panel (row r, column c) occupies rows `pad + r * (S + pad)` ... and columns
  `pad + c * (S + pad)` ... of the returned uint8 `[H, W, 3]` image.
  """
  cols = [panels[k] for k in PANELS]
  b, s = cols[0].shape[0], cols[0].shape[1]
  h = pad + b * (s + pad)
  w = pad + len(cols) * (s + pad)
  out = np.full((h, w, 3), background, np.uint8)
  for r in range(b):
    for c, panel in enumerate(cols):
      y, x = pad + r * (s + pad), pad + c * (s + pad)
      out[y:y + s, x:x + s] = panel[r]
  return out


def reconstruction_grid(images, pred, mask, patch_size: int, **kwargs
                        ) -> np.ndarray:
  """`reconstruction_panels` laid out by `grid_of` (kwargs to the former)."""
  return grid_of(reconstruction_panels(images, pred, mask, patch_size,
                                       **kwargs))


def write_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 `[H, W, 3]` as PNG (atomically: temp file + rename)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")
  os.replace(tmp, path)

"""Figures: landmark overlays, heatmap PCA ellipses, CED, curves, scatter.

Every function returns a `PIL.Image.Image` (RGB) and, with `path=...`, also
saves it as a PNG (parent folders are created; the file holds the returned
pixels).

  * `landmark_overlay(image, points, gt=None)`: predictions (green) and
    ground truth (red) on an image, with error lines between them (PIL).
  * `matching_pairs(pairs)`: SCE-MAE landmark matching examples (reference
    points, matched and true target points), as `--mode=matching` writes them
    (PIL).
  * `heatmap_pca_ellipses(image, heatmaps)`: the STAR paper's Fig. 3: for each
    landmark the ellipse of the PCA of its heatmap (star_jax.loss.
    distribution_pca: mean, eigenvectors as columns, eigenvalues) drawn on the
    crop (matplotlib); `pca_ellipses` returns the geometry.
  * `ced_curve(nmes_by_name, threshold)`: cumulative error distribution(s)
    from per-face NMEs (landmarks.metrics.ced_curve), as the evaluation report
    draws them (matplotlib).
  * `training_curves(workdir_or_jsonl, keys)`: scalars of the metrics.jsonl
    that training/writers.py writes, one panel per key, against the step
    (matplotlib).
  * `draw_scatter(y, labels, path)`: a 2-D embedding coloured by label, as
    the t-SNE of sce_mae_jax/tsne.py (matplotlib).

The overlays of points on images are drawn with PIL: a point lands on an exact
output pixel, which the tests check. The plots use matplotlib's object API
with the Agg canvas (no pyplot, no global backend state).

Pixel convention (README "Conventions"): point (x, y) is in pixels of the
image with pixel centres at integers; drawn on an image upscaled by an integer
`scale`, it lands at `(x + 0.5) * scale - 0.5`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from matplotlib import patches
from matplotlib.backends import backend_agg
from matplotlib import figure as mpl_figure
import numpy as np
from PIL import Image, ImageDraw

# matplotlib's "tab10" colours, as 0-255 RGB.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
           (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
           (188, 189, 34), (23, 190, 207))
PRED_COLOR = (0, 220, 0)
GT_COLOR = (255, 40, 40)
DPI = 100


def _save(img: Image.Image, path: Optional[str]) -> Image.Image:
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
  return img


def _mpl_colour(rgb) -> Union[Tuple[float, float, float], Any]:
  """0-255 RGB tuple -> matplotlib 0-1 RGB; other colour specs unchanged."""
  if isinstance(rgb, (tuple, list)) and len(rgb) == 3 and max(rgb) > 1:
    return tuple(c / 255.0 for c in rgb)
  return rgb


def new_figure(width: int, height: int) -> mpl_figure.Figure:
  """A `width` x `height` pixel figure on an Agg canvas (no pyplot state)."""
  fig = mpl_figure.Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def _render(fig: mpl_figure.Figure) -> Image.Image:
  """The figure's pixels as an RGB PIL image."""
  fig.canvas.draw()
  rgba = np.asarray(fig.canvas.buffer_rgba())
  return Image.fromarray(rgba[..., :3].copy())


def _as_rgb(image) -> Image.Image:
  """uint8 / float [0, 1] `[H, W]`, `[H, W, 1|3]` array or PIL image -> RGB."""
  if isinstance(image, Image.Image):
    return image.convert("RGB")
  a = np.asarray(image)
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
    raise ValueError(f"image must be [H, W], [H, W, 1] or [H, W, 3]; got "
                     f"{a.shape}")
  if a.dtype != np.uint8:
    a = np.asarray(a, np.float64)
    if a.size and a.max() <= 1.0:
      a = a * 255.0
    a = np.clip(np.round(a), 0, 255).astype(np.uint8)
  return Image.fromarray(a).convert("RGB")


def _default_scale(width: int, height: int, target: int = 256) -> int:
  return max(1, int(math.ceil(target / max(width, height, 1))))


def _to_canvas(points: np.ndarray, scale: int) -> np.ndarray:
  """Image pixels -> PIL drawing coordinates on the `scale`x canvas.

  The point lands at canvas pixel `(x + 0.5) * scale - 0.5`; PIL truncates
  drawing coordinates to whole pixels, so we pass that value + 0.5 (rounding
  to the nearest pixel instead of flooring).
  """
  return (np.asarray(points, np.float64) + 0.5) * scale


def _check_points(points, name: str) -> np.ndarray:
  p = np.asarray(points, np.float64)
  if p.ndim != 2 or p.shape[-1] != 2:
    raise ValueError(f"{name} must be [N, 2] (x, y) pixels; got {p.shape}")
  return p


# --------------------------------------------------------------- overlay ----

def landmark_overlay(image, points, gt=None, *, path: Optional[str] = None,
                     scale: Optional[int] = None,
                     radius: Optional[float] = None, color=PRED_COLOR,
                     gt_color=GT_COLOR, error_lines: bool = True,
                     box: Optional[Sequence[float]] = None) -> Image.Image:
  """Landmarks drawn on an image.

  Args:
    image: `[H, W, 3]` uint8 (or float in [0, 1], grey, PIL image).
    points: `[N, 2]` predicted (x, y) in pixels of `image`.
    gt: optional `[N, 2]` ground truth (drawn in `gt_color`, with a line from
      each ground-truth point to its prediction when `error_lines`).
    path: also save as PNG there.
    scale: integer upscaling of the image (default: longest side >= 256 px).
    radius: dot radius in output pixels (default: 2, or 0.6 % of the longer
      output side when larger).
    box: optional face box (x1, y1, x2, y2) in pixels of `image`, drawn as a
      rectangle through the corner points' pixel centres.

  Returns:
    the RGB image, `scale` times the input size.
  """
  img = _as_rgb(image)
  scale = int(scale or _default_scale(*img.size))
  if scale < 1:
    raise ValueError(f"scale must be a positive integer; got {scale}")
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale),
                     Image.Resampling.NEAREST)
  draw = ImageDraw.Draw(img)
  if radius is None:
    radius = max(2.0, 0.006 * max(img.size))
  if box is not None:
    if np.size(box) != 4:
      raise ValueError(f"box must be (x1, y1, x2, y2); got {box!r}")
    corners = _to_canvas(np.asarray(box, np.float64).reshape(2, 2), scale)
    draw.rectangle([tuple(corners[0]), tuple(corners[1])],
                   outline=(255, 200, 0))
  p = _to_canvas(_check_points(points, "points"), scale)
  if gt is not None:
    g = _to_canvas(_check_points(gt, "gt"), scale)
    if g.shape != p.shape:
      raise ValueError(f"gt {g.shape} and points {p.shape} differ in shape")
    for (x, y), (u, v) in zip(g, p):
      if error_lines:
        draw.line([(x, y), (u, v)], fill=(255, 255, 0), width=1)
      draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                   fill=gt_color)
  for x, y in p:
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
  return _save(img, path)


def ellipse_outline(center, covariance, n_std: float = 2.0,
                    num: int = 32) -> np.ndarray:
  """`[num, 2]` points of the n_std contour of a 2-D Gaussian (pixels).

  x = center + n_std * V sqrt(L) (cos t, sin t): the covariance's
  eigenvectors V and eigenvalues L (numpy eigh, float64).
  """
  cov = np.asarray(covariance, np.float64).reshape(2, 2)
  values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))
  t = np.linspace(0.0, 2.0 * np.pi, num, endpoint=False)
  circle = np.stack([np.cos(t), np.sin(t)], axis=-1)
  return (np.asarray(center, np.float64)
          + n_std * (circle * np.sqrt(np.maximum(values, 0.0))) @ vectors.T)


def faces_overlay(image, faces: Sequence[Mapping[str, Any]], *,
                  n_std: float = 2.0, path: Optional[str] = None,
                  scale: Optional[int] = None, color=PRED_COLOR,
                  ellipse_color=(0, 170, 255)) -> Image.Image:
  """Every face's landmarks, box and uncertainty ellipses on one image.

  Args:
    image: as `landmark_overlay`.
    faces: dicts with "landmarks" `[N, 2]`, optional "box" (x1, y1, x2, y2)
      and optional "covariance" `[N, 2, 2]` (pixels squared), drawn as the
      n_std ellipse of each point (2: 86 % of a Gaussian's mass).
    n_std, path, scale, color: as above.
  """
  img = _as_rgb(image)
  scale = int(scale or _default_scale(*img.size))
  if scale > 1:
    img = img.resize((img.width * scale, img.height * scale),
                     Image.Resampling.NEAREST)
  draw = ImageDraw.Draw(img)
  radius = max(1.5, 0.004 * max(img.size))
  for face in faces:
    box = face.get("box")
    if box is not None:
      corners = _to_canvas(np.asarray(box, np.float64).reshape(2, 2), scale)
      draw.rectangle([tuple(corners[0]), tuple(corners[1])],
                     outline=(255, 200, 0))
    points = _check_points(face["landmarks"], "landmarks")
    cov = face.get("covariance")
    if cov is not None:
      for centre, c in zip(points, np.asarray(cov, np.float64)):
        outline = _to_canvas(ellipse_outline(centre, c, n_std), scale)
        draw.polygon([tuple(q) for q in outline], outline=ellipse_color)
    for x, y in _to_canvas(points, scale):
      draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                   fill=color)
  return _save(img, path)


def matching_pairs(pairs: Sequence[Mapping[str, Any]], *,
                   path: Optional[str] = None, scale: Optional[int] = None,
                   radius: Optional[float] = None,
                   gap: int = 8) -> Image.Image:
  """Landmark matching examples, one row per pair: reference | target.

  Each landmark has its own colour (PALETTE, cycled): a filled dot at the
  reference point (left), and on the target (right) a filled dot at the
  matched point with an outlined ring at the true target point and a line
  between them (the match error).

  Args:
    pairs: mappings with `source_image`, `target_image` (`[S, S, 3]`, same S
      for all), `source_points`, `matched_points`, `target_points` (`[K, 2]`
      (x, y) pixels of their image).
    path: also save as PNG there.
    scale: integer upscaling (default: image side >= 192 px).
    radius: dot radius in output pixels (default 3).
    gap: pixels between the two panels and between rows.

  Returns:
    RGB image `[rows * (S * scale + gap) - gap, 2 * S * scale + gap]`.
  """
  if not pairs:
    raise ValueError("matching_pairs needs at least one pair")
  first = _as_rgb(pairs[0]["source_image"])
  scale = int(scale or _default_scale(*first.size, target=192))
  side_w, side_h = first.width * scale, first.height * scale
  radius = 3.0 if radius is None else float(radius)
  canvas = Image.new("RGB", (2 * side_w + gap,
                             len(pairs) * (side_h + gap) - gap),
                     (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for row, pair in enumerate(pairs):
    top = row * (side_h + gap)
    panels = []
    for key, left in (("source_image", 0), ("target_image", side_w + gap)):
      img = _as_rgb(pair[key])
      if img.size != first.size:
        raise ValueError(f"pair {row}: {key} is {img.size}, expected "
                         f"{first.size} like the first pair")
      canvas.paste(img.resize((side_w, side_h), Image.Resampling.NEAREST),
                   (left, top))
      panels.append(np.array([left, top], np.float64))
    src = _to_canvas(_check_points(pair["source_points"], "source_points"),
                     scale) + panels[0]
    got = _to_canvas(_check_points(pair["matched_points"], "matched_points"),
                     scale) + panels[1]
    true = _to_canvas(_check_points(pair["target_points"], "target_points"),
                      scale) + panels[1]
    if not src.shape == got.shape == true.shape:
      raise ValueError(f"pair {row}: point arrays differ in shape "
                       f"{src.shape}, {got.shape}, {true.shape}")
    r = radius
    for k in range(src.shape[0]):
      colour = PALETTE[k % len(PALETTE)]
      (x, y), (u, v), (a, b) = src[k], got[k], true[k]
      draw.line([(a, b), (u, v)], fill=colour, width=1)
      draw.ellipse([a - r - 1, b - r - 1, a + r + 1, b + r + 1],
                   outline=colour, width=1)
      draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
      draw.ellipse([u - r, v - r, u + r, v + r], fill=colour)
  return _save(canvas, path)


# ---------------------------------------------------------- heatmap PCA ----

@dataclasses.dataclass
class EllipseGeometry:
  """Per landmark, in crop pixels.

  Attributes:
    center: `[N, 2]` (x, y): the heatmap mean (eq. 1).
    axes: `[N, 2, 2]`: column i is semi-axis i as a vector,
      `n_std * sqrt(eigenvalue_i) * eigenvector_i * (pixels per grid unit)`;
      column 0 the minor (smaller eigenvalue), column 1 the major axis.
    eigenvalues: `[N, 2]` ascending, in heatmap-grid units (eq. 5).
    eigenvectors: `[N, 2, 2]` unit eigenvectors as columns (eq. 5).
  """
  center: np.ndarray
  axes: np.ndarray
  eigenvalues: np.ndarray
  eigenvectors: np.ndarray


def pca_ellipses(heatmaps, crop_size: int, *, n_std: float = 1.0,
                 align_corners: bool = False) -> EllipseGeometry:
  """Geometry of the STAR Fig. 3 ellipses of one face's heatmaps.

  The PCA is landmarks.distribution.distribution_pca (heatmap normalised to
  sum 1, the weighted mean and the unbiased weighted covariance of eq. 3-4
  on the grid `linspace(-1, 1, W)`, its eigen-decomposition eq. 5). Coordinates go to
  crop pixels as the STAR decoder does (landmarks.coordinates.
  denormalise_landmarks: align_corners=False, `x_px = ((c + 1) S - 1) / 2`,
  i.e. S / 2 pixels per grid unit; align_corners=True: (S - 1) / 2).

  Scale: semi-axis i has length `n_std * sqrt(eigenvalue_i)` (grid units,
  then pixels): the standard deviation of the heatmap along that principal
  direction, so with n_std = 1 the ellipse is the 1-sigma contour of a
  Gaussian with the heatmap's covariance (n_std = 2: 2-sigma).

  Args:
    heatmaps: `[N, h, w]` or `[1, N, h, w]` non-negative heatmaps of one face.
    crop_size: S, the crop side in pixels.
    n_std: semi-axes in standard deviations.
    align_corners: the decoder convention (config.loss.align_corners).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from landmarks import coordinates  # pylint: disable=g-import-not-at-top
  from landmarks import distribution  # pylint: disable=g-import-not-at-top
  h = np.asarray(heatmaps, np.float32)
  if h.ndim == 4 and h.shape[0] == 1:
    h = h[0]
  if h.ndim != 3:
    raise ValueError(f"heatmaps must be [N, h, w] (one face); got {h.shape}")
  pca = distribution.distribution_pca(jnp.asarray(h[None]))
  mean = coordinates.denormalise_landmarks(pca.mean[0], crop_size,
                                           align_corners)
  px_per_unit = coordinates.pixels_per_unit(crop_size, align_corners)
  values = np.asarray(pca.eigenvalues[0], np.float64)
  vectors = np.asarray(pca.eigenvectors[0], np.float64)
  lengths = n_std * np.sqrt(np.maximum(values, 0.0)) * px_per_unit  # [N, 2]
  return EllipseGeometry(center=np.asarray(mean, np.float64),
                         axes=vectors * lengths[:, None, :],
                         eigenvalues=values, eigenvectors=vectors)


def ellipse_patch(center, axes, **kwargs) -> patches.Ellipse:
  """The matplotlib ellipse of one landmark's `EllipseGeometry` entry.

  `axes` `[2, 2]` holds the semi-axes as columns (minor, major): width is the
  major diameter, height the minor one, the angle that of the major axis in
  the data coordinates (x right, y down on an image).
  """
  center = np.asarray(center, np.float64)
  axes = np.asarray(axes, np.float64)
  major, minor = axes[:, 1], axes[:, 0]
  angle = math.degrees(math.atan2(major[1], major[0]))
  return patches.Ellipse(tuple(center), 2 * float(np.linalg.norm(major)),
                         2 * float(np.linalg.norm(minor)), angle=angle,
                         **kwargs)


def heatmap_pca_ellipses(image, heatmaps, *, n_std: float = 1.0,
                         align_corners: bool = False,
                         path: Optional[str] = None,
                         scale: Optional[int] = None, color=(255, 200, 0),
                         fill=None, major_axis_color=(255, 40, 40),
                         show_major_axis: bool = True,
                         show_mean: bool = True) -> Image.Image:
  """The STAR paper's Fig. 3: each landmark's heatmap PCA as an ellipse.

  The crop is shown at `scale` x its size (nearest upscaling) with data
  coordinates = crop pixels (pixel centres at integers). Outlines and lines
  are 1 output pixel wide and not anti-aliased, so their pixels have exactly
  the requested colours; the fill is anti-aliased (a pixel's share of the
  fill colour is its area inside the ellipse).

  Args:
    image: the `[S, S, 3]` crop the heatmaps were predicted from.
    heatmaps: `[N, h, w]` (or `[1, N, h, w]`) heatmaps of that crop (e.g. the
      last stack's `heatmaps` of the model output).
    n_std: semi-axes = n_std x the standard deviation along each principal
      direction (`pca_ellipses`; 1 = the 1-sigma ellipse).
    align_corners: the decoder convention (config.loss.align_corners).
    path: also save as PNG there.
    scale: integer upscaling (default: longest side >= 256 px).
    color, fill: outline and fill colours of the ellipses (None = no
      outline / no fill).
    major_axis_color: colour of the major semi-axis line (the ambiguous
      direction STAR shrinks the error along).
    show_major_axis, show_mean: draw the major axis / the mean.
  """
  img = _as_rgb(image)
  if img.width != img.height:
    raise ValueError(f"the crop must be square; got {img.width}x{img.height}")
  size = img.width
  geometry = pca_ellipses(heatmaps, size, n_std=n_std,
                          align_corners=align_corners)
  scale = int(scale or _default_scale(*img.size))
  side = size * scale
  fig = new_figure(side, side)
  ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
  ax.set_axis_off()
  ax.imshow(np.asarray(img), interpolation="nearest",
            extent=(-0.5, size - 0.5, size - 0.5, -0.5))
  line_width = 72.0 / DPI  # 1 output pixel, in points.
  for c, axes in zip(geometry.center, geometry.axes):
    if fill is not None:
      ax.add_patch(ellipse_patch(c, axes, facecolor=_mpl_colour(fill),
                                 edgecolor="none", linewidth=0.0))
    if color is not None:
      ax.add_patch(ellipse_patch(c, axes, fill=False,
                                 edgecolor=_mpl_colour(color),
                                 linewidth=line_width, antialiased=False))
    if show_major_axis:
      ends = np.stack([c - axes[:, 1], c + axes[:, 1]])
      ax.plot(ends[:, 0], ends[:, 1], color=_mpl_colour(major_axis_color),
              linewidth=line_width, antialiased=False)
    if show_mean:
      ax.plot([c[0]], [c[1]], marker="s", markersize=line_width,
              linestyle="none", color=_mpl_colour(major_axis_color),
              antialiased=False)
  ax.set_xlim(-0.5, size - 0.5)
  ax.set_ylim(size - 0.5, -0.5)
  return _save(_render(fig), path)


# ---------------------------------------------------------------- plots ----

def ced_curve(nmes_by_name: Mapping[str, Sequence[float]], threshold: float,
              *, step: float = 1e-4, path: Optional[str] = None,
              title: str = "", size: Tuple[int, int] = (640, 420),
              return_axes: bool = False):
  """Cumulative error distribution curves (fraction of faces vs NME).

  Each curve is landmarks.metrics.ced_curve(nmes, threshold, step): for x on
  `arange(0, threshold + step, step)`, the share of faces with NME <= x
  (the curve whose normalised area is AUC@threshold). The x axis is the NME
  in % (0 .. 100 x threshold), the y axis the fraction of faces (0 .. 1).

  Args:
    nmes_by_name: curve name -> per-face NMEs (fractions, not %).
    threshold: the right end of the x axis (FR / AUC threshold).
    step: CED sampling step.
    path: also save as PNG there.
    size: (width, height) of the image in pixels.
    return_axes: also return the matplotlib `Axes` (one `Line2D` per curve,
      x data in NME %, in the order of `nmes_by_name`).
  """
  from landmarks import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  if not nmes_by_name:
    raise ValueError("ced_curve needs at least one named set of NMEs")
  fig = new_figure(*size)
  ax = fig.add_subplot(1, 1, 1)
  for k, (name, nmes) in enumerate(nmes_by_name.items()):
    xs, ys = metrics_lib.ced_curve(nmes, threshold, step)
    ax.plot(100.0 * xs, ys, color=_mpl_colour(PALETTE[k % len(PALETTE)]),
            linewidth=1.5, label=name)
  ax.set_xlim(0.0, 100.0 * float(threshold))
  ax.set_ylim(0.0, 1.0)
  ax.set_xlabel("NME (%)")
  ax.set_ylabel("fraction of faces")
  ax.set_title(title or f"CED up to NME {100 * threshold:g} %")
  ax.grid(True, color="0.88")
  ax.legend(loc="lower right", fontsize="small")
  fig.tight_layout()
  img = _save(_render(fig), path)
  return (img, ax) if return_axes else img


def read_metrics(workdir_or_jsonl: str) -> List[dict]:
  """Rows of `<workdir>/metrics.jsonl` (or of the given .jsonl file)."""
  path = workdir_or_jsonl
  if os.path.isdir(path):
    path = os.path.join(path, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: pass a training workdir (with metrics.jsonl, as "
        "training/writers.py writes it) or the .jsonl file itself")
  rows = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path} line {line_no} is not JSON: {e}") from e
  return rows


def _series(rows: Sequence[dict], key: str) -> Tuple[np.ndarray, np.ndarray]:
  steps, values = [], []
  for r in rows:
    if key in r and "step" in r:
      try:
        v = float(r[key])  # "nan" / "inf" strings become non-finite floats.
      except (TypeError, ValueError):
        continue
      steps.append(float(r["step"]))
      values.append(v)
  return np.asarray(steps), np.asarray(values)


def default_curve_keys(rows: Sequence[dict]) -> List[str]:
  """train/loss and the eval NMEs (`<split>[_ema]/nme`) present in `rows`."""
  keys = sorted({k for r in rows for k in r})
  out = [k for k in ("train/loss",) if k in keys]
  out += [k for k in keys if k.count("/") == 1 and k.endswith("/nme")
          and not k.startswith("train/")]
  return out


def training_curves(workdir_or_jsonl: str,
                    keys: Optional[Sequence[str]] = None, *,
                    path: Optional[str] = None, width: int = 640,
                    panel_height: int = 200, log_y: Union[bool, Sequence[str]]
                    = False, return_axes: bool = False):
  """Scalars from metrics.jsonl against the step, one panel per key.

  Args:
    workdir_or_jsonl: a training workdir or a metrics.jsonl file.
    keys: the scalar names (e.g. "train/loss", "test_ema/nme"); default
      `default_curve_keys`. Non-finite values ("nan" in the file) are
      skipped, and so are values <= 0 on a log axis.
    path: also save as PNG there.
    width, panel_height: image size in pixels (height = panel_height x the
      number of keys).
    log_y: True (all panels) or the keys whose y axis is logarithmic.
    return_axes: also return the list of matplotlib `Axes` (one per panel,
      each with one `Line2D` of (step, value); x limits = the panel's first
      and last step).
  """
  rows = read_metrics(workdir_or_jsonl)
  keys = list(keys) if keys else default_curve_keys(rows)
  available = sorted({k for r in rows for k in r} - {"step", "time"})
  missing = [k for k in keys if k not in available]
  if not keys or missing:
    raise ValueError(f"keys {missing or keys} not in {workdir_or_jsonl}; "
                     f"available: {available}")
  fig = new_figure(width, panel_height * len(keys))
  all_axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
  for k, (key, ax) in enumerate(zip(keys, all_axes)):
    steps, values = _series(rows, key)
    log = log_y is True or (not isinstance(log_y, bool) and key in log_y)
    ok = np.isfinite(values) & ((values > 0) if log else True)
    steps, values = steps[ok], values[ok]
    ax.plot(steps, values, color=_mpl_colour(PALETTE[k % len(PALETTE)]),
            linewidth=1.5, marker="o" if values.size == 1 else None,
            markersize=3)
    if log:
      ax.set_yscale("log")
    if steps.size and steps.max() > steps.min():
      ax.set_xlim(float(steps.min()), float(steps.max()))
    ax.set_title(key + (" (log scale)" if log else ""), loc="left",
                 fontsize="medium")
    ax.grid(True, color="0.88")
    if k == len(keys) - 1:
      ax.set_xlabel("step")
  fig.tight_layout()
  img = _save(_render(fig), path)
  return (img, list(all_axes)) if return_axes else img


def draw_scatter(y: np.ndarray, labels: np.ndarray, path: str,
                 names: Optional[Sequence[str]] = None, title: str = "",
                 size: int = 600, *, return_axes: bool = False):
  """PNG scatter of a 2-D embedding coloured by label, saved at `path`.

  One colour per distinct label (PALETTE, cycled, in sorted label order),
  named `names[label]` (else "point <label>") in a legend right of the
  `size` x `size` pixel plot.

  Returns:
    the RGB image (`size + 140` x `size` pixels), and with `return_axes`
    the matplotlib `Axes` (one `PathCollection` per label, in that order).
  """
  y = np.asarray(y, np.float64)
  labels = np.asarray(labels)
  legend = 140
  fig = new_figure(size + legend, size)
  ax = fig.add_axes((0.02, 0.02, 0.96 * size / (size + legend), 0.92))
  for k, c in enumerate(np.unique(labels)):
    name = names[int(c)] if names is not None and int(c) < len(names) else (
        f"point {int(c)}")
    pts = y[labels == c]
    ax.scatter(pts[:, 0], pts[:, 1], s=12,
               color=_mpl_colour(PALETTE[k % len(PALETTE)]), label=name,
               linewidths=0)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_aspect("equal", adjustable="datalim")
  if title:
    ax.set_title(title, loc="left", fontsize="medium")
  ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
            frameon=False, markerscale=1.5)
  img = _save(_render(fig), path)
  return (img, ax) if return_axes else img

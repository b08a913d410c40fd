"""Feature quality: t-SNE of landmark features + silhouette (SCE-MAE Fig. 5).

The feature of every annotated landmark of the test faces (cover-and-stride
features sampled bilinearly at the landmark, `landmark_features`) is labelled
by its landmark index; the points are embedded in 2-D by an exact t-SNE
(`tsne`, numpy: perplexity calibration by binary search on each point's
Gaussian precision, then gradient descent with momentum, gains and early
exaggeration, as van der Maaten's reference implementation) and the
silhouette coefficient (`silhouette_score`, Rousseeuw 1987) of the 2-D
embedding is reported, mean +- std over `runs` t-SNE restarts (the paper runs
100). The scatter is drawn with PIL (`draw_scatter`).

scikit-learn and matplotlib are not used (not installed). Exact t-SNE is
O(n^2) memory/time: a few hundred to ~2000 points.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0),
           (0, 0, 128), (170, 110, 40)]
FIVE_POINT_NAMES = ("left eye", "right eye", "nose", "left lip corner",
                    "right lip corner")


# ------------------------------------------------------------ silhouette ----

def pairwise_distances(x: np.ndarray) -> np.ndarray:
  """Euclidean `[n, n]` distances (float64)."""
  x = np.asarray(x, np.float64)
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
  np.fill_diagonal(d2, 0.0)
  return np.sqrt(d2)


def silhouette_samples(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-point silhouette `s_i = (b_i - a_i) / max(a_i, b_i)`.

  a_i: mean distance to the other members of i's cluster; b_i: smallest mean
  distance to another cluster's members. Points alone in their cluster get
  s_i = 0 (Rousseeuw's convention). Needs >= 2 clusters.
  """
  labels = np.asarray(labels)
  classes = np.unique(labels)
  if classes.size < 2:
    raise ValueError("the silhouette needs at least 2 distinct labels.")
  d = pairwise_distances(x)
  n = d.shape[0]
  onehot = labels[:, None] == classes[None, :]  # [n, L]
  sums = d @ onehot  # [n, L]
  counts = onehot.sum(0).astype(np.float64)
  own = np.argmax(onehot, axis=1)
  own_count = counts[own]
  a = np.where(own_count > 1, sums[np.arange(n), own] /
               np.maximum(own_count - 1, 1), 0.0)
  mean_other = sums / counts[None, :]
  mean_other[np.arange(n), own] = np.inf
  b = mean_other.min(axis=1)
  s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
  return np.where(own_count > 1, s, 0.0)


def silhouette_score(x: np.ndarray, labels: np.ndarray) -> float:
  """Mean silhouette coefficient over all points."""
  return float(np.mean(silhouette_samples(x, labels)))


# ----------------------------------------------------------------- t-SNE ----

def conditional_probabilities(sq_dist: np.ndarray, perplexity: float,
                              tol: float = 1e-5, max_iter: int = 100
                              ) -> np.ndarray:
  """Row-stochastic `P[j|i]` whose entropies equal `log(perplexity)`.

  Binary search, per row, on the precision beta_i = 1 / (2 sigma_i^2) of
  `p_j|i ∝ exp(-beta_i ||x_i - x_j||^2)` (j != i) so that the Shannon entropy
  H(P_i) (nats) matches `log(perplexity)` within `tol`.
  """
  n = sq_dist.shape[0]
  if not 1.0 <= perplexity < n:
    raise ValueError(f"perplexity must be in [1, n - 1 = {n - 1}], got "
                     f"{perplexity}.")
  target = np.log(perplexity)
  p = np.zeros((n, n))
  for i in range(n):
    d = np.delete(sq_dist[i], i)
    d = d - d.min()
    beta, lo, hi = 1.0, 0.0, np.inf
    for _ in range(max_iter):
      w = np.exp(-beta * d)
      sw = w.sum()
      h = np.log(sw) + beta * np.sum(d * w) / sw
      if abs(h - target) < tol:
        break
      if h > target:  # too flat: increase precision.
        lo = beta
        beta = beta * 2.0 if hi == np.inf else 0.5 * (beta + hi)
      else:
        hi = beta
        beta = 0.5 * (beta + lo)
    p[i, np.arange(n) != i] = w / sw
  return p


def entropy_rows(p: np.ndarray) -> np.ndarray:
  """Shannon entropy (nats) of each row."""
  with np.errstate(divide="ignore", invalid="ignore"):
    return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def joint_probabilities(x: np.ndarray, perplexity: float) -> np.ndarray:
  """Symmetric `P = (P_j|i + P_i|j) / 2n` (t-SNE eq. in Sec. 3.1)."""
  d2 = pairwise_distances(x) ** 2
  p = conditional_probabilities(d2, perplexity)
  p = (p + p.T) / (2.0 * p.shape[0])
  return np.maximum(p, 1e-12)


def kl_gradient(p: np.ndarray, y: np.ndarray):
  """KL(P || Q) and its gradient for the Student-t Q of embedding `y`.

  `dC/dy_i = 4 sum_j (p_ij - q_ij) (y_i - y_j) / (1 + ||y_i - y_j||^2)`.
  """
  sq = np.sum(y * y, axis=1)
  num = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2 * y @ y.T, 0))
  np.fill_diagonal(num, 0.0)
  q = np.maximum(num / num.sum(), 1e-12)
  pq = (p - q) * num
  grad = 4.0 * (np.diag(pq.sum(1)) - pq) @ y
  kl = float(np.sum(p * np.log(p / q)))
  return kl, grad


def tsne(x: np.ndarray, perplexity: float = 30.0, iterations: int = 500,
         seed: int = 0, learning_rate: Optional[float] = None,
         early_exaggeration: float = 12.0, exaggeration_iters: int = 100,
         dims: int = 2) -> np.ndarray:
  """Exact t-SNE of `x [n, D]` -> `[n, dims]` (float64).

  `learning_rate=None`: `max(n / early_exaggeration / 4, 50)` (the "auto"
  rate of Belkina et al. 2019, as scikit-learn); momentum 0.5 then 0.8 after
  250 iterations; early exaggeration for the first `exaggeration_iters`.
  """
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  if learning_rate is None:
    learning_rate = max(n / early_exaggeration / 4.0, 50.0)
  p = joint_probabilities(x, min(perplexity, (n - 1) / 3.0))
  rng = np.random.default_rng(seed)
  y = 1e-4 * rng.standard_normal((n, dims))
  update = np.zeros_like(y)
  gains = np.ones_like(y)
  for it in range(int(iterations)):
    exag = early_exaggeration if it < exaggeration_iters else 1.0
    momentum = 0.5 if it < 250 else 0.8
    _, grad = kl_gradient(p * exag, y)
    same_sign = np.sign(grad) == np.sign(update)
    gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
    update = momentum * update - learning_rate * gains * grad
    y = y + update
    y = y - y.mean(axis=0)
  return y


# --------------------------------------------------------------- drawing ----

def draw_scatter(y: np.ndarray, labels: np.ndarray, path: str,
                 names: Optional[Sequence[str]] = None, title: str = "",
                 size: int = 600) -> None:
  """PNG scatter of a 2-D embedding coloured by label (PIL)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  margin, legend = 20, 140
  img = Image.new("RGB", (size + legend, size), "white")
  draw = ImageDraw.Draw(img)
  lo, hi = y.min(0), y.max(0)
  scale = (size - 2 * margin) / np.maximum(hi - lo, 1e-12)
  pix = (y - lo) * scale + margin
  classes = np.unique(labels)
  for k, c in enumerate(classes):
    colour = PALETTE[k % len(PALETTE)]
    for px, py in pix[labels == c]:
      draw.ellipse([px - 2, size - py - 2, px + 2, size - py + 2], fill=colour)
    name = names[int(c)] if names is not None and int(c) < len(names) else (
        f"point {int(c)}")
    draw.rectangle([size + 8, 30 + 18 * k, size + 18, 40 + 18 * k],
                   fill=colour)
    draw.text((size + 24, 28 + 18 * k), name, fill="black")
  if title:
    draw.text((margin, 4), title, fill="black")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)


# ---------------------------------------------------------------- driver ----

def landmark_features(dense: np.ndarray, landmarks: np.ndarray,
                      image_size: int) -> np.ndarray:
  """Features `[n, K, D]` at the landmarks from dense `[n, h, w, D]`.

  Bilinear sampling at `(p + 0.5) h / S - 0.5` (feature-grid coordinates of
  pixel p under the half-pixel "centre" geometry of cover-and-stride).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from sce_mae_jax import tps as tps_lib  # pylint: disable=g-import-not-at-top
  h = dense.shape[1]
  grid = (np.asarray(landmarks, np.float32) + 0.5) * (h / image_size) - 0.5
  fn = jax.vmap(lambda f, p: tps_lib.bilinear_sample(f, p, padding="border"))
  return np.asarray(fn(jnp.asarray(dense), jnp.asarray(grid)))


def position_only_features(landmarks: np.ndarray, image_size: int,
                           width: int, grid_size: int) -> np.ndarray:
  """`[n, K, width]`: the ViT's fixed 2-D sin-cos position table (no image)
  sampled at the landmarks, as `landmark_features` samples real features.

  The reference a feature silhouette must beat: with crops that put every
  face at about the same place, landmark identity is largely a function of
  position, which this table encodes with no image at all.
  """
  from sce_mae_jax import vit  # pylint: disable=g-import-not-at-top
  table = vit.sincos_pos_embed_2d(width, grid_size, cls_token=False)
  table = table.reshape(grid_size, grid_size, width).astype(np.float32)
  n = np.shape(landmarks)[0]
  dense = np.broadcast_to(table, (n,) + table.shape)
  return landmark_features(dense, landmarks, image_size)


def position_r2(dense: np.ndarray, width: int, grid_size: int,
                patch_size: int) -> float:
  """How much of dense features `[n, h, w, D]` is position: the R^2 of a
  least-squares map (with intercept) from the ViT's sin-cos position table
  at each feature cell to the cell's feature, fitted on the first half of
  the images and scored on the second.

  The LCR loss can be lowered by features that only encode where a token is
  (a ViT adds its position table to every token); 1.0 means the features
  are a linear function of position, 0.0 that position explains nothing.
  """
  from sce_mae_jax import vit  # pylint: disable=g-import-not-at-top
  n, h, w, d = dense.shape
  if n < 2:
    raise ValueError("position_r2 needs at least 2 images.")
  stride = grid_size * patch_size / h
  # Cell centres in patch units (patch r's centre is patch coordinate r).
  coords = ((np.arange(h) + 0.5) * stride - 0.5 - (patch_size - 1) / 2
            ) / patch_size
  rows, cols = np.meshgrid(coords, coords, indexing="ij")
  table = np.concatenate(
      [vit.sincos_pos_embed_1d(width // 2, cols.reshape(-1)),
       vit.sincos_pos_embed_1d(width // 2, rows.reshape(-1))], axis=1)
  x = np.concatenate([table, np.ones((h * w, 1))], axis=1)
  half = n // 2
  fit = np.asarray(dense[:half], np.float64).reshape(half, h * w, d)
  test = np.asarray(dense[half:], np.float64).reshape(n - half, h * w, d)
  coef, *_ = np.linalg.lstsq(np.tile(x, (half, 1)), fit.reshape(-1, d),
                             rcond=None)
  pred = x @ coef
  resid = np.sum(np.square(test - pred[None]))
  total = np.sum(np.square(test - test.reshape(-1, d).mean(axis=0)))
  return float(1.0 - resid / total)


def feature_quality(features: np.ndarray, *, perplexity: float = 30.0,
                    iterations: int = 500, runs: int = 3,
                    png: Optional[str] = None, names=None, title: str = ""
                    ) -> Dict[str, float]:
  """t-SNE `runs` times on `[n, K, D]` landmark features; silhouette stats."""
  n, k, d = features.shape
  x = features.reshape(n * k, d)
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  labels = np.tile(np.arange(k), n)
  scores, first = [], None
  for r in range(int(runs)):
    y = tsne(x, perplexity, iterations, seed=r)
    scores.append(silhouette_score(y, labels))
    first = y if first is None else first
  if png:
    draw_scatter(first, labels, png, names,
                 f"{title} SC {np.mean(scores):.3f} ± {np.std(scores):.3f}")
  return {"silhouette_mean": float(np.mean(scores)),
          "silhouette_std": float(np.std(scores)),
          "silhouette_runs": [float(s) for s in scores],
          "points": int(n * k)}


def run_feature_quality(model, params, arrays, config, workdir):
  """`--mode=tsne`: features of `tsne.num_faces` eval faces -> PNG + JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  t = config.tsne
  m = min(int(t.num_faces), arrays["image"].shape[0])
  fn = jax.jit(lambda im: model.dense_features(params, im, t.feature_kind))
  images = arrays["image"][:m]
  dense = np.concatenate([np.asarray(fn(jnp.asarray(images[i:i + 16])))
                          for i in range(0, m, 16)])
  size = arrays["image"].shape[1]
  feats = landmark_features(dense, arrays["landmarks"][:m], size)
  names = FIVE_POINT_NAMES if feats.shape[1] == 5 else None
  result = feature_quality(feats, perplexity=float(t.perplexity),
                           iterations=int(t.iterations), runs=int(t.runs),
                           png=os.path.join(workdir, "tsne.png"), names=names,
                           title=t.feature_kind)
  encoder = model.encoder
  position = position_only_features(arrays["landmarks"][:m], size,
                                    encoder.width, encoder.grid_size)
  result["position_only"] = feature_quality(
      position, perplexity=float(t.perplexity), iterations=int(t.iterations),
      runs=int(t.runs), png=os.path.join(workdir, "tsne_position_only.png"),
      names=names, title="position only")
  result["num_faces"] = int(m)
  result["position_r2"] = position_r2(dense, encoder.width, encoder.grid_size,
                                      encoder.patch_size)
  with open(os.path.join(workdir, "tsne.json"), "w") as f:
    json.dump(result, f, indent=2)
  pos = result["position_only"]
  print(f"silhouette {result['silhouette_mean']:.3f} ± "
        f"{result['silhouette_std']:.3f} over {t.runs} t-SNE runs "
        f"({result['points']} points) -> {workdir}/tsne.png; position-only "
        f"reference {pos['silhouette_mean']:.3f} ± {pos['silhouette_std']:.3f}"
        f"; R^2 of the features from position alone "
        f"{result['position_r2']:.3f}", flush=True)
  return result

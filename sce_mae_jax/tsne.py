"""Feature quality: t-SNE of landmark features + silhouette (SCE-MAE Fig. 5).

The feature of every annotated landmark of the test faces (cover-and-stride
features sampled bilinearly at the landmark, `landmark_features`) is labelled
by its landmark index; the points are embedded in 2-D by an exact t-SNE
(`tsne`: scikit-learn's `TSNE(method="exact")`) and the silhouette
coefficient (`sklearn.metrics.silhouette_score`, Rousseeuw 1987; a point
alone in its cluster counts 0) of the 2-D embedding is reported, mean +- std
over `runs` t-SNE restarts (the paper runs 100). The scatter is
landmarks.plots.draw_scatter.

Exact t-SNE is O(n^2) memory/time: a few hundred to a few thousand points.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import manifold
from sklearn import metrics as sk_metrics

from landmarks import plots
from sce_mae_jax import tps as tps_lib
from sce_mae_jax import vit

FIVE_POINT_NAMES = ("left eye", "right eye", "nose", "left lip corner",
                    "right lip corner")


def tsne(x: np.ndarray, perplexity: float = 30.0, iterations: int = 500,
         seed: int = 0, learning_rate: Optional[float] = None,
         early_exaggeration: float = 12.0,
         exaggeration_iters: Optional[int] = 100,
         dims: int = 2) -> np.ndarray:
  """Exact t-SNE of `x [n, D]` -> `[n, dims]` (float64), by scikit-learn.

  The arguments map onto `sklearn.manifold.TSNE` as:
    * perplexity -> `perplexity`, capped at `(n - 1) / 3` (sklearn needs it
      below n; the cap keeps ~3 perplexities of neighbours per point);
    * iterations -> `max_iter` (all iterations, the early-exaggeration phase
      included; sklearn needs >= 250), run to the end: `min_grad_norm=0`,
      `n_iter_without_progress=iterations`;
    * seed -> `random_state`, and the start `init`: sklearn's `"random"`
      start (`1e-4 RandomState(seed).standard_normal`) kept in float64 (its
      own is rounded to float32, which makes the whole descent float32);
    * learning_rate None -> `"auto"`, `max(n / early_exaggeration / 4, 50)`
      (Belkina et al. 2019);
    * early_exaggeration -> `early_exaggeration`, applied with momentum 0.5
      for the first `exaggeration_iters` iterations, then momentum 0.8.
      sklearn has no argument for that length: it is its class attribute
      `_EXPLORATION_MAX_ITER` (250), set here in a subclass. 100 is the
      length of van der Maaten's reference implementation; None keeps
      sklearn's 250 (bench/tsne_sklearn.py compares the two);
    * dims -> `n_components`; `method="exact"`, `metric="euclidean"` (the
      input affinities use squared Euclidean distances).
  """
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  init = 1e-4 * np.random.RandomState(int(seed)).standard_normal(
      (n, int(dims)))
  cls = manifold.TSNE
  if exaggeration_iters is not None:
    cls = type("TSNE", (manifold.TSNE,),
               {"_EXPLORATION_MAX_ITER": int(exaggeration_iters)})
  model = cls(
      n_components=int(dims), perplexity=min(float(perplexity),
                                             (n - 1) / 3.0),
      early_exaggeration=float(early_exaggeration),
      learning_rate="auto" if learning_rate is None else float(learning_rate),
      max_iter=int(iterations), n_iter_without_progress=int(iterations),
      min_grad_norm=0.0, metric="euclidean", init=init,
      random_state=int(seed), method="exact")
  return model.fit_transform(x)


# ---------------------------------------------------------------- driver ----

def landmark_features(dense: np.ndarray, landmarks: np.ndarray,
                      image_size: int) -> np.ndarray:
  """Features `[n, K, D]` at the landmarks from dense `[n, h, w, D]`.

  Bilinear sampling at `(p + 0.5) h / S - 0.5` (feature-grid coordinates of
  pixel p under the half-pixel "centre" geometry of cover-and-stride).
  """
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
    scores.append(float(sk_metrics.silhouette_score(y, labels)))
    first = y if first is None else first
  if png:
    plots.draw_scatter(
        first, labels, png, names,
        f"{title} SC {np.mean(scores):.3f} ± {np.std(scores):.3f}")
  return {"silhouette_mean": float(np.mean(scores)),
          "silhouette_std": float(np.std(scores)),
          "silhouette_runs": [float(s) for s in scores],
          "points": int(n * k)}


def run_feature_quality(model, params, arrays, config, workdir):
  """`--mode=tsne`: features of `tsne.num_faces` eval faces -> PNG + JSON."""
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

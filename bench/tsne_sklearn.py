r"""scikit-learn's exact t-SNE vs a NumPy reference t-SNE, on the same data.

`sce_mae_jax.tsne.tsne` runs `sklearn.manifold.TSNE(method="exact")` in
float64. This script holds a float64 NumPy t-SNE written from van der
Maaten's reference scheme (per-row binary search of the Gaussian precision
to the perplexity, symmetric P, Student-t Q, gradient descent with gains,
momentum 0.5 -> 0.8 at iteration 250, early exaggeration 12 for the first
`exaggeration_iters` iterations, learning rate max(n / 12 / 4, 50), start
1e-4 N(0, 1)) and runs both on the same inputs with the same perplexity,
iteration count, exaggeration length and seeds. (sklearn switches the
momentum to 0.8 where the exaggeration ends.) The embeddings are not
comparable point by point (different random generators), so the rows
compare what the protocol reads from them: the silhouette of the embedding
under the cluster labels and the trustworthiness (k = 10,
`sklearn.manifold.trustworthiness`, the same function for both), mean and
spread over the seeds, plus the median wall time of one run.

Data: Gaussian clusters in 64-D, 100 points per cluster, unit noise,
cluster centres N(0, s^2 I); `s` sets how far apart they are.

  python bench/tsne_sklearn.py                     # 1000 x 64, 3 seeds
  python bench/tsne_sklearn.py --clusters=5 --per_cluster=40 --seeds=1
"""

import argparse
import os
import sys
import time

import numpy as np
from sklearn import manifold
from sklearn import metrics

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable-next=g-import-not-at-top,wrong-import-position
from sce_mae_jax import tsne as tsne_lib


def _sq_distances(x):
  sq = np.sum(x * x, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
  np.fill_diagonal(d2, 0.0)
  return d2


def _conditional_probabilities(sq_dist, perplexity, tol=1e-5, max_iter=100):
  n = sq_dist.shape[0]
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
      if h > target:
        lo = beta
        beta = beta * 2.0 if hi == np.inf else 0.5 * (beta + hi)
      else:
        hi = beta
        beta = 0.5 * (beta + lo)
    p[i, np.arange(n) != i] = w / sw
  return p


def numpy_tsne(x, perplexity=30.0, iterations=500, seed=0,
               early_exaggeration=12.0, exaggeration_iters=100):
  """The reference: exact t-SNE in float64 NumPy -> `[n, 2]`."""
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  learning_rate = max(n / early_exaggeration / 4.0, 50.0)
  p = _conditional_probabilities(_sq_distances(x),
                                 min(perplexity, (n - 1) / 3.0))
  p = np.maximum((p + p.T) / (2.0 * n), 1e-12)
  rng = np.random.default_rng(seed)
  y = 1e-4 * rng.standard_normal((n, 2))
  update = np.zeros_like(y)
  gains = np.ones_like(y)
  for it in range(int(iterations)):
    exag = early_exaggeration if it < exaggeration_iters else 1.0
    momentum = 0.5 if it < 250 else 0.8
    num = 1.0 / (1.0 + _sq_distances(y))
    np.fill_diagonal(num, 0.0)
    q = np.maximum(num / num.sum(), 1e-12)
    pq = (p * exag - q) * num
    grad = 4.0 * (np.diag(pq.sum(1)) - pq) @ y
    same_sign = np.sign(grad) == np.sign(update)
    gains = np.maximum(np.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
    update = momentum * update - learning_rate * gains * grad
    y = y + update
    y = y - y.mean(axis=0)
  return y


def clusters(num, per_cluster, dim, spread, seed=0):
  rng = np.random.default_rng(seed)
  centres = spread * rng.standard_normal((num, dim))
  x = np.repeat(centres, per_cluster, 0) + rng.standard_normal(
      (num * per_cluster, dim))
  return x, np.repeat(np.arange(num), per_cluster)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--clusters", type=int, default=10)
  ap.add_argument("--per_cluster", type=int, default=100)
  ap.add_argument("--dim", type=int, default=64)
  ap.add_argument("--spreads", default="2.0,1.0,0.5")
  ap.add_argument("--perplexity", type=float, default=30.0)
  ap.add_argument("--iterations", type=int, default=500)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--exaggeration_iters", default="100,250",
                  help="early-exaggeration lengths to run, for both")
  args = ap.parse_args()
  print(f"{args.clusters} clusters x {args.per_cluster} points, {args.dim}-D,"
        f" perplexity {args.perplexity:g}, {args.iterations} iterations, "
        f"seeds 0..{args.seeds - 1}")
  print("| centre spread s | input silhouette | implementation | embedding "
        "silhouette | trustworthiness (k=10) | s / run |")
  print("|---|---|---|---|---|---|")
  for spread in (float(s) for s in args.spreads.split(",")):
    x, labels = clusters(args.clusters, args.per_cluster, args.dim, spread)
    base = metrics.silhouette_score(x, labels)
    runs = [(impl, int(e)) for e in args.exaggeration_iters.split(",")
            for impl in ("numpy reference", "sklearn (tsne.tsne)")]
    for impl, exag in runs:
      fn = numpy_tsne if impl.startswith("numpy") else tsne_lib.tsne
      name = f"{impl}, exaggeration {exag} it."
      sil, tru, secs = [], [], []
      for seed in range(args.seeds):
        t0 = time.perf_counter()
        y = fn(x, args.perplexity, args.iterations, seed=seed,
               exaggeration_iters=exag)
        secs.append(time.perf_counter() - t0)
        sil.append(metrics.silhouette_score(y, labels))
        tru.append(manifold.trustworthiness(x, y, n_neighbors=10))
      print(f"| {spread:g} | {base:.3f} | {name} | {np.mean(sil):.4f} +- "
            f"{np.std(sil):.4f} | {np.mean(tru):.4f} +- {np.std(tru):.4f} | "
            f"{np.median(secs):.1f} |", flush=True)


if __name__ == "__main__":
  main()

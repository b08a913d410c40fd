r"""Does the predicted uncertainty mean something? (README "Uncertainty").

  python bench/uncertainty.py --checkpoint models/yt68_photo.zip \
      --data_root ../shared/data/yt68 --out bench/figures

Each landmark's uncertainty is the covariance of its heatmap distribution
(STAR eq. 4, `star_jax.predict`'s "covariance"). On yt68 val, with the
evaluation's ground-truth crops (landmark box x 1.25, the 300W protocol):

  * rank correlation (Spearman) of the predicted spread (sqrt of the
    covariance's larger eigenvalue) with the actual error |pred - gt|, over
    all points of all faces, and of each face's mean spread with its NME;
  * calibration: the share of errors inside the k-sigma ellipse
    (Mahalanobis distance e^T C^-1 e <= k^2) against a 2-D Gaussian's
    1 - exp(-k^2 / 2), raw and after one scalar c (C -> c C) fitted on
    train faces so that the mean of e^T C^-1 e is 2 (its Gaussian value);
  * trivial baselines by the same code on the same faces: a constant
    covariance per landmark index (the train faces' error covariance of that
    landmark, scaled by the face size), i.e. what "jaw points are harder"
    alone gives, and a constant isotropic one.
Prints Markdown tables; writes the calibration curve to
`--out/uncertainty_calibration.png`.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data import readers  # pylint: disable=g-import-not-at-top,wrong-import-position
from star_jax import predict  # pylint: disable=g-import-not-at-top,wrong-import-position

KS = (1.0, 2.0, 3.0)


def predict_split(predictor, data_root: str, split: str, limit: int):
  """(pred [F, N, 2], cov [F, N, 2, 2], gt [F, N, 2], iod [F]) on GT crops."""
  records = readers.list_faces("yt68", data_root, split, num_points=68)
  if limit:
    records = records[:limit]
  preds, covs, gts = [], [], []
  for start in range(0, len(records), 64):
    chunk = records[start:start + 64]
    images = [r.load_image() for r in chunk]
    points = [np.asarray(r.landmarks, np.float64) for r in chunk]
    for face, gt in zip(predictor.predict(images, points=points), points):
      if "covariance" not in face:
        raise SystemExit("the model gives no covariance (a regression head, "
                         "or an artifact exported with --uncertainty off)")
      preds.append(face["landmarks"])
      covs.append(face["covariance"])
      gts.append(gt)
  gt = np.stack(gts)
  iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
  return np.stack(preds), np.stack(covs), gt, iod


def mahalanobis_sq(err: np.ndarray, cov: np.ndarray) -> np.ndarray:
  """e^T C^-1 e per point (float64)."""
  return np.einsum("...i,...ij,...j->...", err, np.linalg.inv(cov), err)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Spearman rank correlation (scipy.stats.spearmanr)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.spearmanr(np.ravel(a), np.ravel(b)).statistic)


def inside_share(d2: np.ndarray, k: float) -> float:
  return float(np.mean(d2 <= k * k))


def per_landmark_covariance(err: np.ndarray, iod: np.ndarray) -> np.ndarray:
  """[N, 2, 2] error covariance per landmark in IOD units (train faces)."""
  e = err / iod[:, None, None]
  return np.einsum("fni,fnj->nij", e, e) / len(e)


def report(name: str, err, cov, iod_val, fit_scale: float):
  """One table row set: correlations and calibration of one covariance."""
  major = np.sqrt(np.linalg.eigvalsh(cov)[..., 1])
  abs_err = np.linalg.norm(err, axis=-1)
  d2 = mahalanobis_sq(err, cov)
  d2_fit = d2 / fit_scale
  face_nme = abs_err.mean(1) / iod_val
  face_spread = (major / iod_val[:, None]).mean(1)
  return {"name": name,
          "rho_points": spearman(major / iod_val[:, None],
                                 abs_err / iod_val[:, None]),
          "rho_faces": spearman(face_spread, face_nme),
          "raw": [inside_share(d2, k) for k in KS],
          "fitted": [inside_share(d2_fit, k) for k in KS],
          "scale": fit_scale, "d2": d2, "d2_fit": d2_fit}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
  p.add_argument("--checkpoint", default=predict.DEFAULT_MODEL)
  p.add_argument("--data_root", default=os.path.join(REPO, "..", "shared",
                                                     "data", "yt68"))
  p.add_argument("--train_limit", type=int, default=600,
                 help="train faces used to fit the scalar and the baselines")
  p.add_argument("--out", default=os.path.join(REPO, "bench", "figures"))
  args = p.parse_args(argv)
  predictor = predict.Predictor.from_path(args.checkpoint, batch_size=16)
  tr_pred, tr_cov, tr_gt, tr_iod = predict_split(
      predictor, args.data_root, "train", args.train_limit)
  va_pred, va_cov, va_gt, va_iod = predict_split(predictor, args.data_root,
                                                 "val", 0)
  tr_err, va_err = tr_pred - tr_gt, va_pred - va_gt
  # One scalar on train: mean Mahalanobis^2 of a 2-D Gaussian is 2.
  scale_model = float(np.mean(mahalanobis_sq(tr_err, tr_cov)) / 2.0)
  # Baselines: constant covariance per landmark (IOD units, scaled by the
  # face), and one isotropic covariance for all points.
  per_lm = per_landmark_covariance(tr_err, tr_iod)
  cov_lm = per_lm[None] * (va_iod ** 2)[:, None, None, None]
  iso = np.mean(np.sum((tr_err / tr_iod[:, None, None]) ** 2, -1)) / 2.0
  cov_iso = (np.eye(2)[None, None] * iso
             * (va_iod ** 2)[:, None, None, None]
             * np.ones(va_cov.shape[:2])[..., None, None])
  # The baselines are fitted on train by construction: their scale is 1
  # up to the train/val difference, so the same fit is applied to them.
  scale_lm = float(np.mean(mahalanobis_sq(
      tr_err, per_lm[None] * (tr_iod ** 2)[:, None, None, None])) / 2.0)
  rows = [report("model heatmap covariance", va_err, va_cov, va_iod,
                 scale_model),
          report("constant per landmark (train errors)", va_err, cov_lm,
                 va_iod, scale_lm),
          report("constant isotropic (train errors)", va_err, cov_iso, va_iod,
                 1.0)]
  gauss = [1.0 - np.exp(-k * k / 2.0) for k in KS]
  print(f"yt68 val: {len(va_err)} faces x {va_err.shape[1]} points, GT crops "
        f"(300W protocol); scalar fits on {len(tr_err)} train faces; model "
        f"{args.checkpoint}\n")
  print("| uncertainty | Spearman (points) | Spearman (faces) | scale c | "
        + " | ".join(f"inside {k:g} sigma raw / fitted" for k in KS) + " |")
  print("|---|---|---|---|" + "---|" * len(KS))
  for r in rows:
    cells = " | ".join(f"{a:.3f} / {b:.3f}" for a, b in zip(r["raw"],
                                                              r["fitted"]))
    print(f"| {r['name']} | {r['rho_points']:.3f} | {r['rho_faces']:.3f} | "
          f"{r['scale']:.2f} | {cells} |")
  print("| Gaussian expectation | | | | "
        + " | ".join(f"{g:.3f}" for g in gauss) + " |")
  os.makedirs(args.out, exist_ok=True)
  from landmarks import plots  # pylint: disable=g-import-not-at-top
  fig = plots.new_figure(520, 420)
  ax = fig.add_subplot(1, 1, 1)
  ks = np.linspace(0.0, 4.0, 81)
  ax.plot(ks, 1.0 - np.exp(-ks * ks / 2.0), "k--", label="2-D Gaussian")
  for r, colour in zip(rows[:2], ("tab:blue", "tab:orange")):
    ax.plot(ks, [np.mean(r["d2"] <= k * k) for k in ks], color=colour,
            alpha=0.5, label=f"{r['name']} (raw)")
    ax.plot(ks, [np.mean(r["d2_fit"] <= k * k) for k in ks], color=colour,
            label=f"{r['name']} (x c from train)")
  ax.set_xlabel("k (ellipse radius in standard deviations)")
  ax.set_ylabel("share of val errors inside the k-sigma ellipse")
  ax.legend(fontsize=7, loc="lower right")
  ax.grid(alpha=0.3)
  path = os.path.join(args.out, "uncertainty_calibration.png")
  fig.savefig(path, dpi=100)
  print(f"\nwrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

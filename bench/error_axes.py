r"""Where a trained STAR model's errors lie relative to its heatmaps' axes.

For each workdir (a `run.py` training directory), predicts the evaluation
split of its own config (last checkpoint, raw parameters), takes the PCA of
every predicted heatmap (`landmarks.distribution.distribution_pca`, paper
eq. 3-5) and reports:

  * the mean spread sqrt(lambda) along the minor / major axis, in heatmap px;
  * the RMS of the error (prediction - label, crop px) projected on the
    major and minor axes: STAR down-weights the error along the major axis
    during training (eq. 6-7), so a STAR model is expected to be less exact
    along it when the evaluation labels are exact;
  * the RMS error norm on the contour points (0-16 of the 68-point scheme)
    and the inner points, and the mean error in x, y.

  python bench/error_axes.py /tmp/star_default /tmp/star_default_l1

Used for the README's "Embedded default" discussion (STAR vs the smooth-L1
baseline on the procedural faces).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import schemes  # pylint: disable=g-import-not-at-top,wrong-import-position
from landmarks import distribution  # pylint: disable=g-import-not-at-top,wrong-import-position
from star_jax import inference  # pylint: disable=g-import-not-at-top,wrong-import-position
from star_jax import data as star_data  # pylint: disable=g-import-not-at-top,wrong-import-position


def error_axes(workdir: str, batch_size: int = 64) -> dict:
  """The statistics above for one workdir's evaluation split."""
  config, model, variables = inference.load_checkpoint(
      workdir, "latest", use_ema=False)
  config.data.num_workers = 0
  data = star_data.StarData(config, schemes.get_scheme(config.data.scheme))
  split = config.data.eval_splits[0]
  spread, major, minor, errors = [], [], [], []
  for batch in data.eval_iterators(batch_size)[split]():
    valid = np.asarray(batch["valid"]).astype(bool)
    out = inference.predict_crops(
        model, variables, np.asarray(batch["image"]),
        align_corners=bool(config.loss.align_corners), with_heatmaps=True)
    heatmaps = out["heatmaps"]
    pca = distribution.distribution_pca(heatmaps)
    error = (np.asarray(out["landmarks_crop"]) -
             np.asarray(batch["landmarks"]))[valid]
    vectors = np.asarray(pca.eigenvectors)[valid]     # columns, ascending
    values = np.asarray(pca.eigenvalues)[valid]
    # Eigenvalues are in the grid's [-1, 1] units: (size - 1) / 2 px each.
    spread.append(np.sqrt(np.maximum(values, 0.0)) *
                  (heatmaps.shape[-1] - 1) / 2)
    major.append(np.einsum("bnk,bnk->bn", error, vectors[..., :, 1]))
    minor.append(np.einsum("bnk,bnk->bn", error, vectors[..., :, 0]))
    errors.append(error)
  spread, major, minor, error = (np.concatenate(x) for x in
                                 (spread, major, minor, errors))
  rms = lambda x: float(np.sqrt(np.mean(np.square(x))))
  norm = np.linalg.norm(error, axis=-1)
  # The 68-point scheme's contour is points 0-16; other schemes: all inner.
  contour = 17 if error.shape[1] == 68 else 0
  return {
      "faces": int(error.shape[0]), "split": split,
      "star": bool(config.loss.star),
      "spread_minor_px": float(spread[..., 0].mean()),
      "spread_major_px": float(spread[..., 1].mean()),
      "rms_major_crop_px": rms(major), "rms_minor_crop_px": rms(minor),
      "rms_contour_crop_px": rms(norm[:, :contour]) if contour else None,
      "rms_inner_crop_px": rms(norm[:, contour:]),
      "mean_error_xy_crop_px": error.reshape(-1, 2).mean(0).tolist(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+")
  args = parser.parse_args()
  print("| workdir | loss | faces | sqrt(lambda) minor / major (heatmap px) "
        "| RMS error along major / minor (crop px) | RMS contour / inner "
        "(crop px) | mean error x, y (crop px) |")
  print("|---|---|---|---|---|---|---|")
  for workdir in args.workdirs:
    r = error_axes(workdir)
    contour = ("-" if r["rms_contour_crop_px"] is None
               else f"{r['rms_contour_crop_px']:.2f}")
    print(f"| {workdir} | {'STAR' if r['star'] else 'baseline'} | "
          f"{r['faces']} | {r['spread_minor_px']:.2f} / "
          f"{r['spread_major_px']:.2f} | {r['rms_major_crop_px']:.2f} / "
          f"{r['rms_minor_crop_px']:.2f} | {contour} / "
          f"{r['rms_inner_crop_px']:.2f} | "
          "{:.2f}, {:.2f} |".format(*r["mean_error_xy_crop_px"]), flush=True)


if __name__ == "__main__":
  main()

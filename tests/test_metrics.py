"""Tests for landmarks.metrics: NME, CED, FR, AUC, attribute breakdown."""

import csv
import os

import jax
import numpy as np
import pytest
import scipy.integrate

from landmarks import metrics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68_VAL = os.path.join(REPO_ROOT, "..", "shared", "data", "yt68", "val.csv")


def ref_nme(pred, gt, left, right):
  """Float64 loop, as the public evaluation (lists: mean of the points)."""
  out = []
  for p, g in zip(np.asarray(pred, np.float64), np.asarray(gt, np.float64)):
    lp = g[np.atleast_1d(left)].mean(0)
    rp = g[np.atleast_1d(right)].mean(0)
    out.append(np.mean(np.linalg.norm(p - g, axis=1)) / np.linalg.norm(lp - rp))
  return np.array(out)


def ref_fr_auc(nmes, thres, step=1e-4):
  xs = np.arange(0, thres + step, step)
  ys = np.array([np.count_nonzero(nmes <= x) for x in xs]) / float(len(nmes))
  return 1.0 - ys[-1], scipy.integrate.simpson(ys, x=xs) / thres


def test_nme_hand_computed():
  gt = np.zeros((1, 4, 2), np.float32)
  gt[0, 1] = [10, 0]  # Normaliser: points 0 and 1, distance 10.
  gt[0, 2:] = [[3, 3], [5, 7]]
  pred = gt + np.array([3.0, 4.0], np.float32)  # Every error is 5.
  np.testing.assert_allclose(metrics.nme(pred, gt, 0, 1), [0.5], rtol=1e-6)
  # List normaliser: mean of points 0, 2 = (1.5, 1.5); of 1, 3 = (7.5, 3.5).
  np.testing.assert_allclose(metrics.nme(pred, gt, [0, 2], [1, 3]),
                             [5 / np.hypot(6, 2)], rtol=1e-6)


def test_named_normalisers():
  assert metrics.normaliser("wflw") == (60, 72)
  assert metrics.normaliser("wflw_inter_pupil") == (96, 97)
  assert metrics.normaliser("300w") == (36, 45)
  assert metrics.normaliser("300w_inter_pupil") == (tuple(range(36, 42)),
                                                    tuple(range(42, 48)))
  assert metrics.normaliser("cofw") == (16, 17)
  assert metrics.normaliser("cofw_inter_ocular") == (8, 9)
  assert metrics.normaliser("five_point") == (0, 1)
  with pytest.raises(ValueError, match="unknown normaliser"):
    metrics.normaliser("aflw")


def _load_yt68(count=40):
  if not os.path.exists(YT68_VAL):
    pytest.skip(f"real data not found at {YT68_VAL} (../shared/data/yt68)")
  with open(YT68_VAL) as f:
    rows = list(csv.reader(f))[1:count + 1]
  return np.array([[float(v) for v in r[1:]] for r in rows]).reshape(-1, 68, 2)


@pytest.mark.parametrize("name", ["300w", "300w_inter_pupil"])
def test_nme_on_real_faces_matches_reference_and_is_similarity_invariant(name):
  gt = _load_yt68()
  rng = np.random.default_rng(0)
  pred = gt + rng.normal(scale=2.0, size=gt.shape)
  left, right = metrics.normaliser(name)
  got = np.asarray(metrics.nme_named(pred.astype(np.float32),
                                     gt.astype(np.float32), name))
  np.testing.assert_allclose(got, ref_nme(pred, gt, left, right), rtol=1e-5)
  # Rotating, scaling and shifting both sets leaves the NME unchanged.
  angle = 0.7
  rot = 2.5 * np.array([[np.cos(angle), -np.sin(angle)],
                        [np.sin(angle), np.cos(angle)]])
  moved = lambda x: (x @ rot.T + [40.0, -13.0]).astype(np.float32)
  np.testing.assert_allclose(metrics.nme_named(moved(pred), moved(gt), name),
                             got, rtol=1e-4)
  # The two normalisers really differ on real faces.
  other = "300w" if name != "300w" else "300w_inter_pupil"
  other_nme = np.asarray(metrics.nme_named(pred, gt, other))
  assert np.abs(other_nme - got).max() > 1e-4


def test_nme_under_jit_equals_eager():
  rng = np.random.default_rng(1)
  gt = rng.uniform(0, 64, (5, 98, 2)).astype(np.float32)
  pred = gt + rng.normal(size=gt.shape).astype(np.float32)
  jitted = jax.jit(lambda p, g: metrics.nme_named(p, g, "wflw"))(pred, gt)
  np.testing.assert_allclose(jitted, metrics.nme_named(pred, gt, "wflw"),
                             rtol=1e-6)


def test_nme_bad_inputs():
  gt = np.random.default_rng(2).random((2, 5, 2))
  with pytest.raises(ValueError, match=r"\[B, N, 2\]"):
    metrics.nme(gt[0], gt[0], 0, 1)
  with pytest.raises(ValueError, match="same"):
    metrics.nme(gt[:, :4], gt, 0, 1)
  with pytest.raises(ValueError, match="out of range"):
    metrics.nme(gt, gt, 0, 5)
  same = gt.copy()
  same[1, 1] = same[1, 0]
  with pytest.raises(ValueError,
                     match=r"zero normalising distance for faces \[1\]"):
    metrics.nme(same, same, 0, 1)


@pytest.mark.parametrize("threshold", [0.1, 0.05, 0.08])
def test_fr_auc_matches_public_evaluation_with_scipy(threshold):
  rng = np.random.default_rng(3)
  nmes = np.concatenate([rng.gamma(4.0, 0.012, 500), [threshold, 0.0]])
  fr, auc = metrics.fr_auc(nmes, threshold)
  want_fr, want_auc = ref_fr_auc(nmes, threshold)
  assert fr == pytest.approx(want_fr, abs=1e-12)
  assert auc == pytest.approx(want_auc, rel=1e-10)
  assert 0 < fr < 1 and 0 < auc < 1


def test_fr_auc_extremes_hand_computed():
  fr, auc = metrics.fr_auc(np.zeros(10))
  assert fr == 0.0 and auc == pytest.approx(1.0, rel=1e-12)
  fr, auc = metrics.fr_auc(np.full(10, 0.2))
  assert fr == 1.0 and auc == 0.0
  # Half the faces perfect, half failed: FR 0.5, AUC 0.5.
  fr, auc = metrics.fr_auc(np.array([0.0, 0.0, 0.3, 0.3]))
  assert fr == 0.5 and auc == pytest.approx(0.5, rel=1e-12)


def test_simpson_exact_for_quadratics_on_uneven_grids():
  rng = np.random.default_rng(4)
  quad = lambda x: 1 + 2 * x - 3 * x ** 2
  prim = lambda x: x + x ** 2 - x ** 3
  cubic = lambda x: 1 + 2 * x - x ** 2 + 0.5 * x ** 3
  for n in (3, 7, 8, 12):  # Odd and even sample counts.
    xs = np.sort(rng.uniform(0, 2, n))
    np.testing.assert_allclose(metrics.simpson(quad(xs), xs),
                               prim(xs[-1]) - prim(xs[0]), rtol=1e-12)
    np.testing.assert_allclose(metrics.simpson(cubic(xs), xs),
                               scipy.integrate.simpson(cubic(xs), x=xs),
                               rtol=1e-12)
  xs = np.array([0.5, 2.0])  # Two samples: trapezoid.
  assert metrics.simpson(2 * xs + 1, xs) == pytest.approx(5.25)


def test_ced_curve():
  nmes = np.array([0.01, 0.02, 0.02, 0.5])
  xs, ys = metrics.ced_curve(nmes, 0.1, 0.01)
  assert len(xs) == 11 and xs[-1] == pytest.approx(0.1)
  np.testing.assert_allclose(ys[:4], [0.0, 0.25, 0.75, 0.75])
  assert ys[-1] == 0.75
  assert np.all(np.diff(ys) >= 0)
  with pytest.raises(ValueError, match="non-finite"):
    metrics.ced_curve([0.1, np.nan])
  with pytest.raises(ValueError, match="1-D"):
    metrics.ced_curve(np.zeros((2, 2)))


def test_attribute_metrics_match_manual_subsets():
  rng = np.random.default_rng(5)
  nmes = rng.gamma(4.0, 0.012, 300)
  flags = {a: rng.random(300) < 0.3 for a in metrics.WFLW_ATTRIBUTES}
  flags["blur"] = np.zeros(300, dtype=np.int64)  # Empty subset, 0/1 ints.
  out = metrics.wflw_attribute_metrics(nmes, flags)
  assert set(out) == {"full", *metrics.WFLW_ATTRIBUTES}
  for name in ("full", "pose", "occlusion"):
    sel = nmes if name == "full" else nmes[flags[name]]
    fr, auc = ref_fr_auc(sel, 0.1)
    assert out[name]["nme"] == pytest.approx(sel.mean(), rel=1e-12)
    assert out[name]["fr"] == pytest.approx(fr, abs=1e-12)
    assert out[name]["auc"] == pytest.approx(auc, rel=1e-10)
    assert out[name]["count"] == sel.size
  assert out["blur"]["count"] == 0 and np.isnan(out["blur"]["nme"])
  with pytest.raises(ValueError, match="missing"):
    metrics.wflw_attribute_metrics(nmes, {"pose": flags["pose"]})
  with pytest.raises(ValueError, match="one flag per face"):
    metrics.attribute_metrics(nmes, {"pose": flags["pose"][:10]})
  with pytest.raises(ValueError, match="0/1"):
    metrics.attribute_metrics(nmes, {"pose": np.full(300, 2)})


def test_paired_bootstrap_hand_cases():
  rng = np.random.default_rng(9)
  b = rng.uniform(0, 5, (40, 5))
  res = metrics.paired_bootstrap(b + 1.0, b)
  assert res["mean_difference"] == pytest.approx(1.0, abs=1e-12)
  assert res["low"] == pytest.approx(1.0, abs=1e-12)
  assert res["high"] == pytest.approx(1.0, abs=1e-12)
  assert res["num_pairs"] == 40 and res["num_samples"] == 2000
  # Pairs, not landmarks, are resampled: two pairs with differences 0 and 2
  # (each constant over landmarks) give bootstrap means 0, 1, 2 only, with
  # probabilities 1/4, 1/2, 1/4 -> the 95 % interval is [0, 2].
  a = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
  res = metrics.paired_bootstrap(a, np.zeros_like(a), num_samples=4000)
  assert res["mean_difference"] == pytest.approx(1.0)
  assert (res["low"], res["high"]) == (0.0, 2.0)
  # Per-pair means: a pair-constant difference with landmark noise that
  # cancels within each pair is the first hand case again.
  noise = np.array([[1.0, -1.0], [3.0, -3.0], [0.5, -0.5]])
  res = metrics.paired_bootstrap(noise + 0.5, np.zeros_like(noise))
  assert (res["low"], res["high"]) == (pytest.approx(0.5),
                                       pytest.approx(0.5))
  # Deterministic in the seed; 1-D errors work; bad shapes raise.
  x, y = rng.uniform(size=30), rng.uniform(size=30)
  assert (metrics.paired_bootstrap(x, y, seed=1) ==
          metrics.paired_bootstrap(x, y, seed=1))
  r = metrics.paired_bootstrap(x, y, seed=1)
  assert r["low"] < r["mean_difference"] < r["high"]
  with pytest.raises(ValueError):
    metrics.paired_bootstrap(x, y[:-1])

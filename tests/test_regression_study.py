"""Tests of star_jax/regression_study.py on fake run folders (no training)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from star_jax import objective
from star_jax import regression_study as study
from star_jax import sweep
from tests import test_configs
from training import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 1700
U = np.array([0.6, 0.8])          # unit offset direction.


def _load(name):
  return test_configs.load(os.path.join(REPO, "configs", name))


def _faces(n, seed=0):
  rng = np.random.default_rng(seed)
  gt = rng.uniform(30, 70, (n, 68, 2)) * rng.uniform(0.8, 2.0, (n, 1, 1))
  return gt


def _iod(gt):
  return np.linalg.norm(gt[:, 45] - gt[:, 36], axis=-1)


def _offset(gt, jaw_err, inner_err):
  """gt moved by jaw_err / inner_err [F] (x iod) along U: known per-face NME."""
  pred = gt.copy()
  iod = _iod(gt)[:, None, None]
  pred[:, :17] += jaw_err[:, None, None] * iod * U
  pred[:, 17:] += inner_err[:, None, None] * iod * U
  return pred


def _write_run(run_dir, pred, step=STEPS, reported=None, seed=0):
  os.makedirs(run_dir, exist_ok=True)
  perm = np.random.default_rng(seed).permutation(pred.shape[0])
  np.savez(os.path.join(run_dir, "predictions.npz"), **{
      "val/index": perm, "val/raw/pred": pred[perm],
      "val/ema/pred": pred[perm]})
  metrics = {} if reported is None else {"val/nme": reported}
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump({"checkpoint": {"step": step}, "metrics": metrics}, f)


def _errors(n, seed):
  rng = np.random.default_rng(seed)
  return rng.uniform(0.01, 0.2, n), rng.uniform(0.01, 0.12, n)


def _fake_study(workdir, heatmap_workdir, gt, skip=(), steps=None):
  """Known per-face errors (jaw, inner) of each run; returns them."""
  n = gt.shape[0]
  star = _errors(n, 1)
  plus = lambda d: (star[0] + d, star[1] + d)              # NME + 100 d.
  errs = {"star": star, "nll": star,                       # identical.
          "smooth_l1": plus(0.01),                         # constant.
          "smooth_l1_seed1": plus(0.03), "star_seed1": plus(0.02),
          "nll_seed1": plus(0.01), "smooth_l1_seed2": plus(0.05),
          "star_seed2": plus(0.04), "nll_seed2": plus(0.05),
          "star_w100": plus(-0.005),
          "star_clean": _errors(n, 2), "l1_clean": _errors(n, 3),
          "star_clean_seed1": _errors(n, 4), "l1_clean_seed1": _errors(n, 5),
          "star_clean_seed2": _errors(n, 6), "l1_clean_seed2": _errors(n, 7)}
  for i, (name, (j, k)) in enumerate(errs.items()):
    if name in skip:
      continue
    base = heatmap_workdir if name in study.HEATMAP_NAMES else workdir
    nme = (17 * j + 51 * k) / 68
    _write_run(os.path.join(base, name), _offset(gt, j, k),
               step=(steps or {}).get(name, STEPS),
               reported=float(nme.mean()), seed=i)
  return errs


# ----------------------------------------------------------------- sweep ----

def test_sweep_commands_are_exactly_the_documented_ones():
  got = [" ".join(sweep.run_command(r, "runs/regression", 1700, mode=m))
         for r in study.regression_runs() for m in ("train", "eval")]
  want = []
  for loss in ("star", "nll", "smooth_l1"):
    cmd = (f"{sys.executable} run.py --config=configs/yt68_regression.py "
           f"--workdir=runs/regression/{loss} --config.max_steps=1700 "
           f"--config.loss.regression={loss}")
    want += [cmd, cmd + " --mode=eval"]
  for loss, seed in (("smooth_l1", 1), ("star", 1), ("nll", 1),
                     ("smooth_l1", 2), ("star", 2), ("nll", 2)):
    cmd = (f"{sys.executable} run.py --config=configs/yt68_regression.py "
           f"--workdir=runs/regression/{loss}_seed{seed} "
           f"--config.max_steps=1700 --config.loss.regression={loss} "
           f"--config.seed={seed}")
    want += [cmd, cmd + " --mode=eval"]
  cmd = (f"{sys.executable} run.py --config=configs/yt68_regression.py "
         "--workdir=runs/regression/star_w100 --config.max_steps=1700 "
         "--config.loss.regression=star --config.loss.w=100")
  want += [cmd, cmd + " --mode=eval"]
  assert got == want
  heat = {r.name: " ".join(sweep.run_command(r, "h", 1700))
          for r in study.heatmap_runs()}
  base = f"{sys.executable} run.py --config=configs/yt68_star.py "
  assert heat == {
      "star_clean": base + "--workdir=h/star_clean --config.max_steps=1700",
      "l1_clean": base + "--workdir=h/l1_clean --config.max_steps=1700 "
                  "--config.loss.star=False",
      "star_clean_seed1": base + "--workdir=h/star_clean_seed1 "
                          "--config.max_steps=1700 --config.seed=1",
      "l1_clean_seed1": base + "--workdir=h/l1_clean_seed1 "
                        "--config.max_steps=1700 --config.loss.star=False "
                        "--config.seed=1",
      "star_clean_seed2": base + "--workdir=h/star_clean_seed2 "
                          "--config.max_steps=1700 --config.seed=2",
      "l1_clean_seed2": base + "--workdir=h/l1_clean_seed2 "
                        "--config.max_steps=1700 --config.loss.star=False "
                        "--config.seed=2"}
  assert _load("yt68_regression.py").loss.w == 1.0   # what w = 100 replaces.
  # The overrides name existing fields with values the code accepts.
  reg = _load("yt68_regression.py")
  assert reg.model.head == "regression" and "regression" in reg.loss
  assert set(study.REGRESSION_LOSSES) == set(objective.REGRESSION_LOSSES)
  assert _load("yt68_star.py").loss.star is True


# -------------------------------------------------------------- analysis ----

def test_analysis_recovers_known_errors_and_intervals(tmp_path, monkeypatch):
  from landmarks import plots  # pylint: disable=g-import-not-at-top
  gt = _faces(40)
  work, heat = str(tmp_path / "reg"), str(tmp_path / "amb")
  errs = _fake_study(work, heat, gt)
  drawn = {}
  real_ced = plots.ced_curve

  def spy(nmes_by_name, threshold, **kw):
    drawn.update({k: np.asarray(v) for k, v in nmes_by_name.items()})
    drawn["threshold"] = threshold
    return real_ced(nmes_by_name, threshold, **kw)

  monkeypatch.setattr(plots, "ced_curve", spy)
  res = study.analyse(work, gt, heatmap_workdir=heat, steps=STEPS,
                      samples=300, seed=4)
  assert res["missing"] == [] and res["heatmap_workdir"] == heat
  assert list(res["runs"]) == list(errs)
  t = 0.1
  for name, (j, k) in errs.items():
    e = res["runs"][name]
    nme = (17 * j + 51 * k) / 68                       # per face, fraction.
    assert e["status"] == "ok"
    assert e["nme"] == pytest.approx(100 * nme.mean(), abs=1e-9)
    assert e["median"] == pytest.approx(100 * np.median(nme), abs=1e-9)
    assert e["nme_jaw"] == pytest.approx(100 * j.mean(), abs=1e-9)
    assert e["nme_inner"] == pytest.approx(100 * k.mean(), abs=1e-9)
    assert e["fr"] == pytest.approx(100 * np.mean(nme > t), abs=1e-9)
    # Exact area under the CED up to t, over t: mean(1 - min(nme, t) / t).
    assert e["auc"] == pytest.approx(np.mean(1 - np.minimum(nme, t) / t),
                                     abs=2e-3)
    assert e["reported_nme"] == pytest.approx(100 * nme.mean(), abs=1e-9)
    if "_seed" in name:   # the figure shows seed 0 and star_w100 only.
      assert study.LABELS[name] not in drawn
    else:
      np.testing.assert_allclose(drawn[study.LABELS[name]], nme, atol=1e-12)
  assert 0 < res["runs"]["star"]["fr"] < 100
  assert drawn["threshold"] == t
  comp = {(c["a"], c["b"]): c for c in res["comparisons"]}
  assert list(comp) == [("star", "smooth_l1"), ("star", "nll"),
                        ("star", "star_clean"), ("star_clean", "l1_clean"),
                        ("smooth_l1_seed1", "smooth_l1"),
                        ("star_w100", "star"), ("star_w100", "smooth_l1")]
  for part in study.PARTS:
    assert comp["star", "nll"][part] == {"mean": 0.0, "low": 0.0,
                                         "high": 0.0}
    for key in ("mean", "low", "high"):
      assert comp["star", "smooth_l1"][part][key] == pytest.approx(
          -1.0, abs=1e-9)
      assert comp["smooth_l1_seed1", "smooth_l1"][part][key] == (
          pytest.approx(2.0, abs=1e-9))
      assert comp["star_w100", "star"][part][key] == pytest.approx(
          -0.5, abs=1e-9)
  # Seed groups: star m, m + 2, m + 4; smooth-L1 m + 1, m + 3, m + 5;
  # nll m, m + 1, m + 5 (m: STAR seed 0's NME); heatmap: independent.
  m = res["runs"]["star"]["nme"]
  seeds = res["seeds"]
  want = {"star": [m, m + 2, m + 4], "smooth_l1": [m + 1, m + 3, m + 5],
          "nll": [m, m + 1, m + 5]}
  for n in ("star_clean", "l1_clean"):
    want[n] = [res["runs"][r]["nme"] for r in (n, n + "_seed1", n + "_seed2")]
  assert list(seeds) == ["star", "nll", "smooth_l1", "star_clean", "l1_clean"]
  for g, v in want.items():
    assert seeds[g]["nme"] == pytest.approx(v, abs=1e-9)
    assert seeds[g]["mean"] == pytest.approx(np.mean(v), abs=1e-9)
    assert seeds[g]["sd"] == pytest.approx(np.std(v, ddof=1), abs=1e-9)
  assert seeds["nll"]["sd"] == pytest.approx(np.sqrt(7), abs=1e-9)
  sc = {(c["a"], c["b"]): c for c in res["seed_comparisons"]}
  assert sc["star", "smooth_l1"]["diff"] == pytest.approx(-1.0, abs=1e-9)
  assert sc["star", "smooth_l1"]["se"] == pytest.approx(np.sqrt(8 / 3))
  assert sc["star", "nll"]["se"] == pytest.approx(np.sqrt(4 / 3 + 7 / 3))
  v, w = want["star"], want["star_clean"]
  assert sc["star", "star_clean"]["diff"] == pytest.approx(
      np.mean(v) - np.mean(w), abs=1e-9)
  assert sc["star", "star_clean"]["se"] == pytest.approx(np.sqrt(
      np.var(v, ddof=1) / 3 + np.var(w, ddof=1) / 3))
  # Heatmap STAR - heatmap L1 against an independent resampling.
  (j2, k2), (j3, k3) = errs["star_clean"], errs["l1_clean"]
  diff = (17 * j2 + 51 * k2) / 68 - (17 * j3 + 51 * k3) / 68
  draws = np.random.default_rng(4).integers(0, 40, (300, 40))
  means = np.array([diff[d].mean() for d in draws])
  got = comp["star_clean", "l1_clean"]["nme"]
  assert got["mean"] == pytest.approx(100 * diff.mean(), abs=1e-9)
  assert got["low"] == pytest.approx(100 * np.percentile(means, 2.5))
  assert got["high"] == pytest.approx(100 * np.percentile(means, 97.5))
  assert comp["star_clean", "l1_clean"]["nme_jaw"]["mean"] == pytest.approx(
      100 * (j2 - j3).mean(), abs=1e-9)
  assert json.loads((tmp_path / "reg" / "results.json").read_text()) == res
  table = (tmp_path / "reg" / "table.md").read_text()
  assert "regression STAR - heatmap STAR" in table
  assert "Not in the analysis" not in table
  with open(tmp_path / "reg" / "ced.png", "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert res["figures"] == ["ced.png"]


def test_missing_and_stale_runs_are_reported_not_fatal(tmp_path):
  gt = _faces(12)
  work = str(tmp_path / "reg")
  heat = study.default_heatmap_workdir(work)
  _fake_study(work, heat, gt, skip=("nll", "l1_clean"),
              steps={"star_clean": 900})
  res = study.analyse(work, gt, steps=STEPS, samples=50, figures=True)
  assert res["runs"]["nll"]["status"] == "missing"
  assert res["runs"]["l1_clean"]["status"] == "missing"
  assert "step 900" in res["runs"]["star_clean"]["status"]
  assert "nme" not in res["runs"]["star_clean"]
  assert res["missing"] == ["nll", "star_clean", "l1_clean"]
  comp = {(c["a"], c["b"]): c for c in res["comparisons"]}
  assert "nme" in comp["star", "smooth_l1"]
  assert comp["star", "nll"]["missing"] == ["nll"]
  assert comp["star", "star_clean"]["missing"] == ["star_clean"]
  assert comp["star_clean", "l1_clean"]["missing"] == ["star_clean",
                                                       "l1_clean"]
  table = (tmp_path / "reg" / "table.md").read_text()
  assert "Not in the analysis" in table and "nll (missing)" in table
  assert "missing: star_clean, l1_clean" in table
  assert (tmp_path / "reg" / "ced.png").exists()
  # Without steps the stale run counts.
  assert study.analyse(work, gt, samples=10, figures=False)["missing"] == [
      "nll", "l1_clean"]
  # An empty study folder: everything missing, a table, no figure.
  empty = study.analyse(str(tmp_path / "none"), gt, samples=10)
  assert empty["missing"] == list(study.LABELS)
  assert empty["seeds"]["star"] == {"label": "regression STAR", "runs": [],
                                    "nme": [], "mean": None, "sd": None}
  assert empty["seed_comparisons"][0]["diff"] is None
  assert empty["figures"] == [] and not (tmp_path / "none" / "ced.png").exists()
  assert (tmp_path / "none" / "table.md").exists()


# ------------------------------------------------------------ the command ----

def test_analyse_only_uses_the_saved_steps(tmp_path):
  gt = _faces(10)
  work, heat = str(tmp_path / "reg"), str(tmp_path / "amb")
  _fake_study(work, heat, gt, steps={n: 900 for n in study.LABELS})
  sweep.check_study_settings(work, {"steps": 900})
  fn = lambda config, split: (gt, None)
  res = study.study(work, steps=STEPS, steps_given=False, analyse_only=True,
                    heatmap_workdir=heat, ground_truth_fn=fn)
  assert res["missing"] == [] and res["steps"] == 900
  assert res["threshold"] == _load("yt68_regression.py").eval.threshold
  res = study.study(work, steps=STEPS, steps_given=True, analyse_only=True,
                    heatmap_workdir=heat, ground_truth_fn=fn)
  assert len(res["missing"]) == len(study.LABELS) == 16
  with pytest.raises(errors.UserError, match="unknown runs"):
    study.study(work, only=["star", "l2"], analyse_only=True,
                ground_truth_fn=fn)


def test_training_runs_the_sweep_commands_into_both_folders(tmp_path,
                                                           monkeypatch):
  gt = _faces(6)
  work = str(tmp_path / "reg")
  calls = []

  def fake_run(cmd, cwd, stdout, stderr):
    calls.append(" ".join(cmd))
    if "--mode=eval" in cmd:
      run_dir = [a for a in cmd if a.startswith("--workdir=")][0][10:]
      _write_run(run_dir, _offset(gt, np.full(6, 0.02), np.full(6, 0.01)))
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(sweep.subprocess, "run", fake_run)
  status = study.train(work, STEPS, parallel=2, pin=False)
  assert status == {n: "trained" for n in study.LABELS}
  want = []
  for loss in ("star", "nll", "smooth_l1"):
    want.append(f"{sys.executable} run.py --config=configs/yt68_regression.py"
                f" --workdir={work}/{loss} --config.max_steps={STEPS} "
                f"--config.loss.regression={loss}")
  want.append(f"{sys.executable} run.py --config=configs/yt68_regression.py"
              f" --workdir={work}/smooth_l1_seed1 --config.max_steps={STEPS} "
              "--config.loss.regression=smooth_l1 --config.seed=1")
  heat = f"{work}/heatmap"
  want += [f"{sys.executable} run.py --config=configs/yt68_star.py "
           f"--workdir={heat}/star_clean --config.max_steps={STEPS}",
           f"{sys.executable} run.py --config=configs/yt68_star.py "
           f"--workdir={heat}/l1_clean --config.max_steps={STEPS} "
           "--config.loss.star=False"]
  want += [w + " --mode=eval" for w in want]
  assert set(want) <= set(calls) and len(calls) == 2 * len(study.LABELS)
  trained = {c.split("--workdir=")[1].split()[0] for c in calls}
  assert trained == {f"{heat if n in study.HEATMAP_NAMES else work}/{n}"
                     for n in study.LABELS}
  with open(os.path.join(work, "study.json")) as f:
    assert json.load(f)["steps"] == STEPS
  # Finished: nothing runs again; the analysis sees all of them.
  calls.clear()
  res = study.study(work, steps=STEPS, pin=False,
                    ground_truth_fn=lambda c, s: (gt, None))
  assert calls == [] and res["missing"] == []
  assert res["runs"]["l1_clean"]["nme_jaw"] == pytest.approx(2.0)
  # Another study's heatmap folder of another budget is not trained into,
  # unless the heatmap runs are not asked for.
  other = tmp_path / "amb"
  sweep.check_study_settings(str(other), {"steps": 900})
  with pytest.raises(errors.UserError, match="900 steps"):
    study.train(work, STEPS, heatmap_workdir=str(other), pin=False)
  assert study.train(work, STEPS, heatmap_workdir=str(other),
                     only=["star"], pin=False) == {"star": "done"}
  assert calls == []

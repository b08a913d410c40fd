"""Tests of star_jax/ambiguity_study.py on fake run folders (no training)."""

import json
import os
import subprocess

import numpy as np
import pytest

from data import ambiguity
from star_jax import ambiguity_study as study
from star_jax import sweep
from tests import test_configs
from training import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YT68 = os.path.join(REPO, "..", "shared", "data", "yt68")
JAW = list(range(17))
STEPS = 1700


def _load(name):
  return test_configs.load(os.path.join(REPO, "configs", name))


def _faces(n=30, seed=0):
  rng = np.random.default_rng(seed)
  gt = rng.uniform(30, 70, (n, 68, 2))
  theta = np.linspace(np.pi, 0, 17)
  for f in range(n):
    s = rng.uniform(0.8, 2.0)
    gt[f, :17] = np.stack([50 + 40 * np.cos(theta),
                           45 + 45 * np.sin(theta)], -1) * s
    gt[f, 36], gt[f, 45] = (28 * s, 40 * s), (72 * s, 41 * s)
  return gt


def _frame(gt):
  """float64 reference: unit tangent / normal of the jaw, iod per face."""
  c = gt[:, :17]
  d = np.empty_like(c)
  d[:, 1:-1] = c[:, 2:] - c[:, :-2]
  d[:, 0], d[:, -1] = c[:, 1] - c[:, 0], c[:, -1] - c[:, -2]
  t = d / np.linalg.norm(d, axis=-1, keepdims=True)
  n = np.stack([-t[..., 1], t[..., 0]], -1)
  iod = np.linalg.norm(gt[:, 45] - gt[:, 36], axis=-1)
  return t, n, iod


def _jaw_offset(gt, along, across):
  """gt with every jaw point moved by (along, across) x iod."""
  t, n, iod = _frame(gt)
  pred = gt.copy()
  pred[:, :17] += (along * t + across * n) * iod[:, None, None]
  return pred


def _write_run(workdir, name, pred, step=STEPS, split="val", seed=0):
  run_dir = os.path.join(workdir, name)
  os.makedirs(run_dir, exist_ok=True)
  perm = np.random.default_rng(seed).permutation(pred.shape[0])
  np.savez(os.path.join(run_dir, "predictions.npz"), **{
      f"{split}/index": perm,
      f"{split}/raw/pred": pred[perm].astype(np.float32),
      f"{split}/ema/pred": pred[perm].astype(np.float32)})
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump({"checkpoint": {"step": step}, "metrics": {}}, f)


# ------------------------------------------------------------- the config ----

def test_config_is_yt68_star_plus_label_noise():
  star = _load("yt68_star.py").to_dict()
  amb = _load("yt68_ambiguity.py").to_dict()
  noise = amb["data"].pop("label_noise")
  assert amb == star
  assert noise == dict(groups=("jaw",), sigma=0.0, direction="tangent",
                       seed=0)
  settings = ambiguity.LabelNoise.from_config(noise)
  assert not settings.enabled and settings.groups == ("jaw",)


def test_sweep_names_and_overrides_apply_to_the_config():
  runs = study.sweep()
  names = [r.name for r in runs]
  assert len(names) == len(set(names)) == 18
  assert {r.loss for r in runs} == {"star", "l1"}
  noisy = [(r.loss, r.direction, r.sigma) for r in runs if not r.clean]
  assert sorted(noisy) == sorted((l, d, s) for l in ("star", "l1")
                                 for d in ("tangent", "normal")
                                 for s in (0.05, 0.1, 0.3))
  assert sorted((r.loss, r.seed) for r in runs if r.clean) == sorted(
      (l, s) for l in ("star", "l1") for s in (0, 1, 2))
  config = _load("yt68_ambiguity.py")
  for r in runs:
    c = config.copy_and_resolve_references()
    for flag in r.overrides():
      key, value = flag.removeprefix("--config.").split("=")
      node = c
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      assert leaf in node, flag                     # an existing field.
      node[leaf] = type(node[leaf])(value if value != "False" else "")
    assert c.loss.star == (r.loss == "star")
    assert c.data.label_noise.sigma == r.sigma and c.seed == r.seed
    if not r.clean:
      assert c.data.label_noise.direction == r.direction
  cmd = study.run_command(runs[2], "/w", 1700, mode="eval")
  assert cmd[1:5] == ["run.py", "--config=configs/yt68_ambiguity.py",
                      f"--workdir=/w/{runs[2].name}", "--config.max_steps=1700"]
  assert cmd[-1] == "--mode=eval"
  with pytest.raises(errors.UserError):
    sweep.select(runs, ["star_clean", "nope"])
  assert [r.name for r in sweep.select(runs, ["l1_clean"])] == ["l1_clean"]


# -------------------------------------------------------------- running ----

def test_train_runs_skips_finished_and_runs_train_then_eval(tmp_path,
                                                           monkeypatch):
  gt = _faces(4)
  runs = sweep.select(study.sweep(), ["star_clean", "l1_clean",
                                      "star_tangent_0.05"])
  _write_run(str(tmp_path), "star_clean", gt)
  _write_run(str(tmp_path), "l1_clean", gt, step=900)   # another --steps.
  calls = []

  def fake_run(cmd, cwd, stdout, stderr):
    calls.append(cmd)
    if "--mode=eval" in cmd:
      workdir = [a for a in cmd if a.startswith("--workdir=")][0][10:]
      _write_run(os.path.dirname(workdir), os.path.basename(workdir), gt)
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(sweep.subprocess, "run", fake_run)
  status = study.train_runs(runs, str(tmp_path), STEPS, parallel=1)
  assert status == {"star_clean": "done", "l1_clean": "trained",
                    "star_tangent_0.05": "trained"}
  assert len(calls) == 4
  trained = {c[c.index("run.py") + 2].split("/")[-1] for c in calls}
  assert trained == {"l1_clean", "star_tangent_0.05"}
  for c in calls:
    if "star_tangent_0.05" in c[c.index("run.py") + 2]:
      assert "--config.data.label_noise.sigma=0.05" in c
      assert "--config.data.label_noise.direction=tangent" in c
    if sweep.shutil.which("taskset"):
      assert c[:2] == ["taskset", "-c"]
  assert os.path.exists(tmp_path / "l1_clean.log")
  # A failing command is reported, not raised.
  monkeypatch.setattr(sweep.subprocess, "run", lambda cmd, **kw:
                      subprocess.CompletedProcess(cmd, 2))
  status = study.train_runs(sweep.select(study.sweep(), ["l1_normal_0.1"]),
                            str(tmp_path), STEPS, parallel=2)
  assert status == {"l1_normal_0.1": "failed: train exited 2"}


def test_study_settings_are_guarded(tmp_path):
  sweep.check_study_settings(str(tmp_path), {"steps": 1700})
  sweep.check_study_settings(str(tmp_path), {"steps": 1700})
  with pytest.raises(errors.UserError, match="other settings"):
    sweep.check_study_settings(str(tmp_path), {"steps": 900})


# ------------------------------------------------------------- analysis ----

def _fake_study(workdir, gt, skip=()):
  """Known offsets per run (units of iod on the jaw; inner points exact)."""
  base = {"star": (0.03, 0.01), "l1": (0.02, 0.02)}
  for loss, (a, c) in base.items():
    runs = {f"{loss}_clean": (a, c),
            f"{loss}_tangent_0.05": (a, c) if loss == "star" else (2 * a, c),
            f"{loss}_tangent_0.1": (a, c),
            f"{loss}_tangent_0.3": (a, c),
            f"{loss}_normal_0.05": (a, c),
            f"{loss}_normal_0.1": (a, c),
            f"{loss}_normal_0.3": (a, c)}
    for name, (al, ac) in runs.items():
      if name not in skip:
        _write_run(workdir, name, _jaw_offset(gt, al, ac))
  # Seed models: +s, 0, -s along (STAR) or across (L1) the jaw of the
  # seed-0 model; their mean is the seed-0 model.
  for i, sign in ((1, 1.0), (2, -1.0)):
    a, c = base["star"]
    _write_run(workdir, f"star_clean_seed{i}",
               _jaw_offset(gt, a + sign * 0.01, c))
    a, c = base["l1"]
    if f"l1_clean_seed{i}" not in skip:
      _write_run(workdir, f"l1_clean_seed{i}",
                 _jaw_offset(gt, a, c + sign * 0.02))


def test_analysis_recovers_known_offsets_growth_and_spread(tmp_path):
  gt = _faces(30)
  _fake_study(str(tmp_path), gt)
  res = study.analyse(str(tmp_path), gt, steps=STEPS, samples=200,
                      figures=False)
  assert res["missing"] == []
  star = res["runs"]["star_clean"]
  jaw_err = 100 * np.hypot(0.03, 0.01)
  assert star["nme_jaw"] == pytest.approx(jaw_err, abs=1e-4)
  assert star["nme"] == pytest.approx(jaw_err * 17 / 68, abs=1e-4)
  assert star["nme_inner"] == pytest.approx(0.0, abs=1e-4)
  assert star["jaw_along_rms"] == pytest.approx(3.0, abs=1e-4)
  assert star["jaw_across_rms"] == pytest.approx(1.0, abs=1e-4)
  # Identical predictions: difference and interval exactly 0.
  vs = res["runs"]["star_tangent_0.05"]["vs_clean"]["nme"]
  assert vs == {"mean": 0.0, "low": 0.0, "high": 0.0}
  # L1's tangent 0.05 run doubles the along offset: a constant per-face
  # growth, so the interval collapses on it.
  grow = 100 * (np.hypot(0.04, 0.02) - np.hypot(0.02, 0.02))
  row = [g for g in res["growth"]
         if g["direction"] == "tangent" and g["sigma"] == 0.05][0]
  for key, scale in (("nme_jaw", 1.0), ("nme", 17 / 68)):
    assert row[key]["l1"]["mean"] == pytest.approx(grow * scale, abs=1e-4)
    d = row[key]["star_minus_l1"]
    for k in ("mean", "low", "high"):
      assert d[k] == pytest.approx(-grow * scale, abs=1e-4)
  inst = res["instability"]
  s = 100 * 0.01 * np.sqrt(2 / 3)       # RMS of (+s, 0, -s) about the mean.
  assert inst["star"]["jaw"] == pytest.approx(s, abs=1e-4)
  assert inst["star"]["jaw_along"] == pytest.approx(s, abs=1e-4)
  assert inst["star"]["jaw_across"] == pytest.approx(0.0, abs=1e-4)
  assert inst["star"]["inner"] == pytest.approx(0.0, abs=1e-6)
  assert inst["l1"]["jaw_across"] == pytest.approx(2 * s, abs=1e-4)
  assert inst["star_minus_l1"]["jaw"]["low"] == pytest.approx(-s, abs=1e-4)
  assert len(inst["star"]["per_landmark"]) == 68
  table = (tmp_path / "table.md").read_text()
  assert "star_tangent_0.05" in table and "Not in the analysis" not in table
  assert json.loads((tmp_path / "results.json").read_text()) == res


def test_bootstrap_interval_matches_an_independent_resampling():
  rng = np.random.default_rng(3)
  diff = rng.normal(0.01, 0.02, 50)
  got = sweep.paired_interval(diff, samples=300, seed=5)
  ref_rng = np.random.default_rng(5)
  draws = ref_rng.integers(0, 50, (300, 50))
  means = np.sort([np.mean(diff[d]) for d in draws])
  assert got["mean"] == pytest.approx(100 * diff.mean())
  assert got["low"] == pytest.approx(100 * np.percentile(means, 2.5))
  assert got["high"] == pytest.approx(100 * np.percentile(means, 97.5))
  assert got["low"] < got["mean"] < got["high"]


def test_missing_and_stale_runs_are_reported_not_fatal(tmp_path):
  gt = _faces(12)
  _fake_study(str(tmp_path), gt, skip=("l1_normal_0.1", "l1_clean_seed1",
                                       "l1_clean_seed2"))
  _write_run(str(tmp_path), "star_normal_0.1", _jaw_offset(gt, 0.0, 0.0),
             step=900)                                # another --steps.
  res = study.analyse(str(tmp_path), gt, steps=STEPS, samples=50,
                      figures=True,
                      image_fn=lambda i: np.full((120, 160, 3), 90, np.uint8))
  assert res["runs"]["l1_normal_0.1"]["status"] == "missing"
  assert "step 900" in res["runs"]["star_normal_0.1"]["status"]
  assert set(res["missing"]) == {"l1_normal_0.1", "star_normal_0.1",
                                 "l1_clean_seed1", "l1_clean_seed2"}
  row = [g for g in res["growth"]
         if g["direction"] == "normal" and g["sigma"] == 0.1][0]
  assert set(row["missing"]) == {"l1_normal_0.1", "star_normal_0.1"}
  assert "jaw" not in res["instability"]["l1"]
  assert "star_minus_l1" not in res["instability"]
  table = (tmp_path / "table.md").read_text()
  assert "Not in the analysis" in table and "l1_normal_0.1 (missing)" in table
  for name in ("growth.png", "instability.png"):
    with open(tmp_path / name, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # An empty study folder: everything missing, still a table.
  empty = study.analyse(str(tmp_path / "none"), gt, samples=10, figures=True)
  assert len(empty["missing"]) == 18


def test_predictions_of_other_faces_are_unusable(tmp_path):
  gt = _faces(10)
  _write_run(str(tmp_path), "star_clean", _faces(9))
  pred, why = sweep.load_predictions(str(tmp_path / "star_clean"), "val",
                                     "raw", 10)
  assert pred is None and "9 faces" in why
  _write_run(str(tmp_path), "l1_clean", gt)
  pred, why = sweep.load_predictions(str(tmp_path / "l1_clean"), "val",
                                     "raw", 10)
  assert why == "ok"
  np.testing.assert_allclose(pred, gt, atol=1e-4)   # back in record order.


@pytest.mark.skipif(not os.path.isdir(YT68), reason="../shared/data/yt68 "
                    "absent")
def test_ground_truth_is_the_runs_val_listing():
  from data import readers  # pylint: disable=g-import-not-at-top
  gt, records = sweep.ground_truth(_load("yt68_ambiguity.py"))
  listing = list(readers.read_dataset("yt68", YT68, "val"))
  assert gt.shape == (len(listing), 68, 2)
  np.testing.assert_array_equal(gt, np.stack([r.landmarks for r in listing]))
  assert [os.path.basename(r.image_path) for r in records] == [
      os.path.basename(r.image_path) for r in listing]

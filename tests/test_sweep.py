"""Tests of star_jax/sweep.py: commands, finished runs, guards, read-back."""

import json
import os
import sys

import numpy as np
import pytest

from star_jax import sweep
from training import errors

STEPS = 1700


def _write_run(run_dir, pred=None, step=STEPS, split="val", seed=0,
               metrics=None):
  os.makedirs(run_dir, exist_ok=True)
  if pred is not None:
    perm = np.random.default_rng(seed).permutation(pred.shape[0])
    np.savez(os.path.join(run_dir, "predictions.npz"), **{
        f"{split}/index": perm,
        f"{split}/raw/pred": pred[perm],
        f"{split}/ema/pred": pred[perm] + 1.0})
  if step is not None:
    with open(os.path.join(run_dir, "results.json"), "w") as f:
      json.dump({"checkpoint": {"step": step}, "metrics": metrics or {}}, f)


def test_run_command_is_the_run_py_command_line():
  run = sweep.Run("b", "configs/x.py", ("--config.a=1", "--config.b=x"))
  train = sweep.run_command(run, "/w/s", 900, extra=("--config.c=2",))
  assert train == [sys.executable, "run.py", "--config=configs/x.py",
                   "--workdir=/w/s/b", "--config.max_steps=900",
                   "--config.a=1", "--config.b=x", "--config.c=2"]
  assert sweep.run_command(run, "/w/s", 900, extra=("--config.c=2",),
                           mode="eval") == train + ["--mode=eval"]
  plain = sweep.run_command(sweep.Run("a", "c.py"), "w", 5)
  assert " ".join(plain[1:]) == "run.py --config=c.py --workdir=w/a " \
                                "--config.max_steps=5"


def test_select_keeps_sweep_order_and_refuses_unknown_names():
  runs = [sweep.Run(n, "c.py") for n in ("a", "b", "c")]
  assert sweep.select(runs, []) == runs
  assert [r.name for r in sweep.select(runs, ["c", "a"])] == ["a", "c"]
  with pytest.raises(errors.UserError, match="unknown runs"):
    sweep.select(runs, ["a", "z"])


def test_is_finished_needs_predictions_of_the_final_step(tmp_path):
  d = str(tmp_path / "r")
  assert not sweep.is_finished(d) and sweep.evaluated_step(d) is None
  _write_run(d, pred=None, step=STEPS)              # results, no predictions.
  assert not sweep.is_finished(d, STEPS) and not sweep.is_finished(d)
  _write_run(d, pred=np.zeros((3, 5, 2)), step=900)
  assert sweep.evaluated_step(d) == 900
  assert sweep.is_finished(d) and sweep.is_finished(d, 900)
  assert not sweep.is_finished(d, STEPS)
  with open(os.path.join(d, "results.json"), "w") as f:
    f.write("{not json")
  assert sweep.evaluated_step(d) is None and not sweep.is_finished(d, 900)


def test_study_settings_guard_and_saved_steps(tmp_path):
  d = str(tmp_path / "study")
  assert sweep.saved_steps(d) is None
  sweep.check_study_settings(d, {"steps": 1700, "config": "c.py"})
  with open(os.path.join(d, "study.json")) as f:
    assert json.load(f) == {"steps": 1700, "config": "c.py"}
  sweep.check_study_settings(d, {"config": "c.py", "steps": 1700})
  with pytest.raises(errors.UserError, match="other settings"):
    sweep.check_study_settings(d, {"steps": 900, "config": "c.py"})
  assert sweep.saved_steps(d) == 1700


def test_cores_are_allowed_cores():
  cores = sweep.cores()
  assert cores and cores == sorted(set(cores))
  assert all(0 <= c < (os.cpu_count() or 1) for c in cores)


_FAKE = r"""
import json, os, sys
import numpy as np
workdir, mode, name = sys.argv[1], sys.argv[2], os.path.basename(sys.argv[1])
os.makedirs(workdir, exist_ok=True)
print("fake", mode, name)
if name == "bad" and mode == "train":
  sys.exit(3)
if mode == "eval" and name != "silent":
  np.savez(os.path.join(workdir, "predictions.npz"), x=np.zeros(1))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"checkpoint": {"step": int(sys.argv[3])}}, f)
"""


def test_train_runs_status_logs_and_failures(tmp_path, monkeypatch):
  """Real subprocesses of a fake run.py: ok, failing, no predictions, done."""
  script = tmp_path / "fake_run.py"
  script.write_text(_FAKE)
  calls = []

  def fake_command(run, workdir, steps, *, extra=(), mode="train"):
    calls.append((run.name, mode))
    return [sys.executable, str(script), os.path.join(workdir, run.name),
            mode, str(steps)] + list(extra)

  monkeypatch.setattr(sweep, "run_command", fake_command)
  work = tmp_path / "study"
  _write_run(str(work / "done"), pred=np.zeros((2, 5, 2)), step=STEPS)
  runs = [sweep.Run(n, "c.py") for n in ("ok", "bad", "silent", "done")]
  status = sweep.train_runs(runs, str(work), STEPS, parallel=2)
  assert list(status) == ["ok", "bad", "silent", "done"]
  assert status == {"ok": "trained", "bad": "failed: train exited 3",
                    "silent": "failed: no predictions.npz of the final step",
                    "done": "done"}
  assert sorted(calls) == sorted([("ok", "train"), ("ok", "eval"),
                                  ("bad", "train"), ("silent", "train"),
                                  ("silent", "eval")])
  log = (work / "bad.log").read_text()
  assert "fake train bad" in log and "# exit 3" in log
  assert log.count("\n$ ") == 1
  log = (work / "ok.log").read_text()
  assert log.count("\n$ ") == 2 and "fake eval ok" in log
  if sweep.shutil.which("taskset"):
    assert "$ taskset -c " in log
  assert not (work / "done.log").exists()
  assert sweep.is_finished(str(work / "ok"), STEPS)
  # Unpinned: the command itself, nothing in front of it.
  calls.clear()
  status = sweep.train_runs([sweep.Run("bad", "c.py")], str(work), STEPS,
                            parallel=1, pin=False)
  assert status == {"bad": "failed: train exited 3"}
  assert (work / "bad.log").read_text().split("\n$ ")[-1].startswith(
      sys.executable)


def test_load_predictions_restores_record_order_and_rejects_bad_files(
    tmp_path):
  gt = np.random.default_rng(0).uniform(0, 100, (7, 5, 2))
  d = str(tmp_path / "r")
  _write_run(d, pred=gt, seed=3, metrics={"val/nme": 0.05,
                                          "val_ema/nme": 0.04})
  pred, why = sweep.load_predictions(d, "val", "raw", 7)
  assert why == "ok"
  np.testing.assert_array_equal(pred, gt)
  pred, why = sweep.load_predictions(d, "val", "ema", 7)
  np.testing.assert_array_equal(pred, gt + 1.0)
  assert sweep.reported_nme(d, "val", "raw") == pytest.approx(5.0)
  assert sweep.reported_nme(d, "val", "ema") == pytest.approx(4.0)
  assert sweep.reported_nme(d, "test", "raw") is None
  assert sweep.load_predictions(d, "test", "raw", 7) == (
      None, "no test/raw/pred in predictions.npz")
  pred, why = sweep.load_predictions(d, "val", "raw", 8)
  assert pred is None and "7 faces" in why
  assert sweep.load_predictions(str(tmp_path / "x"), "val", "raw", 7) == (
      None, "missing")
  # Stale step and wrong shape.
  pred, why = sweep.load_final_predictions(d, gt, "val", "raw", STEPS)
  assert why == "ok"
  pred, why = sweep.load_final_predictions(d, gt, "val", "raw", 900)
  assert pred is None and why == f"evaluated at step {STEPS}, not 900"
  pred, why = sweep.load_final_predictions(d, gt[:, :4], "val", "raw")
  assert pred is None and "ground truth" in why
  with open(os.path.join(d, "predictions.npz"), "wb") as f:
    f.write(b"not a zip")
  pred, why = sweep.load_predictions(d, "val", "raw", 7)
  assert pred is None and why.startswith("unreadable")


def test_paired_interval_and_table_cells():
  diff = np.array([0.01, 0.03, 0.02, 0.04])
  c = sweep.paired_interval(diff, samples=200, seed=1)
  assert c["mean"] == pytest.approx(2.5)
  assert 1.0 <= c["low"] < 2.5 < c["high"] <= 4.0
  same = sweep.paired_interval(np.full(5, -0.01), samples=50)
  assert same == pytest.approx({"mean": -1.0, "low": -1.0, "high": -1.0})
  assert sweep.fmt_interval(same) == "-1.00 [-1.00, -1.00]"
  assert sweep.fmt(None) == "-" and sweep.fmt(1.23456, 3) == "1.235"
  assert sweep.markdown_table(["a", "b"], [["1", "2"]]) == [
      "| a | b |", "|---|---|", "| 1 | 2 |"]


def _fake_run(run_dir, step, pred, index):
  os.makedirs(run_dir, exist_ok=True)
  np.savez(os.path.join(run_dir, "predictions.npz"),
           **{"val/index": index, "val/raw/pred": pred,
              "val/ema/pred": pred + 1})
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump({"checkpoint": {"step": step}, "metrics": {"val/nme": 0.05},
               "per_face": list(range(1000))}, f)


def test_keep_results_copies_what_the_analysis_reads(tmp_path):
  rng = np.random.default_rng(0)
  work, dest = str(tmp_path / "work"), str(tmp_path / "kept")
  index = rng.permutation(7).astype(np.int32)
  pred = rng.normal(size=(7, 5, 2)).astype(np.float32) * 100
  _fake_run(os.path.join(work, "a"), 20, pred, index)
  os.makedirs(os.path.join(work, "unfinished", "checkpoints"))
  with open(os.path.join(work, "study.json"), "w") as f:
    json.dump({"steps": 20}, f)
  assert sweep.keep_results(work, dest) == ["a"]
  assert sorted(os.listdir(dest)) == ["a", "study.json"]
  gt = np.zeros((7, 5, 2))
  got, why = sweep.load_final_predictions(os.path.join(dest, "a"), gt, "val",
                                          "raw", 20)
  want, _ = sweep.load_final_predictions(os.path.join(work, "a"), gt, "val",
                                         "raw", 20)
  assert why == "ok"
  np.testing.assert_array_equal(got, want)
  assert sweep.reported_nme(os.path.join(dest, "a"), "val", "raw") == 5.0
  with open(os.path.join(dest, "a", "results.json")) as f:
    assert sorted(json.load(f)) == ["checkpoint", "metrics"]
  # EMA predictions stay behind; a kept run of a later step is not replaced
  # by an earlier evaluation.
  assert sweep.load_predictions(os.path.join(dest, "a"), "val", "ema", 7)[0] \
      is None
  _fake_run(os.path.join(work, "a"), 10, pred * 0, index)
  assert sweep.keep_results(work, dest) == []
  got, _ = sweep.load_final_predictions(os.path.join(dest, "a"), gt, "val",
                                        "raw", 20)
  np.testing.assert_array_equal(got, want)

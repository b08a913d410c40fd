"""Tests of bench/device_mode_parity.py on fake run folders (no training)."""

import os
import sys

import numpy as np
import pytest

from tests import test_regression_study as fake

sys.path.insert(0, os.path.join(fake.REPO, "bench"))
import device_mode_parity as parity  # pylint: disable=g-import-not-at-top,wrong-import-position


def _folders(tmp_path, gt, host_err, device_err, device_step=fake.STEPS):
  """Host runs with per-face errors host_err[i] (jaw, inner), the device
  run with device_err; returns (device_run, host_dir)."""
  host = tmp_path / "host"
  for name, (j, k) in zip(parity.HOST_RUNS, host_err):
    fake._write_run(str(host / name), fake._offset(gt, j, k))
  dev = str(tmp_path / "device")
  fake._write_run(dev, fake._offset(gt, *device_err), step=device_step,
                  seed=9)
  return dev, str(host)


def test_known_errors_give_the_printed_numbers(tmp_path, capsys):
  gt = fake._faces(30)
  j, k = fake._errors(30, 1)
  host_err = [(j, k), (j + 0.01, k + 0.01), (j + 0.03, k + 0.03)]
  dev, host = _folders(tmp_path, gt, host_err, (j + 0.02, k + 0.02))
  res = parity.compare(dev, host, gt, samples=200, seed=1)
  base = 100 * ((17 * j + 51 * k) / 68).mean()      # host seed 0's NME.
  want = {"star_clean": base, "star_clean_seed1": base + 1,
          "star_clean_seed2": base + 3, "device": base + 2}
  for name, nme in want.items():
    assert res["runs"][name]["nme"] == pytest.approx(nme, abs=1e-9)
  assert res["runs"]["device"]["nme_jaw"] == pytest.approx(
      100 * (j.mean() + 0.02), abs=1e-9)
  host_nmes = [base, base + 1, base + 3]
  assert res["host"]["mean"] == pytest.approx(np.mean(host_nmes), abs=1e-9)
  assert res["host"]["sd"] == pytest.approx(np.std(host_nmes, ddof=1))
  diff = base + 2 - np.mean(host_nmes)
  assert res["device_minus_host"]["nme"] == pytest.approx(diff, abs=1e-9)
  assert res["device_minus_host"]["in_host_sd"] == pytest.approx(
      diff / np.std(host_nmes, ddof=1))
  # A constant per-face difference: the interval is that constant.
  for part in ("nme", "nme_jaw", "nme_inner"):
    for key in ("mean", "low", "high"):
      assert res["paired"][part][key] == pytest.approx(2.0, abs=1e-9)
  parity.print_table(res)
  out = capsys.readouterr().out
  assert f"device - host mean: {diff:+.2f} NME points" in out


def test_missing_or_stale_runs_are_refused(tmp_path):
  gt = fake._faces(8)
  j, k = fake._errors(8, 2)
  dev, host = _folders(tmp_path, gt, [(j, k)] * 3, (j, k), device_step=900)
  with pytest.raises(ValueError, match="device .*step 900"):
    parity.compare(dev, host, gt)
  with pytest.raises(ValueError, match="absent .*missing"):
    parity.compare(dev, host, gt, host_runs=("star_clean", "absent"),
                   steps=None)
  # Without a step check the device run of step 900 is used.
  res = parity.compare(dev, host, gt, steps=None, samples=20)
  assert res["device_minus_host"]["nme"] == pytest.approx(0.0, abs=1e-9)
  assert res["host"]["sd"] == pytest.approx(0.0, abs=1e-9)

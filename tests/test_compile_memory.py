"""Tests for bench/compile_memory.py on a tiny STAR model (compile only).

The bench needs several XLA:CPU devices, which must be requested before jax
starts, so it runs in subprocesses (2 fake devices; LLVM at -O0, which
changes compile time but not XLA's buffer assignment). Two runs: the
residual-only grid (no compile) and one compiled batch in both layouts.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench", "compile_memory.py")
sys.path.insert(0, REPO)

from bench import compile_memory  # pylint: disable=wrong-import-position



def run_bench(tmp_path, name, *flags):
  out = tmp_path / f"{name}.json"
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  proc = subprocess.run(
      [sys.executable, BENCH, "--tiny", "--devices=2", f"--json={out}",
       *flags], capture_output=True, text=True, env=env, cwd=REPO,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def residual_grid(tmp_path_factory):
  return run_bench(tmp_path_factory.mktemp("cm"), "grid", "--batches=2,4",
                   "--residuals_only")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  return run_bench(tmp_path_factory.mktemp("cm"), "compiled", "--batches=4",
                   "--remat=off", "--no_cache_timing",
                   "--set=model.num_stacks=1")


def test_table_has_a_row_for_every_requested_configuration(residual_grid):
  data, stdout = residual_grid
  keys = {(r["batch"], r["layout"], r["remat"]) for r in data["rows"]}
  assert keys == {(b, l, r) for b in (2, 4) for l in ("replicated", "fsdp")
                  for r in (False, True)}
  assert all(r["devices"] == 2 and r["per_device_batch"] == r["batch"] // 2
             for r in data["rows"])
  # One table line per row in the printed markdown.
  assert stdout.count("\n| 2 |") == 4 and stdout.count("\n| 4 |") == 4


def test_remat_keeps_fewer_residuals(residual_grid):
  rows = {(r["batch"], r["layout"], r["remat"]): r["residual"]
          for r in residual_grid[0]["rows"]}
  for batch in (2, 4):
    for layout in ("replicated", "fsdp"):
      assert rows[(batch, layout, True)] < rows[(batch, layout, False)]
  # Residuals are activations: they grow with the per-device batch.
  assert rows[(4, "replicated", False)] > 1.5 * rows[(2, "replicated", False)]


def test_fsdp_shards_arguments_and_totals_add_up(compiled):
  rows = {r["layout"]: r for r in compiled[0]["rows"]}
  rep, fsdp = rows["replicated"], rows["fsdp"]
  # The tiny model's convolutions (>= 256 elements: TINY's fsdp_min_size)
  # are split over the 2 devices: parameters, Adam moments and EMA.
  assert fsdp["argument"] < 0.75 * rep["argument"]
  for r in (rep, fsdp):
    assert r["total"] == (r["argument"] + r["output"] + r["temp"]
                          - r["alias"])
    assert r["temp"] > 0 and r["flops_per_device"] > 0


def test_fit_and_largest_batch_arithmetic():
  rows = [dict(layout="replicated", remat=False, per_device_batch=b,
               total=100 + 10 * b) for b in (1, 2, 4)]
  fit = compile_memory.fit_per_example(rows)[("replicated", False)]
  assert fit["per_example"] == pytest.approx(10)
  assert fit["fixed"] == pytest.approx(100)
  assert compile_memory.largest_batch(fit, 1000) == 90
  assert compile_memory.largest_batch(fit, 50) == 0

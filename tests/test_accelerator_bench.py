"""Tests for bench/accelerator.py: FLOP counts, MFU and the loss check.

Everything runs in this process on CPU with the bench's --small shapes: the
MAE row of a 2-block ViT, the analytic FLOPs of one matmul and one
convolution, and one --small run with learning rate 0 (which must fail the
loss check). No timing is asserted.
"""

import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import accelerator  # pylint: disable=wrong-import-position

H100 = "NVIDIA H100 80GB HBM3"


def test_flops_of_one_matmul_and_one_conv_are_analytic():
  m, k, n = 64, 48, 32
  x = jax.ShapeDtypeStruct((m, k), jnp.float32)
  w = jax.ShapeDtypeStruct((k, n), jnp.float32)
  dense = jax.jit(lambda a, b: a @ b).lower(x, w).compile()
  assert accelerator.compiled_flops(dense) == 2 * m * n * k
  # A 3x3 VALID convolution, NHWC: 2 * outputs * (3 * 3 * C_in) FLOPs.
  b, h, c_in, c_out = 2, 10, 8, 16
  img = jax.ShapeDtypeStruct((b, h, h, c_in), jnp.float32)
  ker = jax.ShapeDtypeStruct((3, 3, c_in, c_out), jnp.float32)
  conv = jax.jit(lambda a, f: jax.lax.conv_general_dilated(
      a, f, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                 ).lower(img, ker).compile()
  outputs = b * (h - 2) * (h - 2) * c_out
  assert accelerator.compiled_flops(conv) == 2 * outputs * 9 * c_in


@pytest.fixture(scope="module")
def mae_case():
  config = accelerator.mae_config("deit_tiny", 8, "float32", small=True)
  trainer = accelerator.mae_trainer(config)
  state = trainer.init_state()
  batch = accelerator.random_batch(trainer)
  row = accelerator.throughput_row(trainer, "MAE tiny", 8, "float32",
                                   warmup=0, steps=1, state=state,
                                   batch=batch, device_kind=H100)
  return trainer, row


def test_reported_flops_equal_xla_cost_analysis_of_the_same_step(mae_case):
  trainer, row = mae_case
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                    for k, v in trainer.abstract_batch.items()}
  # The loop's step function, jitted afresh (no shardings, no donation).
  compiled = jax.jit(trainer._train_step).lower(  # pylint: disable=protected-access
      trainer.abstract_state, abstract_batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert row["flops_per_step"] == float(cost["flops"]) > 0


def test_mfu_is_achieved_over_the_peak_of_the_device_kind(mae_case):
  _, row = mae_case
  # A float32 row: the TF32 tensor peak (XLA's default precision).
  assert row["peak_name"] == "H100 SXM" and row["peak_tflops"] == 494.0
  achieved = row["flops_per_step"] / (row["step_ms"] / 1e3)
  assert row["tflops_s"] == pytest.approx(achieved / 1e12)
  assert row["mfu"] == pytest.approx(achieved / 494e12)
  assert row["img_s"] == pytest.approx(8 / (row["step_ms"] / 1e3))
  # CPU: no allocator statistics, the compiled step's analysis instead.
  assert row["memory_source"] == "memory_analysis" and row["peak_bytes"] > 0
  assert "%" in accelerator.format_rows([row])


def test_peak_table_and_mfu_arithmetic():
  assert accelerator.peak_tflops(H100, "bfloat16") == ("H100 SXM", 989.0)
  assert accelerator.peak_tflops(H100, "float32") == ("H100 SXM", 494.0)
  assert accelerator.peak_tflops(H100, "float32", "fp32") == ("H100 SXM",
                                                             67.0)
  assert accelerator.peak_tflops("NVIDIA H100 PCIe", "bfloat16")[1] == 756.0
  assert accelerator.peak_tflops("NVIDIA H200", "bfloat16")[1] == 989.0
  assert accelerator.peak_tflops("NVIDIA A100-SXM4-80GB", "float32",
                                 "fp32")[1] == 19.5
  assert accelerator.peak_tflops("TPU v5 lite", "bfloat16")[1] == 197.0
  assert accelerator.peak_tflops("TPU v5p", "bfloat16")[1] == 459.0
  assert accelerator.peak_tflops("TPU v4", "float32")[1] == 275.0
  assert accelerator.peak_tflops("cpu", "bfloat16") == (None, None)
  assert accelerator.mfu(494.5e12, 989.0) == pytest.approx(0.5)
  assert accelerator.mfu(1e12, None) is None
  row = dict(model="m", batch=1, dtype="float32", img_s=1.0, step_ms=1.0,
             flops_per_step=1e9, tflops_s=1.0, mfu=None, peak_bytes=None,
             compile_s=0.0)
  assert "| n/a |" in accelerator.format_rows([row])


def test_loss_fell_logic():
  falling = list(np.linspace(10, 5, 50))
  assert accelerator.loss_fell(falling)[0]
  assert not accelerator.loss_fell([3.0] * 50)[0]
  assert not accelerator.loss_fell(falling[::-1])[0]
  # A 5 % fall is not enough for the default 10 %, enough for 1 %.
  small_fall = list(np.linspace(1.0, 0.95, 50))
  assert not accelerator.loss_fell(small_fall)[0]
  assert accelerator.loss_fell(small_fall, min_drop=0.01)[0]
  assert not accelerator.loss_fell(falling[:-1] + [math.nan])[0]
  fell, first, last = accelerator.loss_fell([4.0, 2.0, 1.0, 1.0], window=2)
  assert fell and first == 3.0 and last == 1.0


def test_small_run_fails_its_loss_check_at_learning_rate_zero(tmp_path):
  out = tmp_path / "lr0.json"
  status = accelerator.main([
      "--small", "--no_mae", "--learning_rate=0", "--train_steps=6",
      "--warmup=0", "--steps=1", f"--json={out}"])
  assert status == 1
  data = json.loads(out.read_text())
  check = data["check"]
  assert not check["fell"] and check["learning_rate"] == 0.0
  # Same 8 faces every step, no augmentation, no update: a flat loss.
  losses = np.asarray(check["losses"])
  assert np.all(np.isfinite(losses))
  np.testing.assert_allclose(losses, losses[0], rtol=1e-4)
  # The STAR row reused the check's compiled step and reported its FLOPs.
  (row,) = data["rows"]
  assert row["model"].startswith("STAR") and row["flops_per_step"] > 0

"""Tests of training/mesh.py: FSDP specs, batch assembly, multi-device sums."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from training import mesh as mesh_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fsdp_spec_shards_largest_divisible_dim():
  assert mesh_lib.fsdp_spec((3, 3, 64, 128), 8, min_size=1) == P(
      None, None, None, "data")
  # Largest dim (10) not divisible by 4 -> the next largest (8).
  assert mesh_lib.fsdp_spec((10, 8), 4, min_size=1) == P(None, "data")
  assert mesh_lib.fsdp_spec((7, 5), 4, min_size=1) == P()   # none divisible.
  assert mesh_lib.fsdp_spec((256,), 8, min_size=1024) == P()  # small: replicate.
  assert mesh_lib.fsdp_spec((64, 64), 1, min_size=1) == P()   # one device.


def test_global_batch_on_one_device_keeps_values():
  mesh = mesh_lib.make_mesh()
  local = {"x": np.arange(12, dtype=np.float32).reshape(4, 3),
           "i": np.arange(4, dtype=np.int32)}
  out = mesh_lib.global_batch(mesh, local)
  np.testing.assert_array_equal(np.asarray(out["x"]), local["x"])
  assert out["x"].sharding.spec == P("data")


def test_batch_size_must_divide_devices_and_processes():
  assert mesh_lib.local_batch_size(8) == 8 // jax.process_count()


def test_initialize_distributed_is_a_noop_without_config():
  mesh_lib.initialize_distributed({"distributed": False})  # must not raise.


_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {repo!r})
    import jax, jax.numpy as jnp, numpy as np
    from training import mesh as mesh_lib
    mesh = mesh_lib.make_mesh()
    assert mesh.shape["data"] == 8
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = mesh_lib.global_batch(mesh, {{"x": x}})["x"]
    assert len(g.addressable_shards) == 8
    assert g.addressable_shards[1].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(g.addressable_shards[1].data),
                                  x[2:4])
    # A global reduction under jit sees the whole batch.
    mean = jax.jit(lambda a: jnp.mean(a, axis=0))(g)
    np.testing.assert_allclose(np.asarray(mean), x.mean(0), rtol=1e-6)
    # FSDP shardings of a params tree.
    tree = {{"w": jnp.zeros((4, 64)), "b": jnp.zeros((3,))}}
    s = mesh_lib.param_shardings(mesh, tree, fsdp=True, min_size=16)
    assert s["w"].spec == jax.sharding.PartitionSpec(None, "data"), s["w"].spec
    assert s["b"].spec == jax.sharding.PartitionSpec()
    with __import__("pytest").raises(ValueError, match="divisible"):
      mesh_lib.local_batch_size(12)
    print("OK")
""")


def test_eight_fake_devices(tmp_path):
  script = tmp_path / "m.py"
  script.write_text(_SCRIPT.format(repo=REPO))
  proc = subprocess.run([sys.executable, str(script)], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]

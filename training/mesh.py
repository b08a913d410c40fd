"""Device mesh, shardings and multi-host set-up.

One 1-D mesh over all devices with the axis "data". A batch is sharded along
its leading dimension over "data"; parameters are replicated, or, with
`fsdp=True`, each large array is sharded along its largest dimension that the
axis size divides (optimizer state and EMA follow the parameters). Under
`jax.jit` with these shardings XLA inserts the collectives, so BatchNorm
statistics are computed over the global batch and the same code runs on 1 CPU,
8 fake CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=8`),
GPUs and TPU pods.

Multi-host: every process calls `initialize_distributed(config)` first, loads
its own `global_batch / process_count` examples and `global_batch` turns the
host-local arrays into global `jax.Array`s.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from training import errors

DATA_AXIS = "data"


def initialize_distributed(config) -> None:
  """Calls `jax.distributed.initialize` when `config.distributed` is set.

  `config.distributed` may be True (auto-detected cluster: SLURM, TPU pods,
  ...) or a mapping of keyword arguments (coordinator_address, num_processes,
  process_id). Must run before anything touches the devices.
  """
  spec = config.get("distributed", None) if hasattr(config, "get") else None
  if not spec:
    return
  kwargs = dict(spec) if isinstance(spec, Mapping) or hasattr(spec, "items") else {}
  jax.distributed.initialize(**kwargs)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: all devices)."""
  auto = (jax.sharding.AxisType.Auto,)
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=auto)
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=auto)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over "data", the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape, axis_size: int, min_size: int = 2**14) -> P:
  """Shards the largest dimension divisible by `axis_size` (FSDP style).

  Arrays with fewer than `min_size` elements, or with no divisible dimension,
  stay replicated.
  """
  if axis_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  order = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in order:
    if shape[d] % axis_size == 0:
      spec = [None] * len(shape)
      spec[d] = DATA_AXIS
      return P(*spec)
  return P()


def param_shardings(mesh: Mesh, tree: Any, fsdp: bool = False,
                    min_size: int = 2**14) -> Any:
  """A pytree of NamedShardings for `tree` (arrays or ShapeDtypeStructs)."""
  axis_size = mesh.shape[DATA_AXIS]

  def one(x):
    shape = getattr(x, "shape", ())
    if not fsdp:
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, fsdp_spec(shape, axis_size, min_size))

  return jax.tree.map(one, tree)


def local_batch_size(global_batch_size: int) -> int:
  """The number of examples this process loads per step."""
  n = jax.process_count()
  if global_batch_size % n:
    raise errors.UserError(
        f"global batch size {global_batch_size} is not divisible by the "
        f"number of processes {n}")
  local = global_batch_size // n
  if global_batch_size % jax.device_count():
    raise errors.UserError(
        f"global batch size {global_batch_size} is not divisible by the "
        f"number of devices {jax.device_count()}; choose a multiple")
  return local


def global_batch(mesh: Mesh, local_batch: Mapping[str, np.ndarray]) -> dict:
  """Assembles host-local numpy arrays into global arrays sharded on "data"."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}

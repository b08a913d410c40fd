"""Checkpoints with orbax: periodic + best, async saves, exact resume, config guard.

Layout in the workdir:
  checkpoints/<step>/{state,data,meta,config}   periodic, the last `keep` kept
  checkpoints_best/<step>/{...}                 the best by the validation metric
                                                (one kept), separate from periodic
Items of a checkpoint:
  state   the `TrainState` pytree (params, model_state, opt_state, EMA, step,
          rng), restored with the shardings of the running job.
  data    the training iterator's state as JSON (grain `get_state()`), so the
          data order continues exactly where it stopped.
  meta    small JSON: epoch, best metric, ...
  config  the resolved config as JSON; on resume it is compared with the new
          config and training refuses to continue when a field that changes
          shapes or semantics differs (see `check_config_compatible`).

Saves are asynchronous (orbax copies the arrays to host and writes in a
background thread); `wait()` blocks until they are on disk.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Optional

import jax
import orbax.checkpoint as ocp

# Config fields that choose how the same parameters compute, not what the
# model is (the same maths; e.g. a CPU run resumed or evaluated on GPU).
# Resuming and evaluating both accept a change of them, and checkpoints
# written before a field existed lack it.
IMPLEMENTATION_FIELDS = ("model.conv3x3",)

# Config fields that may differ between a checkpoint and the run resuming it:
# bookkeeping, cadence, paths, the training length, evaluation-only settings
# and IMPLEMENTATION_FIELDS. Everything else (model, loss, data scheme,
# optimizer, batch size, seed, ...) must match.
RESUMABLE_FIELDS = (
    "workdir", "num_epochs", "max_steps", "log_every_steps",
    "checkpoint_every_steps", "eval_every_epochs", "keep_checkpoints",
    "progress_every_steps", "compilation_cache_dir", "distributed",
    "data.root", "data.num_workers", "data.eval_batch_size",
    "data.prefetch_buffer_size", "mode", "resume_may_change",
    # Evaluation-only settings (do not change training).
    "eval.flip_test", "eval_checkpoint",
) + IMPLEMENTATION_FIELDS


class ConfigMismatchError(ValueError):
  pass


def config_to_dict(config) -> dict:
  """The config as a JSON-compatible dict (ConfigDict or plain mapping)."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def flatten_config(d: Mapping[str, Any], prefix: str = ""
                   ) -> dict[str, Any]:
  """Nested config dict -> `{"a.b.c": value}`."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(flatten_config(v, key + "."))
    else:
      out[key] = v
  return out


def check_config_compatible(saved: Mapping[str, Any], current: Mapping[str, Any],
                            may_change: Iterable[str] = ()) -> None:
  """Raises ConfigMismatchError listing the fields that must not change.

  Args:
    saved: config dict stored in the checkpoint.
    current: config dict of the run that wants to resume.
    may_change: extra dotted field names (or prefixes ending in '.') allowed
      to differ, on top of RESUMABLE_FIELDS.
  """
  allowed = tuple(RESUMABLE_FIELDS) + tuple(may_change)

  def is_allowed(key):
    return any(key == a or key.startswith(a.rstrip(".") + ".") for a in allowed)

  a, b = flatten_config(saved), flatten_config(current)
  diffs = []
  for key in sorted(set(a) | set(b)):
    if is_allowed(key):
      continue
    va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
    if va != vb:
      diffs.append(f"  {key}: checkpoint={va!r} now={vb!r}")
  if diffs:
    raise ConfigMismatchError(
        "the config does not match the checkpoint it would resume from; "
        "these fields differ:\n" + "\n".join(diffs) +
        "\nUse a new --workdir for a different experiment, or restore the "
        "original values (only " + ", ".join(RESUMABLE_FIELDS[:6]) +
        ", ... may change on resume).")


def abstract_like(tree, shardings=None):
  """ShapeDtypeStructs (with shardings) describing `tree`, for restoring."""
  if shardings is None:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


def _encode_data_state(data_state) -> dict:
  """Iterator state as a JSON object (grain returns JSON bytes)."""
  if data_state is None:
    return {}
  if isinstance(data_state, (bytes, bytearray)):
    return {"bytes": bytes(data_state).decode("utf-8")}
  return {"json": data_state}


def _decode_data_state(stored):
  if not stored:
    return None
  if "bytes" in stored:
    return stored["bytes"].encode("utf-8")
  return stored["json"]


def read_workdir_config(workdir: str) -> Optional[dict]:
  """The resolved config a run wrote to `<workdir>/config.json`
  (training/loop.py), or None when it is absent or unreadable."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


class Checkpointer:
  """Periodic and best checkpoints of one training run."""

  ITEMS = ("state", "data", "meta", "config")

  def __init__(self, workdir: str, *, keep: int = 2,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True, read_only: bool = False):
    """Args:
      workdir: the run's folder (checkpoints/ and checkpoints_best/ in it).
      keep: periodic checkpoints kept.
      best_metric, best_mode: the metric that ranks checkpoints_best/.
      async_save: orbax asynchronous saves.
      read_only: only restore (evaluating another run's checkpoints): orbax
        read-only managers create, clean up and write nothing under
        `workdir`; a missing checkpoints/ or checkpoints_best/ folder gives
        a None manager (and `step_for` None) instead of being created.
    """
    self.workdir = os.path.abspath(workdir)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._best_value = None

    def manager(sub, **options):
      path = os.path.join(self.workdir, sub)
      if read_only:
        if not os.path.isdir(path):
          return None
        options.update(read_only=True, create=False, max_to_keep=None,
                       save_interval_steps=0,
                       enable_async_checkpointing=False)
      else:
        options.update(create=True, enable_async_checkpointing=async_save)
      return ocp.CheckpointManager(
          path, options=ocp.CheckpointManagerOptions(**options),
          item_names=self.ITEMS)

    self.periodic = manager("checkpoints",
                            **({} if read_only else {"max_to_keep": keep}))
    self.best = None
    if best_metric:
      best_options = dict(best_fn=lambda m: m[best_metric],
                          best_mode=best_mode)
      if not read_only:
        best_options.update(max_to_keep=1,
                            keep_checkpoints_without_metrics=False)
      self.best = manager("checkpoints_best", **best_options)

  # ------------------------------------------------------------ saving ----
  @staticmethod
  def _args(state, data_state, meta, config_dict):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_encode_data_state(data_state)),
        meta=ocp.args.JsonSave(dict(meta)),
        config=ocp.args.JsonSave(config_dict))

  def save(self, step: int, state, data_state, meta, config_dict,
           force: bool = False) -> bool:
    """Periodic save (async). Returns whether a save was started."""
    if step in self.periodic.all_steps():
      return False
    return self.periodic.save(
        step, args=self._args(state, data_state, meta, config_dict),
        force=force)

  def save_best(self, step: int, state, data_state, meta, config_dict,
                metrics: Mapping[str, float]) -> bool:
    """Offers a checkpoint to the best manager; kept only if it is the best."""
    if self.best is None or step in self.best.all_steps():
      return False
    metrics = {k: float(v) for k, v in metrics.items()}
    value = metrics[self.best_metric]
    current = self.best_value()
    if current is not None and not (
        value < current if self.best_mode == "min" else value > current):
      return False
    self._best_value = value
    return self.best.save(
        step, args=self._args(state, data_state, meta, config_dict),
        metrics=metrics, force=True)

  def best_value(self) -> Optional[float]:
    """The best metric value kept so far (None before the first)."""
    if self._best_value is None and self.best is not None:
      step = self.best.best_step()
      metrics = self.best.metrics(step) if step is not None else None
      if metrics:
        self._best_value = float(metrics[self.best_metric])
    return self._best_value

  def _managers(self):
    return [m for m in (self.periodic, self.best) if m is not None]

  def wait(self):
    for m in self._managers():
      m.wait_until_finished()

  def close(self):
    for m in self._managers():
      m.close()

  # --------------------------------------------------------- restoring ----
  def latest_step(self) -> Optional[int]:
    return self.periodic.latest_step() if self.periodic is not None else None

  def _manager(self, which: str):
    if which == "best":
      if self.best is None:
        raise ValueError("no best-checkpoint manager (best_metric not set)")
      return self.best
    return self.periodic

  def step_for(self, which: str = "latest") -> Optional[int]:
    if which == "best":
      return self.best.best_step() if self.best is not None else None
    return self.latest_step()

  def restore_config(self, step: int, which: str = "latest") -> dict:
    out = self._manager(which).restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return dict(out["config"])

  def restore(self, step: int, abstract_state, which: str = "latest"):
    """Returns (state, data_state, meta, config_dict) of checkpoint `step`."""
    out = self._manager(which).restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore()))
    data_state = _decode_data_state(out["data"])
    return out["state"], data_state, dict(out["meta"]), dict(out["config"])

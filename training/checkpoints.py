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

Reading a run back (evaluation, inference, a later stage that starts from an
earlier stage's parameters) goes through one function, `restore_run`: it picks
the step ("latest" or "best"), reads the stored config, restores the state
either as host numpy arrays from the checkpoint's own metadata (nothing has to
be rebuilt; a checkpoint written on GPU / TPU or on many devices loads on one
CPU) or with the shardings of a running job (`abstract_state`), and selects
the raw or the EMA parameters. `Checkpointer.restore` is the resume path of
training (it also returns the iterator state).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from training import errors

# Config fields of the training spine that may differ between a checkpoint
# and the run resuming it: bookkeeping, cadence, paths and the training
# length. Everything else (model, loss, data, optimizer, batch size, seed,
# ...) must match, except what the method declares resumable
# (`training.method.Method.resumable_fields` and `implementation_fields`,
# passed as `may_change`) and `config.resume_may_change`.
RESUMABLE_FIELDS = (
    "workdir", "num_epochs", "max_steps", "log_every_steps",
    "checkpoint_every_steps", "eval_every_epochs", "keep_checkpoints",
    "progress_every_steps", "compilation_cache_dir", "distributed",
    "mode", "resume_may_change", "eval_checkpoint", "max_nonfinite_steps",
)

# `restore_run`: which checkpoint, in which sub-folder of the workdir.
WHICH = ("latest", "best")
SUBDIRS = {"latest": "checkpoints", "best": "checkpoints_best"}
# `restore_run(params=...)`: the raw parameters, the EMA ones (an error when
# the run kept none) or the EMA ones when stored, else the raw ones.
PARAMS = ("raw", "ema", "prefer_ema")


# Checkpoints that fail to restore are moved here (never deleted), so that
# the run resumes from the newest one that does and orbax does not count the
# broken one among the steps it keeps.
UNREADABLE_SUBDIR = "checkpoints_unreadable"


class ConfigMismatchError(errors.UserError):
  pass


def _one_line(error: BaseException, limit: int = 400) -> str:
  """`Type: message` on one line, cut at `limit` characters (orbax and
  tensorstore errors span many lines)."""
  return " ".join(f"{type(error).__name__}: {error}".split())[:limit]


class CheckpointWriteError(errors.UserError):
  """A checkpoint could not be written (disk full, permissions, ...)."""


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
      to differ, on top of RESUMABLE_FIELDS (the method's declared fields
      and config.resume_may_change).
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


ITEMS = ("state", "data", "meta", "config")


class Checkpointer:
  """Periodic and best checkpoints of one training run."""

  ITEMS = ITEMS

  def __init__(self, workdir: str, *, keep: int = 2,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True):
    """Args:
      workdir: the run's folder (checkpoints/ and checkpoints_best/ in it).
      keep: periodic checkpoints kept.
      best_metric, best_mode: the metric that ranks checkpoints_best/.
      async_save: orbax asynchronous saves.

    Reading another run's checkpoints without writing anything goes through
    `restore_run` / `find_checkpoint` (read-only managers).
    """
    self.workdir = os.path.abspath(workdir)
    self.best_metric = best_metric
    self.best_mode = best_mode
    self._best_value = None

    def manager(sub, **options):
      path = os.path.join(self.workdir, sub)
      options.update(create=True, enable_async_checkpointing=async_save)
      return ocp.CheckpointManager(
          path, options=ocp.CheckpointManagerOptions(**options),
          item_names=self.ITEMS)

    self.periodic = manager(SUBDIRS["latest"], max_to_keep=keep)
    self.best = None
    if best_metric:
      self.best = manager(SUBDIRS["best"],
                          best_fn=lambda m: m[best_metric],
                          best_mode=best_mode, max_to_keep=1,
                          keep_checkpoints_without_metrics=False)

  # ------------------------------------------------------------ saving ----
  @staticmethod
  def _args(state, data_state, meta, config_dict):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(_encode_data_state(data_state)),
        meta=ocp.args.JsonSave(dict(meta)),
        config=ocp.args.JsonSave(config_dict))

  def _writing(self, step: int, what, *args, **kwargs):
    """Runs an orbax save / wait; a failure becomes CheckpointWriteError.

    orbax writes a step into a temporary folder and renames it when every
    item is on disk, and removes old steps only after that, so the earlier
    checkpoints are intact when a write fails.
    """
    try:
      return what(*args, **kwargs)
    except OSError as e:  # ENOSPC, EACCES, EROFS, ...; bugs keep traceback.
      good = sorted(self.periodic.all_steps()) if self.periodic else []
      raise CheckpointWriteError(
          f"could not write the checkpoint of step {step} under "
          f"{self.workdir}: {type(e).__name__}: {e}\nThe earlier "
          f"checkpoints are intact (steps {good or 'none'}); free disk space "
          "or fix the folder's permissions, then re-run the same command to "
          "resume from the newest of them.") from e

  def save(self, step: int, state, data_state, meta, config_dict,
           force: bool = False) -> bool:
    """Periodic save (async). Returns whether a save was started."""
    if step in self.periodic.all_steps():
      return False
    return self._writing(
        step, self.periodic.save, step,
        args=self._args(state, data_state, meta, config_dict), force=force)

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
    return self._writing(
        step, self.best.save, step,
        args=self._args(state, data_state, meta, config_dict),
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
      self._writing(m.latest_step(), m.wait_until_finished)

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

  def restore_newest_good(self, abstract_state,
                          check_config: Optional[Callable[[dict], None]] = None,
                          log: Callable[[str], None] = print):
    """The newest periodic checkpoint that restores, for resuming training.

    Tries the steps newest first. `check_config(saved_config)` runs before
    the state is read; its errors (a config that differs from the
    checkpoint's) propagate: they are the user's to fix, not a broken
    checkpoint. Any other failure (a truncated or missing file, a missing
    item, a tree that does not fit `abstract_state`) is reported with its
    reason, the step is moved to `<workdir>/checkpoints_unreadable/<step>`
    (kept for inspection; orbax no longer counts it) and the next older
    step is tried.

    Returns:
      `(step, state, data_state, meta, config)`, or None when there is no
      checkpoint at all.
    Raises:
      errors.UserError: checkpoints exist but none restores.
    """
    steps = sorted(self.periodic.all_steps(), reverse=True)
    broken = []
    for step in steps:
      try:
        config = self.restore_config(step)
        if check_config is not None:
          check_config(config)
        state, data_state, meta, _ = self.restore(step, abstract_state)
      except errors.UserError:
        raise  # the user's to fix (e.g. a changed config), not a damage.
      except Exception as e:  # pylint: disable=broad-except
        broken.append(self._set_aside(step, e, log))
        continue
      if broken:
        log(f"resuming from the newest checkpoint that restores, step {step}"
            f" (set aside: {', '.join(broken)})")
      return step, state, data_state, meta, config
    if broken:
      raise errors.UserError(
          f"none of the checkpoints under {self.workdir}/"
          f"{SUBDIRS['latest']} restores; they were moved to "
          f"{self.workdir}/{UNREADABLE_SUBDIR}/ ({', '.join(broken)}). Re-run "
          "the same command to train from scratch in this workdir, or use a "
          "new --workdir.")
    return None

  def _set_aside(self, step: int, error: Exception, log) -> str:
    """Moves an unrestorable step out of the manager's folder; returns its
    new path. Nothing is deleted."""
    src = os.path.join(self.workdir, SUBDIRS["latest"], str(step))
    dest_root = os.path.join(self.workdir, UNREADABLE_SUBDIR)
    os.makedirs(dest_root, exist_ok=True)
    dest = os.path.join(dest_root, str(step))
    n = 1
    while os.path.exists(dest):
      dest = os.path.join(dest_root, f"{step}.{n}")
      n += 1
    reason = _one_line(error)
    if jax.process_index() == 0:
      os.replace(src, dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"set_aside_{step}")
    self.periodic.reload()
    log(f"warning: checkpoint step {step} ({src}) does not restore ({reason}"
        f"); moved to {dest}, trying the previous one")
    return dest


# ------------------------------------------------------- reading a run ----

@dataclasses.dataclass(frozen=True)
class RestoredRun:
  """A checkpoint of a training workdir, as `restore_run` returns it.

  Attributes:
    params: the selected parameters (raw or EMA, see `used_ema`).
    model_state: the mutable collections that go with them (e.g.
      `{"batch_stats": ...}`; `{}` when the model has none).
    used_ema: whether `params` / `model_state` are the EMA ones.
    state: the whole restored train state: a `TrainState` laid out as
      `abstract_state` when one was given, else nested dicts of numpy arrays
      (`"params"`, `"model_state"`, `"ema"`, `"opt_state"`, `"step"`, ...).
    step: the checkpoint's step.
    config: the resolved config the run stored with the checkpoint (JSON).
    which: "latest" or "best".
    path: the checkpoint's folder, `<workdir>/<checkpoints[_best]>/<step>`.
  """
  params: Any
  model_state: Any
  used_ema: bool
  state: Any
  step: int
  config: dict
  which: str
  path: str


def _missing(message: str, hint: str) -> errors.MissingInputError:
  return errors.MissingInputError(message + (f"; {hint}" if hint else ""))


def _read_only_manager(path: str, best_metric: Optional[str] = None,
                       best_mode: str = "min") -> ocp.CheckpointManager:
  """A manager that only reads `path` (creates, cleans up, writes nothing).

  The state is read with the PyTree handler (the on-disk format of the
  StandardCheckpointHandler that `Checkpointer` saves with), so its metadata
  tree is known before restoring and no target state has to be built.
  """
  options = dict(read_only=True, create=False)
  if best_metric:
    options.update(best_fn=lambda m: m[best_metric], best_mode=best_mode)
  handlers = {"state": ocp.PyTreeCheckpointHandler(),
              **{k: ocp.JsonCheckpointHandler() for k in ITEMS[1:]}}
  return ocp.CheckpointManager(
      path, options=ocp.CheckpointManagerOptions(**options),
      item_handlers=handlers)


def find_checkpoint(workdir: str, which: str = "latest", *,
                    best_metric: Optional[str] = None,
                    best_mode: Optional[str] = None,
                    hint: str = "") -> tuple[str, int]:
  """`(checkpoints folder, step)` of the `which` checkpoint of a workdir.

  "latest": the newest step of `checkpoints/`. "best": the step of
  `checkpoints_best/` that ranks first by `best_metric` (`best_mode`, default
  "min"); without `best_metric` the run's own choice recorded in
  `<workdir>/config.json`, and without that record the newest step there
  (the trainer keeps one).

  Raises:
    ValueError: `which` not in WHICH.
    errors.MissingInputError (a FileNotFoundError): no such workdir, or no
      checkpoint of that kind; `hint` (what the user should do) is appended.
  """
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.isdir(workdir):
    raise _missing(
        f"checkpoint directory {workdir} does not exist; pass the --workdir "
        "of a training run (it holds checkpoints/ and checkpoints_best/)",
        hint)
  base = os.path.basename(workdir.rstrip(os.sep))
  if base in SUBDIRS.values():
    raise _missing(
        f"{workdir} is the {base}/ folder inside a training workdir; pass "
        f"the workdir itself ({os.path.dirname(workdir)}) and which "
        "best|latest", hint)
  sub = os.path.join(workdir, SUBDIRS[which])
  if not os.path.isdir(sub):
    other = "latest" if which == "best" else "best"
    has_other = os.path.isdir(os.path.join(workdir, SUBDIRS[other]))
    raise _missing(
        f"no {which} checkpoint in {workdir}: {SUBDIRS[which]}/ is missing"
        + (f" (it has {SUBDIRS[other]}/: use which={other!r})" if has_other
           else "; is this a training workdir written by run.py?"), hint)
  if which == "best" and not best_metric:
    recorded = read_workdir_config(workdir) or {}
    best_metric = recorded.get("best_metric") or None
    best_mode = best_mode or recorded.get("best_mode") or None
  manager = _read_only_manager(
      sub, best_metric if which == "best" else None, best_mode or "min")
  try:
    step = manager.best_step() if which == "best" and best_metric else (
        manager.latest_step())
  finally:
    manager.close()
  if step is None:
    raise _missing(
        f"no {which} checkpoint in {sub} (the folder holds no finished "
        "checkpoint step)", hint or "train first or use the other which")
  return sub, int(step)


def _host_restore_args(metadata):
  """Orbax array metadata -> restore arguments for host numpy arrays."""
  return jax.tree.map(
      lambda m: ocp.RestoreArgs(restore_type=np.ndarray,
                                dtype=getattr(m, "dtype", None)), metadata)


def _ema_pair(ema):
  """`TrainState.ema` as restored -> (params, model_state), or None.

  A `TrainState` gives the tuple back; the host restore of its metadata tree
  gives a list or a dict keyed "0" / "1".
  """
  if isinstance(ema, Mapping) and set(ema) >= {"0", "1"}:
    return ema["0"], ema["1"]
  if isinstance(ema, (list, tuple)) and len(ema) == 2:
    return ema[0], ema[1]
  return None


def _fields(state) -> tuple[Any, Any, Any]:
  """(params, model_state, ema) of a TrainState or of its host dict."""
  if isinstance(state, Mapping):
    if "params" not in state:
      raise ValueError(
          f"the checkpoint's state has no 'params' (it holds "
          f"{sorted(state)}); not a train state (training/state.py)")
    return state["params"], state.get("model_state"), state.get("ema")
  return state.params, state.model_state, state.ema


_NOT_OURS = "not a checkpoint written by training.checkpoints.Checkpointer"


def _read_config(manager, sub: str, step: int, hint: str) -> dict:
  if step not in manager.all_steps():
    raise _missing(f"no checkpoint step {step} in {sub}", hint)
  try:
    return dict(manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"])
  except Exception as e:  # orbax raises several types for absent items.
    raise errors.UserError(
        f"{sub}/{step} does not restore: no readable 'config' item ({e}); "
        f"it is truncated or damaged, or {_NOT_OURS}") from e


def _checkpoint_folder(workdir, which, step, best_metric, best_mode, hint):
  if step is None:
    return find_checkpoint(workdir, which, best_metric=best_metric,
                           best_mode=best_mode, hint=hint)
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  return os.path.join(os.path.abspath(os.path.expanduser(workdir)),
                      SUBDIRS[which]), int(step)


def run_config(workdir: str, *, which: str = "latest",
               step: Optional[int] = None, best_metric: Optional[str] = None,
               best_mode: Optional[str] = None, hint: str = "") -> dict:
  """The config a run stored with its `which` checkpoint (the state is not
  read); arguments and errors as `restore_run`'s."""
  sub, step = _checkpoint_folder(workdir, which, step, best_metric,
                                 best_mode, hint)
  manager = _read_only_manager(sub)
  try:
    return _read_config(manager, sub, step, hint)
  finally:
    manager.close()


def restore_run(workdir: str, *, which: str = "latest",
                step: Optional[int] = None, params: str = "raw",
                abstract_state=None, best_metric: Optional[str] = None,
                best_mode: Optional[str] = None,
                check_config: Optional[Callable[[dict], None]] = None,
                hint: str = "") -> RestoredRun:
  """Reads one checkpoint of a training workdir (read only).

  Args:
    workdir: the run's `--workdir` (holding checkpoints/, checkpoints_best/).
    which: "latest" or "best" (see `find_checkpoint`).
    step: a step of that folder instead of the latest / best one.
    params: "raw", "ema" (error when the run kept no EMA) or "prefer_ema".
    abstract_state: a `TrainState` of `jax.ShapeDtypeStruct`s with shardings
      (e.g. `training.loop.Trainer.abstract_state`): the state is restored
      as sharded device arrays in that layout. None: host numpy arrays in the
      checkpoint's own tree (nested dicts).
    best_metric, best_mode: how "best" ranks (default: the run's record).
    check_config: called with the stored config before the state is read
      (e.g. to refuse a checkpoint of another model with a clear message).
    hint: appended to the message of a missing workdir / checkpoint.

  Raises:
    ValueError: bad `which` / `params`, unreadable items, no EMA for
      `params="ema"`.
    errors.MissingInputError: no such workdir or checkpoint.
  """
  if params not in PARAMS:
    raise ValueError(f"params must be one of {PARAMS}, got {params!r}")
  sub, step = _checkpoint_folder(workdir, which, step, best_metric,
                                 best_mode, hint)
  path = os.path.join(sub, str(step))
  manager = _read_only_manager(sub)
  try:
    config = _read_config(manager, sub, step, hint)
    if check_config is not None:
      check_config(config)
    if abstract_state is not None:
      restore = ocp.args.PyTreeRestore(
          item=abstract_state,
          restore_args=ocp.checkpoint_utils.construct_restore_args(
              abstract_state))
    else:
      try:
        metadata = manager.item_metadata(step)["state"]
      except Exception as e:  # pylint: disable=broad-except
        raise errors.UserError(
            f"{path} does not restore: no readable 'state' item ({e}); it "
            f"is truncated or damaged, or {_NOT_OURS}") from e
      if metadata is None:
        raise ValueError(f"{path} has no 'state' item; {_NOT_OURS}")
      restore = ocp.args.PyTreeRestore(
          item=metadata, restore_args=_host_restore_args(metadata))
    try:
      state = manager.restore(step, args=ocp.args.Composite(
          state=restore))["state"]
    except Exception as e:  # pylint: disable=broad-except
      others = sorted(set(manager.all_steps()) - {step})
      raise errors.UserError(
          f"the checkpoint {path} does not restore ({_one_line(e)}); it "
          "may be truncated or written by another model. Other steps in "
          f"{sub}: {others or 'none'}" + (
              " (resuming training there sets this one aside and uses the "
              "newest that restores)" if which == "latest" else "")) from e
  finally:
    manager.close()
  raw_params, model_state, ema = _fields(state)
  pair = _ema_pair(ema)
  if params == "ema" and pair is None:
    raise ValueError(
        f"params='ema' but the checkpoint {path} has no EMA parameters "
        "(trained with config.ema.enabled=False); use the raw ones")
  used_ema = pair is not None and params != "raw"
  if used_ema:
    raw_params, model_state = pair
  return RestoredRun(params=raw_params, model_state=model_state or {},
                     used_ema=used_ema, state=state, step=int(step),
                     config=config, which=which, path=path)

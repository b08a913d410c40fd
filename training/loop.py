"""The method-agnostic train / eval / summary loop.

A *method* (STAR, SCE-MAE stage 1, SCE-MAE stage 2, ...) is a
`training.method.Method` built by `make_method(config)` in its module (see
`run.py`'s registry). The loop only talks to it through that class's hooks
(data, init, loss, eval step, host-side evaluation, optional begin_eval /
write_report / extra modes) and its declared config fields (resumable,
implementation and model fields); training/method.py documents them.

Config fields read here: seed, batch_size, num_epochs, max_steps (optional),
optimizer.*, ema.*, fsdp, log_every_steps, progress_every_steps,
checkpoint_every_steps, keep_checkpoints, eval_every_epochs, eval_batch_size,
best_metric, resume_may_change, compilation_cache_dir, async_checkpoints,
max_nonfinite_steps.

Faults the loop survives (tests/test_loop.py, bench/faults.py): a step with a
non-finite loss or gradients is not applied and a streak of them stops the run
(training/nonfinite.py); SIGTERM / SIGINT save the current step and exit
cleanly (training/preemption.py); a latest checkpoint that does not restore is
set aside and the previous one used (`Checkpointer.restore_newest_good`); a
failed checkpoint write stops the run with the earlier checkpoints intact; a
resume on changed training data is refused unless allowed
(training/fingerprint.py); the data iterator's worker processes are shut down
on every exit (no leaked shared memory).

Metrics go to `workdir/tensorboard/events.out.tfevents.*` and
`workdir/metrics.jsonl`; eval results are named `<split>/<metric>` for the raw
parameters and `<split>_ema/<metric>` for the EMA parameters.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics
from grain import multiprocessing as grain_mp

from training import checkpoints as ckpt_lib
from training import errors
from training import fingerprint as fingerprint_lib
from training import mesh as mesh_lib
from training import method as method_lib
from training import nonfinite as nonfinite_lib
from training import preemption as preemption_lib
from training import progress as progress_lib
from training import state as state_lib
from training import writers as writers_lib


# ------------------------------------------------------------------ setup ----

def setup_runtime(config, workdir: Optional[str] = None) -> None:
  """Persistent XLA compilation cache (config.compilation_cache_dir).

  "" disables it; "workdir" puts it in `<workdir>/xla_cache`; any other value
  is a path (`~` expanded). Compiled programs are reused across runs, which
  removes most of the start-up time of a resumed or repeated run.
  """
  path = config.get("compilation_cache_dir", "")
  if not path:
    return
  if path == "workdir":
    if not workdir:
      return
    path = os.path.join(workdir, "xla_cache")
  path = os.path.expanduser(path)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class Trainer:
  """Builds the jitted steps of a method on a mesh; used by train/evaluate."""

  def __init__(self, method, config, mesh=None, train: bool = True):
    """`train=False`: for restoring and evaluating only.

    The training split is then not listed: a restored state is never
    stepped, so the optimizer's schedule (which the split's size sets) only
    has to give the state's structure, and is built with one step per epoch.
    """
    self.method = method
    self.config = config
    self.mesh = mesh if mesh is not None else mesh_lib.make_mesh()
    self.global_batch_size = int(config.batch_size)
    self.local_batch_size = mesh_lib.local_batch_size(self.global_batch_size)
    self.steps_per_epoch = 1
    if train:
      self.steps_per_epoch = max(
          1, int(method.num_train_examples()) // self.global_batch_size)
    max_steps = config.get("max_steps", None)
    self.total_steps = int(max_steps) if max_steps else int(
        round(float(config.num_epochs) * self.steps_per_epoch))
    self.tx, self.schedule = state_lib.make_optimizer(
        config.optimizer, self.steps_per_epoch, self.total_steps,
        weight_decay_mask=method.weight_decay_mask)
    self.ema_decay = state_lib.ema_decay(config.get("ema", None),
                                         self.global_batch_size)
    self.max_nonfinite_steps = int(config.get(
        "max_nonfinite_steps", nonfinite_lib.DEFAULT_MAX_NONFINITE_STEPS))
    self.guard_nonfinite = self.max_nonfinite_steps > 0
    self._mask = None
    self._build()

  # --------------------------------------------------------------- init ----
  def _init_fn(self, rng, batch):
    init_rng, train_rng = jax.random.split(rng)
    params, model_state = self.method.init_variables(init_rng, batch)
    return state_lib.create_train_state(
        params, model_state, self.tx, self.method.trainable_mask(params),
        train_rng, self.ema_decay is not None)

  def _build(self):
    config = self.config
    dummy = self.method.dummy_batch(self.global_batch_size)
    self._dummy = dummy
    self.abstract_batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                           for k, v in dummy.items()}
    rng = jax.random.PRNGKey(int(config.seed))
    abstract = jax.eval_shape(self._init_fn, rng, self.abstract_batch)
    self._mask = self.method.trainable_mask(abstract.params)
    self.state_shardings = mesh_lib.param_shardings(
        self.mesh, abstract, fsdp=bool(config.get("fsdp", False)),
        min_size=int(config.get("fsdp_min_size", 2**14)))
    self.abstract_state = ckpt_lib.abstract_like(abstract, self.state_shardings)
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
    replicated = mesh_lib.replicated(self.mesh)
    self._init = jax.jit(self._init_fn, out_shardings=self.state_shardings)
    self.train_step = jax.jit(
        self._train_step,
        in_shardings=(self.state_shardings, self.batch_sharding),
        out_shardings=(self.state_shardings, replicated),
        donate_argnums=(0,))
    self.eval_step = jax.jit(self.method.eval_step,
                             out_shardings=self.batch_sharding)

  def init_state(self) -> state_lib.TrainState:
    rng = jax.random.PRNGKey(int(self.config.seed))
    batch = mesh_lib.global_batch(
        self.mesh, {k: v[:self.local_batch_size] for k, v in self._dummy.items()})
    return self._init(rng, batch)

  # --------------------------------------------------------------- step ----
  def _train_step(self, state: state_lib.TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    trainable, frozen = state_lib.partition(state.params, self._mask)

    def loss_of(trainable):
      params = state_lib.merge(trainable, frozen)
      return self.method.loss_fn(params, state.model_state, batch, rng,
                                 state.step)

    (loss, (new_model_state, metrics)), grads = jax.value_and_grad(
        loss_of, has_aux=True)(trainable)
    new_state = state_lib.apply_gradients(
        state, self.tx, grads, trainable, frozen, new_model_state,
        self.ema_decay)
    metrics = dict(metrics)
    metrics["loss"] = loss
    metrics["grad_norm"] = jnp.sqrt(sum(
        jnp.sum(jnp.square(g.astype(jnp.float32)))
        for g in jax.tree.leaves(grads)))
    metrics["learning_rate"] = self.schedule(state.step)
    if self.guard_nonfinite:
      finite = nonfinite_lib.is_finite_step(loss, metrics["grad_norm"])
      new_state = nonfinite_lib.guarded_update(state, new_state, finite)
      metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics

  # --------------------------------------------------------------- eval ----
  def evaluate(self, state: state_lib.TrainState, use_ema: bool = True,
               with_outputs: bool = False):
    """Evaluates the raw (and EMA) parameters on every eval split.

    Returns `{<split>[_ema]/<metric>: value}`; with `with_outputs` also the
    per-example `eval_step` outputs, `outputs[split]["raw" | "ema"]`.
    """
    variants = [("", "raw", (state.params, state.model_state))]
    if use_ema and state.ema is not None:
      variants.append(("_ema", "ema", state.ema))
    results, all_outputs = {}, {}
    eval_bs = int(self.config.get("eval_batch_size", 0) or
                  self.global_batch_size)
    local_eval_bs = mesh_lib.local_batch_size(eval_bs)
    splits = self.method.eval_iterators(local_eval_bs)
    for split, make_iter in splits.items():
      for suffix, name, (params, model_state) in variants:
        outputs = self.run_eval_split(params, model_state, make_iter())
        if with_outputs:
          all_outputs.setdefault(split, {})[name] = outputs
        summary = self.method.evaluate(outputs, split)
        for k, v in summary.items():
          results[f"{split}{suffix}/{k}"] = float(v)
    return (results, all_outputs) if with_outputs else results

  def run_eval_split(self, params, model_state, batches) -> dict[str, np.ndarray]:
    chunks: dict[str, list] = {}
    for local in batches:
      batch = mesh_lib.global_batch(self.mesh, local)
      out = self.eval_step(params, model_state, batch)
      out = jax.tree.map(_to_host, out)
      keep = _to_host(batch["valid"]).astype(bool)
      for k, v in out.items():
        chunks.setdefault(k, []).append(np.asarray(v)[keep])
    if not chunks:
      raise ValueError("an evaluation split produced no batches")
    return {k: np.concatenate(v, axis=0) for k, v in chunks.items()}


def _to_host(x):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


# -------------------------------------------------------------- train loop ----

class _MetricAccumulator:
  """Averages per-step scalar metrics with clu.metrics.Average (no host sync)."""

  def __init__(self):
    self._acc: dict[str, clu_metrics.Average] = {}

  def add(self, metrics):
    for k, v in metrics.items():
      m = clu_metrics.Average.from_model_output(jnp.asarray(v, jnp.float32))
      self._acc[k] = self._acc[k].merge(m) if k in self._acc else m

  def compute_and_reset(self) -> dict[str, float]:
    out = {k: float(m.compute()) for k, m in self._acc.items()}
    self._acc = {}
    return out


def train(method, config, workdir: str) -> state_lib.TrainState:
  """Trains (or resumes) `method` in `workdir`; returns the final state.

  Returns early, after saving the current step, when SIGTERM / SIGINT
  arrives (training/preemption.py): re-running resumes from there.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  setup_runtime(config, workdir)
  is_main = jax.process_index() == 0
  log = print if is_main else (lambda *a, **k: None)
  trainer = Trainer(method, config)
  config_dict = ckpt_lib.config_to_dict(config)
  best_metric = config.get("best_metric", None) or method.best_metric
  checkpointer = ckpt_lib.Checkpointer(
      workdir, keep=int(config.get("keep_checkpoints", 2)),
      best_metric=best_metric, best_mode=method.best_mode,
      async_save=bool(config.get("async_checkpoints", True)))
  train_iter = None
  try:
    listing = method.train_listing()
    data_print = (fingerprint_lib.fingerprint(listing)
                  if listing is not None else None)
    train_iter = method.train_iterator(trainer.local_batch_size)
    may_change = resumable_fields(method, config)
    restored = checkpointer.restore_newest_good(
        trainer.abstract_state, log=lambda m: log(m, flush=True),
        check_config=lambda saved: ckpt_lib.check_config_compatible(
            saved, config_dict, may_change))
    meta = {}
    if restored is not None:
      latest, state, data_state, meta, _ = restored
      fingerprint_lib.check_resume(
          workdir, meta.get("data_fingerprint"), listing, may_change,
          log=lambda m: log(m, flush=True), write=is_main)
      if data_state is not None:
        train_iter.set_state(data_state)
      log(f"resumed from {workdir}/checkpoints/{latest} (step "
          f"{int(state.step)})", flush=True)
    else:
      state = trainer.init_state()
      if is_main and listing is not None:
        fingerprint_lib.write_listing(workdir, listing)
    if data_print is not None:
      meta["data_fingerprint"] = data_print
    if is_main:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True)
      n = state_lib.count_params(state.params)
      print(f"{n:,} parameters; {trainer.steps_per_epoch} steps/epoch, "
            f"{trainer.total_steps} steps, global batch "
            f"{trainer.global_batch_size} on {jax.device_count()} device(s)",
            flush=True)
    with preemption_lib.PreemptionWatcher() as watcher:
      state = _train_steps(trainer, method, config, workdir, state,
                           train_iter, checkpointer, meta, config_dict,
                           best_metric, watcher, log)
  finally:
    close_iterator(train_iter)
    checkpointer.close()
  return state


def _train_steps(trainer, method, config, workdir, state, train_iter,
                 checkpointer, meta, config_dict, best_metric, watcher, log):
  """The step loop of `train` (after the state is built or restored)."""
  is_main = jax.process_index() == 0
  writer = writers_lib.MetricWriter(workdir, enabled=is_main)
  step = int(state.step)
  progress = progress_lib.Progress(
      trainer.total_steps, step,
      every_steps=int(config.get("progress_every_steps", 50)), enabled=is_main)
  log_every = int(config.get("log_every_steps", 50))
  ckpt_every = int(config.get("checkpoint_every_steps", 0) or 0)
  eval_every = int(config.get("eval_every_epochs", 1) or 0)
  spe = trainer.steps_per_epoch
  acc = _MetricAccumulator()
  last_eval: dict[str, float] = {}

  def last_good_checkpoint():
    good = checkpointer.latest_step()
    return (f"{workdir}/checkpoints/{good} (step {good})"
            if good is not None else None)

  monitor = nonfinite_lib.NonfiniteMonitor(
      trainer.max_nonfinite_steps, last_good_checkpoint,
      log=lambda m: log(m, flush=True))

  def settle(metrics_or_none):
    if metrics_or_none is not None:
      acc.add({k: v for k, v in metrics_or_none.items() if k != "nonfinite"})

  def save(step, force=False):
    checkpointer.save(step, state, train_iter.get_state(),
                      {**meta, "step": step, "epoch": step / spe},
                      config_dict, force=force)

  def stop_for_preemption(step):
    settle(monitor.flush())
    save(step, force=True)
    checkpointer.wait()
    writer.flush()
    log(f"stopped by {watcher.signal_name} at step {step} of "
        f"{trainer.total_steps}: checkpoint {workdir}/checkpoints/{step} "
        "written; re-run the same command to resume", flush=True)

  try:
    while step < trainer.total_steps:
      try:
        local = next(train_iter)
      except Exception:  # pylint: disable=broad-except
        if watcher.received is None:
          raise
        # A scheduler that signals the whole process group also stops the
        # data workers (before they could ignore it): the state of the
        # last finished step is complete, save it.
        stop_for_preemption(step)
        return state
      batch = mesh_lib.global_batch(trainer.mesh, local)
      state, metrics = trainer.train_step(state, batch)
      step += 1
      settle(monitor.push(step, metrics))
      is_last = step == trainer.total_steps
      if step % log_every == 0 or is_last:
        settle(monitor.flush())
        scalars = {f"train/{k}": v for k, v in acc.compute_and_reset().items()}
        scalars["train/epoch"] = step / spe
        scalars["train/nonfinite_steps_total"] = float(monitor.total)
        writer.write_scalars(step, scalars)
        # On disk when logged: a watcher of metrics.jsonl sees the run's
        # progress, and a killed run keeps the rows up to its last log step.
        writer.flush()
        progress.update(step, f"loss {scalars.get('train/loss', float('nan')):.4g}")
      else:
        progress.update(step)
      epoch_end = step % spe == 0
      if (eval_every and epoch_end and (step // spe) % eval_every == 0) or (
          is_last and eval_every):
        settle(monitor.flush())
        method.begin_eval(step, workdir)
        try:
          last_eval = trainer.evaluate(state)
        except Exception:  # pylint: disable=broad-except
          if watcher.received is None:
            raise
          stop_for_preemption(step)  # evaluation workers stopped too.
          return state
        writer.write_scalars(step, last_eval)
        writer.flush()
        if is_main:
          print(format_eval(step, last_eval), flush=True)
        if best_metric and best_metric in last_eval:
          checkpointer.save_best(
              step, state, train_iter.get_state(),
              {**meta, "step": step, "epoch": step / spe}, config_dict,
              {best_metric: last_eval[best_metric]})
        elif best_metric and is_main:
          print(f"warning: best_metric {best_metric!r} not among the eval "
                f"results {sorted(last_eval)}", flush=True)
      if (ckpt_every and step % ckpt_every == 0) or is_last:
        save(step, force=is_last)
      if not is_last and watcher.should_stop(step):
        stop_for_preemption(step)
        return state
    settle(monitor.flush())
    checkpointer.wait()
  finally:
    writer.flush()
    writer.close()
  if last_eval and is_main:
    with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
      json.dump(last_eval, f, indent=2, sort_keys=True)
  return state


def close_iterator(iterator) -> None:
  """Stops a data iterator's worker processes and frees their shared memory.

  grain (0.2.18) has no public close on the DataLoader's iterator; the
  dataset iterator it wraps has one, which stops the workers and unlinks the
  batches they had prefetched. The last batch the loop handed out is held
  by a reference cycle until the garbage collector runs; left to the
  interpreter's exit, grain's deletion thread is gone by then and every run
  ended with "There appear to be 8 leaked shared_memory objects" (the
  collection is what removed that warning, tests/test_preemption.py), and
  the unlinking it sets off is waited for
  (`wait_for_shared_memory_deletions`).
  """
  if iterator is None:
    return
  close = getattr(iterator, "close", None)
  if close is None:
    close = getattr(getattr(iterator, "_iterator", None), "close", None)
  if close is not None:
    close()
  gc.collect()
  wait_for_shared_memory_deletions()


def wait_for_shared_memory_deletions(timeout_s: float = 30.0) -> None:
  """Returns once grain has unlinked the shared memory of freed batches.

  grain (0.2.18) unlinks a freed batch's shared memory on one background
  thread (`SharedMemoryArray`'s asynchronous deletion); at the interpreter's
  exit the thread pool's queue is dropped, and what was still queued leaks
  (a machine under load, where that thread had not run yet). A no-op queued
  behind those deletions on the same single thread returns when they are
  done. Nothing to wait for when no grain worker ran in this process.
  """
  pool = getattr(grain_mp.SharedMemoryArray, "_del_thread_pool", None)
  if pool is None:
    return
  try:
    pool.apply_async(int).get(timeout_s)
  except (ValueError, multiprocessing.TimeoutError):  # pool closed / stuck.
    pass


def resumable_fields(method: method_lib.Method, config) -> tuple[str, ...]:
  """Fields a resumed run may change on top of the spine's
  `checkpoints.RESUMABLE_FIELDS`: the method's declared resumable and
  implementation fields and `config.resume_may_change`."""
  return (tuple(method.resumable_fields) +
          tuple(method.implementation_fields) +
          tuple(config.get("resume_may_change", ()) or ()))


def format_eval(step: int, results: dict[str, float]) -> str:
  lines = [f"eval at step {step}:"]
  for k in sorted(results):
    lines.append(f"  {k} = {results[k]:.6g}")
  return "\n".join(lines)


# The compute dtype: how the same parameters compute, not the model.
_COMPUTE_FIELDS = ("model.dtype",)


def _check_model_config(saved: dict, current: dict, source: str,
                        method) -> None:
  """UserError when the checkpoint's model differs from the config's.

  Compared: `config.method` and the method's `model_fields` (dotted names or
  prefixes ending in "."), apart from its `implementation_fields` and the
  compute dtype. `method` is a `Method` (instance or class).
  """
  a, b = ckpt_lib.flatten_config(saved), ckpt_lib.flatten_config(current)
  ignored = _COMPUTE_FIELDS + tuple(method.implementation_fields)

  def is_model_field(key):
    return key == "method" or any(
        key.startswith(f) if f.endswith(".") else key == f
        for f in method.model_fields)

  keys = [k for k in sorted(set(a) | set(b))
          if is_model_field(k) and k not in ignored]
  diffs = [f"  {k}: checkpoint={a.get(k, '<absent>')!r} now="
           f"{b.get(k, '<absent>')!r}" for k in keys if a.get(k) != b.get(k)]
  if diffs:
    raise errors.UserError(
        f"the checkpoint under {source} was trained with a different model "
        "than --config describes:\n" + "\n".join(diffs) + "\nUse the "
        "config the checkpoint was trained with (its config.json), or "
        "override these fields on the command line.")


def evaluate(method, config, workdir: str, checkpoint_dir: Optional[str] = None,
             config_path: Optional[str] = None) -> dict[str, float]:
  """Restores a checkpoint (config.eval_checkpoint: latest|best) and evaluates.

  Args:
    method: the method object.
    config: the experiment config.
    workdir: where results go (and, by default, the checkpoints).
    checkpoint_dir: a training workdir (with checkpoints/ and/or
      checkpoints_best/, as `training.checkpoints.Checkpointer` writes them)
      to evaluate instead of `workdir`'s own; it is only read (orbax
      read-only managers): nothing is created or modified there.
    config_path: the config file, recorded in the report.

  Returns:
    `<split>/<metric>` (raw parameters) and `<split>_ema/<metric>` (EMA).
    The method's `write_report(workdir, results, outputs, info)` is called
    (process 0) with the per-example `eval_step` outputs
    (`outputs[split]["raw" | "ema"]`) and `info` (checkpoint dir, which,
    step, path; config path).
  """
  workdir = os.path.abspath(workdir)
  source = os.path.abspath(os.path.expanduser(checkpoint_dir or workdir))
  external = source != workdir
  if external and not os.path.isdir(source):
    raise errors.MissingInputError(
        f"--checkpoint {source} does not exist; pass a training workdir "
        "(the folder holding checkpoints/ and checkpoints_best/)")
  setup_runtime(config, workdir)
  trainer = Trainer(method, config, train=False)
  which = config.get("eval_checkpoint", "latest")
  if which not in ckpt_lib.WHICH:
    raise errors.UserError(
        f"config.eval_checkpoint must be 'latest' or 'best'; "
        f"got {which!r}")
  sub = ckpt_lib.SUBDIRS[which]
  current = ckpt_lib.config_to_dict(config)
  restored = ckpt_lib.restore_run(
      source, which=which, abstract_state=trainer.abstract_state,
      best_metric=config.get("best_metric", None) or method.best_metric,
      best_mode=method.best_mode,
      check_config=lambda saved: _check_model_config(
          saved, current, f"{source}/{sub}", method),
      hint="train first (--mode=train), point --checkpoint (or --workdir) "
      "at a trained run" + (", or use --config.eval_checkpoint=latest"
                            if which == "best" else ""))
  state, step = restored.state, restored.step
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
  method.begin_eval(step, workdir)

  results, outputs = trainer.evaluate(state, with_outputs=True)
  if jax.process_index() == 0:
    print(format_eval(step, results), flush=True)
    method.write_report(workdir, results, outputs, {
        "checkpoint_dir": source, "which": which, "step": int(step),
        "checkpoint_path": restored.path, "config": config_path})
  return results


def summary(method, config, workdir: Optional[str] = None) -> dict[str, Any]:
  """Parameter count, forward FLOPs per image (XLA cost analysis), config."""
  del workdir
  dummy = method.dummy_batch(1)
  abstract_batch = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                    for k, v in dummy.items()}
  rng = jax.random.PRNGKey(int(config.seed))
  params, model_state = method.abstract_variables(rng, abstract_batch)
  n_params = state_lib.count_params(params)
  compiled = jax.jit(method.forward).lower(params, model_state,
                                    abstract_batch).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = float((cost or {}).get("flops", float("nan")))
  out = {"parameters": n_params, "flops_per_image": flops}
  print(f"parameters: {n_params:,}")
  print(f"forward FLOPs per image: {flops:.4g} ({flops / 1e9:.3f} GFLOPs; "
        "XLA cost analysis of the compiled forward, batch 1)")
  print("config:")
  print(config)
  return out


def run_mode(mode: str, method, config, workdir: str,
             checkpoint_dir: Optional[str] = None,
             config_path: Optional[str] = None):
  """Dispatches --mode to the loop or to one of the method's extra modes.

  `checkpoint_dir` (run.py --checkpoint) is only used by --mode=eval.
  """
  if checkpoint_dir and mode != "eval":
    raise errors.UserError(
        f"--checkpoint is only used by --mode=eval (got --mode="
        f"{mode}); training resumes from --workdir")
  if mode == "train":
    return train(method, config, workdir)
  if mode == "eval":
    return evaluate(method, config, workdir, checkpoint_dir=checkpoint_dir,
                    config_path=config_path)
  if mode == "summary":
    return summary(method, config, workdir)
  extra = method.extra_modes
  if mode in extra:
    return extra[mode](method, config, workdir)
  raise errors.UserError(
      f"unknown --mode {mode!r}; expected train, eval, summary"
      + (", " + ", ".join(sorted(extra)) if extra else ""))

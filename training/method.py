"""The interface between the training spine and a method (STAR, SCE-MAE, ...).

A method is a `Method` subclass built by `make_method(config)` in its module
(see `run.py`'s registry). `training/loop.py` talks to it only through the
hooks below (shapes: B = local batch size). The required ones raise
NotImplementedError here; the optional ones have defaults that do nothing
(or the documented neutral choice), so a method overrides only what it uses.

  Data (required; by default delegated to `self.data`, an object providing
  the same three functions)
    num_train_examples() -> int
        size of one training epoch (for epochs -> steps conversions).
    train_iterator(local_batch_size) -> iterator of dict[str, np.ndarray]
        infinite, shuffled per epoch, sharded over processes; must provide
        `get_state()` (JSON-serialisable) and `set_state(state)` (a grain
        DataLoader iterator does), so a resume continues the data order.
    eval_iterators(local_batch_size) -> dict[str, Callable[[], Iterable]]
        per evaluation split/subset, a factory of a finite iterable of
        batches; batches carry `valid` bool [B] (False on padding).
    train_listing() -> list of (key, label_hash), or None
        what the run trains on, one entry per training face in order (e.g.
        `data.records.training_listing(records)`); its fingerprint goes into
        every checkpoint and a resume on different data is refused
        (training/fingerprint.py). Default: the data object's
        `train_listing()` when it has one, else None (no check).
  dummy_batch(batch_size) -> dict[str, np.ndarray]          (required)
      a batch with the shapes/dtypes of a training batch (for init, FLOPs).

  Model and loss (pure functions of jax arrays, traced inside jax.jit)
    init_variables(rng, batch) -> (params, model_state)      (required)
    abstract_variables(rng, batch) -> their shapes
        what `--mode=summary` counts; default `jax.eval_shape` of
        `init_variables`. A method whose init reads data (e.g. a mean shape)
        overrides it, so that summary needs no dataset.
    loss_fn(params, model_state, batch, rng, step)           (required)
        -> (loss, (new_model_state, metrics: dict[str, scalar]))
    eval_step(params, model_state, batch) -> dict[str, [B, ...]]  (required)
        per-example outputs.
    forward(params, model_state, batch) -> outputs
        what `--mode=summary` counts FLOPs of; default `eval_step`.
    trainable_mask(params) -> bool pytree like params, or None
        False = frozen: no gradient, no optimizer state; default None (all
        parameters train).
    weight_decay_mask: None (default: AdamW decays every trainable
        parameter) or a function params -> bool pytree (True = decayed).

  Evaluation (host side, numpy)
    evaluate(outputs: dict[str, np.ndarray [n, ...]], split)
        -> dict[str, float]                                  (required)
        outputs are `eval_step` results over the whole split, padding
        removed.
    begin_eval(step, workdir)
        called before each evaluation (e.g. to write images for that step);
        default: nothing.
    write_report(workdir, results, outputs, info)
        called by `loop.evaluate` (--mode=eval, process 0) with the
        per-example outputs `outputs[split]["raw" | "ema"]` and `info`
        (checkpoint dir, which, step, path; config path); default: nothing.

  Class attributes
    best_metric, best_mode: what ranks `checkpoints_best/` (`config.
        best_metric` overrides `best_metric`); default None (no best
        checkpoint) and "min".
    extra_modes: dict mode -> fn(method, config, workdir), the method's own
        `--mode`s; default none.
    resumable_fields: the method's config fields (dotted names, or prefixes
        ending in ".") that a resumed run may change on top of the spine's
        `training.checkpoints.RESUMABLE_FIELDS`: paths, worker counts,
        evaluation-only settings.
    implementation_fields: fields that choose how the same parameters
        compute (e.g. a convolution algorithm); a resumed or evaluated run
        may change them, and checkpoints written before a field existed lack
        it.
    model_fields: the fields that describe the model a checkpoint holds
        (default every `model.*` field); `--mode=eval` refuses a config whose
        model fields differ from the checkpoint's (apart from
        `implementation_fields` and `model.dtype`, the compute dtype).
"""

from __future__ import annotations

import types
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import jax


class Method:
  """Base class of the methods training/loop.py runs (see the module doc)."""

  best_metric: Optional[str] = None
  best_mode: str = "min"
  extra_modes: Mapping[str, Callable[..., Any]] = types.MappingProxyType({})
  resumable_fields: tuple[str, ...] = ()
  implementation_fields: tuple[str, ...] = ()
  model_fields: tuple[str, ...] = ("model.",)
  weight_decay_mask: Optional[Callable[[Any], Any]] = None
  # The data object the data hooks delegate to (a subclass sets it, often
  # as a property that lists the data on first use), or None.
  data: Any = None

  # ------------------------------------------------------------ data ----
  def _data_object(self):
    if self.data is None:
      raise NotImplementedError(
          f"{type(self).__name__} sets no `data` object; override "
          "num_train_examples / train_iterator / eval_iterators")
    return self.data

  def num_train_examples(self) -> int:
    return self._data_object().num_train_examples()

  def train_iterator(self, local_batch_size: int):
    return self._data_object().train_iterator(local_batch_size)

  def eval_iterators(self, local_batch_size: int
                     ) -> Dict[str, Callable[[], Iterable]]:
    return self._data_object().eval_iterators(local_batch_size)

  def train_listing(self):
    """(key, label_hash) per training face, or None (no fingerprint)."""
    listing = getattr(self.data, "train_listing", None)
    return listing() if listing is not None else None

  def dummy_batch(self, batch_size: int):
    raise NotImplementedError(f"{type(self).__name__}.dummy_batch")

  # ----------------------------------------------------------- model ----
  def init_variables(self, rng, batch):
    raise NotImplementedError(f"{type(self).__name__}.init_variables")

  def abstract_variables(self, rng, batch):
    """Shapes of `init_variables(rng, batch)`, for --mode=summary."""
    return jax.eval_shape(self.init_variables, rng, batch)

  def loss_fn(self, params, model_state, batch, rng, step):
    raise NotImplementedError(f"{type(self).__name__}.loss_fn")

  def eval_step(self, params, model_state, batch):
    raise NotImplementedError(f"{type(self).__name__}.eval_step")

  def forward(self, params, model_state, batch):
    """What --mode=summary counts the FLOPs of; default `eval_step`."""
    return self.eval_step(params, model_state, batch)

  def trainable_mask(self, params) -> Any:
    """Bool pytree (False = frozen), or None: every parameter trains."""
    del params
    return None

  # ------------------------------------------------------ evaluation ----
  def evaluate(self, outputs: Dict[str, Any], split: str) -> Dict[str, float]:
    raise NotImplementedError(f"{type(self).__name__}.evaluate")

  def begin_eval(self, step: Optional[int], workdir: Optional[str]) -> None:
    """Called before each evaluation; default: nothing."""
    del step, workdir

  def write_report(self, workdir: str, results: Dict[str, float],
                   outputs: Dict[str, Any], info: Dict[str, Any]) -> Any:
    """Called by --mode=eval with the per-example outputs; default: nothing."""
    del workdir, results, outputs, info
    return None

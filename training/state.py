"""Train state, optimizer, learning-rate schedules, EMA and frozen parameters.

`TrainState` holds everything a step changes and a resume needs:
  step        int32 scalar, optimizer steps taken.
  params      the model parameters (flax "params" collection, a nested dict).
  model_state the other mutable collections (e.g. {"batch_stats": ...}).
  opt_state   optax state of the *trainable* parameters only.
  ema         exponential moving average of (params, model_state), or None.
  rng         base PRNG key (uint32 [2]); step t uses fold_in(rng, t), so the
              randomness of a step depends only on the seed and t (exact resume).

Frozen parameters (SCE-MAE stage 2: a frozen backbone) are given by a boolean
mask with the structure of `params` (True = trainable). `partition` splits the
params into a trainable and a frozen part; gradients are taken w.r.t. the
trainable part only and the optimizer holds no state for the frozen part.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from training import errors


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  ema: Any
  rng: jax.Array


# ------------------------------------------------------------- partition ----

def partition(params, mask) -> tuple[dict, dict]:
  """Splits nested-dict `params` by a boolean `mask` (same structure).

  Returns (trainable, frozen) as flat dicts keyed by '/'-joined paths. With
  `mask=None` everything is trainable.
  """
  flat = traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  if mask is None:
    return flat, {}
  flat_mask = traverse_util.flatten_dict(flax.core.unfreeze(mask), sep="/")
  if set(flat_mask) != set(flat):
    missing = sorted(set(flat) ^ set(flat_mask))[:5]
    raise ValueError(
        f"trainable mask does not match the parameters; differing paths: "
        f"{missing}")
  trainable = {k: v for k, v in flat.items() if flat_mask[k]}
  frozen = {k: v for k, v in flat.items() if not flat_mask[k]}
  return trainable, frozen


def merge(trainable: dict, frozen: dict) -> dict:
  """Inverse of `partition`: a nested params dict."""
  return traverse_util.unflatten_dict({**trainable, **frozen}, sep="/")


# ------------------------------------------------------------- schedules ----

def make_schedule(opt_config, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """Learning-rate schedule from the config, epochs converted to steps.

  opt_config.schedule:
    "step":   lr * factor^k after each of `decay_epochs` (STAR: x0.1 at epochs
              200, 350, 450 of 500), or, when `decay_fractions` is set, after
              each of those fractions of `total_steps` (budgeted runs whose
              length is set by max_steps).
    "cosine": linear warm-up over `warmup_epochs`, then cosine to 0 (MAE).
    "constant".
  """
  lr = float(opt_config.learning_rate)
  kind = opt_config.get("schedule", "constant")
  if kind == "constant":
    return optax.constant_schedule(lr)
  if kind == "step":
    factor = float(opt_config.get("decay_factor", 0.1))
    fractions = tuple(opt_config.get("decay_fractions", ()) or ())
    if fractions:
      steps = [f * total_steps for f in fractions]
    else:
      steps = [e * steps_per_epoch for e in opt_config.decay_epochs]
    boundaries = {int(round(x)): factor for x in steps}
    return optax.piecewise_constant_schedule(lr, boundaries)
  if kind == "cosine":
    warmup = int(round(opt_config.get("warmup_epochs", 0) * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, max(warmup, 1), max(total_steps, warmup + 1),
        end_value=float(opt_config.get("end_learning_rate", 0.0)))
  raise errors.UserError(
      f"unknown optimizer.schedule {kind!r}; expected 'step', 'cosine' or "
      "'constant'")


def make_optimizer(opt_config, steps_per_epoch: int, total_steps: int,
                   weight_decay_mask=None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """optax optimizer and its schedule from `config.optimizer`.

  opt_config.name: "adam" (STAR: Adam, lr 1e-3, no weight decay) or "adamw"
  (MAE: betas (0.9, 0.95), weight decay 0.05). Optional `grad_clip_norm`.
  `weight_decay_mask`: for adamw, a bool pytree or a callable params -> bool
  pytree (True = decayed), e.g. a method's `weight_decay_mask`; None decays
  every trainable parameter.
  """
  schedule = make_schedule(opt_config, steps_per_epoch, total_steps)
  name = opt_config.get("name", "adam")
  b1, b2 = float(opt_config.get("b1", 0.9)), float(opt_config.get("b2", 0.999))
  eps = float(opt_config.get("eps", 1e-8))
  if name == "adam":
    tx = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
  elif name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                     weight_decay=float(opt_config.get("weight_decay", 0.0)),
                     mask=weight_decay_mask)
  elif name == "sgd":
    tx = optax.sgd(schedule, momentum=opt_config.get("momentum", None))
  else:
    raise errors.UserError(f"unknown optimizer.name {name!r}; expected 'adam', "
                           "'adamw' or 'sgd'")
  clip = opt_config.get("grad_clip_norm", None)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
  return tx, schedule


# -------------------------------------------------------------------- EMA ----

def ema_decay(ema_config, global_batch_size: int) -> Optional[float]:
  """Per-step EMA decay, or None when EMA is off.

  STAR's public code: decay = 0.5 ** (batch / 10000), i.e. the average halves
  its weight on old values every `half_life_examples` = 10000 examples.
  An explicit `ema_config.decay` wins.
  """
  if ema_config is None or not ema_config.get("enabled", False):
    return None
  if ema_config.get("decay", None):  # None or 0: from the half-life.
    return float(ema_config.decay)
  return 0.5 ** (global_batch_size / float(ema_config.half_life_examples))


def ema_update(ema, new, decay: float):
  """ema <- decay * ema + (1 - decay) * new, for float leaves (others copied)."""
  def one(e, n):
    if jnp.issubdtype(jnp.asarray(n).dtype, jnp.floating):
      return decay * e + (1.0 - decay) * n
    return n
  return jax.tree.map(one, ema, new)


# ------------------------------------------------------------------ create ----

def create_train_state(params, model_state, tx: optax.GradientTransformation,
                       mask, rng, use_ema: bool) -> TrainState:
  trainable, _ = partition(params, mask)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=tx.init(trainable),
      ema=(params, model_state) if use_ema else None,
      rng=rng)


def apply_gradients(state: TrainState, tx: optax.GradientTransformation,
                    grads: dict, trainable: dict, frozen: dict,
                    new_model_state, decay: Optional[float]) -> TrainState:
  """One optimizer update of the trainable params (+ EMA), step += 1."""
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  params = merge(optax.apply_updates(trainable, updates), frozen)
  ema = state.ema
  if decay is not None:
    ema = ema_update(ema, (params, new_model_state), decay)
  return state.replace(step=state.step + 1, params=params,
                       model_state=new_model_state, opt_state=opt_state,
                       ema=ema)


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


LossFn = Callable[..., Any]

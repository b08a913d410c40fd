"""A trained STAR model from a training workdir, and its jitted crop predictor.

  config, model, variables = inference.load_checkpoint("runs/yt68_star")
  out = inference.predict_crops(model, variables, crops,   # uint8 [B, S, S, 3]
                                align_corners=config.loss.align_corners)
  out["landmarks_crop"]                                   # [B, N, 2] crop px

What a checkpoint directory is: a training workdir written by
`training.checkpoints.Checkpointer` (`run.py --workdir=DIR`):

  DIR/checkpoints/<step>/{state,data,meta,config}        periodic (latest)
  DIR/checkpoints_best/<step>/{state,data,meta,config}   best by the metric

`which="best"` reads `checkpoints_best/` (the step with the lowest stored
best metric, the only one kept by the trainer), `which="latest"` the highest
step of `checkpoints/`. The stored config (the resolved training config as
JSON) rebuilds the model with `star_jax.method._model_from_config`, so no
config file is needed. The state is restored as host arrays from the
checkpoint's own metadata (no optimizer, data or mesh is rebuilt, and a
checkpoint written on GPU / TPU or on many devices loads on one CPU).

Parameters: the EMA parameters (`TrainState.ema`, what the `<split>_ema/...`
metrics measure) when the checkpoint has them, else the raw ones;
`use_ema=False` forces the raw parameters, `use_ema=True` requires EMA.

Decoding is the evaluation path's own: `star_jax.method.decode_predictions`
(soft-argmax of the last stack, `denormalise_landmarks` with the config's
`loss.align_corners`) and, when the config sets `eval.flip_test`,
`star_jax.method.flip_test_average`, so inference and evaluation cannot
drift apart.

Directories are only read (orbax opens them read-only).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from star_jax import method as method_lib

WHICH = ("best", "latest")
_SUBDIR = {"best": "checkpoints_best", "latest": "checkpoints"}
_ITEMS = ("state", "data", "meta", "config")


# ------------------------------------------------------------ loading ----

def _checkpoint_manager(directory: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  # The state is read with the PyTree handler (the on-disk format of the
  # StandardCheckpointHandler the trainer saves with), so its metadata tree
  # is known before restoring and no target state has to be built.
  handlers = {"state": ocp.PyTreeCheckpointHandler(),
              **{k: ocp.JsonCheckpointHandler() for k in _ITEMS[1:]}}
  return ocp.CheckpointManager(directory, options=options,
                               item_handlers=handlers)


def _pick_step(directory: str, which: str, config: Optional[dict]
               ) -> Optional[int]:
  """The step `which` of a workdir, chosen by the trainer's own Checkpointer.

  "best": the step `training.checkpoints.Checkpointer.step_for("best")`
  ranks first by the run's `best_metric` (and `best_mode`, default the STAR
  method's "min") stored in the workdir's config.json; a workdir without
  that record falls back to the newest step of checkpoints_best/ (the
  trainer keeps only one there). "latest": the newest periodic step.
  """
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  config = config or {}
  metric = config.get("best_metric") or None
  mode = config.get("best_mode") or method_lib.StarMethod.best_mode
  checkpointer = ckpt_lib.Checkpointer(directory, best_metric=metric,
                                       best_mode=mode, read_only=True)
  try:
    if which == "best" and checkpointer.best is None:
      manager = _checkpoint_manager(os.path.join(directory, _SUBDIR["best"]))
      try:
        return manager.latest_step()
      finally:
        manager.close()
    return checkpointer.step_for(which)
  finally:
    checkpointer.close()


def find_checkpoint(directory: str, which: str = "best") -> Tuple[str, int]:
  """The `(checkpoints folder, step)` that `load_checkpoint` would read.

  Raises:
    FileNotFoundError: `directory` missing, or no checkpoint of that kind.
    ValueError: `which` not in WHICH.
  """
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  directory = os.path.abspath(os.path.expanduser(directory))
  if not os.path.isdir(directory):
    raise FileNotFoundError(
        f"checkpoint directory {directory} does not exist; pass the --workdir "
        "of a training run (it holds checkpoints/ and checkpoints_best/)")
  base = os.path.basename(directory.rstrip(os.sep))
  if base in _SUBDIR.values():
    raise FileNotFoundError(
        f"{directory} is the {base}/ folder inside a training workdir; pass "
        f"the workdir itself ({os.path.dirname(directory)}) and --which "
        "best|latest")
  sub = os.path.join(directory, _SUBDIR[which])
  other = "latest" if which == "best" else "best"
  if not os.path.isdir(sub):
    has_other = os.path.isdir(os.path.join(directory, _SUBDIR[other]))
    raise FileNotFoundError(
        f"no {which} checkpoint in {directory}: {_SUBDIR[which]}/ is missing"
        + (f" (it has {_SUBDIR[other]}/: use which={other!r})" if has_other
           else "; is this a training workdir written by run.py?"))
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  step = _pick_step(directory, which, ckpt_lib.read_workdir_config(directory))
  if step is None:
    raise FileNotFoundError(
        f"no {which} checkpoint in {sub} (the folder holds no finished "
        "checkpoint step); train first or use the other --which")
  return sub, step


def _host_abstract(metadata):
  """Orbax array metadata -> numpy restore arguments (host arrays)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def one(m):
    return ocp.RestoreArgs(restore_type=np.ndarray, dtype=getattr(m, "dtype",
                                                                  None))
  return jax.tree.map(one, metadata)


def _restore_host(manager, step: int) -> Tuple[Any, dict]:
  """(state as nested host arrays, config dict) of a checkpoint step."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    config = manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]
  except Exception as e:  # orbax raises several types for absent items.
    raise ValueError(
        f"{manager.directory}/{step} has no readable 'config' item ({e}); not "
        "a checkpoint written by training.checkpoints.Checkpointer") from e
  try:
    metadata = manager.item_metadata(step)["state"]
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"{manager.directory}/{step} has no readable 'state' item ({e}); not "
        "a checkpoint written by training.checkpoints.Checkpointer") from e
  if metadata is None:
    raise ValueError(f"{manager.directory}/{step} has no 'state' item; not a "
                     "checkpoint written by training.checkpoints.Checkpointer")
  state = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.PyTreeRestore(item=metadata,
                                   restore_args=_host_abstract(metadata))))
  return state["state"], dict(config)


def _as_pair(ema):
  """`TrainState.ema` as restored ((params, model_state) tuple/list/dict)."""
  if isinstance(ema, dict) and set(ema) >= {"0", "1"}:
    return ema["0"], ema["1"]
  if isinstance(ema, (list, tuple)) and len(ema) == 2:
    return ema[0], ema[1]
  return None


def select_variables(state: dict, use_ema: Optional[bool] = None
                     ) -> Tuple[dict, bool]:
  """Flax variables `{"params": ..., **model_state}` of a restored state.

  Args:
    state: the restored `TrainState` as a nested dict.
    use_ema: None = EMA when present, True = EMA (error if absent), False = raw.

  Returns:
    (variables, whether the EMA parameters were used).
  """
  if not isinstance(state, dict) or "params" not in state:
    raise ValueError("the checkpoint's state has no 'params'; not a STAR "
                     "training state (training/state.py TrainState)")
  pair = _as_pair(state.get("ema"))
  if use_ema and pair is None:
    raise ValueError("use_ema=True but the checkpoint has no EMA parameters "
                     "(trained with config.ema.enabled=False); use the raw "
                     "ones")
  if pair is not None and use_ema is not False:
    params, model_state = pair
    used = True
  else:
    params, model_state = state["params"], state.get("model_state") or {}
    used = False
  return {"params": params, **dict(model_state or {})}, used


def config_from_dict(config_dict: dict):
  """The stored JSON config as an `ml_collections.ConfigDict`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(config_dict)


def model_from_config(config):
  """The StackedHourglass a STAR config describes (as training builds it)."""
  from data import schemes  # pylint: disable=g-import-not-at-top
  if config.get("method", None) != "star":
    raise ValueError(
        f"not a STAR checkpoint: its config.method is "
        f"{config.get('method', None)!r}, expected 'star' (SCE-MAE runs are "
        "evaluated with run.py --mode=...)")
  return method_lib._model_from_config(  # pylint: disable=protected-access
      config, schemes.get_scheme(config.data.scheme))


def load_checkpoint(directory: str, which: str = "best",
                    use_ema: Optional[bool] = None, with_info: bool = False):
  """Loads a trained STAR model from a training workdir.

  Args:
    directory: a `run.py --workdir` (holding checkpoints/, checkpoints_best/).
    which: "best" (checkpoints_best/) or "latest" (checkpoints/).
    use_ema: None = EMA parameters when stored, True = require them,
      False = raw parameters.
    with_info: also return a dict (step, path, which, ema used).

  Returns:
    (config ConfigDict, model StackedHourglass, variables dict of device
    arrays `{"params": ..., "batch_stats": ...}`) [+ info].

  Raises:
    FileNotFoundError: missing directory or no checkpoint of that kind.
    ValueError: not a STAR checkpoint (method, items or state layout).
  """
  sub, step = find_checkpoint(directory, which)
  manager = _checkpoint_manager(sub)
  try:
    state, config_dict = _restore_host(manager, step)
  finally:
    manager.close()
  config = config_from_dict(config_dict)
  model = model_from_config(config)
  variables, used_ema = select_variables(state, use_ema)
  variables = jax.device_put(variables)
  if with_info:
    info = {"path": os.path.join(sub, str(step)), "step": int(step),
            "which": which, "ema": used_ema}
    return config, model, variables, info
  return config, model, variables


# ---------------------------------------------------------- prediction ----

def infer(model, variables, images: jax.Array, crop_to_image: jax.Array,
          align_corners: bool = False, with_heatmaps: bool = False,
          flip_permutation: Optional[Tuple[int, ...]] = None
          ) -> Dict[str, jax.Array]:
  """Model + the evaluation decoder on crops (traceable; no jit here).

  Args:
    model: the StackedHourglass.
    variables: `{"params": ..., **model_state}`.
    images: uint8 RGB crops `[B, S, S, 3]`.
    crop_to_image: `[B, 2, 3]` crop -> original pixel maps.
    align_corners: the config's `loss.align_corners` (decoder convention).
    with_heatmaps: also return the last stack's heatmaps.
    flip_permutation: the scheme's flip permutation to run the evaluation's
      horizontal-flip test-time augmentation (`config.eval.flip_test`,
      `star_jax.method.flip_test_average`); None: no flip test.

  Returns:
    "landmarks_crop" `[B, N, 2]` crop pixels, "landmarks" `[B, N, 2]` original
    pixels, and "heatmaps" `[B, N, S/4, S/4]` when asked (of the crops as
    given, also with the flip test); float32.
  """
  crop_size = images.shape[1]
  crop_to_image = crop_to_image.astype(jnp.float32)

  def forward(x):
    return model.apply(variables, x, train=False)

  if flip_permutation is None:
    outputs = forward(images)
    crop, original = method_lib.decode_predictions(
        outputs, crop_to_image, crop_size, align_corners)
  else:
    def crop_points(x):
      eye = jnp.broadcast_to(jnp.eye(2, 3, dtype=jnp.float32),
                             (x.shape[0], 2, 3))
      return method_lib.decode_predictions(forward(x), eye, crop_size,
                                           align_corners)[0]
    crop = method_lib.flip_test_average(crop_points, images,
                                        tuple(flip_permutation))
    original = method_lib.crop_to_original(crop, crop_to_image)
    outputs = forward(images) if with_heatmaps else None  # extra pass.
  out = {"landmarks_crop": crop, "landmarks": original}
  if with_heatmaps:
    out["heatmaps"] = outputs[-1]["heatmaps"]
  return out


@functools.partial(jax.jit, static_argnames=("model", "align_corners",
                                              "with_heatmaps",
                                              "flip_permutation"))
def _predict_crops(model, variables, images, align_corners, with_heatmaps,
                   flip_permutation):
  b = images.shape[0]
  eye = jnp.broadcast_to(jnp.eye(2, 3, dtype=jnp.float32), (b, 2, 3))
  out = infer(model, variables, images, eye, align_corners, with_heatmaps,
              flip_permutation)
  del out["landmarks"]  # equals landmarks_crop under the identity map.
  return out


def flip_permutation_for(config, flip_test: Optional[bool] = None
                         ) -> Optional[Tuple[int, ...]]:
  """The scheme's flip permutation if flip-testing, else None.

  Args:
    config: the training config (ConfigDict or dict).
    flip_test: None = `config.eval.flip_test` (what the evaluation does).
  """
  from data import schemes  # pylint: disable=g-import-not-at-top
  if flip_test is None:
    ev = config.get("eval", None) or {}
    flip_test = bool(ev.get("flip_test", False))
  if not flip_test:
    return None
  scheme = schemes.get_scheme(config["data"]["scheme"])
  return tuple(int(i) for i in scheme.flip_permutation)


def predict_crops(model, variables, images, align_corners: bool = False,
                  with_heatmaps: bool = False,
                  flip_permutation: Optional[Tuple[int, ...]] = None
                  ) -> Dict[str, jax.Array]:
  """Jitted: uint8 crops `[B, S, S, 3]` -> "landmarks_crop" `[B, N, 2]`.

  With `with_heatmaps`, also "heatmaps" `[B, N, S/4, S/4]` (last stack).

  Compiles once per (model, batch size, crop size); pad batches to a fixed
  size to avoid recompiling. `align_corners` must be the training config's
  `loss.align_corners`; `flip_permutation` (`flip_permutation_for(config)`)
  runs the flip test as the evaluation does when `config.eval.flip_test`.
  """
  images = np.asarray(images) if not isinstance(images, jax.Array) else images
  if (images.ndim != 4 or images.shape[-1] != 3
      or images.shape[1] != images.shape[2]):
    raise ValueError(f"images must be RGB crops [B, S, S, 3], got shape "
                     f"{tuple(images.shape)}")
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
  if flip_permutation is not None:
    flip_permutation = tuple(int(i) for i in flip_permutation)
  return _predict_crops(model, variables, images, bool(align_corners),
                        bool(with_heatmaps), flip_permutation)

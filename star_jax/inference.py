"""A trained STAR model from a training workdir, and its jitted crop predictor.

  config, model, variables = inference.load_checkpoint("runs/yt68_star")
  out = inference.predict_crops(model, variables, crops,   # uint8 [B, S, S, 3]
                                align_corners=config.loss.align_corners)
  out["landmarks_crop"]                                   # [B, N, 2] crop px

What a checkpoint directory is: a training workdir written by
`training.checkpoints.Checkpointer` (`run.py --workdir=DIR`):

  DIR/checkpoints/<step>/{state,data,meta,config}        periodic (latest)
  DIR/checkpoints_best/<step>/{state,data,meta,config}   best by the metric

Reading goes through `training.checkpoints.restore_run` (the one restore
path of every caller): `which="best"` reads `checkpoints_best/` (the step
with the lowest stored best metric, the only one kept by the trainer),
`which="latest"` the highest step of `checkpoints/`. The stored config (the
resolved training config as JSON) rebuilds the model with
`star_jax.method.model_from_config`, so no config file is needed. The state
is restored as host arrays from the checkpoint's own metadata (no optimizer,
data or mesh is rebuilt, and a checkpoint written on GPU / TPU or on many
devices loads on one CPU).

Parameters: the EMA parameters (`TrainState.ema`, what the `<split>_ema/...`
metrics measure) when the checkpoint has them, else the raw ones;
`use_ema=False` forces the raw parameters, `use_ema=True` requires EMA.

Decoding is the evaluation path's own: `star_jax.method.decode_predictions`
(soft-argmax of the last stack, `denormalise_landmarks` with the config's
`loss.align_corners`) and, when the config sets `eval.flip_test`,
`landmarks.coordinates.flip_test_average`, so inference and evaluation cannot
drift apart.

Directories are only read (orbax opens them read-only).
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import schemes
from landmarks import coordinates
from landmarks import distribution
from star_jax import method as method_lib
from training import checkpoints as ckpt_lib
from training import errors

WHICH = ("best", "latest")


# ------------------------------------------------------------ loading ----

def config_from_dict(config_dict: dict):
  """The stored JSON config as an `ml_collections.ConfigDict`."""
  return ml_collections.ConfigDict(config_dict)


def model_from_config(config):
  """The StackedHourglass a STAR config describes (as training builds it)."""
  if config.get("method", None) != "star":
    raise ValueError(
        f"not a STAR checkpoint: its config.method is "
        f"{config.get('method', None)!r}, expected 'star' (SCE-MAE runs are "
        "evaluated with run.py --mode=...)")
  return method_lib.model_from_config(
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
  if which not in WHICH:
    raise ValueError(f"which must be one of {WHICH}, got {which!r}")
  params = {None: "prefer_ema", True: "ema", False: "raw"}[use_ema]
  restored = ckpt_lib.restore_run(
      directory, which=which, params=params,
      check_config=lambda c: model_from_config(config_from_dict(c)))
  config = config_from_dict(restored.config)
  model = model_from_config(config)
  variables = jax.device_put({"params": restored.params,
                              **dict(restored.model_state)})
  if with_info:
    info = {"path": restored.path, "step": restored.step,
            "which": which, "ema": restored.used_ema}
    return config, model, variables, info
  return config, model, variables


# ---------------------------------------------------------- prediction ----

def infer(model, variables, images: jax.Array, crop_to_image: jax.Array,
          align_corners: bool = False, with_heatmaps: bool = False,
          flip_permutation: Optional[Tuple[int, ...]] = None,
          with_covariance: bool = False) -> Dict[str, jax.Array]:
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
      `landmarks.coordinates.flip_test_average`); None: no flip test.
    with_covariance: also return each landmark's uncertainty: the covariance
      of its last-stack heatmap distribution (STAR eq. 4, the matrix whose
      PCA the loss uses), in crop and original pixels squared.

  Returns:
    "landmarks_crop" `[B, N, 2]` crop pixels, "landmarks" `[B, N, 2]` original
    pixels, "heatmaps" `[B, N, S/4, S/4]` when asked, "covariance_crop" and
    "covariance" `[B, N, 2, 2]` when asked (heatmaps and covariances are of
    the crops as given, also with the flip test); float32.
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
    crop = coordinates.flip_test_average(crop_points, images,
                                        tuple(flip_permutation))
    original = coordinates.crop_to_original(crop, crop_to_image)
    outputs = (forward(images) if with_heatmaps or with_covariance
               else None)  # extra pass.
  out = {"landmarks_crop": crop, "landmarks": original}
  if (with_heatmaps or with_covariance) and "heatmaps" not in outputs[-1]:
    raise errors.UserError(
        "this model has a coordinate-regression head (model.head="
        "'regression') and predicts no heatmaps; call without "
        "with_heatmaps / with_covariance (--with_heatmaps, --uncertainty)")
  if with_heatmaps:
    out["heatmaps"] = outputs[-1]["heatmaps"]
  if with_covariance:
    cov = coordinates.denormalise_covariance(
        distribution.distribution_pca(outputs[-1]["heatmaps"]).covariance,
        crop_size, align_corners)
    out["covariance_crop"] = cov
    out["covariance"] = coordinates.covariance_to_original(cov, crop_to_image)
  return out


@functools.partial(jax.jit, static_argnames=("model", "align_corners",
                                              "with_heatmaps",
                                              "flip_permutation",
                                              "with_covariance"))
def _predict_crops(model, variables, images, align_corners, with_heatmaps,
                   flip_permutation, with_covariance):
  b = images.shape[0]
  eye = jnp.broadcast_to(jnp.eye(2, 3, dtype=jnp.float32), (b, 2, 3))
  out = infer(model, variables, images, eye, align_corners, with_heatmaps,
              flip_permutation, with_covariance)
  del out["landmarks"]  # equal to the crop values under the identity map.
  out.pop("covariance", None)
  return out


def flip_permutation_for(config, flip_test: Optional[bool] = None
                         ) -> Optional[Tuple[int, ...]]:
  """The scheme's flip permutation if flip-testing, else None.

  Args:
    config: the training config (ConfigDict or dict).
    flip_test: None = `config.eval.flip_test` (what the evaluation does).
  """
  if flip_test is None:
    ev = config.get("eval", None) or {}
    flip_test = bool(ev.get("flip_test", False))
  if not flip_test:
    return None
  scheme = schemes.get_scheme(config["data"]["scheme"])
  return tuple(int(i) for i in scheme.flip_permutation)


def predict_crops(model, variables, images, align_corners: bool = False,
                  with_heatmaps: bool = False,
                  flip_permutation: Optional[Tuple[int, ...]] = None,
                  with_covariance: bool = False) -> Dict[str, jax.Array]:
  """Jitted: uint8 crops `[B, S, S, 3]` -> "landmarks_crop" `[B, N, 2]`.

  With `with_heatmaps`, also "heatmaps" `[B, N, S/4, S/4]` (last stack);
  with `with_covariance`, "covariance_crop" `[B, N, 2, 2]` (crop px^2).

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
                        bool(with_heatmaps), flip_permutation,
                        bool(with_covariance))

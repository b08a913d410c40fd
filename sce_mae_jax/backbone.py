"""The frozen stage-2 backbone: a stage-1 MAE encoder (or a random ViT).

Stage 2 and every evaluation protocol (matching, detection, t-SNE) use the
encoder of a stage-1 run (`sce_mae_jax.pretrain`, an orbax workdir written by
`training/checkpoints.py`) as a fixed feature extractor:

  * `encoder_from_config(cfg)`: the `vit.ViTEncoder` of the stage-1 run
    `cfg.backbone.checkpoint`, built from the config that run stored with
    its checkpoint (`stage1_encoder`), so stage 2 never re-describes it;
    without a checkpoint, the random ViT that `cfg.backbone` describes
    (preset + overrides; image size 96, patch 8 by default).
  * `load_encoder_params(workdir, which)`: restores the checkpoint's train
    state without knowing the stage-1 method's structure and returns the
    encoder sub-tree (the dict that holds `patch_embed`, `block1`, ...; in an
    `MAE` it is `params["encoder"]`). EMA parameters are used when the
    checkpoint has them and `use_ema=True`.
  * `backbone_params(cfg, encoder)`: loaded params when
    `cfg.backbone.checkpoint` is set, a seeded random init otherwise (the
    "random ViT" row of the ablation), shape-checked against the encoder.
  * `normalise_images`: uint8 `[B, S, S, 3]` -> float, ImageNet mean/std as
    MAE (`"imagenet"`, default) or `[0, 1]` (`"unit"`). It must be the
    normalisation the stage-1 run trained with (`cfg.backbone.normalise`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sce_mae_jax import vit
from training import checkpoints as ckpt_lib
from training import errors

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NORMALISATIONS = ("imagenet", "unit")


def normalise_images(images: jax.Array, kind: str = "imagenet") -> jax.Array:
  """uint8 (or 0..255 float) `[..., 3]` -> float32 network input."""
  if kind not in NORMALISATIONS:
    raise errors.UserError(
        f"backbone.normalise must be one of {NORMALISATIONS}, "
        f"got {kind!r}.")
  x = images.astype(jnp.float32) / 255.0
  if kind == "imagenet":
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
  return x


def stage1_encoder(workdir: str, which: str = "latest") -> vit.ViTEncoder:
  """The encoder of a stage-1 (`sce_mae_pretrain`) run, from the resolved
  config it stored with its `which` checkpoint (`model.preset`,
  `model.image_size`, `model.patch_size`, `model.encoder_overrides`, as
  `pretrain.model_from_config` builds it). It computes in float32 whatever
  dtype stage 1 trained in.

  Raises:
    errors.MissingInputError: no such workdir or checkpoint.
    errors.UserError: the run is not a stage-1 MAE run.
  """
  stored = ckpt_lib.run_config(
      workdir, which=which,
      hint="pass --config.backbone.checkpoint=<the --workdir of a "
      "sce_mae_pretrain run> (or leave it empty for a random ViT)")
  model = stored.get("model") or {}
  if stored.get("method") != "sce_mae_pretrain" or "preset" not in model:
    raise errors.UserError(
        f"{workdir} is not a stage-1 MAE run: the config stored with its "
        f"checkpoint has method={stored.get('method')!r} and no "
        "model.preset; --config.backbone.checkpoint must be the --workdir "
        "of a sce_mae_pretrain run.")
  return vit.vit_encoder(
      model["preset"], image_size=int(model["image_size"]),
      patch_size=int(model["patch_size"]),
      **dict(model.get("encoder_overrides") or {}))


def encoder_from_config(cfg) -> vit.ViTEncoder:
  """The frozen encoder of `cfg.backbone`.

  With `checkpoint` (a stage-1 workdir): that run's encoder
  (`stage1_encoder`, its stored config; the architecture fields below are
  not read). Without: the random ViT of `preset` (deit_tiny/small/base) +
  optional overrides (any `ViTEncoder` field): image_size, patch_size,
  width, depth, num_heads, mlp_ratio, pos_embed; 0 / "" / None mean "the
  preset's value".
  """
  b = cfg.backbone
  path = b.get("checkpoint", "") or ""
  if path:
    return stage1_encoder(os.path.expanduser(path), b.get("which", "latest"))
  overrides = {}
  for k in ("image_size", "patch_size", "width", "depth", "num_heads",
            "mlp_ratio", "pos_embed"):
    if k in b and b[k] not in (None, 0, ""):
      overrides[k] = b[k]
  return vit.vit_encoder(b.get("preset", "deit_small"), **overrides)


def init_encoder_params(encoder: vit.ViTEncoder, seed: int = 0):
  """Random (seeded) encoder parameters, the ViT's own initialisers."""
  images = jnp.zeros((1, encoder.image_size, encoder.image_size, 3))
  init = jax.jit(lambda key: encoder.init(key, images)["params"])
  return init(jax.random.PRNGKey(seed))


def _is_encoder_tree(tree) -> bool:
  return (isinstance(tree, dict) and "patch_embed" in tree and
          "block1" in tree)


def find_encoder_subtree(params) -> dict:
  """The (first, breadth-first) sub-dict holding `patch_embed` and `block1`."""
  params = flax.core.unfreeze(params) if isinstance(
      params, flax.core.FrozenDict) else params
  queue = [((), params)]
  while queue:
    path, tree = queue.pop(0)
    if _is_encoder_tree(tree):
      return tree
    if isinstance(tree, dict):
      queue.extend((path + (k,), v) for k, v in sorted(tree.items()))
  raise ValueError("no ViT encoder parameters (a dict with 'patch_embed' and "
                   "'block1') in the checkpoint; is it a stage-1 MAE run?")


def load_encoder_params(workdir: str, which: str = "latest",
                        use_ema: bool = True) -> dict:
  """Encoder params (numpy) from a stage-1 orbax workdir.

  Args:
    workdir: the stage-1 `--workdir` (holding `checkpoints/` or
      `checkpoints_best/`).
    which: "latest" or "best".
    use_ema: prefer the EMA parameters when the state stored them.

  Raises:
    FileNotFoundError: no such workdir / checkpoint.
    ValueError: the checkpoint holds no ViT encoder.
  """
  if not workdir or not os.path.isdir(workdir):
    raise errors.MissingInputError(
        f"stage-1 workdir {workdir!r} does not exist; pass "
        "--config.backbone.checkpoint=<the --workdir of a sce_mae_pretrain "
        "run> (or leave it empty for a random ViT).")
  restored = ckpt_lib.restore_run(
      workdir, which=which, params="prefer_ema" if use_ema else "raw",
      hint="train stage 1 first (python run.py "
      "--config=configs/..._mae.py)")
  return jax.tree.map(np.asarray, find_encoder_subtree(restored.params))


def check_params_match(params, encoder: vit.ViTEncoder) -> None:
  """ValueError naming the first differing leaf if shapes do not match."""
  expected = jax.eval_shape(
      lambda: init_encoder_params(encoder))
  flat_e = traverse_util.flatten_dict(flax.core.unfreeze(expected), sep="/")
  flat_p = traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  if set(flat_e) != set(flat_p):
    diff = sorted(set(flat_e) ^ set(flat_p))[:5]
    raise errors.UserError(
        f"checkpoint encoder does not match the backbone encoder "
        f"({encoder.width} wide, {encoder.depth} deep): differing "
        f"parameter names {diff}.")
  for k, v in flat_e.items():
    if tuple(v.shape) != tuple(np.shape(flat_p[k])):
      raise errors.UserError(
          f"checkpoint encoder parameter {k} has shape "
          f"{np.shape(flat_p[k])}, the backbone encoder expects "
          f"{tuple(v.shape)}.")


def backbone_params(cfg, encoder: Optional[vit.ViTEncoder] = None) -> Any:
  """Loaded (`cfg.backbone.checkpoint`) or random (`cfg.backbone.seed`) params."""
  encoder = encoder or encoder_from_config(cfg)
  b = cfg.backbone
  path = b.get("checkpoint", "") or ""
  if path:
    params = load_encoder_params(os.path.expanduser(path),
                                 b.get("which", "latest"),
                                 bool(b.get("use_ema", True)))
    check_params_match(params, encoder)
    return params
  # Eager even when called under a trace (e.g. inside the loop's jitted init).
  with jax.ensure_compile_time_eval():
    params = init_encoder_params(encoder, int(b.get("seed", 0)))
  return jax.tree.map(np.asarray, params)

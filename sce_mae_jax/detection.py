"""Landmark detection on frozen SCE-MAE features (paper Sec. 4.2, Table 2).

Frozen dense features (cover-and-stride, backbone and projector concatenated:
`feature_kind="concat"`) feed a keypoint regressor of `keypoint_head`:
`detection.head` = "conv_block" (`ConvBlockRegressor`, the paper's block,
default for all annotations) or "intermediate" (`IntermediateKeypointRegressor`,
DVE / CL's, default for the few-shot study, `detection.fewshot_head`). Both
start at the mean training shape and regress normalised coordinates; NME is
the mean point error over the inter-ocular distance in % (5-point sets: eye
centres 0 / 1, "five_point"; 68 points: outer corners 36 / 45, "300w"). The
crops are similarity transforms of the originals, so NME in crop pixels
equals NME in original pixels.

Ways to train:
  * `train_all_annotations` (`--mode=all_annotations`): the features of every
    training crop (and, with `detection.flip`, of its mirror image, landmarks
    mirrored and left/right swapped) are computed once (`cache_features`) and
    the head is trained on them for `detection.epochs` epochs with a decaying
    schedule (DVE: AMSGrad 1e-3, L2 5e-4, x0.1 at epochs 100 and 250 of 300);
    optional TPS augmentation of the cached maps (`detection.tps_augment`).
    The per-epoch train / val NME curve is logged and written.
  * `DetectionMethod` (run.py, `method="sce_mae_detection"`): the generic
    loop; the encoder and projector are frozen (`trainable_mask`) and the
    features are recomputed each step (image augmentation; slow on CPU).
  * `--mode=fewshot`: the limited-annotation table (`fewshot.py`).

Mirroring cached features is not a flip augmentation (a ViT's features of a
mirrored face are not its mirrored features), hence the second cached set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import schemes as schemes_lib
from landmarks import coordinates
from sce_mae_jax import backbone as backbone_lib
from sce_mae_jax import fewshot
from sce_mae_jax import keypoint_head as kh
from sce_mae_jax import stage2
from training import checkpoints as ckpt_lib
from training import errors

HEADS = ("conv_block", "intermediate")

# ------------------------------------------------------------------ heads ----

def norm_groups_for(kind: str, model: stage2.FeatureModel) -> Tuple[int, ...]:
  """Channel split of a feature kind: "concat" = backbone | projector."""
  return (int(model.encoder.width),) if kind == "concat" else ()


def head_from_config(config, num_points: int, which: str = "head",
                     norm_groups: Tuple[int, ...] = ()) -> nn.Module:
  """The head named by `config.detection[which]` ("head" / "fewshot_head")."""
  d = config.detection
  name = d.get(which, "conv_block")
  common = dict(num_points=num_points, intermediate=int(d.intermediate),
                per_landmark=bool(d.per_landmark), norm_groups=norm_groups,
                readout_init=d.get("readout_init", "mean_points"))
  if name == "conv_block":
    return kh.ConvBlockRegressor(hidden=int(d.hidden),
                                 softmax_mul=float(d.softargmax_mul),
                                 **common)
  if name == "intermediate":
    return kh.IntermediateKeypointRegressor(
        softmax_mul=float(d.get("regressor_softmax_mul", 100.0)),
        normalise=bool(d.get("regressor_normalise", True)),
        init_logit_std=float(d.get("regressor_init_logit_std", 0.1)),
        **common)
  raise errors.UserError(
      f"detection.{which} must be one of {HEADS}, got {name!r}.")


def all_annotation_settings(d, **overrides) -> kh.TrainSettings:
  """`TrainSettings` of the all-annotation run from `config.detection`."""
  s = kh.TrainSettings(
      epochs=int(d.get("epochs", 300)), batch_size=int(d.get("batch_size", 32)),
      learning_rate=float(d.learning_rate),
      schedule=d.get("schedule", "piecewise"),
      lr_drops=tuple(float(f) for f in d.get("lr_drops", (1 / 3, 5 / 6))),
      lr_drop_factor=float(d.get("lr_drop_factor", 0.1)),
      warmup_steps=int(d.get("warmup_steps", 0)),
      weight_decay=float(d.get("weight_decay", 5e-4)),
      decoupled_weight_decay=bool(d.get("decoupled_weight_decay", False)),
      amsgrad=bool(d.get("amsgrad", True)),
      loss_alpha=float(d.get("loss_alpha", 10.0)), beta=float(d.beta))
  return dataclasses.replace(s, **overrides)


def all_annotation_augment(d, image_size: int) -> Optional[kh.TpsAugment]:
  """TPS warps of the cached maps (`detection.tps_augment`), or None:
  `tps.<detection.warp>(key, **detection.warp_kwargs)`."""
  if not bool(d.get("tps_augment", False)):
    return None
  return kh.named_tps_augment(image_size, d.get("warp", "random_dve_warp"),
                              dict(d.get("warp_kwargs", {})))


# -------------------------------------------------------- stage-2 params ----

def load_stage2_params(config, model: stage2.FeatureModel,
                       workdir: Optional[str] = None) -> dict:
  """`{"encoder", "projector"}` of a stage-2 workdir (default
  `config.detection.stage2_workdir`; latest checkpoint).

  Empty workdir: the backbone of `config.backbone` and a seeded random
  projector (the "no stage 2" rows of the ablation).
  """
  if workdir is None:
    workdir = config.detection.get("stage2_workdir", "") or ""
  if not workdir:
    enc = backbone_lib.backbone_params(config, model.encoder)
    proj = model.init_projector(jax.random.PRNGKey(int(config.seed)))
    return {"encoder": enc, "projector": jax.tree.map(np.asarray, proj)}
  workdir = os.path.expanduser(workdir)
  params = ckpt_lib.restore_run(
      workdir, which="latest", params="raw",
      hint="train stage 2 first (configs/mtfl_sce.py)").params
  if "projector" not in params or "encoder" not in params:
    raise errors.UserError(
        f"{workdir} is not a stage-2 (sce_mae_carb) run: its "
        f"params hold {sorted(params)}.")
  params = jax.tree.map(np.asarray, dict(params))
  backbone_lib.check_params_match(params["encoder"], model.encoder)
  return params


# ---------------------------------------------------- cached-feature path ----

def cache_features(model: stage2.FeatureModel, params, images: np.ndarray,
                   kind: str = "concat", stride: Optional[int] = None,
                   batch_size: int = 32, dtype=np.float32) -> np.ndarray:
  """Frozen dense features of `images` uint8 `[n, S, S, 3]` -> numpy `dtype`
  (float16 halves the memory of a large training set)."""
  fn = jax.jit(lambda im: model.dense_features(params, im, kind, stride))
  out = [np.asarray(fn(jnp.asarray(images[i:i + batch_size]))).astype(dtype)
         for i in range(0, images.shape[0], batch_size)]
  return np.concatenate(out)


def detection_stride(config) -> int:
  """Cover-and-stride stride of the detection features: `detection.stride`,
  or `inference.stride` when that is 0."""
  return int(config.detection.get("stride", 0) or config.inference.stride)


def mirror_faces(images: np.ndarray, landmarks: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """Horizontally mirrored crops and their landmarks (x mirrored, left/right
  points swapped by the landmark scheme's flip permutation)."""
  scheme = schemes_lib.get_scheme(landmarks.shape[1])
  flipped = np.ascontiguousarray(images[:, :, ::-1])
  return flipped, scheme.flip_landmarks(landmarks, images.shape[2]).astype(
      np.float32)


def training_samples(images: np.ndarray, landmarks: np.ndarray, flip: bool
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """The training crops and landmarks, plus their mirror images when `flip`
  (`mirror_faces`)."""
  if not flip:
    return images, landmarks
  mirrored, mirrored_lms = mirror_faces(images, landmarks)
  return (np.concatenate([images, mirrored]),
          np.concatenate([landmarks, mirrored_lms]))


def train_all_annotations(head: nn.Module, train_features, train_landmarks,
                          val_features, val_landmarks, image_size: int,
                          settings: kh.TrainSettings, *,
                          normaliser="five_point",
                          augment: Optional[kh.Augment] = None,
                          eval_every: int = 1, log: Optional[Callable] = print
                          ) -> Dict[str, object]:
  """Trains `head` on every training face's cached features; evaluates.

  Returns:
    `{"params", "nme"` (per val face, %), `"history"` (per epoch: loss, lr,
    train / val NME, see `keypoint_head.fit`), `"losses"` (per step),
    `"mean_shape_nme"` (per val face, the trivial baseline)`}`.
  """
  result = kh.fit(head, train_features, train_landmarks, image_size, settings,
                  augment=augment, val=(val_features, val_landmarks),
                  normaliser=normaliser, eval_every=eval_every, log=log)
  return {"params": result.params,
          "nme": kh.evaluate(head, result.params, val_features, val_landmarks,
                             image_size, normaliser),
          "history": result.history, "losses": result.losses,
          "mean_shape_nme": kh.mean_shape_nme(train_landmarks, val_landmarks,
                                              normaliser)}


# ----------------------------------------------------------------- modes ----

def _eval_arrays(method, config):
  return stage2.load_arrays(config,
                            method.eval_records[config.data.eval_splits[0]])


def all_annotations_mode(method, config, workdir):
  """`--mode=all_annotations`: Table 2 on cached features; writes
  all_annotations.json (NMEs, per-epoch curve, settings) and .md."""
  d = config.detection
  train = stage2.load_arrays(config, method.train_records)
  val = _eval_arrays(method, config)
  size = val["image"].shape[1]
  images, lms = training_samples(train["image"], train["landmarks"],
                                 bool(d.get("flip", True)))
  feats = method.cache(images)
  del images
  settings = all_annotation_settings(d, seed=int(config.seed))
  out = train_all_annotations(
      method.head, feats, lms, method.cache(val["image"]), val["landmarks"],
      size, settings, normaliser=d.normaliser,
      augment=all_annotation_augment(d, size),
      eval_every=int(d.get("eval_every", 1)))
  summary = {"nme": float(np.mean(out["nme"])),
             "nme_median": float(np.median(out["nme"])),
             # The plain mean of the training faces (no mirrors), as the
             # ablation's reference row.
             "mean_shape_nme": float(np.mean(kh.mean_shape_nme(
                 train["landmarks"], val["landmarks"], d.normaliser))),
             "num_train_faces": int(train["image"].shape[0]),
             "num_train_samples": int(feats.shape[0]),
             "head": repr(method.head), "settings": dataclasses.asdict(
                 settings), "history": out["history"]}
  table = ("| all annotations | NME (%) |\n|---|---|\n"
           f"| {d.get('head', 'conv_block')} head | {summary['nme']:.2f} |\n"
           f"| mean training shape (reference) | "
           f"{summary['mean_shape_nme']:.2f} |")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "all_annotations.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, "all_annotations.md"), "w") as f:
    f.write(table + "\n")
  print(table, flush=True)
  return summary


# ---------------------------------------------------------------- method ----

def _nme_jnp(pred, gt, normaliser) -> jax.Array:
  """`[B]` NME in % (jnp twin of `keypoint_head.nme_percent`)."""
  left, right = (np.atleast_1d(i) for i in kh.eye_indices(normaliser))
  iod = jnp.linalg.norm(gt[:, left].mean(1) - gt[:, right].mean(1), axis=-1)
  err = jnp.linalg.norm(pred - gt, axis=-1).mean(-1)
  return 100.0 * err / iod


class DetectionMethod(stage2.Stage2Method):
  """Frozen encoder + projector, trainable head (interface: training/loop.py).

  The head's offset starts at the mean crop-frame shape of the first
  `detection.mean_shape_faces` training faces.
  """

  best_metric = "val/nme"
  best_mode = "min"
  # The head trains on the landmarks: they are part of the data fingerprint.
  listing_labels = True

  def __init__(self, config, train_records=None, eval_records=None):
    self._frozen = None
    self._mean_shape = None
    super().__init__(config, train_records, eval_records)
    self.kind = config.detection.feature_kind
    self.extra_modes = {**self.extra_modes, "fewshot": fewshot.fewshot_mode,
                        "all_annotations": all_annotations_mode}

  @functools.cached_property
  def head(self) -> nn.Module:
    """The detection head, for the listed data's landmark count."""
    return head_from_config(self.config, self.num_points, "head",
                            norm_groups_for(self.kind, self.model))

  @functools.cached_property
  def fewshot_head(self) -> nn.Module:
    return head_from_config(self.config, self.num_points, "fewshot_head",
                            norm_groups_for(self.kind, self.model))

  def load_frozen(self):
    self.frozen_params()

  def mean_shape(self) -> np.ndarray:
    """Mean crop-frame shape of the first `detection.mean_shape_faces`
    training faces (the head's initial offset); lists the data once."""
    if self._mean_shape is None:
      count = int(self.config.detection.get("mean_shape_faces", 256))
      lms = stage2.load_arrays(self.config,
                               self.train_records[:count])["landmarks"]
      self._mean_shape = np.mean(lms, axis=0).astype(np.float32)
    return self._mean_shape

  def frozen_params(self):
    if self._frozen is None:
      self._frozen = load_stage2_params(self.config, self.model)
    return self._frozen

  def cache(self, images: np.ndarray) -> np.ndarray:
    """Cached `detection.feature_kind` features of uint8 crops."""
    d = self.config.detection
    return cache_features(self.model, self.frozen_params(), images, self.kind,
                          stride=detection_stride(self.config),
                          dtype=np.dtype(d.get("cache_dtype", "float32")))

  def features(self, params, images):
    f = self.model.dense_features(params, images, self.kind,
                                  detection_stride(self.config))
    return jax.lax.stop_gradient(f)

  def init_variables(self, rng, batch):
    return self._init_variables(rng, batch, self.mean_shape())

  def abstract_variables(self, rng, batch):
    # Shapes only: any mean shape will do, so --mode=summary reads no data.
    zeros = np.zeros((self.num_points, 2), np.float32)
    return jax.eval_shape(
        functools.partial(self._init_variables, mean_shape=zeros), rng, batch)

  def _init_variables(self, rng, batch, mean_shape):
    frozen = jax.tree.map(jnp.asarray, self.frozen_params())
    feats = self.features(frozen, batch["image"][:1])
    mean = coordinates.normalise_landmarks(mean_shape, self.size)
    head = kh.init_params(self.head, rng, feats, mean)["params"]
    return {**frozen, "head": head}, {}

  def trainable_mask(self, params):
    return {k: jax.tree.map(lambda _, t=(k == "head"): t, v)
            for k, v in params.items()}

  def forward(self, params, model_state, batch):
    del model_state
    return self.head.apply({"params": params["head"]},
                           self.features(params, batch["image"]))

  def loss_fn(self, params, model_state, batch, rng, step):
    del rng, step
    d = self.config.detection
    pred = self.forward(params, model_state, batch)
    target = coordinates.normalise_landmarks(batch["landmarks"].astype(jnp.float32),
                              self.size)
    scaled = float(d.get("loss_alpha", 10.0)) * (pred - target)
    per = jnp.mean(kh.smooth_l1(scaled, float(d.beta)), axis=(1, 2))
    w = batch["valid"].astype(jnp.float32)
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, (model_state, {"smooth_l1": loss})

  def eval_step(self, params, model_state, batch):
    pred = coordinates.denormalise_landmarks(self.forward(params, model_state, batch),
                              self.size)
    gt = batch["landmarks"].astype(jnp.float32)
    return {"nme": _nme_jnp(pred, gt, self.config.detection.normaliser)}

  def evaluate(self, outputs, split):
    del split
    return {"nme": float(np.mean(outputs["nme"]))}


def make_method(config) -> DetectionMethod:
  return DetectionMethod(config)

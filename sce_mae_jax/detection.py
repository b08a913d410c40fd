"""Landmark detection on frozen SCE-MAE features (paper Sec. 4.2, Tables 2-3).

Regressor (`DetectionHead`): frozen dense features (cover-and-stride,
backbone and projector concatenated: `feature_kind="concat"`) ->
conv block (3x3 conv to `hidden` channels + ReLU, then a 1x1 conv) -> I
intermediate heatmaps per landmark (I = 50, "I intermediate heatmaps for each
landmark", so K * I maps; `per_landmark=False` gives DVE/CL's 50 maps in all)
-> spatial softmax + soft-argmax (`star_jax.loss.soft_argmax`, grid
linspace(-1, 1)) -> a linear layer from the 2 * I(K) intermediate coordinates
to the K landmarks (`regress_points`), on normalised coordinates.

Choices where the paper is silent (following DVE/CL's IntermediateKeypoint-
Predictor where it is known, documented here):
  * heatmap = softmax over the h*w positions of the conv logits times
    `softargmax_mul`. DVE's regressor configs (jamt9000/DVE,
    configs/aflw-mtfl-keypoints/*.json: IntermediateKeypointPredictor,
    num_intermediate_points 50 in all, softargmax_mul 100) use 100 on
    64-d descriptors; our input mixes LayerNorm-ed backbone tokens (O(1) per
    channel, hundreds of channels) with unit projector features, where 100
    makes the initial softmax one-hot and the gradients vanish, so the default
    is 1 (the conv learns the scale); set 100 to follow DVE exactly;
  * ground truth normalised with align_corners=False, `(2p + 1) / S - 1`;
    predictions mapped back with the inverse;
  * loss: smooth-L1 (`beta`, default 1.0 as torch's SmoothL1Loss) on the
    normalised coordinates, mean over points and faces (the issue's choice;
    DVE trains with its own `regression_loss`, Adam 1e-3);
  * NME = mean point error / inter-ocular distance, in % (5-point sets: eye
    centres 0/1, `five_point`; 68 points: outer corners 36/45, `300w`). The
    crops are similarity transforms of the originals, so NME in crop pixels
    equals NME in original pixels (used by the cached `fit_head` path).

Two ways to train:
  * `DetectionMethod` (run.py, `method="sce_mae_detection"`): the generic loop;
    the encoder and projector are frozen (`trainable_mask`), features are
    recomputed each step (allows augmentation; slow on CPU).
  * `fit_head` on cached features (`cache_features`): the features of the
    fixed crops are computed once and only the head is trained; used by the
    limited-annotation study (`fewshot.py`) and the ablation.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sce_mae_jax import backbone as backbone_lib
from sce_mae_jax import stage2
from star_jax import loss as star_loss
from star_jax import metrics as metrics_lib


# ------------------------------------------------------------------ maths ----

def normalise_points(points: jax.Array, size: int) -> jax.Array:
  """Crop pixels -> [-1, 1], align_corners=False: `(2p + 1) / S - 1`."""
  return (2.0 * points + 1.0) / size - 1.0


def denormalise_points(coords: jax.Array, size: int) -> jax.Array:
  """Inverse of `normalise_points`."""
  return ((coords + 1.0) * size - 1.0) / 2.0


def spatial_softmax(logits: jax.Array) -> jax.Array:
  """`[B, M, h, w]` -> distributions over the h*w positions."""
  b, m, h, w = logits.shape
  return jax.nn.softmax(logits.reshape(b, m, h * w), axis=-1).reshape(
      b, m, h, w)


def regress_points(heatmaps: jax.Array, kernel: jax.Array,
                   bias: jax.Array) -> jax.Array:
  """Soft-argmax + linear: `[B, M, h, w]` -> `[B, K, 2]` normalised (x, y).

  `kernel [2M, 2K]`, `bias [2K]`; the intermediate coordinates are flattened
  as `(x_1, y_1, x_2, y_2, ...)` and so are the outputs.
  """
  inter = star_loss.soft_argmax(heatmaps)  # [B, M, 2]
  b = inter.shape[0]
  out = jnp.matmul(inter.reshape(b, -1), kernel,
                   precision=jax.lax.Precision.HIGHEST) + bias
  return out.reshape(b, -1, 2)


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
  """torch SmoothL1: `0.5 x^2 / beta` if `|x| < beta` else `|x| - beta / 2`."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * jnp.square(x) / beta, ax - 0.5 * beta)


def nme_percent(pred: np.ndarray, gt: np.ndarray, normaliser: str
                ) -> np.ndarray:
  """`[n]` NME in % of the named inter-ocular distance."""
  left, right = metrics_lib.normaliser(normaliser)
  return 100.0 * np.asarray(metrics_lib.nme(jnp.asarray(pred),
                                            jnp.asarray(gt), left, right))


# ------------------------------------------------------------------ head ----

class DetectionHead(nn.Module):
  """Conv block -> intermediate heatmaps -> soft-argmax -> linear.

  `__call__(features [B, h, w, C]) -> [B, K, 2]` normalised (x, y).
  """
  num_points: int
  intermediate: int = 50
  per_landmark: bool = True
  hidden: int = 256
  softargmax_mul: float = 1.0

  @property
  def num_maps(self) -> int:
    return self.intermediate * (self.num_points if self.per_landmark else 1)

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = nn.Conv(self.hidden, (3, 3), padding="SAME", name="conv")(features)
    x = nn.relu(x)
    logits = nn.Conv(self.num_maps, (1, 1), name="heatmaps")(x)
    logits = jnp.transpose(logits, (0, 3, 1, 2)) * self.softargmax_mul
    heatmaps = spatial_softmax(logits.astype(jnp.float32))
    k = self.num_points
    kernel = self.param("linear_kernel", nn.initializers.lecun_normal(),
                        (2 * self.num_maps, 2 * k))
    bias = self.param("linear_bias", nn.initializers.zeros, (2 * k,))
    return regress_points(heatmaps, kernel, bias)


def head_from_config(config, num_points: int) -> DetectionHead:
  d = config.detection
  return DetectionHead(num_points=num_points,
                       intermediate=int(d.intermediate),
                       per_landmark=bool(d.per_landmark),
                       hidden=int(d.hidden),
                       softargmax_mul=float(d.softargmax_mul))


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
  from orbax import checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from training import checkpoints as ckpt_lib  # pylint: disable=g-import-not-at-top
  workdir = os.path.expanduser(workdir)
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints/ under stage-2 workdir {workdir}; "
                            "train stage 2 first (configs/mtfl_sce.py).")
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    step = checkpointer.latest_step()
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {workdir}/checkpoints.")
    out = checkpointer.periodic.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))
  finally:
    checkpointer.close()
  params = out["state"]["params"]
  if "projector" not in params or "encoder" not in params:
    raise ValueError(f"{workdir} is not a stage-2 (sce_mae_carb) run: its "
                     f"params hold {sorted(params)}.")
  params = jax.tree.map(np.asarray, dict(params))
  backbone_lib.check_params_match(params["encoder"], model.encoder)
  return params


# ---------------------------------------------------- cached-feature path ----

def cache_features(model: stage2.FeatureModel, params, images: np.ndarray,
                   kind: str = "concat", stride: Optional[int] = None,
                   batch_size: int = 32) -> np.ndarray:
  """Frozen dense features of `images` uint8 `[n, S, S, 3]` -> float32 numpy."""
  fn = jax.jit(lambda im: model.dense_features(params, im, kind, stride))
  out = [np.asarray(fn(jnp.asarray(images[i:i + batch_size])))
         for i in range(0, images.shape[0], batch_size)]
  return np.concatenate(out).astype(np.float32)


_STEP_CACHE: Dict[tuple, tuple] = {}


def _head_step(head: DetectionHead, learning_rate: float, beta: float):
  """(optax tx, jitted Adam step) for a head; compiled once per setting."""
  key = (repr(head), float(learning_rate), float(beta))
  if key not in _STEP_CACHE:
    tx = optax.adam(learning_rate)

    def loss_of(p, x, y):
      return jnp.mean(smooth_l1(head.apply(p, x) - y, beta))

    @jax.jit
    def step(p, o, x, y):
      loss, g = jax.value_and_grad(loss_of)(p, x, y)
      up, o = tx.update(g, o, p)
      return optax.apply_updates(p, up), o, loss

    _STEP_CACHE[key] = (tx, step)
  return _STEP_CACHE[key]


def fit_head(head: DetectionHead, features: np.ndarray, landmarks: np.ndarray,
             image_size: int, *, steps: int = 500, batch_size: int = 32,
             learning_rate: float = 1e-3, beta: float = 1.0,
             seed: int = 0) -> Tuple[dict, np.ndarray]:
  """Trains the head on cached features with Adam.

  Every step uses `batch_size` faces drawn by `default_rng(seed)` (with
  replacement when there are fewer faces than `batch_size`, so the step has
  one static shape for every few-shot count).

  Returns:
    `(params, losses [steps])`, the smooth-L1 loss of each step's batch
    before its update.
  """
  n = features.shape[0]
  target = normalise_points(jnp.asarray(landmarks, jnp.float32), image_size)
  params = head.init(jax.random.PRNGKey(seed), jnp.asarray(features[:1]))
  tx, step = _head_step(head, learning_rate, beta)
  opt = tx.init(params)
  rng = np.random.default_rng(seed)
  feats = jnp.asarray(features)
  losses = []
  for _ in range(int(steps)):
    idx = rng.choice(n, batch_size, replace=n < batch_size)
    params, opt, loss = step(params, opt, feats[idx], target[idx])
    losses.append(loss)
  return params, np.asarray(jax.device_get(losses), np.float64)


def predict_points(head: DetectionHead, params, features: np.ndarray,
                   image_size: int, batch_size: int = 128) -> np.ndarray:
  """`[n, K, 2]` crop-pixel predictions from cached features."""
  fn = jax.jit(lambda x: denormalise_points(head.apply(params, x), image_size))
  return np.concatenate([np.asarray(fn(jnp.asarray(features[i:i + batch_size])))
                         for i in range(0, features.shape[0], batch_size)])


def fit_and_evaluate(head: DetectionHead, train_features: np.ndarray,
                     train_landmarks: np.ndarray, val_features: np.ndarray,
                     val_landmarks: np.ndarray, image_size: int, *,
                     normaliser: str = "five_point", steps: int = 500,
                     batch_size: int = 32, learning_rate: float = 1e-3,
                     beta: float = 1.0, seed: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """`fit_head` on cached training features, then the validation NMEs.

  Used by the limited-annotation study and the ablation.

  Returns:
    `(nme, losses)`: per-face validation NME `[n_val]` in % (`nme_percent`)
    and `fit_head`'s training losses `[steps]`.
  """
  params, losses = fit_head(head, train_features, train_landmarks, image_size,
                            steps=steps, batch_size=batch_size,
                            learning_rate=learning_rate, beta=beta, seed=seed)
  pred = predict_points(head, params, val_features, image_size)
  return nme_percent(pred, val_landmarks, normaliser), losses


def mean_shape_nme(train_landmarks: np.ndarray, val_landmarks: np.ndarray,
                   normaliser: str = "five_point") -> np.ndarray:
  """Per-face NME (%) of predicting the mean training landmarks for every
  val face: the reference a detection head must beat to show that its
  features help (crops centred on the points make it a strong one)."""
  mean = np.mean(np.asarray(train_landmarks, np.float64), axis=0)
  pred = np.broadcast_to(mean, np.shape(val_landmarks))
  return nme_percent(pred, val_landmarks, normaliser)


# ---------------------------------------------------------------- method ----

class DetectionMethod(stage2.Stage2Method):
  """Frozen encoder + projector, trainable head (interface: training/loop.py)."""

  best_metric = "val/nme"
  best_mode = "min"

  def __init__(self, config, train_records=None, eval_records=None):
    self._frozen = None
    super().__init__(config, train_records, eval_records)
    self.num_points = self.train_records[0].num_points
    self.head = head_from_config(config, self.num_points)
    self.kind = config.detection.feature_kind
    self.extra_modes = {"fewshot": _fewshot_mode}

  def load_frozen(self):
    self.frozen_params()

  def frozen_params(self):
    if self._frozen is None:
      self._frozen = load_stage2_params(self.config, self.model)
    return self._frozen

  def features(self, params, images):
    f = self.model.dense_features(params, images, self.kind)
    return jax.lax.stop_gradient(f)

  def init_variables(self, rng, batch):
    frozen = jax.tree.map(jnp.asarray, self.frozen_params())
    feats = self.features(frozen, batch["image"][:1])
    head = self.head.init(rng, feats)["params"]
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
    pred = self.forward(params, model_state, batch)
    target = normalise_points(batch["landmarks"].astype(jnp.float32),
                              self.size)
    per = jnp.mean(smooth_l1(pred - target,
                             float(self.config.detection.beta)), axis=(1, 2))
    w = batch["valid"].astype(jnp.float32)
    loss = jnp.sum(w * per) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, (model_state, {"smooth_l1": loss})

  def eval_step(self, params, model_state, batch):
    pred = denormalise_points(self.forward(params, model_state, batch),
                              self.size)
    left, right = metrics_lib.normaliser(self.config.detection.normaliser)
    nme = metrics_lib.nme(pred, batch["landmarks"].astype(jnp.float32), left,
                          right)
    return {"nme": 100.0 * nme}

  def evaluate(self, outputs, split):
    del split
    return {"nme": float(np.mean(outputs["nme"]))}


def _fewshot_mode(method, config, workdir):
  from sce_mae_jax import fewshot  # pylint: disable=g-import-not-at-top
  return fewshot.fewshot_mode(method, config, workdir)


def make_method(config) -> DetectionMethod:
  return DetectionMethod(config)


def base_config():
  """Stage-2 defaults plus the detection head / training settings."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = stage2.base_config()
  c.method = "sce_mae_detection"
  c.detection = ml_collections.ConfigDict(dict(
      stage2_workdir="", feature_kind="concat", intermediate=50,
      per_landmark=True, hidden=256, softargmax_mul=1.0, beta=1.0,
      normaliser="five_point", fewshot_counts=(1, 5, 10, 20, 50, 100),
      fewshot_seeds=(0, 1, 2), fewshot_steps=500, fewshot_batch_size=32,
      learning_rate=1e-3))
  c.optimizer.learning_rate = 1e-3
  return c

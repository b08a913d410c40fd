"""Keypoint regressors on frozen dense features, their training and NME.

The one module that the detection study (`detection.py`, SCE-MAE Table 2),
the limited-annotation study (`fewshot.py`, Table 3) and the ablation import.
It depends on neither of them and not on `star_jax`.

Coordinates. Landmarks are regressed in the normalised crop frame
`u = (2 p + 1) / S - 1` (align_corners=False: pixel centres of an S px crop
span `[-1 + 1/S, 1 - 1/S]`). Cell r of an n-cell cover-and-stride feature map
is centred at crop pixel `(r + 1/2) S / n - 1/2` (`dense.dense_feature_centres`
with `P - s` even), i.e. at `coordinates.grid_centres(n)[r] = (2 r + 1) / n - 1` in the
same frame, so the soft-argmax of a map is directly a point of the crop.
DVE / CL use `linspace(-1, 1, n)` with align_corners=True targets instead; the
final linear layer absorbs the difference (a scale about 0).

Heads (`__call__(features [B, h, w, C]) -> [B, K, 2]` normalised (x, y)):
  * `IntermediateKeypointRegressor`: DVE / CL's IntermediateKeypointPredictor
    (jamt9000/DVE model/keypoint_prediction.py): a bias-free 1x1 conv from the
    descriptor to K * I maps (I = 50 per landmark, as DVE; our option
    `per_landmark=False`: I maps shared by all landmarks, each landmark with
    its own readout of them), times `softmax_mul` (100), spatial softmax,
    soft-argmax, then a grouped linear layer: landmark k's (x, y) is a linear
    function of the 2 I coordinates of its own intermediate points, x and y
    mixed (DVE's `reg_conv`, groups = K, kernel [2, 2 I] per landmark, inputs
    ordered (x_1, y_1, ..., x_I, y_I)). The default few-shot head.
  * `ConvBlockRegressor`: the SCE-MAE paper's conv block (3x3 conv to
    `hidden` + ReLU, 1x1 conv to the maps), softmax, soft-argmax and a dense
    linear layer from all intermediate points to all landmarks. The default
    all-annotation head.

Differences from DVE / CL, by choice:
  * `normalise`: the features are L2-normalised per position before the maps
    (DVE and CL feed raw descriptors). With `norm_groups` the channel groups
    (e.g. backbone tokens and projector features of the "concat" kind) are
    normalised separately and scaled by 1 / sqrt(groups), so a wide group
    cannot drown a narrow one. Unit inputs give `softmax_mul` a fixed meaning.
  * Mean-shape start. The readout kernel starts at "mean_points": each
    landmark's output is the mean of its own intermediate points (x from the
    x's, y from the y's, weight 1 / I), a translation-equivariant start; an
    `offset` (trainable, no weight decay) is then set by `init_params` so
    that the mean initial prediction over the training faces equals their
    mean shape. The regressor's 1x1 conv starts at N(0, (init_logit_std /
    softmax_mul)^2), i.e. map logits of std `init_logit_std` (0.1) on unit
    features: nearly uniform maps whose soft-argmax sits near the centre for
    every face, so every face's initial prediction is close to the mean
    shape, the trivial baseline. `readout_init="zero"` makes it exactly the
    mean shape for every face (and weight decay then shrinks the head towards
    it), at the price of no gradient into the maps on the first step.
    DVE: randn conv weights (std 1 before the x100, a saturated softmax),
    torch's Linear default U(+-1/sqrt(fan_in)) readout and no offset
    (`readout_init="random", use_offset=False, init_logit_std=softmax_mul`).

Training (`fit`): smooth-L1 on `loss_alpha`-scaled normalised coordinates
(DVE's `regression_loss`: `smooth_l1_loss(pred * 10, kp * 10)`, mean over
faces, points and axes, beta 1), Adam or AMSGrad with weight decay either as
an L2 term added to the gradient (torch `Adam(weight_decay=...)`, what DVE and
CL use) or decoupled (AdamW); optax's AMSGrad keeps the maximum of the
bias-corrected second moment, torch the bias-corrected maximum (they differ
in the first steps only). Learning rate constant, piecewise (drops at
fractions of the run, DVE: x0.1 at epochs 100 and 250 of 300) or cosine.
Epochs have a fixed length: the n training faces are tiled to
`epoch_length` samples (DVE tiles the picks to the training-set size, CL to
`num_per_epoch` = 1000), shuffled, cut into full batches (static shapes for
every count). `augment(key, features, landmarks)` runs inside the jitted step;
`TpsAugment` warps cached feature maps and their landmarks by a random TPS.

NME (`nme_percent`): 100 * mean point error / distance between the eye
points (5-point sets: points 0 and 1), in NumPy float64.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from landmarks import coordinates
from landmarks import decoding
from landmarks import metrics as metrics_lib
from sce_mae_jax import tps

READOUT_INITS = ("zero", "mean_points", "random")
SCHEDULES = ("constant", "piecewise", "cosine")
Augment = Callable[[jax.Array, jax.Array, jax.Array],
                   Tuple[jax.Array, jax.Array]]


# ------------------------------------------------------------ coordinates ----

def l2_normalise(features: jax.Array, groups: Sequence[int] = (),
                 eps: float = 1e-6) -> jax.Array:
  """Unit-norm channel vector per position; `groups` = channel split points.

  Each group `[g_i, g_{i+1})` is normalised on its own and scaled by
  `1 / sqrt(number of groups)`, so the whole vector has unit norm.
  """
  bounds = [0] + [int(g) for g in groups] + [features.shape[-1]]
  parts = [features[..., a:b] for a, b in zip(bounds[:-1], bounds[1:])]
  scale = 1.0 / math.sqrt(len(parts))
  parts = [scale * p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True),
                                   eps) for p in parts]
  return jnp.concatenate(parts, axis=-1)


# ------------------------------------------------------------------ heads ----

class PointReadout(nn.Module):
  """Intermediate points `[B, M, 2]` -> landmarks `[B, K, 2]`, linear.

  grouped: landmark k reads only its own maps (M = K * I, `per_landmark`) or
    all I shared maps (M = I) through its own `[2 I, 2]` kernel; inputs
    ordered (x_1, y_1, ..., x_I, y_I). Otherwise one dense `[2 M, 2 K]` map.
  readout_init: "mean_points" | "zero" | "random" (module docstring).
  use_offset: a `[K, 2]` additive `offset` (0 from `init`; `init_params`
    calibrates it to the mean training shape).
  """
  num_points: int
  grouped: bool = True
  per_landmark: bool = True
  readout_init: str = "mean_points"
  use_offset: bool = True

  def _maps_of(self, m: int) -> int:
    """Intermediate maps feeding one landmark."""
    return m // self.num_points if self.per_landmark else m

  def _kernel_init(self, key, shape, m: int):
    if self.readout_init == "zero":
      return jnp.zeros(shape, jnp.float32)
    fan_in = shape[-2]
    if self.readout_init == "random":  # torch.nn.Linear's default.
      bound = 1.0 / math.sqrt(fan_in)
      return jax.random.uniform(key, shape, jnp.float32, -bound, bound)
    k, per = self.num_points, self._maps_of(m)
    kern = np.zeros(shape, np.float32)
    for lm in range(k):
      first = lm * per if (self.per_landmark and not self.grouped) else 0
      for i in range(first, first + per):
        for axis in range(2):
          if self.grouped:
            kern[lm, 2 * i + axis, axis] = 1.0 / per
          else:
            kern[2 * i + axis, 2 * lm + axis] = 1.0 / per
    return jnp.asarray(kern)

  @nn.compact
  def __call__(self, inter: jax.Array) -> jax.Array:
    if self.readout_init not in READOUT_INITS:
      raise ValueError(f"readout_init must be one of {READOUT_INITS}, got "
                       f"{self.readout_init!r}.")
    b, m, _ = inter.shape
    k = self.num_points
    if self.per_landmark and m % k:
      raise ValueError(f"{m} per-landmark maps for {k} landmarks.")
    hi = jax.lax.Precision.HIGHEST
    if self.grouped:
      per = self._maps_of(m)
      if self.per_landmark:
        groups = inter.reshape(b, k, 2 * per)
      else:
        groups = jnp.broadcast_to(inter.reshape(b, 1, 2 * m), (b, k, 2 * m))
      kernel = self.param("kernel", self._kernel_init, (k, 2 * per, 2), m)
      out = jnp.einsum("bkj,kjo->bko", groups, kernel, precision=hi)
    else:
      kernel = self.param("kernel", self._kernel_init, (2 * m, 2 * k), m)
      out = jnp.matmul(inter.reshape(b, 2 * m), kernel,
                       precision=hi).reshape(b, k, 2)
    if self.use_offset:
      out = out + self.param("offset", nn.initializers.zeros, (k, 2))
    return out


class IntermediateKeypointRegressor(nn.Module):
  """DVE / CL regressor: 1x1 conv maps -> soft-argmax -> grouped linear."""
  num_points: int
  intermediate: int = 50
  per_landmark: bool = True
  softmax_mul: float = 100.0
  normalise: bool = True
  norm_groups: Tuple[int, ...] = ()
  init_logit_std: float = 0.1
  readout_init: str = "mean_points"
  use_offset: bool = True

  @property
  def num_maps(self) -> int:
    return self.intermediate * (self.num_points if self.per_landmark else 1)

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = features.astype(jnp.float32)
    if self.normalise:
      x = l2_normalise(x, self.norm_groups)
    std = self.init_logit_std / self.softmax_mul
    logits = nn.Conv(self.num_maps, (1, 1), use_bias=False,
                     kernel_init=nn.initializers.normal(std),
                     precision=jax.lax.Precision.HIGHEST, name="maps")(x)
    inter = decoding.soft_argmax(decoding.spatial_softmax(self.softmax_mul * logits))
    return PointReadout(self.num_points, grouped=True,
                        per_landmark=self.per_landmark,
                        readout_init=self.readout_init,
                        use_offset=self.use_offset, name="readout")(inter)


class ConvBlockRegressor(nn.Module):
  """Paper's block: 3x3 conv + ReLU + 1x1 conv -> soft-argmax -> linear."""
  num_points: int
  intermediate: int = 50
  per_landmark: bool = True
  hidden: int = 256
  softmax_mul: float = 1.0
  normalise: bool = False
  norm_groups: Tuple[int, ...] = ()
  grouped: bool = False
  readout_init: str = "mean_points"
  use_offset: bool = True

  @property
  def num_maps(self) -> int:
    return self.intermediate * (self.num_points if self.per_landmark else 1)

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    x = features.astype(jnp.float32)
    if self.normalise:
      x = l2_normalise(x, self.norm_groups)
    x = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME", name="conv")(x))
    logits = nn.Conv(self.num_maps, (1, 1), name="heatmaps")(x)
    inter = decoding.soft_argmax(decoding.spatial_softmax(self.softmax_mul * logits))
    return PointReadout(self.num_points, grouped=self.grouped,
                        per_landmark=self.per_landmark,
                        readout_init=self.readout_init,
                        use_offset=self.use_offset, name="readout")(inter)


def set_offset(params, offset) -> dict:
  """`params` with every `offset` leaf replaced by `offset` `[K, 2]`."""
  def leaf(path, value):
    if getattr(path[-1], "key", None) == "offset":
      return jnp.asarray(offset, value.dtype).reshape(value.shape)
    return value
  return jax.tree_util.tree_map_with_path(leaf, params)


def init_params(head: nn.Module, key: jax.Array, features,
                mean_shape=None, calibration_faces: int = 256) -> dict:
  """`head.init` on one face, then, when `mean_shape` (normalised `[K, 2]`)
  is given and the head has an offset, the offset that makes the mean
  initial prediction over the first `calibration_faces` faces equal
  `mean_shape` (every face's, for `readout_init="zero"`)."""
  params = head.init(key, jnp.asarray(features[:1], jnp.float32))
  if mean_shape is None:
    return params
  x = jnp.asarray(features[:calibration_faces], jnp.float32)
  start = jnp.mean(head.apply(params, x), axis=0)
  return set_offset(params, jnp.asarray(mean_shape, jnp.float32) - start)


# --------------------------------------------------------------- training ----

@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """How `fit` trains a head (defaults: DVE's all-annotation regressor).

  Attributes:
    epochs: passes of `epoch_length` samples (ignored when `steps` > 0).
    steps: > 0: exactly this many steps instead.
    epoch_length: samples per epoch; the faces are tiled to it (at least one
      pass and one batch); 0 = one pass over the faces.
    batch_size: faces per step.
    learning_rate: peak learning rate.
    schedule: "constant" | "piecewise" (x `lr_drop_factor` at each of
      `lr_drops`, fractions of the run) | "cosine" (to `cosine_final` x lr).
    warmup_steps: linear ramp of the rate from 0 over the first steps (0:
      none, as DVE / CL).
    weight_decay: on kernels only (not on biases / offsets).
    decoupled_weight_decay: False = L2 added to the gradient (torch Adam,
      DVE / CL); True = AdamW.
    amsgrad: AMSGrad (DVE) instead of Adam.
    b1, b2, eps: Adam moments (CL uses b1 = 0.5).
    loss_alpha, beta: smooth-L1 with `beta` on `loss_alpha`-scaled coordinates.
    seed: initialisation, batch order and augmentation.
  """
  epochs: int = 300
  steps: int = 0
  epoch_length: int = 0
  batch_size: int = 32
  learning_rate: float = 1e-3
  schedule: str = "piecewise"
  lr_drops: Tuple[float, ...] = (1 / 3, 5 / 6)
  lr_drop_factor: float = 0.1
  cosine_final: float = 1e-3
  warmup_steps: int = 0
  weight_decay: float = 5e-4
  decoupled_weight_decay: bool = False
  amsgrad: bool = True
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  loss_alpha: float = 10.0
  beta: float = 1.0
  seed: int = 0


class FitResult(NamedTuple):
  params: dict
  losses: np.ndarray          # [steps] batch loss before each update.
  history: List[Dict[str, float]]  # one entry per epoch.


def smooth_l1(x: jax.Array, beta: float = 1.0) -> jax.Array:
  """torch SmoothL1: `0.5 x^2 / beta` if `|x| < beta` else `|x| - beta / 2`."""
  ax = jnp.abs(x)
  return jnp.where(ax < beta, 0.5 * jnp.square(x) / beta, ax - 0.5 * beta)


def regression_loss(pred: jax.Array, target: jax.Array, alpha: float = 10.0,
                    beta: float = 1.0) -> jax.Array:
  """DVE's `smooth_l1_loss(pred * alpha, target * alpha)`, mean reduction."""
  return jnp.mean(smooth_l1(alpha * (pred - target), beta))


def _decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) not in ("bias", "offset"),
      params)


def update_direction(settings: TrainSettings) -> optax.GradientTransformation:
  """The optimiser without its learning rate (applied by the step)."""
  s = settings
  scale = (optax.scale_by_amsgrad if s.amsgrad else optax.scale_by_adam)(
      b1=s.b1, b2=s.b2, eps=s.eps)
  if not s.weight_decay:
    return scale
  decay = optax.add_decayed_weights(s.weight_decay, mask=_decay_mask)
  return optax.chain(scale, decay) if s.decoupled_weight_decay else (
      optax.chain(decay, scale))


def lr_schedule(settings: TrainSettings, total_steps: int) -> optax.Schedule:
  """Step -> learning rate (`TrainSettings.schedule`, then the warmup)."""
  s = settings
  if s.schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got "
                     f"{s.schedule!r}.")
  if s.schedule == "constant":
    base = optax.constant_schedule(s.learning_rate)
  elif s.schedule == "cosine":
    base = optax.cosine_decay_schedule(s.learning_rate, max(total_steps, 1),
                                       alpha=s.cosine_final)
  else:
    bounds: Dict[int, float] = {}
    for f in s.lr_drops:
      b = int(round(float(f) * total_steps))
      bounds[b] = bounds.get(b, 1.0) * s.lr_drop_factor
    base = optax.piecewise_constant_schedule(s.learning_rate, bounds)
  if s.warmup_steps <= 0:
    return base
  warm = float(s.warmup_steps)
  return lambda step: base(step) * jnp.minimum(1.0, (step + 1.0) / warm)


def steps_per_epoch(num_faces: int, settings: TrainSettings) -> int:
  return _repeats(num_faces, settings) * num_faces // settings.batch_size


def _repeats(num_faces: int, settings: TrainSettings) -> int:
  by_length = settings.epoch_length // num_faces if settings.epoch_length else 1
  return max(1, by_length, -(-settings.batch_size // num_faces))


def epoch_batches(num_faces: int, settings: TrainSettings,
                  rng: np.random.Generator) -> np.ndarray:
  """`[steps_per_epoch, batch]` indices: the faces tiled, shuffled, cut."""
  tiled = np.tile(np.arange(num_faces), _repeats(num_faces, settings))
  steps = steps_per_epoch(num_faces, settings)
  order = rng.permutation(tiled)[:steps * settings.batch_size]
  return order.reshape(steps, settings.batch_size)


_STEP_CACHE: Dict[tuple, Callable] = {}


def _train_step(head: nn.Module, settings: TrainSettings,
                augment: Optional[Augment]):
  """Jitted `(params, opt, x, y, lr, key) -> (params, opt, loss)`; compiled
  once per head, optimiser, loss and augmentation."""
  s = settings
  key = (repr(head), s.weight_decay, s.decoupled_weight_decay, s.amsgrad, s.b1,
         s.b2, s.eps, s.loss_alpha, s.beta, augment)
  if key not in _STEP_CACHE:
    direction = update_direction(s)

    def loss_of(p, x, y):
      return regression_loss(head.apply(p, x), y, s.loss_alpha, s.beta)

    @jax.jit
    def step(p, o, x, y, lr, rng):
      x = x.astype(jnp.float32)
      if augment is not None:
        x, y = augment(rng, x, y)
      loss, g = jax.value_and_grad(loss_of)(p, x, y)
      up, o = direction.update(g, o, p)
      p = jax.tree.map(lambda a, u: a - lr * u, p, up)
      return p, o, loss

    _STEP_CACHE[key] = step
  return _STEP_CACHE[key]


def fit(head: nn.Module, features, landmarks, image_size: int,
        settings: TrainSettings = TrainSettings(), *,
        augment: Optional[Augment] = None,
        val: Optional[Tuple[np.ndarray, np.ndarray]] = None,
        normaliser="five_point", eval_every: int = 1,
        curve_faces: int = 1000, log: Optional[Callable] = None) -> FitResult:
  """Trains `head` on cached features `[n, h, w, C]` and landmarks (crop px).

  The head starts at the mean of `landmarks` (`init_params`). With `val`
  (features, landmarks), every `eval_every` epochs (and after the last) the
  history records the NME (%) on the val faces and on the first
  `curve_faces` training faces (unaugmented), so convergence and over-fitting
  show; `log` gets one line per epoch.

  Returns:
    `FitResult(params, losses [steps], history)`; each history entry has
    `epoch`, `step`, `lr`, `train_loss` (mean batch loss of the epoch) and,
    when evaluated, `train_nme`, `val_nme`.
  """
  s = settings
  n = int(features.shape[0])
  target = np.asarray(coordinates.normalise_landmarks(np.asarray(landmarks, np.float32),
                                       image_size), np.float32)
  init_key, aug_key = jax.random.split(jax.random.PRNGKey(int(s.seed)))
  params = init_params(head, init_key, features, target.mean(axis=0))
  step_fn = _train_step(head, s, augment)
  opt = update_direction(s).init(params)
  per_epoch = steps_per_epoch(n, s)
  total = int(s.steps) if s.steps > 0 else int(s.epochs) * per_epoch
  lrs = np.asarray(jax.vmap(lr_schedule(s, total))(jnp.arange(total)),
                   np.float32)
  rng = np.random.default_rng(int(s.seed))
  losses, history, step, epoch = [], [], 0, 0
  while step < total:
    epoch += 1
    batches = epoch_batches(n, s, rng)[:total - step]
    epoch_losses = []
    for idx in batches:
      params, opt, loss = step_fn(params, opt, features[idx], target[idx],
                                  lrs[step], jax.random.fold_in(aug_key, step))
      epoch_losses.append(loss)
      step += 1
    epoch_losses = np.asarray(jax.device_get(epoch_losses), np.float64)
    losses.append(epoch_losses)
    entry = {"epoch": epoch, "step": step, "lr": float(lrs[step - 1]),
             "train_loss": float(np.mean(epoch_losses))}
    if val is not None and (step >= total or (eval_every > 0 and
                                              epoch % eval_every == 0)):
      m = min(n, int(curve_faces))
      entry["train_nme"] = float(np.mean(evaluate(
          head, params, features[:m], landmarks[:m], image_size, normaliser)))
      entry["val_nme"] = float(np.mean(evaluate(
          head, params, val[0], val[1], image_size, normaliser)))
    history.append(entry)
    if log is not None:
      log("epoch {epoch} step {step} lr {lr:.3g} loss {train_loss:.4g}".format(
          **entry) + "".join(f" {k} {entry[k]:.2f}%"
                             for k in ("train_nme", "val_nme") if k in entry))
  return FitResult(params, np.concatenate(losses) if losses else
                   np.zeros((0,)), history)


# -------------------------------------------------------------- inference ----

_PREDICT_CACHE: Dict[str, Callable] = {}


def predict(head: nn.Module, params, features, image_size: int,
            batch_size: int = 128) -> np.ndarray:
  """`[n, K, 2]` crop-pixel predictions from cached features (fixed-size
  batches, the last one padded, so one compilation serves every n)."""
  key = repr(head)
  if key not in _PREDICT_CACHE:
    _PREDICT_CACHE[key] = jax.jit(
        lambda p, x: head.apply(p, x.astype(jnp.float32)))
  fn = _PREDICT_CACHE[key]
  n = int(features.shape[0])
  bs = min(int(batch_size), n)
  out = []
  for i in range(0, n, bs):
    x = np.asarray(features[i:i + bs])
    pad = bs - x.shape[0]
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    out.append(np.asarray(fn(params, jnp.asarray(x)))[:bs - pad])
  return np.asarray(coordinates.denormalise_landmarks(np.concatenate(out), image_size))


def eye_indices(normaliser) -> Tuple:
  """`(left, right)` eye indices of a normaliser name or pair."""
  if isinstance(normaliser, str):
    if normaliser not in metrics_lib.NORMALISERS:
      raise ValueError(f"unknown normaliser {normaliser!r}; expected one of "
                       f"{sorted(metrics_lib.NORMALISERS)} or (left, right) indices.")
    return metrics_lib.NORMALISERS[normaliser]
  return tuple(normaliser)


def nme_percent(pred, gt, normaliser="five_point") -> np.ndarray:
  """`[n]` 100 * mean point error / distance between the eye points.

  `normaliser`: a name of `landmarks.metrics.NORMALISERS` or `(left, right)`, each an index or
  indices whose mean is the eye point.
  """
  pred = np.asarray(pred, np.float64)
  gt = np.asarray(gt, np.float64)
  if pred.shape != gt.shape or gt.ndim != 3 or gt.shape[-1] != 2:
    raise ValueError(f"pred and gt must both be [n, K, 2], got {pred.shape} "
                     f"and {gt.shape}.")
  left, right = (np.atleast_1d(i) for i in eye_indices(normaliser))
  iod = np.linalg.norm(gt[:, left].mean(1) - gt[:, right].mean(1), axis=-1)
  err = np.linalg.norm(pred - gt, axis=-1).mean(axis=-1)
  return 100.0 * err / iod


def evaluate(head: nn.Module, params, features, landmarks, image_size: int,
             normaliser="five_point") -> np.ndarray:
  """Per-face NME (%) of the head's predictions."""
  return nme_percent(predict(head, params, features, image_size), landmarks,
                     normaliser)


def mean_shape_nme(train_landmarks, val_landmarks,
                   normaliser="five_point") -> np.ndarray:
  """Per-face NME (%) of predicting the mean training landmarks for every
  val face: the trivial baseline a head must beat to show its features help
  (crops centred on the points make it a strong one)."""
  mean = np.mean(np.asarray(train_landmarks, np.float64), axis=0)
  return nme_percent(np.broadcast_to(mean, np.shape(val_landmarks)),
                     val_landmarks, normaliser)


# ----------------------------------------------------------- augmentation ----

def feature_sampling_points(warp: tps.TpsWarp, map_shape: Tuple[int, int],
                            image_size: int) -> jax.Array:
  """`[h, w, 2]` (x, y) positions, in feature-cell units (cell centres at
  integers), of the original map that each cell of the warped map samples.

  Cell centres are taken to crop pixels (`grid_centres`), through the warp's
  sampling map `G` (`tps.warp_image`'s convention, align_corners=True TPS
  frame) and back to cell units.
  """
  h, w = map_shape
  s = float(image_size)
  gy, gx = jnp.meshgrid(coordinates.denormalise_landmarks(jnp.asarray(coordinates.grid_centres(h)), s),
                        coordinates.denormalise_landmarks(jnp.asarray(coordinates.grid_centres(w)), s),
                        indexing="ij")
  pix = jnp.stack([gx, gy], axis=-1)
  frame = (image_size, image_size)
  src = tps.normalized_to_pixels(
      tps.apply_tps(warp.sampling, tps.pixels_to_normalized(pix, frame)),
      frame)
  cells = jnp.array([w / s, h / s], jnp.float32)
  return (src + 0.5) * cells - 0.5


def warp_features(features: jax.Array, warp: tps.TpsWarp, image_size: int,
                  padding: str = "border") -> jax.Array:
  """Bilinear resample of one cached map `[h, w, C]` through `warp`."""
  pts = feature_sampling_points(warp, features.shape[:2], image_size)
  return tps.bilinear_sample(features, pts, padding)


def warp_landmarks(landmarks: jax.Array, warp: tps.TpsWarp, image_size: int,
                   tolerance: float = 1e-3) -> Tuple[jax.Array, jax.Array]:
  """Normalised `[K, 2]` landmarks moved by the warp (`tps.warp_points`) and
  whether Newton solved every point (residual <= `tolerance`, normalised)."""
  px = coordinates.denormalise_landmarks(landmarks, image_size)
  moved, res = tps.warp_points(px, warp, (image_size, image_size),
                               return_residual=True)
  return coordinates.normalise_landmarks(moved, image_size), jnp.all(res <= tolerance)


@dataclasses.dataclass(frozen=True)
class TpsAugment:
  """Random TPS warp of cached feature maps and their landmarks.

  The encoder is frozen, so its features of a warped image are approximated
  by warping its features of the original image: exact for the positions the
  warp moves, not for what a warp does to the local appearance inside a
  patch (rotation, scale), and resampled at the feature-map resolution.
  Call `(key, features [B, h, w, C], landmarks [B, K, 2] normalised)`; one
  warp per face, `warp_fn(key, **warp_kwargs) -> tps.TpsWarp` (e.g.
  `tps.random_tps_warp`, `tps.random_dve_warp`); a face whose landmarks the
  Newton inversion cannot place (a fold of a large warp) is left unwarped.
  Jit-friendly and hashable (one compilation per setting).
  """
  image_size: int
  warp_fn: Callable = tps.random_tps_warp
  warp_kwargs: Tuple[Tuple[str, object], ...] = ()
  padding: str = "border"

  def one(self, key, features, landmarks):
    warp = self.warp_fn(key, **dict(self.warp_kwargs))
    moved, ok = warp_landmarks(landmarks, warp, self.image_size)
    warped = warp_features(features, warp, self.image_size, self.padding)
    return (jnp.where(ok, warped, features), jnp.where(ok, moved, landmarks))

  def __call__(self, key, features, landmarks):
    keys = jax.random.split(key, features.shape[0])
    return jax.vmap(self.one)(keys, features, landmarks)


def tps_augment(image_size: int, warp_fn: Callable = tps.random_tps_warp,
                padding: str = "border", **warp_kwargs) -> TpsAugment:
  """`TpsAugment` with keyword warp settings."""
  return TpsAugment(int(image_size), warp_fn,
                    tuple(sorted(warp_kwargs.items())), padding)


def named_tps_augment(image_size: int, warp: str, warp_kwargs: Dict,
                      padding: str = "border") -> TpsAugment:
  """`tps_augment` with the warp given by its name in `sce_mae_jax.tps`."""
  warp_fn = getattr(tps, warp, None)
  if warp_fn is None:
    raise ValueError(f"sce_mae_jax.tps has no warp function {warp!r}.")
  return tps_augment(image_size, warp_fn, padding, **warp_kwargs)

"""STAR as a method of the training loop (training/method.py's interface).

Training: the loss of star_jax/objective.py (eq. 10 summed over stacks) on
the hourglass of star_jax/model.py, with the data of star_jax/data.py.
Predictions (soft-argmax of the last stack's heatmaps, grid
linspace(-1, 1, h)) go back to crop pixels with the inverse of the ground
truth's normalisation (landmarks.coordinates), then to original pixels with
`batch["crop_to_image"]`.

With `model.head="regression"` (star_jax/regression.py, our own formulation)
the last stack predicts the points' normalised coordinates and a covariance
directly; training uses `objective.regression_training_loss`
(`loss.regression`: star | smooth_l1 | nll) and the prediction is the
predicted mean, mapped back to pixels as the soft-argmax is, so evaluation,
NME and reports are the heatmap head's. The covariance is in the model's
output ("covariance", normalised crop units) for uncertainty use.

Evaluation: NME (normaliser `config.eval.normaliser`, e.g. "wflw" outer eye
corners), FR and AUC at `config.eval.threshold`, for each eval split, plus
per-subset (300W common/challenge) and per-attribute (WFLW pose, ...) values,
named `<subset>/nme`, ... The NME with the scheme's other normaliser
(inter-pupil when the default is inter-ocular and vice versa; COFW reports
both) is `nme_inter_pupil` / `nme_inter_ocular`.

  * `eval.flip_test=True` (default False, as the public code): horizontal-flip
    test-time augmentation; the crop and its mirror image go through the model
    in one batch, the mirror's points are mapped back with the scheme's flip
    permutation (`x -> (S - 1) - x`, then `points[flip_permutation]`) and the
    two predictions are averaged in crop pixels (`flip_test_average`).
  * `--mode=eval` also writes the paper-layout report (results.json,
    results.md, ced.png, predictions.npz; star_jax/report.py) through the
    `write_report` hook that training/loop.py calls.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import device_augment as device_augment_lib
from data import schemes as schemes_lib
from landmarks import coordinates
from landmarks import distribution
from landmarks import metrics as metrics_lib
from star_jax import data as data_lib
from star_jax import model as model_lib
from star_jax import objective
from star_jax import regression
from star_jax import report
from training import errors
from training import method as method_base


# ------------------------------------------------------------- decode ----

def decode_predictions(outputs: Sequence[Dict[str, jax.Array]],
                       crop_to_image: jax.Array, crop_size: int,
                       align_corners: bool = False
                       ) -> tuple[jax.Array, jax.Array]:
  """Soft-argmax of the last stack -> (crop pixels, original pixels) `[B, N, 2]`."""
  crop_points = decode_crop_points(outputs, crop_size, align_corners)
  return crop_points, coordinates.crop_to_original(crop_points,
                                       crop_to_image.astype(jnp.float32))


def decode_crop_points(outputs: Sequence[Dict[str, jax.Array]],
                       crop_size: int, align_corners: bool = False
                       ) -> jax.Array:
  """Soft-argmax of the last stack's heatmaps -> `[B, N, 2]` crop pixels.

  The regression head's output (a "mean" in the normalised frame instead of
  heatmaps) is mapped back the same way.
  """
  last = outputs[-1]
  if "mean" in last:
    coords = last["mean"]
  else:
    coords = distribution.soft_argmax(last["heatmaps"])
  return coordinates.denormalise_landmarks(coords, crop_size, align_corners)


# ------------------------------------------------------------- method ----

def model_from_config(config, scheme) -> model_lib.StackedHourglass:
  """The stacked hourglass that `config.model` describes for `scheme`."""
  m = config.model
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[
      m.get("dtype", "float32")]
  edges = tuple(tuple(int(i) for i in e) for e in scheme.edges)
  use_aam = bool(m.get("use_aam", True)) and bool(edges)
  head = m.get("head", "heatmap")
  if head not in model_lib.HEADS:
    raise errors.UserError(f"config.model.head must be one of "
                           f"{model_lib.HEADS}; got {head!r}.")
  extra = {}
  if head == "regression":
    if use_aam:
      raise errors.UserError(
          "config.model.head='regression' predicts coordinates, AAM needs "
          "heatmaps: set --config.model.use_aam=False.")
    extra = dict(head=head, regression_min_std=float(
        m.get("regression_min_std", regression.MIN_STD)))
  return model_lib.StackedHourglass(
      num_points=scheme.num_points, edges=edges if use_aam else (),
      num_stacks=int(m.num_stacks), depth=int(m.depth), width=int(m.width),
      use_aam=use_aam,
      heatmap_activation=m.get("heatmap_activation", "instance_norm_relu"),
      dtype=dtype, input_bgr=bool(m.get("input_bgr", False)),
      conv3x3=m.get("conv3x3", "auto"),
      remat=bool(m.get("remat", False)), **extra)


class StarMethod(method_base.Method):
  """STAR training/evaluation for training.loop (training/method.py)."""

  best_mode = "min"
  # Paths, loader settings and the evaluation-only flip test may change on
  # resume.
  resumable_fields = ("data.root", "data.num_workers",
                      "data.prefetch_buffer_size", "eval.flip_test",
                      # Where the augmentation runs (the same distribution;
                      # e.g. a run moved to an accelerator host), and so
                      # checkpoints from before these fields resume.
                      "data.augment_on", "data.precrop_margin",
                      "data.precrop_cache_dir")
  # The 3x3 convolution algorithm and rematerialisation compute the same
  # model with the same parameters (a checkpoint moves between them).
  implementation_fields = ("model.conv3x3", "model.remat")
  # What a checkpoint's hourglass is: its config, the landmark scheme (the
  # point count and edges) and the crop size.
  model_fields = ("model.", "data.scheme", "data.crop_size")

  def __init__(self, config, data=None):
    """`data`: a StarData-like object (default: StarData(config), built on
    first use).

    The loop asks for `num_train_examples()` before it traces anything, so a
    missing dataset raises FileNotFoundError / ValueError (with the expected
    layout) before anything compiles.
    """
    self.config = config
    self.scheme = schemes_lib.get_scheme(config.data.scheme)
    self.crop_size = int(config.data.crop_size)
    self.loss_settings = objective.LossSettings.from_config(config.get("loss", None))
    self.model = model_from_config(config, self.scheme)
    self.regression_loss = (
        objective.regression_loss_name(config)
        if self.model.head == "regression" else None)
    self.best_metric = config.get("best_metric", None)
    # config.data.augment_on = "device": the training batches are the host's
    # pre-crops (data/pipeline.py) and the flip / similarity warp / texture
    # of data/augment.py run here, at the start of `loss_fn`
    # (data/device_augment.py); "host" (default) leaves everything as it was.
    self.augment_on = device_augment_lib.check_augment_on(
        config.data.get("augment_on", "host"))
    self.device_augment = (
        device_augment_lib.DeviceAugment.from_config(config.data, self.scheme)
        if self.augment_on == "device" else None)
    self._data = data

  @property
  def data(self):
    """The StarData, listed on first use (summary mode never lists data)."""
    if self._data is None:
      self._data = data_lib.StarData(self.config, self.scheme)
    return self._data

  # --- data ---
  def dummy_batch(self, batch_size: int) -> Dict[str, np.ndarray]:
    """A training batch's shapes: S x S crops, or in device mode the
    pre-crop batch the host sends (DeviceAugment.dummy_batch)."""
    if self.device_augment is not None:
      return self.device_augment.dummy_batch(batch_size,
                                             self.scheme.num_points)
    s, n = self.crop_size, self.scheme.num_points
    eye = np.tile(np.eye(2, 3, dtype=np.float32), (batch_size, 1, 1))
    grid = np.linspace(0.25 * s, 0.75 * s, n, dtype=np.float32)
    points = np.tile(np.stack([grid, grid[::-1]], -1), (batch_size, 1, 1))
    return {"image": np.zeros((batch_size, s, s, 3), np.uint8),
            "landmarks": points, "landmarks_original": points.copy(),
            "visible": np.ones((batch_size, n), bool),
            "crop_to_image": eye, "valid": np.ones((batch_size,), bool),
            "index": np.arange(batch_size, dtype=np.int32)}

  # --- model ---
  def _plain_crops(self, batch):
    """A pre-crop batch (device mode) -> its plain crops; else `batch`."""
    if self.device_augment is not None and "precrop_to_crop" in batch:
      return self.device_augment.base_crop(batch)
    return batch

  def init_variables(self, rng, batch):
    batch = self._plain_crops(batch)
    variables = self.model.init(rng, batch["image"], train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return params, model_state

  def forward(self, params, model_state, batch):
    batch = self._plain_crops(batch)
    return self.model.apply({"params": params, **model_state}, batch["image"],
                            train=False)

  def loss_fn(self, params, model_state, batch, rng, step):
    del step
    if self.device_augment is not None:
      # Sample i of the global batch draws from fold_in(rng, i), rng =
      # fold_in(state.rng, step) (training/loop.py): the same crops on any
      # number of devices and after a resume.
      batch = self.device_augment(batch, rng)
    del rng
    outputs, new_state = self.model.apply(
        {"params": params, **model_state}, batch["image"], train=True,
        mutable=list(model_state.keys()))
    if self.regression_loss is None:
      loss, terms = objective.star_training_loss(outputs, batch["landmarks"],
                                       self.loss_settings, self.scheme,
                                       self.crop_size)
    else:
      loss, terms = objective.regression_training_loss(
          outputs, batch["landmarks"], self.loss_settings,
          self.regression_loss, self.crop_size)
    _, pred = decode_predictions(outputs, batch["crop_to_image"],
                                 self.crop_size,
                                 self.loss_settings.align_corners)
    left, right = metrics_lib.normaliser(self.config.eval.normaliser)
    terms["nme"] = jnp.mean(metrics_lib.nme(
        pred, batch["landmarks_original"].astype(jnp.float32), left, right))
    return loss, (dict(new_state), terms)

  def predict_crop_points(self, params, model_state, images) -> jax.Array:
    """`[B, S, S, 3]` uint8 crops -> `[B, N, 2]` soft-argmax (or regressed)
    points, crop px."""
    outputs = self.model.apply({"params": params, **model_state}, images,
                               train=False)
    return decode_crop_points(outputs, self.crop_size,
                              self.loss_settings.align_corners)

  @property
  def normalisers(self) -> Dict[str, str]:
    """Output key -> normaliser of the per-face NMEs (`eval_normalisers`)."""
    return metrics_lib.eval_normalisers(self.config.eval.normaliser,
                            self.scheme.num_points)

  def eval_step(self, params, model_state, batch):
    """Per face: "pred" `[B, N, 2]` (original px), "nme" and the NMEs of the
    other normalisers (`normalisers`) `[B]`, "index" `[B]`."""
    predict = functools.partial(self.predict_crop_points, params, model_state)
    if bool(self.config.eval.get("flip_test", False)):
      crop = coordinates.flip_test_average(predict, batch["image"],
                               self.scheme.flip_permutation)
    else:
      crop = predict(batch["image"])
    pred = coordinates.crop_to_original(
        crop, batch["crop_to_image"].astype(jnp.float32))
    gt = batch["landmarks_original"].astype(jnp.float32)
    out = {"pred": pred, "index": batch["index"]}
    for key, name in self.normalisers.items():
      left, right = metrics_lib.normaliser(name)
      out[key] = metrics_lib.nme(pred, gt, left, right)
    return out

  # --- evaluation ---
  def evaluate(self, outputs: Dict[str, np.ndarray], split: str
               ) -> Dict[str, float]:
    """NME / FR / AUC of a split, and of its subsets and attributes."""
    ev = self.config.eval
    threshold, step = float(ev.threshold), float(ev.get("step", 1e-4))
    nmes = np.asarray(outputs["nme"], np.float64)
    result = {k: float(v) for k, v in metrics_lib.subset_metrics(
        nmes, threshold, step).items()}
    for key in self.normalisers:
      if key != "nme" and key in outputs:
        result[key] = float(np.mean(np.asarray(outputs[key], np.float64)))
    groups = self.data.eval_groups(split, np.asarray(outputs["index"]))
    for name, flags in groups.items():
      flags = np.asarray(flags, bool)
      if not flags.any():
        continue
      for k, v in metrics_lib.subset_metrics(nmes[flags], threshold,
                                             step).items():
        result[f"{name}/{k}"] = float(v)
    return result

  # --- report (training/loop.py calls it after --mode=eval) ---
  def write_report(self, workdir: str, results: Dict[str, float],
                   outputs: Dict[str, Dict[str, Dict[str, np.ndarray]]],
                   info: Dict[str, Any]) -> Dict[str, Any]:
    """Writes results.json / results.md / ced.png (star_jax.report).

    Args:
      workdir: where to write.
      results: the flat metrics `loop.evaluate` returns.
      outputs: split -> "raw" | "ema" -> `eval_step` outputs over the split.
      info: checkpoint step / path / which, config path.
    """
    evaluations = {}
    for split, variants in outputs.items():
      first = next(iter(variants.values()))
      index = np.asarray(first["index"])
      evaluations[split] = report.SplitEvaluation(
          index=index,
          groups=self.data.eval_groups(split, index),
          nmes={v: {name: np.asarray(out[key]) for key, name
                    in self.normalisers.items()}
                for v, out in variants.items()},
          predictions={v: np.asarray(out["pred"]) for v, out
                       in variants.items()})
    ev = self.config.eval
    return report.write_report(
        workdir, evaluations, results=results, info=info,
        dataset=str(self.config.data.name),
        scheme=self.scheme.name, primary=self.normalisers["nme"],
        threshold=float(ev.threshold), step=float(ev.get("step", 1e-4)),
        flip_test=bool(ev.get("flip_test", False)))


def make_method(config) -> StarMethod:
  return StarMethod(config)

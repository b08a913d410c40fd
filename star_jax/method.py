"""STAR as a method of the training loop (see training/loop.py for the interface).

Training loss (public STAR code, `config.loss`), for stacks i = 0..S-1 with
weight 2^i / 2^(S-1):

    L_i = star_weight * STAR(fused heatmaps_i, gt)                  (eq. 6-7)
        + pointmap_weight * AWing(pointmaps_i, point targets)        (10)
        + edgemap_weight * AWing(edgemaps_i, edge targets)           (10)
        + dr_weight * DR(heatmaps_i, gt)                             (0; Table 3)

  * `loss.star=False` replaces STAR by the plain regression of eq. 2:
    `distance(gt - soft_argmax(heatmaps))` (the paper's baseline; with the
    default smooth-l1 distance, the smooth-L1 baseline).
  * `loss.distance`, `loss.restriction` ("value" | "detach" | "none"),
    `loss.value_form` ("code" | "paper"), `loss.w`, `loss.eigenvalue_clamp`
    select the variants of star_jax.loss.star_loss.
  * Point / edge targets are computed inside the jitted step from
    `batch["landmarks"]` (crop pixels) with data.targets.
  * Ground truth is normalised to the decoder scale with align_corners=False,
    `(2p + 1) / S - 1`, clamped to [-1, 1] (public code); `loss.align_corners
    =True` uses `2p / (S - 1) - 1`. Predictions (soft-argmax of the last
    stack's heatmaps, grid linspace(-1, 1, h)) go back to crop pixels with the
    inverse of the same convention, then to original pixels with
    `batch["crop_to_image"]`.

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

import dataclasses
import functools
import os
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import schemes as schemes_lib
from data import targets as targets_lib
from star_jax import loss as loss_lib
from star_jax import metrics as metrics_lib
from star_jax import model as model_lib
from training import loop as loop_lib


# --------------------------------------------------------- coordinates ----

def normalise_landmarks(points: jax.Array, crop_size: int,
                        align_corners: bool = False) -> jax.Array:
  """Crop pixels `[..., 2]` -> decoder scale [-1, 1] (clamped).

  align_corners=False (public code): `(2p + 1) / S - 1`;
  align_corners=True: `2p / (S - 1) - 1`.
  """
  if align_corners:
    x = 2.0 * points / (crop_size - 1.0) - 1.0
  else:
    x = (2.0 * points + 1.0) / crop_size - 1.0
  return jnp.clip(x, -1.0, 1.0)


def denormalise_landmarks(coords: jax.Array, crop_size: int,
                          align_corners: bool = False) -> jax.Array:
  """Inverse of `normalise_landmarks` (without the clamp): [-1, 1] -> pixels."""
  if align_corners:
    return (coords + 1.0) * (crop_size - 1.0) / 2.0
  return ((coords + 1.0) * crop_size - 1.0) / 2.0


def crop_to_original(points: jax.Array, crop_to_image: jax.Array) -> jax.Array:
  """Applies `[B, 2, 3]` affine maps to `[B, N, 2]` points."""
  return (jnp.einsum("bij,bnj->bni", crop_to_image[..., :2], points)
          + crop_to_image[:, None, :, 2])


def flip_points(points: jax.Array, flip_permutation: Sequence[int],
                width: float) -> jax.Array:
  """Points of a horizontally mirrored crop -> points of the crop itself.

  Mirroring the pixel columns maps x to `(width - 1) - x` (pixel centres at
  integers), and the mirror's point i is the original point
  `flip_permutation[i]`: `out[..., i, :] = mirror(points[..., perm[i], :])`.
  An involution (the permutation is one), so the same map goes both ways.

  Args:
    points: `[..., N, 2]` (x, y) crop pixels.
    flip_permutation: `[N]` ints (data.schemes.LandmarkScheme).
    width: the crop width W in pixels.
  """
  perm = np.asarray(flip_permutation, np.int32)
  if perm.shape != (points.shape[-2],):
    raise ValueError(f"flip_permutation has {perm.shape[0]} entries, the "
                     f"points have {points.shape[-2]}")
  p = points[..., perm, :]
  return jnp.stack([(width - 1.0) - p[..., 0], p[..., 1]], axis=-1)


def flip_test_average(predict, images: jax.Array,
                      flip_permutation: Sequence[int]) -> jax.Array:
  """Horizontal-flip test-time augmentation.

  Args:
    predict: `images [B', S, S, C] -> crop points [B', N, 2]`; per-example
      (no batch statistics), called once on the crops and their mirrors
      concatenated.
    images: `[B, S, S, C]` crops.
    flip_permutation: the scheme's `[N]` flip permutation.

  Returns:
    `[B, N, 2]`: `(predict(x) + flip_points(predict(mirror(x)))) / 2`. For a
    mirror-symmetric crop the result is itself symmetric, and
    `result(mirror(x)) == flip_points(result(x))` for any `predict`.
  """
  b, width = images.shape[0], images.shape[2]
  both = predict(jnp.concatenate([images, images[:, :, ::-1]], axis=0))
  plain, mirrored = both[:b], both[b:]
  return 0.5 * (plain + flip_points(mirrored, flip_permutation, width))


# Normaliser family of a scheme (star_jax.metrics.NORMALISERS prefixes).
_NORMALISER_FAMILY = {98: "wflw", 68: "300w", 29: "cofw", 5: "five_point"}


def canonical_normaliser(name: str) -> str:
  """The `*_inter_*` name of a normaliser: "cofw" -> "cofw_inter_pupil"."""
  indices = metrics_lib.normaliser(name)
  if "_inter_" in name:
    return name
  for other, value in metrics_lib.NORMALISERS.items():
    if "_inter_" in other and value == indices:
      return other
  return name


def eval_normalisers(primary: str, num_points: int) -> Dict[str, str]:
  """Output key -> normaliser name of the per-face NMEs `eval_step` returns.

  "nme" is `primary` (canonical name); `nme_inter_ocular` / `nme_inter_pupil`
  add the scheme's other normaliser(s) when they differ from it.
  """
  primary = canonical_normaliser(primary)
  out = {"nme": primary}
  family = _NORMALISER_FAMILY.get(int(num_points))
  for kind in ("inter_ocular", "inter_pupil"):
    name = f"{family}_{kind}"
    if family and name in metrics_lib.NORMALISERS and name != primary:
      out[f"nme_{kind}"] = name
  return out


def stack_weights(num_stacks: int) -> np.ndarray:
  """Per-stack loss weights 2^i / 2^(S-1), i = 0..S-1 (public code)."""
  return np.array([2.0**i / 2.0**(num_stacks - 1) for i in range(num_stacks)])


# --------------------------------------------------------------- loss ----

@dataclasses.dataclass(frozen=True)
class LossSettings:
  """`config.loss` as a hashable record (defaults: the public STAR code)."""
  star: bool = True
  distance: str = "smooth_l1"
  w: float = 1.0
  restriction: str = "value"
  value_form: str = "code"
  eigenvalue_clamp: Optional[tuple] = None
  star_weight: float = 1.0
  pointmap_weight: float = 10.0
  edgemap_weight: float = 10.0
  dr_weight: float = 0.0
  dr_sigma: float = 1.0
  align_corners: bool = False
  baseline_on: str = "norm"
  target_mode: str = "public"

  @classmethod
  def from_config(cls, cfg) -> "LossSettings":
    known = {f.name for f in dataclasses.fields(cls)}
    values = dict(cfg.items()) if cfg is not None else {}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"unknown config.loss keys {unknown}; known: "
                       f"{sorted(known)}")
    clamp = values.get("eigenvalue_clamp", None)
    if clamp is not None:
      values["eigenvalue_clamp"] = tuple(float(c) for c in clamp)
    return cls(**values)


def star_training_loss(outputs: Sequence[Dict[str, jax.Array]],
                       landmarks: jax.Array, settings: LossSettings,
                       scheme: schemes_lib.LandmarkScheme, crop_size: int,
                       ) -> tuple[jax.Array, Dict[str, jax.Array]]:
  """The composed training loss of all stacks (see module docstring).

  Args:
    outputs: per stack, the model's dict: "heatmaps" `[B, N, h, h]`, and with
      AAM "pointmaps" `[B, N, h, h]`, "edgemaps" `[B, E, h, h]`.
    landmarks: `[B, N, 2]` ground truth in crop pixels.
    settings: loss settings.
    scheme: landmark scheme (edges for the edge targets).
    crop_size: S, the side of the crop in pixels.

  Returns:
    (scalar loss, metrics: per-term means over stacks, unweighted).
  """
  num_stacks = len(outputs)
  h = outputs[0]["heatmaps"].shape[-1]
  gt = normalise_landmarks(landmarks.astype(jnp.float32), crop_size,
                           settings.align_corners)
  use_aam = "pointmaps" in outputs[0]
  if use_aam:
    point_targets = targets_lib.point_heatmaps(
        landmarks, crop_size=crop_size, heatmap_size=h,
        mode=settings.target_mode)
    edge_targets = targets_lib.edge_maps(landmarks, scheme,
                                         crop_size=crop_size, heatmap_size=h)
  total = 0.0
  terms: Dict[str, jax.Array] = {}

  def add(name, value):
    terms[name] = terms.get(name, 0.0) + value / num_stacks

  for i, (out, weight) in enumerate(zip(outputs, stack_weights(num_stacks))):
    del i
    heatmaps = out["heatmaps"]
    if settings.star:
      coord = loss_lib.star_loss(
          heatmaps, gt, distance=settings.distance, w=settings.w,
          restriction=settings.restriction, value_form=settings.value_form,
          eigenvalue_clamp=settings.eigenvalue_clamp)
    else:
      coord = loss_lib.coordinate_loss(
          loss_lib.soft_argmax(heatmaps), gt, distance=settings.distance,
          on=settings.baseline_on)
    stack_loss = settings.star_weight * coord
    add("loss_coordinates", coord)
    if use_aam:
      point = loss_lib.awing_heatmap_loss(out["pointmaps"], point_targets)
      edge = loss_lib.awing_heatmap_loss(out["edgemaps"], edge_targets)
      stack_loss += (settings.pointmap_weight * point +
                     settings.edgemap_weight * edge)
      add("loss_pointmaps", point)
      add("loss_edgemaps", edge)
    if settings.dr_weight:
      dr = loss_lib.distribution_regularization(heatmaps, gt,
                                                sigma=settings.dr_sigma)
      stack_loss += settings.dr_weight * dr
      add("loss_dr", dr)
    total = total + weight * stack_loss
  return total, terms


def decode_predictions(outputs: Sequence[Dict[str, jax.Array]],
                       crop_to_image: jax.Array, crop_size: int,
                       align_corners: bool = False
                       ) -> tuple[jax.Array, jax.Array]:
  """Soft-argmax of the last stack -> (crop pixels, original pixels) `[B, N, 2]`."""
  crop_points = decode_crop_points(outputs, crop_size, align_corners)
  return crop_points, crop_to_original(crop_points,
                                       crop_to_image.astype(jnp.float32))


def decode_crop_points(outputs: Sequence[Dict[str, jax.Array]],
                       crop_size: int, align_corners: bool = False
                       ) -> jax.Array:
  """Soft-argmax of the last stack's heatmaps -> `[B, N, 2]` crop pixels."""
  coords = loss_lib.soft_argmax(outputs[-1]["heatmaps"])
  return denormalise_landmarks(coords, crop_size, align_corners)


# --------------------------------------------------------------- data ----

class StarData:
  """Lists the records of config.data and serves grain loaders (data.pipeline).

  Listing happens here, at construction: a missing dataset raises
  FileNotFoundError / ValueError with the expected layout before anything is
  compiled.
  """

  def __init__(self, config, scheme: schemes_lib.LandmarkScheme):
    self.config = config
    self.d = config.data
    self.scheme = scheme
    self.train_records = self._list(self.d.train_split, is_train=True)
    self.eval_records = {s: self._list(s, is_train=False)
                         for s in self.d.eval_splits}

  def _list(self, split: str, is_train: bool):
    d = self.d
    if d.name == "synthetic":
      from data import synthetic  # pylint: disable=g-import-not-at-top
      syn = d.synthetic
      n = int(syn.num_train if is_train else syn.num_eval)
      if n <= 0:
        raise ValueError(f"config.data.synthetic.num_{'train' if is_train else 'eval'} "
                         f"must be > 0, got {n}")
      records = synthetic.make_records(
          n, seed=int(syn.seed if is_train else syn.eval_seed),
          image_size=int(syn.image_size),
          # Annotation noise is a property of the training labels; the
          # evaluation faces keep their exact points.
          contour_noise=float(syn.contour_noise) if is_train else 0.0,
          point_noise=float(syn.point_noise) if is_train else 0.0)
    else:
      from data import readers  # pylint: disable=g-import-not-at-top
      root = data_root(self.config)
      if not root:
        raise ValueError(
            f"config.data.root is empty: pass --config.data.root=/path/to/"
            f"{d.name}. Expected layout:\n{_reader_layout(d.name)}")
      listing = readers.read_dataset(d.name, root, split,
                                     check_images=d.get("check_images", "exists"))
      if listing.problems:
        print(listing.summary(), flush=True)
      records = list(listing)
      if not records:
        raise ValueError(
            f"{d.name} split {split!r} under {root} has no usable faces "
            f"(problems: {len(listing.problems)}). Expected layout:\n"
            f"{_reader_layout(d.name)}")
    n_points = records[0].num_points
    if n_points != self.scheme.num_points:
      raise ValueError(
          f"{d.name} {split} has {n_points} points per face but "
          f"config.data.scheme={d.scheme!r} has {self.scheme.num_points}")
    return records

  def num_train_examples(self) -> int:
    return len(self.train_records)

  def _loader_options(self):
    d = self.d
    return dict(scheme=self.scheme, crop_size=int(d.crop_size),
                crop_mode=d.crop_mode,
                points_margin=float(d.get("points_margin", 1.25)),
                num_workers=int(d.num_workers),
                worker_buffer_size=int(d.get("prefetch_buffer_size", 2)))

  def train_iterator(self, local_batch_size: int):
    """Infinite shuffled, augmented batches; grain get_state/set_state."""
    from data import pipeline  # pylint: disable=g-import-not-at-top
    loader = pipeline.make_landmark_loader(
        self.train_records, train=True, batch_size=local_batch_size,
        seed=int(self.config.seed), augment_config=dict(self.d.augment),
        **self._loader_options())
    return iter(loader)

  def eval_iterators(self, local_batch_size: int):
    """split -> factory of one ordered, padded pass (`valid` marks padding)."""
    from data import pipeline  # pylint: disable=g-import-not-at-top

    def factory(records):
      return lambda: iter(pipeline.make_eval_loader(
          records, batch_size=local_batch_size, **self._loader_options()))
    return {split: factory(r) for split, r in self.eval_records.items()}

  def eval_groups(self, split: str, indices: np.ndarray
                  ) -> Dict[str, np.ndarray]:
    """Named boolean masks over the evaluated faces (in `indices` order).

    0/1 record attributes (WFLW pose, expression, ...) when
    data.attribute_groups, and data.subset_groups (name -> record subsets,
    e.g. 300W common = helen_testset + lfpw_testset).
    """
    records = [self.eval_records[split][int(i)] for i in indices]
    groups: Dict[str, np.ndarray] = {}
    if self.d.get("attribute_groups", True) and records:
      for key in records[0].attributes:
        values = np.array([r.attributes.get(key, -1) for r in records])
        if values.dtype.kind in "biu" and set(np.unique(values)) <= {0, 1}:
          groups[key] = values.astype(bool)
    subset_groups = self.d.get("subset_groups", None) or {}
    for name, subsets in dict(subset_groups).items():
      subsets = (subsets,) if isinstance(subsets, str) else tuple(subsets)
      groups[name] = np.array([r.subset in subsets for r in records], bool)
    return groups


def _reader_layout(name: str) -> str:
  import importlib  # pylint: disable=g-import-not-at-top
  from data import readers  # pylint: disable=g-import-not-at-top
  try:
    module_name = readers._READERS[name][0]  # pylint: disable=protected-access
    return getattr(importlib.import_module(f"data.readers.{module_name}"),
                   "LAYOUT", "(see data/readers)")
  except (KeyError, ImportError):
    return f"(see data/readers; known datasets: {readers.NAMES})"


# ------------------------------------------------------------- method ----

def _model_from_config(config, scheme) -> model_lib.StackedHourglass:
  m = config.model
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[
      m.get("dtype", "float32")]
  edges = tuple(tuple(int(i) for i in e) for e in scheme.edges)
  use_aam = bool(m.get("use_aam", True)) and bool(edges)
  return model_lib.StackedHourglass(
      num_points=scheme.num_points, edges=edges if use_aam else (),
      num_stacks=int(m.num_stacks), depth=int(m.depth), width=int(m.width),
      use_aam=use_aam,
      heatmap_activation=m.get("heatmap_activation", "instance_norm_relu"),
      dtype=dtype, input_bgr=bool(m.get("input_bgr", False)),
      conv3x3=m.get("conv3x3", "auto"))


class StarMethod(loop_lib.DataFromAttribute):
  """STAR training/evaluation for training.loop (interface in its docstring)."""

  best_mode = "min"

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
    self.loss_settings = LossSettings.from_config(config.get("loss", None))
    self.model = _model_from_config(config, self.scheme)
    self.best_metric = config.get("best_metric", None)
    self._data = data

  @property
  def data(self):
    """The StarData, listed on first use (summary mode never lists data)."""
    if self._data is None:
      self._data = StarData(self.config, self.scheme)
    return self._data

  # --- data ---
  def dummy_batch(self, batch_size: int) -> Dict[str, np.ndarray]:
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
  def init_variables(self, rng, batch):
    variables = self.model.init(rng, batch["image"], train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return params, model_state

  def forward(self, params, model_state, batch):
    return self.model.apply({"params": params, **model_state}, batch["image"],
                            train=False)

  def loss_fn(self, params, model_state, batch, rng, step):
    del rng, step
    outputs, new_state = self.model.apply(
        {"params": params, **model_state}, batch["image"], train=True,
        mutable=list(model_state.keys()))
    loss, terms = star_training_loss(outputs, batch["landmarks"],
                                     self.loss_settings, self.scheme,
                                     self.crop_size)
    _, pred = decode_predictions(outputs, batch["crop_to_image"],
                                 self.crop_size,
                                 self.loss_settings.align_corners)
    left, right = metrics_lib.normaliser(self.config.eval.normaliser)
    terms["nme"] = jnp.mean(metrics_lib.nme(
        pred, batch["landmarks_original"].astype(jnp.float32), left, right))
    return loss, (dict(new_state), terms)

  def predict_crop_points(self, params, model_state, images) -> jax.Array:
    """`[B, S, S, 3]` uint8 crops -> `[B, N, 2]` soft-argmax points, crop px."""
    outputs = self.model.apply({"params": params, **model_state}, images,
                               train=False)
    return decode_crop_points(outputs, self.crop_size,
                              self.loss_settings.align_corners)

  @property
  def normalisers(self) -> Dict[str, str]:
    """Output key -> normaliser of the per-face NMEs (`eval_normalisers`)."""
    return eval_normalisers(self.config.eval.normaliser,
                            self.scheme.num_points)

  def eval_step(self, params, model_state, batch):
    """Per face: "pred" `[B, N, 2]` (original px), "nme" and the NMEs of the
    other normalisers (`normalisers`) `[B]`, "index" `[B]`."""
    predict = functools.partial(self.predict_crop_points, params, model_state)
    if bool(self.config.eval.get("flip_test", False)):
      crop = flip_test_average(predict, batch["image"],
                               self.scheme.flip_permutation)
    else:
      crop = predict(batch["image"])
    pred = crop_to_original(crop, batch["crop_to_image"].astype(jnp.float32))
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
    from star_jax import report  # pylint: disable=g-import-not-at-top
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


def data_root(config) -> str:
  root = config.data.get("root", "")
  return os.path.expanduser(root) if root else ""



# ------------------------------------------------------------- config ----

def base_config():
  """STAR defaults shared by configs/*_star.py (the public code's settings).

  Each config file overrides the data section and whatever differs; the
  fields are documented here once.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.method = "star"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "wflw"            # data.readers name, or "synthetic".
  c.data.root = ""                # dataset folder (--config.data.root=...).
  c.data.scheme = "wflw"          # data.schemes name or point count.
  c.data.train_split = "train"
  c.data.eval_splits = ("test",)
  c.data.crop_size = 256
  c.data.crop_mode = "auto"       # data.transforms: auto|center_scale|box|points
  c.data.points_margin = 1.25     # box side factor of crop_mode "points".
  c.data.num_workers = 0          # grain worker processes (0: in-process).
  c.data.prefetch_buffer_size = 2
  c.data.check_images = "exists"  # reader check: none|exists|verify|decode
  # Per-subset metrics of an eval split: record attributes that are 0/1 flags
  # (WFLW pose, ...) and named groups of record subsets (300W common, ...).
  c.data.attribute_groups = True
  c.data.subset_groups = ml_collections.ConfigDict()
  c.data.augment = ml_collections.ConfigDict(dict(
      flip_prob=0.5, shift_sigma=0.05, rotate_sigma_deg=18.0, scale_sigma=0.1,
      occlusion_prob=0.4, blur_prob=0.3, blur_max_ratio=0.05, gamma_prob=0.2,
      noise_prob=0.2, noise_max_alpha=0.5, gray_prob=0.2))
  # Only for name == "synthetic" (data.synthetic.make_records).
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_train=0, num_eval=0, image_size=128, seed=0, eval_seed=1,
      contour_noise=0.0, point_noise=0.0))

  c.model = ml_collections.ConfigDict(dict(
      num_stacks=4, depth=4, width=256, use_aam=True,
      heatmap_activation="instance_norm_relu", dtype="float32",
      input_bgr=False,
      # How 3x3 convolutions compute (same maths): "auto" = Winograd matmuls
      # where faster (XLA:CPU, f32, star_jax/winograd.py), "xla", "winograd".
      conv3x3="auto"))

  c.loss = ml_collections.ConfigDict(dict(
      star=True, distance="smooth_l1", w=1.0, restriction="value",
      value_form="code",
      eigenvalue_clamp=config_dict.placeholder(tuple),
      star_weight=1.0, pointmap_weight=10.0, edgemap_weight=10.0,
      dr_weight=0.0, dr_sigma=1.0, align_corners=False, baseline_on="norm",
      target_mode="public"))

  # flip_test: horizontal-flip test-time augmentation (off, as the public
  # code; see the module docstring).
  c.eval = ml_collections.ConfigDict(dict(normaliser="wflw", threshold=0.1,
                                          step=1e-4, flip_test=False))

  c.batch_size = 128                # global (public: 4 GPUs x 32).
  c.eval_batch_size = 128
  c.num_epochs = 500
  c.max_steps = 0                   # > 0 overrides num_epochs.
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
      schedule="step", decay_epochs=(200, 350, 450), decay_factor=0.1))
  c.ema = ml_collections.ConfigDict(dict(enabled=True,
                                         half_life_examples=10000.0,
                                         decay=0.0))  # 0: from half-life.
  c.fsdp = False
  c.fsdp_min_size = 2**14
  c.distributed = False
  c.log_every_steps = 50
  c.progress_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  c.eval_every_epochs = 1
  c.eval_checkpoint = "latest"      # --mode=eval: latest | best
  c.best_metric = "test_ema/nme"
  c.resume_may_change = ()
  # Persistent XLA compilation cache: "" off, "workdir", or a path.
  c.compilation_cache_dir = "~/.cache/star_jax/xla"
  return c

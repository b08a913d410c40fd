"""SCE-MAE stage 2: CARB + LCR on a frozen MAE encoder (paper Sec. 3.2-3.3).

Per training image (96 x 96, patch 8, N = 144 patch tokens):

  1. The frozen stage-1 encoder (`backbone.py`) runs once with
     `return_attention_layers=(L_c,)` and `return_layers=(L_c,)`, L_c = 3
     ("clustering after the third encoder layer").
  2. CARB (`carb.carb_select_batch`): eq. 1 CLS-to-patch attention of layer
     L_c (head-averaged) -> the top `eta N` attentive tokens; density-peak
     clustering of the inattentive tokens of layer L_c into K = 4 centres.
  3. The kept set (attentive tokens + K centres) takes its features from the
     LAST encoder layer (final-normed tokens, `output_tokens`): the paper says
     the projector refines "the vanilla last layer features of the pretrained
     MAE" (Sec. 4.3, Table 4 "Baseline") while the clustering happens after
     layer 3; so layer 3 decides *which* tokens are kept and *how they are
     grouped*, the last layer gives *what* is projected. (Option
     `carb.feature_layer`: an int layer instead of "last".)
  4. The light projector (1x1 conv + L2 norm, `projector.py`) maps them to
     `projector.dim` (64/128/256) and the LCR loss (eq. 4-7, `lcr.py`) is
     minimised. Only the projector is trainable: `trainable_mask` freezes the
     encoder (no gradient, no optimizer state); the encoder output is also
     wrapped in `stop_gradient`.

Inference (matching, detection, t-SNE) never clusters: `dense_features`
computes cover-and-stride features (`dense.py`, stride `inference.stride`,
vmapped over the shifts) of the backbone, of the projector, or both
concatenated (detection).

Data. `config.data.name`:
  * "mtfl" (the shared 80 x 80 MTFL copy, ../shared/data/mtfl): the lines of
    `training.txt` in file order are split ONCE by a seeded permutation,
    `perm = np.random.default_rng(data.split_seed=0).permutation(n_lines)`:
    "val" = the faces `perm[:data.num_val=1000]`, "train" = the rest
    (`splits.fixed_split` over the listed paths; faces the reader skips stay
    out of both).
  * any other reader name (celeba, mafl, aflw_m, aflw_r, 300w, ...): its own
    splits through `data.readers.read_dataset`. `data.eval_name` /
    `data.eval_root` evaluate on another folder (e.g. the MTFL `testing.txt`
    layout with `eval_name="aflw_m"`, `eval_splits=("test",)`).

Crops never come from the labels (`data.crop_mode`, `data.pipeline.sce_crop`):
"center" (the whole pre-cropped image: MTFL / AFLW_M as the set crops them,
resized to 136, centre 96, DVE's protocol) or "dve_celeba" (CelebA / MAFL).
The label-derived "points" crop (the box of each face's own landmarks) lets
the answer in: every face lands centred and scaled by its labels, so
position alone separates the landmarks. It is refused here unless
`data.allow_label_crops=True` is set explicitly (`check_label_free_crop`).

Evaluation inside the training loop: the LCR loss on the eval split with a
fixed key (`<split>/lcr`); the landmark protocols are separate modes
(`--mode=matching|tsne`, see `extra_modes`) and the detection method.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import pipeline
from data import readers
from data import records as records_lib
from landmarks import plots
from sce_mae_jax import backbone as backbone_lib
from sce_mae_jax import carb as carb_lib
from sce_mae_jax import dense as dense_lib
from sce_mae_jax import lcr as lcr_lib
from sce_mae_jax import matching
from sce_mae_jax import projector as projector_lib
from sce_mae_jax import splits as splits_lib
from sce_mae_jax import tsne
from training import checkpoints as ckpt_lib
from training import errors
from training import loop
from training import method as method_base

FEATURE_KINDS = ("backbone", "projector", "concat", "backbone_carb")


# ------------------------------------------------------------------ data ----

fixed_split = splits_lib.fixed_split


LABEL_DERIVED_CROPS = ("points",)


def check_label_free_crop(config) -> None:
  """Refuses a crop placed by the ground-truth points (module docstring)."""
  mode = config.data.get("crop_mode", "center")
  if mode in LABEL_DERIVED_CROPS and not config.data.get("allow_label_crops",
                                                         False):
    raise errors.UserError(
        f"config.data.crop_mode={mode!r} places each crop by the face's own "
        "ground-truth landmarks, which a self-supervised method must not "
        "see. Use 'center' (the whole pre-cropped image, DVE's AFLW_M / MTFL "
        "protocol) or 'dve_celeba', or set --config.data.allow_label_crops="
        "True to run the label-derived crop knowingly.")


def list_records(config, split: str, eval_set: bool = False) -> list:
  """FaceRecords of `config.data` for `split` (see the module docstring).

  With `eval_set`, `data.eval_name` / `data.eval_root` (when set) replace
  `data.name` / `data.root` (e.g. train on CelebA, evaluate on MAFL).
  """
  d = config.data
  root = d.get("root", "") or ""
  name = d.name
  if eval_set and d.get("eval_name", ""):
    name = d.eval_name
    root = d.get("eval_root", "") or root
  options = {"check_images": d.get("check_images", "exists")}
  if name in readers.SANITY_READERS:
    options["sanity"] = d.get("sanity", "skip")
  if name != "mtfl":
    return readers.list_faces(name, root, split, **options)
  if split not in ("train", "val"):
    raise errors.UserError(
        f"mtfl splits are 'train' and 'val' (a fixed split of "
        f"training.txt), got {split!r}.")
  # The split is over the lines of training.txt (splits.mtfl_split_paths),
  # so a face the reader skips does not move any other face across it.
  root = readers.resolve_root(root)
  keep = set(splits_lib.mtfl_split_paths(root, split, int(d.num_val),
                                         int(d.split_seed))) if root else set()
  return readers.list_faces(
      "mtfl", root, "train",
      keep=lambda r: os.path.normpath(r.image_path) in keep, **options)


def make_loader(config, records, *, train: bool, batch_size: int,
                num_epochs: Optional[int] = None):
  d = config.data
  return pipeline.make_sce_landmark_loader(
      records, train=train, batch_size=batch_size, seed=int(config.seed),
      mode=d.crop_mode, margin=float(d.margin),
      num_workers=int(d.get("num_workers", 0)), num_epochs=num_epochs)


def load_arrays(config, records, batch_size: int = 64
                ) -> Dict[str, np.ndarray]:
  """All eval crops of `records` in order: `image` uint8 `[n, 96, 96, 3]`,
  `landmarks` (crop px), `landmarks_original`, `crop_to_image`."""
  loader = make_loader(config, records, train=False, batch_size=batch_size,
                       num_epochs=1)
  chunks: Dict[str, list] = {}
  for batch in loader:
    keep = np.asarray(batch["valid"]).astype(bool)
    for k in ("image", "landmarks", "landmarks_original", "crop_to_image",
              "index"):
      chunks.setdefault(k, []).append(np.asarray(batch[k])[keep])
  out = {k: np.concatenate(v) for k, v in chunks.items()}
  order = np.argsort(out["index"], kind="stable")
  return {k: v[order] for k, v in out.items()}


# ----------------------------------------------------------------- model ----

class FeatureModel:
  """Frozen encoder + light projector; pure functions of `params`.

  `params = {"encoder": ..., "projector": ...}`.
  """

  def __init__(self, config):
    self.config = config
    self.encoder = backbone_lib.encoder_from_config(config)
    self.projector = projector_lib.projector_from_config(config)
    self.projector_is_spatial = (
        config.projector.get("kind", "linear") == "spatial_softmax")
    self.normalise = config.backbone.get("normalise", "imagenet")
    c = config.carb
    self.carb_layer = int(c.layer)
    fl = c.get("feature_layer", "last")
    self.feature_layer = None if fl in ("last", None) else int(fl)
    self.carb_kwargs = dict(eta=float(c.eta), num_clusters=int(c.num_clusters),
                            knn=int(c.knn), replace=c.get("replace", "centre"),
                            scale_by_dim=bool(c.get("scale_by_dim", True)),
                            grid_shape=(self.encoder.grid_size,) * 2)
    if not 1 <= self.carb_layer <= self.encoder.depth:
      raise errors.UserError(
          f"carb.layer must be in [1, {self.encoder.depth}], got "
          f"{self.carb_layer}.")

  # --- init ---
  def init_projector(self, rng):
    x = jnp.zeros((1, 2, self.encoder.width), jnp.float32)
    return self.projector.init(rng, x)["params"]

  # --- encoder pieces ---
  def encode(self, enc_params, images_uint8, *, with_carb: bool = False):
    """Returns `(last-layer patch tokens [B, N, C], layer-L_c tokens or None,
    eq.-1 CLS similarity [B, N] or None)`; no CLS token in the outputs."""
    x = backbone_lib.normalise_images(images_uint8, self.normalise)
    layers = ()
    if with_carb:
      layers = (self.carb_layer,)
      if self.feature_layer is not None:
        layers = tuple(sorted({self.carb_layer, self.feature_layer}))
    out = self.encoder.apply(
        {"params": enc_params}, x, return_layers=layers,
        return_attention_layers=(self.carb_layer,) if with_carb else ())
    tokens = out.tokens[:, 1:]
    if self.feature_layer is not None and with_carb:
      tokens = out.layers[self.feature_layer][:, 1:]
    if not with_carb:
      return tokens, None, None
    sim = carb_lib.cls_attention_from_map(out.attentions[self.carb_layer])
    return tokens, out.layers[self.carb_layer][:, 1:], sim

  def carb(self, enc_params, images_uint8, key=None):
    """CARB selection (`carb.CarbSelection`, batched) of frozen features."""
    encoded = self.encode(enc_params, images_uint8, with_carb=True)
    return self.carb_of_encoded(*encoded, key=key)

  def carb_of_encoded(self, tokens, early, sim, key=None):
    """CARB selection from `encode(..., with_carb=True)`'s outputs (live or
    cached, `EncodedTrainSet`)."""
    tokens, early, sim = jax.lax.stop_gradient((tokens, early, sim))
    return carb_lib.carb_select_batch(sim, early, key, output_tokens=tokens,
                                      **self.carb_kwargs)

  def lcr_per_image(self, params, images_uint8, key=None):
    """`[B]` eq. 7 per image on the projected kept tokens."""
    return self.lcr_of_selection(params,
                                 self.carb(params["encoder"], images_uint8,
                                           key))

  def lcr_of_selection(self, params, sel):
    """`[B]` eq. 7 of a `CarbSelection` (batched)."""
    if self.projector_is_spatial:
      # The spatial softmax needs the image's whole grid: project the
      # CARB-substituted map, then keep the kept tokens' rows.
      full = self.projector.apply({"params": params["projector"]},
                                  sel.approx_tokens)
      phi = jnp.take_along_axis(full, sel.kept_index[..., None], axis=1)
    else:
      phi = self.projector.apply({"params": params["projector"]},
                                 sel.kept_features)
    c = self.config.lcr
    return lcr_lib.lcr_loss_per_image(
        phi, sel.kept_positions, sel.kept_is_attentive, tau=float(c.tau),
        r_att_att=float(c.r_att_att), r_att_inatt=float(c.r_att_inatt),
        r_inatt_inatt=float(c.r_inatt_inatt),
        position_scale=float(c.position_scale),
        exclude_self=bool(c.exclude_self),
        anchor_reduction=c.anchor_reduction,
        locality=c.get("locality", "log"))

  # --- inference ---
  def token_features(self, params, images_uint8, kind: str = "projector"):
    """Patch-grid features `[B, N, D]` of one kind (see `FEATURE_KINDS`).

    "backbone": last-layer tokens (raw MAE, Table 4 Baseline);
    "projector": projected, unit-norm (SCE-MAE); "concat": both concatenated
    (detection input, Sec. 4.2); "backbone_carb": last-layer tokens with the
    inattentive ones replaced by their CARB centres (Table 4 "cluster, no
    LCR"; deterministic, no tie-break noise).
    """
    if kind not in FEATURE_KINDS:
      raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got "
                       f"{kind!r}.")
    if kind == "backbone_carb":
      return self.carb(params["encoder"], images_uint8).approx_tokens
    tokens, _, _ = self.encode(params["encoder"], images_uint8)
    if kind == "backbone":
      return tokens
    phi = self.projector.apply({"params": params["projector"]}, tokens)
    if kind == "projector":
      return phi
    return jnp.concatenate([tokens, phi], axis=-1)

  def dense_features(self, params, images_uint8, kind: str = "projector",
                     stride: Optional[int] = None,
                     shift_batching: str = "vmap"):
    """Cover-and-stride features `[B, S/s, S/s, D]` (no clustering)."""
    s = int(stride or self.config.inference.stride)
    encode = lambda im: self.token_features(params, im, kind)
    # Shifted windows are built from the uint8 images cast to float: padding
    # ("edge") happens before normalisation, which `encode` applies.
    return dense_lib.cover_and_stride(
        encode, images_uint8.astype(jnp.float32), self.encoder.patch_size, s,
        padding=self.config.inference.get("padding", "edge"),
        shift_batching=shift_batching)


# -------------------------------------------------- cached encoder path ----

class EncodedTrainSet:
  """The frozen encoder's outputs for every training crop and its mirror.

  Stage 2 trains only the projector; the encoder is frozen and the only
  augmentation is a horizontal flip, so `encode(..., with_carb=True)` of each
  crop and of its mirror image can be computed once (`cache_encoder=True`)
  instead of in every step: the same maths, a fraction of the compute.
  Arrays `[2, n, ...]` (0: as cropped, 1: mirrored), float32.
  """

  def __init__(self, model: "FeatureModel", enc_params, images: np.ndarray,
               batch_size: int = 64):
    fn = jax.jit(lambda im: model.encode(enc_params, im, with_carb=True))
    n = images.shape[0]
    self.arrays = None          # filled in place: no second copy in memory.
    for v in range(2):
      for i in range(0, n, batch_size):
        chunk = images[i:i + batch_size]
        if v:
          chunk = chunk[:, :, ::-1]
        out = dict(zip(("tokens", "early", "sim"), jax.device_get(
            fn(jnp.asarray(np.ascontiguousarray(chunk))))))
        if self.arrays is None:
          self.arrays = {k: np.empty((2, n) + x.shape[1:], np.float32)
                         for k, x in out.items()}
        for k, x in out.items():
          self.arrays[k][v, i:i + x.shape[0]] = x

  def __len__(self) -> int:
    return self.arrays["sim"].shape[1]


class EncodedIterator:
  """Batches of an `EncodedTrainSet`: a seeded permutation per epoch, each
  face mirrored with probability 0.5 (seeded per epoch), the last partial
  batch dropped; `get_state` / `set_state` for exact resume."""

  def __init__(self, encoded: EncodedTrainSet, batch_size: int, seed: int):
    if len(encoded) < batch_size:
      raise ValueError(f"{len(encoded)} training faces are fewer than one "
                       f"batch of {batch_size}.")
    self.encoded, self.batch_size, self.seed = encoded, batch_size, seed
    self.epoch, self.position = 0, 0
    self._order_of = (-1, None)

  def _order(self):
    """`(permutation, mirror flags)` of the current epoch, drawn once."""
    if self._order_of[0] != self.epoch:
      rng = np.random.default_rng([self.seed, self.epoch])
      n = len(self.encoded)
      self._order_of = (self.epoch, (rng.permutation(n),
                                     (rng.random(n) < 0.5).astype(np.int64)))
    return self._order_of[1]

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, np.ndarray]:
    if self.position + self.batch_size > len(self.encoded):
      self.epoch, self.position = self.epoch + 1, 0
    perm, flip = self._order()
    idx = perm[self.position:self.position + self.batch_size]
    self.position += self.batch_size
    a = self.encoded.arrays
    batch = {k: a[k][flip[idx], idx] for k in ("tokens", "early", "sim")}
    batch["valid"] = np.ones((self.batch_size,), bool)
    return batch

  def get_state(self) -> Dict[str, int]:
    return {"epoch": self.epoch, "position": self.position}

  def set_state(self, state: Dict[str, int]) -> None:
    self.epoch, self.position = int(state["epoch"]), int(state["position"])


# ---------------------------------------------------------------- method ----

class Stage2Method(method_base.Method):
  """CARB + LCR training of the projector (interface: training/method.py)."""

  best_metric = "val/lcr"
  best_mode = "min"
  resumable_fields = ("data.root", "data.num_workers")

  def __init__(self, config, train_records=None, eval_records=None):
    check_label_free_crop(config)
    self.config = config
    self.model = FeatureModel(config)
    self.size = self.model.encoder.image_size
    self._encoder_params = None
    self._encoded = None
    # Listed on first use (`train_records`, `eval_records`): --mode=summary
    # needs only shapes, --mode=eval only the eval splits.
    self._train_records = train_records
    self._eval_records = eval_records
    self.extra_modes = {"matching": _matching_mode, "tsne": _tsne_mode}
    # Loaded now, eagerly: `init_variables` runs under jit/eval_shape traces,
    # where an orbax restore cannot run.
    self.load_frozen()

  # --- frozen backbone ---
  def load_frozen(self):
    self.encoder_params()

  def encoder_params(self):
    if self._encoder_params is None:
      self._encoder_params = backbone_lib.backbone_params(self.config,
                                                          self.model.encoder)
    return self._encoder_params

  # --- data ---
  @property
  def train_records(self) -> list:
    if self._train_records is None:
      self._train_records = list_records(self.config,
                                         self.config.data.train_split)
    return self._train_records

  @property
  def eval_records(self) -> Dict[str, list]:
    if self._eval_records is None:
      self._eval_records = {
          s: list_records(self.config, s, eval_set=True)
          for s in self.config.data.eval_splits}
    return self._eval_records

  def num_train_examples(self) -> int:
    return len(self.train_records)

  # Stage 2 is self-supervised: its fingerprint holds no landmarks.
  listing_labels = False

  def train_listing(self):
    """Files (and, for a supervised subclass, labels) trained on, for the
    checkpoint's fingerprint."""
    return records_lib.training_listing(self.train_records,
                                        with_labels=self.listing_labels)

  @property
  def num_points(self) -> int:
    """Landmarks per face: the data's once listed (training and evaluation
    list it before building anything), else the 5 points of the sets stage 2
    runs on (--mode=summary lists no data)."""
    return self._train_records[0].num_points if self._train_records else 5

  def train_iterator(self, local_batch_size: int):
    if not self.config.get("cache_encoder", False):
      return iter(make_loader(self.config, self.train_records, train=True,
                              batch_size=local_batch_size))
    if self._encoded is None:
      arrays = load_arrays(self.config, self.train_records)
      self._encoded = EncodedTrainSet(self.model, self.encoder_params(),
                                      arrays["image"])
    return EncodedIterator(self._encoded, local_batch_size,
                           int(self.config.seed))

  def eval_iterators(self, local_batch_size: int):
    def factory(records):
      return lambda: make_loader(self.config, records, train=False,
                                 batch_size=local_batch_size, num_epochs=1)
    return {s: factory(r) for s, r in self.eval_records.items()}

  def dummy_batch(self, batch_size: int) -> Dict[str, np.ndarray]:
    s = self.size
    n = self.num_points
    pts = np.full((batch_size, n, 2), s / 2.0, np.float32)
    return {"image": np.zeros((batch_size, s, s, 3), np.uint8),
            "landmarks": pts, "landmarks_original": pts.copy(),
            "visible": np.ones((batch_size, n), bool),
            "crop_to_image": np.tile(np.eye(2, 3, dtype=np.float32),
                                     (batch_size, 1, 1)),
            "valid": np.ones((batch_size,), bool),
            "index": np.arange(batch_size, dtype=np.int32)}

  # --- model ---
  def init_variables(self, rng, batch):
    del batch
    enc = jax.tree.map(jnp.asarray, self.encoder_params())
    return {"encoder": enc,
            "projector": self.model.init_projector(rng)}, {}

  def trainable_mask(self, params):
    return {"encoder": jax.tree.map(lambda _: False, params["encoder"]),
            "projector": jax.tree.map(lambda _: True, params["projector"])}

  def forward(self, params, model_state, batch):
    del model_state
    return self.model.dense_features(params, batch["image"], "projector")

  def loss_fn(self, params, model_state, batch, rng, step):
    del step
    if "tokens" in batch:   # cached frozen-encoder outputs (cache_encoder)
      sel = self.model.carb_of_encoded(batch["tokens"], batch["early"],
                                       batch["sim"], key=rng)
      per_image = self.model.lcr_of_selection(params, sel)
    else:
      per_image = self.model.lcr_per_image(params, batch["image"], rng)
    w = batch["valid"].astype(jnp.float32)
    loss = jnp.sum(w * per_image) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, (model_state, {"lcr": loss})

  def eval_step(self, params, model_state, batch):
    del model_state
    return {"lcr": self.model.lcr_per_image(params, batch["image"], None)}

  def evaluate(self, outputs: Dict[str, np.ndarray], split: str
               ) -> Dict[str, float]:
    del split
    return {"lcr": float(np.mean(outputs["lcr"]))}


# ------------------------------------------------------------- modes ----

def restore_params(method, config, workdir: str):
  """Stage-2 params of `workdir` (latest / config.eval_checkpoint), or the
  initial ones (random projector) when `workdir` has no checkpoint."""
  trainer = loop.Trainer(method, config, train=False)
  which = config.get("eval_checkpoint", "latest")
  if workdir and os.path.isdir(os.path.join(workdir,
                                            ckpt_lib.SUBDIRS["latest"])):
    try:
      return ckpt_lib.restore_run(
          workdir, which=which, params="raw",
          abstract_state=trainer.abstract_state,
          best_metric=method.best_metric, best_mode=method.best_mode).params
    except errors.MissingInputError:
      pass  # no (such) checkpoint step yet.
  print(f"no stage-2 checkpoint in {workdir!r}: using the initial "
        "(untrained) projector", flush=True)
  return trainer.init_state().params


def _eval_arrays(method, config):
  split = config.data.eval_splits[0]
  return load_arrays(config, method.eval_records[split])


def _matching_mode(method, config, workdir):
  params = restore_params(method, config, workdir)
  arrays = _eval_arrays(method, config)
  pairs = matching.make_pairs(arrays["image"], arrays["landmarks"],
                              int(config.matching.num_pairs),
                              int(config.seed), dict(config.matching.warp))
  examples = []
  result = matching.evaluate_matching(
      method.model, params, arrays, kind=config.matching.feature_kind,
      pairs=pairs, examples=examples)
  print(matching.format_result(result), flush=True)
  # The trivial references, by the same code on the same pairs.
  train = load_arrays(config, method.train_records)
  result["identity_baseline"] = matching.baseline_matching(pairs)
  result["mean_shape_baseline"] = matching.baseline_matching(
      pairs, np.mean(train["landmarks"], axis=0))
  for tag in ("identity_baseline", "mean_shape_baseline"):
    print(f"  reference {matching.format_result(result[tag])}", flush=True)
  matching.write_result(result, os.path.join(workdir, "matching.json"))
  for tag in ("same", "diff"):
    shown = [e for e in examples if e["kind"] == tag][:4]
    if shown:
      plots.matching_pairs(
          shown, path=os.path.join(workdir, f"matching_{tag}.png"))
  return result


def _tsne_mode(method, config, workdir):
  params = restore_params(method, config, workdir)
  arrays = _eval_arrays(method, config)
  return tsne.run_feature_quality(method.model, params, arrays, config,
                                  workdir)


def make_method(config) -> Stage2Method:
  return Stage2Method(config)

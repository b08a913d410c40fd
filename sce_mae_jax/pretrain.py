"""SCE-MAE stage 1: MAE pretraining as a method of the training loop.

The loop (training/loop.py, interface in its docstring) owns the jitted and
sharded step, checkpoints, resume, logging and progress; this module supplies
the data, the model and the loss:

  * Data (`PretrainData`): image-only training batches `{"image": uint8
    [B, 96, 96, 3]}` from `data.pipeline.make_pretrain_loader` (SCE / DVE crop,
    then random-resized-crop + horizontal flip), and a fixed held-out set
    (SCE / DVE crop only, no augmentation) kept in memory.
  * Images are normalised inside the jitted step, `(x / 255 - mean) / std`
    with the ImageNet mean/std (as MAE).
  * Training loss: `mae.mae_loss`, the per-patch MSE averaged over the masked
    patches (norm_pix_loss by default); the masking draws from the step's rng
    (`fold_in(seed rng, step)`), so a resumed run masks exactly as a straight
    one.
  * Evaluation (`heldout/masked_loss`): the same loss on the held-out set with
    a FIXED masking: example `i`'s noise is `uniform(fold_in(PRNGKey(
    eval.mask_seed), i))`, so the number does not depend on the batch size,
    the device count or the step.
  * Reconstruction grid: the split "reconstruction" (the first
    `eval.num_grid_images` held-out images) returns predictions; `evaluate`
    writes `<workdir>/reconstruction/step_<step>.png` and
    `<workdir>/reconstruction.png` (latest) when the loop has told the method
    its workdir and step through the optional hook `begin_eval(step, workdir)`
    (see sce_mae_jax/reconstruction.py for the panels). `--mode=reconstruct`
    writes the grid of the latest checkpoint with no hook.
  * Weight decay: `weight_decay_mask(params)` is True for the parameters that
    decay (dense / conv kernels) and False for biases, LayerNorm parameters
    (every parameter with ndim <= 1) and the tokens named in
    `optimizer.weight_decay_exclude` (pos_embed, cls_token, mask_token).

Data sets (`config.data.name`):
  "celeba"  CelebA train partition minus the MAFL test images (the SCE-MAE /
            DVE pretraining set), crop "dve_celeba"; held out: MAFL test.
  "faces"   every image file under `<yt68_root>/images` (labelled and
            unlabelled frames) and the MTFL faces of the fixed "train" split
            (`splits.mtfl_split_paths`; the MTFL val faces are never seen),
            except the frames of the yt68 *val* identities, which are the
            held-out set (identity = file name without its `_NN.jpg` frame
            suffix). Crop "center" (the frames are loose face crops).
  "folder"  every image under `data.root` for training and under
            `data.eval_root` for evaluation (tests, other unlabelled sets).
"""

from __future__ import annotations

import csv
import functools
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data import pipeline
from data import readers
from data import records as records_lib
from data.readers import common as readers_common
from sce_mae_jax import mae as mae_lib
from sce_mae_jax import reconstruction as recon_lib
from sce_mae_jax import splits as splits_lib
from sce_mae_jax import vit
from training import checkpoints as ckpt_lib
from training import errors
from training import loop
from training import mesh as mesh_lib
from training import method as method_base

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_NO_DECAY = ("pos_embed", "cls_token", "mask_token")
HELDOUT = "heldout"
RECONSTRUCTION = "reconstruction"


# ------------------------------------------------------------ functions ----

def normalise_images(images: jax.Array, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD) -> jax.Array:
  """uint8 `[B, S, S, 3]` -> float32 `(x / 255 - mean) / std`."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def fixed_masking_noise(index: jax.Array, num_patches: int,
                        seed: int) -> jax.Array:
  """Per-example masking noise `[B, N]` that depends only on (seed, index)."""
  key = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.uniform(
      jax.random.fold_in(key, i), (num_patches,)))(index.astype(jnp.int32))


def per_example_masked_loss(pred: jax.Array, images: jax.Array,
                            mask: jax.Array, patch_size: int,
                            norm_pix_loss: bool) -> jax.Array:
  """`mae.mae_loss` per example: `[B]` mean per-patch MSE over masked patches."""
  target = mae_lib.patchify(images.astype(jnp.float32), patch_size)
  if norm_pix_loss:
    target = mae_lib.normalized_pixel_targets(target)
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_patch * mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)


def _path_name(path) -> str:
  parts = []
  for p in path:
    parts.append(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))))
  return "/".join(parts)


def weight_decay_mask(params, exclude: Sequence[str] = DEFAULT_NO_DECAY):
  """True where AdamW's weight decay applies (MAE's parameter groups).

  No decay for every parameter with ndim <= 1 (biases, LayerNorm scale and
  bias) and for parameters whose last path component is in `exclude`. Works on
  nested dicts and on the loop's flat '/'-joined dicts.

  Note: MAE's pretraining script (timm `add_weight_decay`) only exempts 1-D
  parameters and biases, so its 3-D cls/mask tokens do decay; pass
  `exclude=()` for that. The default exempts the pos/cls/mask tokens too, as
  MAE's fine-tuning `no_weight_decay`.
  """
  exclude = tuple(exclude)

  def one(path, x):
    name = _path_name(path).split("/")[-1]
    return bool(np.ndim(x) > 1 and name not in exclude)

  return jax.tree_util.tree_map_with_path(one, params)


# ----------------------------------------------------------------- data ----

def list_images(root: str) -> List[str]:
  """Sorted image files (`is_image_file`) under `root`, recursively."""
  if not os.path.isdir(root):
    raise errors.MissingInputError(
        f"image folder {root!r} does not exist; pass the folder that holds "
        f"the images (files ending in "
        f"{', '.join(readers_common.IMAGE_EXTENSIONS)}), e.g. "
        "--config.data.root=/path/to/images")
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for f in sorted(filenames):
      if readers_common.is_image_file(f):
        out.append(os.path.join(dirpath, f))
  return out


def yt68_identity(path: str) -> str:
  """`.../Luis_Fonsi_21.jpg` -> `Luis_Fonsi` (the frame suffix removed)."""
  return re.sub(r"_\d+$", "", os.path.splitext(os.path.basename(path))[0])


def yt68_val_identities(yt68_root: str) -> set:
  """Identities of the faces listed in `<yt68_root>/val.csv`."""
  path = os.path.join(yt68_root, "val.csv")
  if not os.path.isfile(path):
    raise errors.MissingInputError(
        f"{path} not found: data.yt68_root must be the yt68 folder with "
        "train.csv, val.csv and images/ (see data/readers/yt68.py)")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))[1:]
  return {yt68_identity(r[0]) for r in rows if r}


def faces_paths(yt68_root: str, mtfl_root: str, mtfl_num_val: int = 1000,
                mtfl_split_seed: int = 0):
  """(train paths, held-out paths) of the "faces" set (module docstring).

  MTFL contributes the images of its fixed "train" split only
  (`splits.mtfl_split_paths`, paths only, no coordinates read), so the MTFL
  val faces that stage 2 and the protocols score on are never seen here.
  """
  val_ids = yt68_val_identities(yt68_root)
  yt = list_images(os.path.join(yt68_root, "images"))
  heldout = [p for p in yt if yt68_identity(p) in val_ids]
  train = [p for p in yt if yt68_identity(p) not in val_ids]
  if mtfl_root:
    train += [p for p in splits_lib.mtfl_split_paths(
        mtfl_root, "train", mtfl_num_val, mtfl_split_seed) if os.path.isfile(p)]
  return train, heldout


def celeba_records(root: str, check_images: str = "exists"):
  """(CelebA train minus MAFL test, MAFL test) FaceRecords."""
  test = readers.list_faces("mafl", root, "test", check_images=check_images)
  held = {os.path.basename(r.image_path) for r in test}
  kept = readers.list_faces(
      "celeba", root, "train", check_images=check_images,
      keep=lambda r: os.path.basename(r.image_path) not in held)
  return kept, test


class PretrainData:
  """Training records + the in-memory held-out set of `config.data`."""

  def __init__(self, config):
    self.config = config
    d = config.data
    self.crop_mode = d.get("crop_mode", "center")
    if d.name == "celeba":
      if not d.root:
        raise errors.UserError(
            "config.data.root is empty: pass --config.data.root="
            "/path/to/CelebA (see configs/celeba_mae.py)")
      self.train_records, eval_records = celeba_records(
          os.path.expanduser(d.root), d.get("check_images", "exists"))
    elif d.name == "faces":
      train, heldout = faces_paths(os.path.expanduser(d.yt68_root),
                                   os.path.expanduser(d.mtfl_root),
                                   int(d.get("mtfl_num_val", 1000)),
                                   int(d.get("mtfl_split_seed", 0)))
      self.train_records = pipeline.image_records(train)
      eval_records = pipeline.image_records(heldout)
    elif d.name == "folder":
      self.train_records = pipeline.image_records(
          list_images(os.path.expanduser(d.root)))
      eval_records = pipeline.image_records(
          list_images(os.path.expanduser(d.eval_root)))
    else:
      raise errors.UserError(
          f"unknown config.data.name {d.name!r} for MAE "
          "pretraining; expected 'celeba', 'faces' or 'folder'")
    if not self.train_records:
      raise errors.UserError(
          f"no training images found for data.name={d.name!r}")
    if not eval_records:
      raise errors.UserError(
          f"no held-out images found for data.name={d.name!r}")
    num_eval = int(d.get("num_eval", 0) or 0)
    if num_eval:
      eval_records = eval_records[:num_eval]
    self.eval_records = eval_records
    self._eval_images: Optional[np.ndarray] = None

  def num_train_examples(self) -> int:
    return len(self.train_records)

  def train_listing(self):
    """Files trained on, for the checkpoint's fingerprint (no labels:
    pretraining never reads them)."""
    return records_lib.training_listing(self.train_records, with_labels=False)

  def train_iterator(self, local_batch_size: int) -> Iterator:
    d = self.config.data
    loader = pipeline.make_pretrain_loader(
        self.train_records, batch_size=local_batch_size,
        seed=int(self.config.seed), mode=self.crop_mode,
        margin=float(d.get("margin", 1.25)),
        num_workers=int(d.get("num_workers", 0)),
        rrc_scale=tuple(d.augment.rrc_scale))
    return iter(loader)

  def eval_images(self) -> np.ndarray:
    """uint8 `[n, 96, 96, 3]`: the held-out images, SCE crop, no augmentation.

    An image that cannot be decoded is reported by path and skipped.
    """
    if self._eval_images is None:
      d = self.config.data
      images = []
      for r in self.eval_records:
        try:
          image = r.load_image()
        except (ValueError, OSError) as e:
          print(f"held-out image skipped: {r.image_path} ({e})", flush=True)
          continue
        lm = None if self.crop_mode == "center" else r.landmarks
        crop, _, _ = pipeline.sce_crop(image, lm, self.crop_mode,
                                       float(d.get("margin", 1.25)))
        images.append(crop)
      if not images:
        raise ValueError("no held-out image could be decoded")
      self._eval_images = np.stack(images)
    return self._eval_images

  def eval_iterators(self, local_batch_size: int):
    num_grid = int(self.config.eval.get("num_grid_images", 8))

    def factory(count, grid):
      return lambda: batches_of(self.eval_images()[:count], local_batch_size,
                                grid=grid)
    out = {HELDOUT: factory(None, False)}
    if num_grid:
      out[RECONSTRUCTION] = factory(num_grid, True)
    return out


def batches_of(images: np.ndarray, batch_size: int, grid: bool = False):
  """Fixed batches `{"image", "valid", "index"}` (+ `"grid"`), last padded."""
  n = len(images)
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = idx < n
    batch = {"image": images[np.minimum(idx, n - 1)] * valid[:, None, None,
                                                               None],
             "valid": valid,
             "index": idx.astype(np.int32)}
    batch["image"] = batch["image"].astype(np.uint8)
    if grid:
      batch["grid"] = np.ones((batch_size,), bool)
    yield batch


# ---------------------------------------------------------------- model ----

def model_from_config(config) -> mae_lib.MAE:
  m = config.model
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[m.dtype]
  enc = dict(m.get("encoder_overrides", None) or {})
  decoder = m.get("decoder", None) or None
  if decoder == "custom":
    return mae_lib.MAE(
        encoder=vit.vit_encoder(m.preset, image_size=int(m.image_size),
                                patch_size=int(m.patch_size), dtype=dtype,
                                **enc),
        decoder_width=int(m.decoder_width), decoder_depth=int(m.decoder_depth),
        decoder_heads=int(m.decoder_heads), mask_ratio=float(m.mask_ratio),
        norm_pix_loss=bool(m.norm_pix_loss))
  return mae_lib.mae_model(
      m.preset, decoder=decoder, mask_ratio=float(m.mask_ratio),
      norm_pix_loss=bool(m.norm_pix_loss), image_size=int(m.image_size),
      patch_size=int(m.patch_size), dtype=dtype, **enc)


# --------------------------------------------------------------- method ----

class MaePretrainMethod(method_base.Method):
  """MAE pretraining for training.loop (training/method.py)."""

  best_metric = f"{HELDOUT}/masked_loss"
  best_mode = "min"
  resumable_fields = ("data.root", "data.num_workers")
  model_fields = ("model.",)

  def __init__(self, config, data=None):
    self.config = config
    self.model = model_from_config(config)
    enc = self.model.encoder
    if int(config.model.image_size) != 96:
      raise errors.UserError(
          "data.pipeline serves 96 px crops; model.image_size "
          f"must be 96, got {config.model.image_size}")
    self.patch_size = enc.patch_size
    self.num_patches = enc.num_patches
    self.norm_pix_loss = bool(config.model.norm_pix_loss)
    self.mask_seed = int(config.eval.get("mask_seed", 0))
    self.best_metric = config.get("best_metric", None) or self.best_metric
    self._data = data
    self.workdir: Optional[str] = None
    self.eval_step_number: Optional[int] = None
    self.extra_modes = {"reconstruct": reconstruct_mode}
    self._exclude = tuple(config.optimizer.get("weight_decay_exclude",
                                               DEFAULT_NO_DECAY))

  @property
  def data(self):
    """The PretrainData, listed on first use (summary mode never lists data)."""
    if self._data is None:
      self._data = PretrainData(self.config)
    return self._data

  # --- data ---
  def dummy_batch(self, batch_size: int) -> Dict[str, np.ndarray]:
    s = int(self.config.model.image_size)
    return {"image": np.zeros((batch_size, s, s, 3), np.uint8)}

  # --- optimizer ---
  def weight_decay_mask(self, params):
    return weight_decay_mask(params, self._exclude)

  # --- model ---
  def init_variables(self, rng, batch):
    params_rng, mask_rng = jax.random.split(rng)
    variables = self.model.init({"params": params_rng, "masking": mask_rng},
                                normalise_images(batch["image"]))
    return variables["params"], {}

  def forward(self, params, model_state, batch):
    del model_state
    return self.model.apply(
        {"params": params}, normalise_images(batch["image"]),
        noise=fixed_masking_noise(
            jnp.arange(batch["image"].shape[0]), self.num_patches,
            self.mask_seed))

  def loss_fn(self, params, model_state, batch, rng, step):
    del step
    out = self.model.apply({"params": params},
                           normalise_images(batch["image"]),
                           rngs={"masking": rng})
    return out["loss"], (model_state, {})

  def eval_step(self, params, model_state, batch):
    del model_state
    images = normalise_images(batch["image"])
    noise = fixed_masking_noise(batch["index"], self.num_patches,
                                self.mask_seed)
    out = self.model.apply({"params": params}, images, noise=noise)
    result = {"masked_loss": per_example_masked_loss(
        out["pred"], images, out["mask"], self.patch_size,
        self.norm_pix_loss), "index": batch["index"]}
    if "grid" in batch:
      result["pred"] = out["pred"].astype(jnp.float32)
      result["mask"] = out["mask"]
    return result

  # --- evaluation ---
  def begin_eval(self, step: Optional[int], workdir: Optional[str]) -> None:
    """Optional loop hook: where and for which step `evaluate` writes PNGs.

    `workdir=None` turns the PNGs off.
    """
    self.eval_step_number = None if step is None else int(step)
    self.workdir = workdir

  def evaluate(self, outputs: Dict[str, np.ndarray], split: str
               ) -> Dict[str, float]:
    result = {"masked_loss": float(np.mean(np.asarray(
        outputs["masked_loss"], np.float64)))}
    if split == RECONSTRUCTION:
      if self.workdir and jax.process_index() == 0:
        self.write_grid(outputs, self.workdir, self.eval_step_number)
      return {}
    return result

  def write_grid(self, outputs, workdir: str, step: Optional[int]) -> str:
    """Writes the reconstruction grid PNG(s); returns the latest's path."""
    index = np.asarray(outputs["index"])
    images = self.data.eval_images()[index]
    grid = recon_lib.reconstruction_grid(
        images, np.asarray(outputs["pred"]), np.asarray(outputs["mask"]),
        self.patch_size, norm_pix_loss=self.norm_pix_loss,
        mean=IMAGENET_MEAN, std=IMAGENET_STD)
    latest = os.path.join(workdir, "reconstruction.png")
    recon_lib.write_png(latest, grid)
    if step is not None:
      recon_lib.write_png(os.path.join(workdir, "reconstruction",
                                       f"step_{step:08d}.png"), grid)
    return latest


def reconstruct_mode(method, config, workdir: str) -> str:
  """--mode=reconstruct: grid of the latest (or best) checkpoint -> workdir."""
  trainer = loop.Trainer(method, config, train=False)
  restored = ckpt_lib.restore_run(
      workdir, which=config.get("eval_checkpoint", "latest"), params="raw",
      abstract_state=trainer.abstract_state, best_metric=method.best_metric,
      best_mode=method.best_mode, hint="train first (--mode=train)")
  step = restored.step
  eval_bs = int(config.get("eval_batch_size", 0) or config.batch_size)
  iters = method.eval_iterators(mesh_lib.local_batch_size(eval_bs))
  if RECONSTRUCTION not in iters:
    raise errors.UserError("eval.num_grid_images is 0: nothing to reconstruct")
  outputs = trainer.run_eval_split(restored.params, restored.model_state,
                                   iters[RECONSTRUCTION]())
  path = method.write_grid(outputs, workdir, step)
  print(f"reconstruction grid of step {step}: {path}", flush=True)
  return path


def make_method(config) -> MaePretrainMethod:
  return MaePretrainMethod(config)

r"""Defaults shared by the configs: the training spine and each method's base.

Every configs/*.py starts from one of these and overrides what its experiment
changes; the fields are documented here once. This module imports only
ml_collections, so reading a config needs neither jax nor the methods' code
(tests/test_configs.py checks both).

  spine(method, ...)  fields the training spine (training/) reads for any method
  star()              STAR (star_jax): the public code's settings
  yt68_star()         star() sized for the yt68 CPU runs (configs/yt68_*.py)
  mae()               SCE-MAE stage 1 (sce_mae_jax/pretrain.py): MAE
  sce()               SCE-MAE stage 2 (sce_mae_jax/stage2.py): CARB + LCR
  detection()         sce() plus the detection heads (sce_mae_jax/detection.py)

Values the code also names (the MAE weight-decay exclusions, LCR's tau, the
held-out split's name, STAR's `LossSettings` defaults) are tested equal to the
code's (tests/test_configs.py).
"""

import ml_collections
from ml_collections import config_dict

# sce_mae_jax.pretrain.DEFAULT_NO_DECAY: parameters (besides biases and norms)
# without weight decay, as MAE.
MAE_NO_DECAY = ("pos_embed", "cls_token", "mask_token")
# sce_mae_jax.pretrain.HELDOUT: the name of the MAE held-out eval split.
MAE_HELDOUT = "heldout"
# sce_mae_jax.lcr.DEFAULT_TAU: the LCR softmax temperature.
LCR_TAU = 1.0 / 7.0


def spine(method: str, *, batch_size: int, eval_batch_size: int,
          num_epochs: int) -> ml_collections.ConfigDict:
  """Fields of the training spine (training/loop.py, state.py, checkpoints.py).

  Args:
    method: run.py's METHODS name (or a dotted module path).
    batch_size: global training batch (all devices and hosts).
    eval_batch_size: global evaluation batch.
    num_epochs: training length in epochs (`max_steps` > 0 overrides it).

  The caller adds `optimizer` (training/state.py make_optimizer) and whatever
  else its method reads.
  """
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.batch_size = batch_size
  c.eval_batch_size = eval_batch_size
  c.num_epochs = num_epochs
  c.max_steps = 0                   # > 0 overrides num_epochs.
  # EMA of the parameters: enabled, half_life_examples (the decay per step
  # follows the batch size) or decay (> 0: per step, fixed).
  c.ema = ml_collections.ConfigDict(dict(enabled=False))
  c.log_every_steps = 50
  c.progress_every_steps = 50
  c.checkpoint_every_steps = 1000   # 0: only at the end of training.
  c.keep_checkpoints = 2
  c.async_checkpoints = True
  c.eval_every_epochs = 1
  # Config fields a resumed run may change (the others must equal the
  # checkpoint's config); "data_listing" also allows resuming on changed
  # training data (training/fingerprint.py).
  c.resume_may_change = ()
  # Steps in a row with a non-finite loss or gradients (not applied) before
  # the run stops (training/nonfinite.py); 0: no guard.
  c.max_nonfinite_steps = 10
  # Persistent XLA compilation cache: "" off, "workdir", or a path.
  c.compilation_cache_dir = "~/.cache/star_jax/xla"
  return c


def _sharding_and_selection(c: ml_collections.ConfigDict, best_metric: str):
  """Parameter sharding, multi-host start-up and checkpoint selection."""
  c.fsdp = False                    # shard large parameters over the devices.
  c.fsdp_min_size = 2**14           # smallest parameter (elements) sharded.
  c.distributed = False             # jax.distributed.initialize (pods).
  c.eval_checkpoint = "latest"      # --mode=eval: latest | best
  c.best_metric = best_metric       # checkpoints_best/ keeps its minimum.


def star() -> ml_collections.ConfigDict:
  """STAR defaults shared by configs/*_star.py (the public code's settings)."""
  c = spine("star", batch_size=128,  # global (public: 4 GPUs x 32).
            eval_batch_size=128, num_epochs=500)

  c.data = ml_collections.ConfigDict()
  c.data.name = "wflw"            # data.readers name, or "synthetic".
  c.data.root = ""                # dataset folder (--config.data.root=...).
  c.data.scheme = "wflw"          # data.schemes name or point count.
  c.data.train_split = "train"
  c.data.eval_splits = ("test",)
  c.data.crop_size = 256
  c.data.crop_mode = "auto"       # data.transforms: auto|center_scale|box|points
  c.data.points_margin = 1.25     # box side factor of crop_mode "points".
  # Box pre-reduction before warps that shrink the face > 2x (train, eval and
  # predict alike; data.transforms.warp_affine). Off as the public code.
  c.data.antialias = False
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
  # Where the training augmentation runs: "host" (NumPy in the loader, as
  # the public code) or "device" (data/device_augment.py: the host only
  # decodes and pre-crops with margin; flip, similarity warp and texture run
  # batched inside the jitted train step, same distribution).
  c.data.augment_on = "host"
  # Device mode: the pre-crop's side over crop_size (2.0 holds the region
  # the geometric augmentation reads for 99.8 % of the draws).
  c.data.precrop_margin = 2.0
  # Device mode: a folder for the pre-crops built once as array_record
  # (data/precrop_cache.py; "" = none, pre-crop every epoch).
  c.data.precrop_cache_dir = ""
  # Only for name == "synthetic": the data/readers/synthetic.py options
  # (data.synthetic.make_records), num_train / num_eval faces of seed /
  # eval_seed; the noise applies to the training faces only.
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_train=0, num_eval=0, image_size=128, seed=0, eval_seed=1,
      contour_noise=0.0, point_noise=0.0))

  c.model = ml_collections.ConfigDict(dict(
      num_stacks=4, depth=4, width=256, use_aam=True,
      heatmap_activation="instance_norm_relu", dtype="float32",
      input_bgr=False,
      # How 3x3 convolutions compute (same maths): "auto" = Winograd matmuls
      # where faster (XLA:CPU, f32, star_jax/winograd.py), "xla", "winograd".
      conv3x3="auto",
      # Rematerialise each hourglass in the backward pass (nn.remat): less
      # activation memory for ~1 more forward; same gradients.
      remat=False))

  # The loss of eq. 10 (star_jax/objective.py LossSettings; defaults: the
  # public STARLoss_v2): STAR (smooth-L1 distance, w = 1, restriction
  # w (|l1| + |l2|), value_form "code"; "paper" is eq. 7) or, with
  # star=False, the eq. 2 coordinate baseline; AWing on the AAM point and
  # edge maps; optional DR; eigenvalue_clamp e.g. (1e-6, 1e2) (off).
  c.loss = ml_collections.ConfigDict(dict(
      star=True, distance="smooth_l1", w=1.0, restriction="value",
      value_form="code",
      eigenvalue_clamp=config_dict.placeholder(tuple),
      star_weight=1.0, pointmap_weight=10.0, edgemap_weight=10.0,
      dr_weight=0.0, dr_sigma=1.0, align_corners=False, baseline_on="norm",
      target_mode="public"))

  # flip_test: horizontal-flip test-time augmentation (off, as the public
  # code; see star_jax/method.py's docstring).
  c.eval = ml_collections.ConfigDict(dict(normaliser="wflw", threshold=0.1,
                                          step=1e-4, flip_test=False))

  # star_jax.predict --video / --frames (landmarks/tracking.py): One-Euro
  # smoothing of the tracked landmarks (landmarks/one_euro.py: Hz, and Hz
  # per face size per second for beta; values measured by
  # bench/video_jitter.py), and max_spread, the predicted spread (fraction
  # of the crop) above which the track counts as lost (0 = no spread test:
  # its scale is the model's own, calibrate it per model).
  c.predict = ml_collections.ConfigDict(dict(
      smooth=True, one_euro_min_cutoff=0.5, one_euro_beta=20.0,
      one_euro_d_cutoff=1.0, max_spread=0.0))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8,
      schedule="step", decay_epochs=(200, 350, 450), decay_factor=0.1))
  c.ema = ml_collections.ConfigDict(dict(enabled=True,
                                         half_life_examples=10000.0,
                                         decay=0.0))  # 0: from half-life.
  _sharding_and_selection(c, best_metric="test_ema/nme")
  return c


def yt68_star() -> ml_collections.ConfigDict:
  """star() on ../shared/data/yt68, sized for one CPU core (configs/yt68_*.py).

  64 px crops (16 x 16 heatmaps), 2 stacks of depth 3, width 64, no AAM;
  batch 32, 2,800 steps (92 steps / epoch) with x0.1 at 70 % and 90 %.
  """
  c = star()
  c.data.name = "yt68"
  c.data.root = "../shared/data/yt68"
  c.data.scheme = "300w"
  c.data.train_split = "train"
  c.data.eval_splits = ("val",)
  c.data.crop_mode = "points"
  c.eval.normaliser = "300w"          # outer eye corners 36, 45.
  c.eval.threshold = 0.1
  c.data.crop_size = 64
  c.data.num_workers = 1          # one grain worker: decode || train step.
  c.model.num_stacks = 2
  c.model.depth = 3
  c.model.width = 64
  c.model.use_aam = False
  c.batch_size = 32
  c.eval_batch_size = 64
  c.max_steps = 2800              # overrides num_epochs.
  c.optimizer.decay_fractions = (0.7, 0.9)   # of max_steps.
  c.eval_every_epochs = 2
  c.checkpoint_every_steps = 200
  c.log_every_steps = 50
  c.progress_every_steps = 50
  c.best_metric = "val_ema/nme"
  return c


def mae() -> ml_collections.ConfigDict:
  """MAE / SCE-MAE stage-1 defaults shared by configs/*_mae.py.

  Learning rate: MAE scales a base rate with the batch, `lr = blr * batch /
  256` (blr 1.5e-4). The SCE-MAE paper states lr 3e-4 at batch 512, which is
  exactly MAE's blr 1.5e-4 scaled to 512, so we keep the MAE rule: the
  absolute `optimizer.learning_rate` is a reference to `base_learning_rate *
  batch_size / 256` (3e-4 at 512) and follows `--config.batch_size`.
  """
  c = spine("sce_mae_pretrain", batch_size=512, eval_batch_size=256,
            num_epochs=400)

  c.data = ml_collections.ConfigDict()
  c.data.name = "faces"             # celeba | faces | folder
  c.data.root = ""                  # celeba root / folder of images.
  c.data.eval_root = ""             # "folder": held-out images.
  c.data.yt68_root = "../shared/data/yt68"
  c.data.mtfl_root = "../shared/data/mtfl"
  c.data.mtfl_num_val = 1000        # MTFL val faces left out (stage 2's split).
  c.data.mtfl_split_seed = 0
  c.data.crop_mode = "center"       # data.pipeline.sce_crop mode.
  c.data.margin = 1.25
  c.data.num_eval = 0               # 0: all held-out images.
  c.data.num_workers = 0
  c.data.check_images = "exists"
  # MAE: RandomResizedCrop(scale=(0.2, 1.0), bicubic) + flip 0.5 (the flip
  # probability is fixed at 0.5 in data.pipeline).
  c.data.augment = ml_collections.ConfigDict(dict(rrc_scale=(0.2, 1.0)))

  c.model = ml_collections.ConfigDict(dict(
      preset="deit_tiny", image_size=96, patch_size=8,
      decoder=None,                   # None: mae.DEFAULT_DECODER[preset].
      decoder_width=256, decoder_depth=4, decoder_heads=8,  # for "custom".
      mask_ratio=0.75, norm_pix_loss=True, dtype="float32"))
  c.model.encoder_overrides = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict(dict(mask_seed=0, num_grid_images=8))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", base_learning_rate=1.5e-4, b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.05, weight_decay_exclude=MAE_NO_DECAY,
      schedule="cosine", warmup_epochs=40.0, end_learning_rate=0.0))
  c.optimizer.learning_rate = (c.optimizer.get_ref("base_learning_rate") *
                               c.get_ref("batch_size") / 256)
  c.log_every_steps = 20
  c.progress_every_steps = 20
  c.checkpoint_every_steps = 500
  c.eval_every_epochs = 10
  _sharding_and_selection(c, best_metric=f"{MAE_HELDOUT}/masked_loss")
  return c


def sce() -> ml_collections.ConfigDict:
  """Defaults shared by the stage-2 configs (paper settings, DeiT-S)."""
  c = spine("sce_mae_carb", batch_size=32, eval_batch_size=64, num_epochs=10)
  # With `checkpoint` (a stage-1 workdir) the encoder is built from that
  # run's stored config; preset ... num_heads describe only the random ViT
  # used without a checkpoint.
  c.backbone = ml_collections.ConfigDict(dict(
      preset="deit_small", image_size=96, patch_size=8, width=0,
      depth=0, num_heads=0, checkpoint="", which="latest",
      use_ema=True, normalise="imagenet", seed=0))
  # kind "linear" (SCE-MAE's 1x1 conv) or "spatial_softmax" (CL's
  # FeatDistiller, softmax_mul 7); projector.py.
  c.projector = ml_collections.ConfigDict(dict(dim=64, kind="linear",
                                               softmax_mul=7.0))
  c.carb = ml_collections.ConfigDict(dict(
      layer=3, feature_layer="last", eta=0.1, num_clusters=4, knn=5,
      replace="centre", scale_by_dim=True))
  c.lcr = ml_collections.ConfigDict(dict(
      tau=LCR_TAU, r_att_att=5.0, r_att_inatt=5.0,
      r_inatt_inatt=2.0, position_scale=1.0, exclude_self=False,
      anchor_reduction="sum", locality="log"))
  c.inference = ml_collections.ConfigDict(dict(stride=2, padding="edge"))
  # DVE's evaluation warps (tps.DVE_EVAL_WARP) and pairing (2k, 2k+1) over
  # the whole split; num_pairs caps the n // 2 pairs (0: all).
  c.matching = ml_collections.ConfigDict(dict(
      num_pairs=0, feature_kind="projector",
      warp=dict(type="dve", warpsd_all=5e-4, warpsd_subset=5e-3,
                transsd=0.05, scalesd=0.05, rotsd=2.5, grid_size=10)))
  c.tsne = ml_collections.ConfigDict(dict(
      num_faces=100, feature_kind="projector", perplexity=30.0,
      iterations=500, runs=3))
  c.data = ml_collections.ConfigDict(dict(
      name="mtfl", root="../shared/data/mtfl", train_split="train",
      eval_splits=("val",), crop_mode="center", margin=3.0, num_val=1000,
      split_seed=0, num_workers=0, check_images="exists", eval_name="",
      eval_root="", allow_label_crops=False,
      sanity="skip"))               # data.readers SANITY_MODES.
  # Encode the training crops (and mirrors) once with the frozen encoder
  # (`EncodedTrainSet`) instead of in every step.
  c.cache_encoder = False
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="constant"))
  c.checkpoint_every_steps = 0
  c.async_checkpoints = False
  c.compilation_cache_dir = ""
  c.resume_may_change = ("num_epochs", "max_steps", "eval_every_epochs")
  return c


def detection() -> ml_collections.ConfigDict:
  """Stage-2 defaults plus the detection heads and their training.

  All-annotation keys follow DVE's aflw-mtfl-keypoints configs; the few-shot
  ones (`fewshot_*`) DVE's aflw-mtfl-limit-annos configs with a cosine
  schedule and CL's epoch length; see sce_mae_jax/keypoint_head.py for the
  heads.
  """
  c = sce()
  c.method = "sce_mae_detection"
  c.detection = ml_collections.ConfigDict(dict(
      stage2_workdir="", feature_kind="concat", normaliser="five_point",
      stride=0,                       # 0: inference.stride.
      # Heads.
      head="conv_block", fewshot_head="intermediate", intermediate=50,
      per_landmark=True, readout_init="mean_points",
      hidden=256, softargmax_mul=1.0,                       # conv block
      regressor_softmax_mul=100.0, regressor_normalise=True,  # DVE regressor
      regressor_init_logit_std=0.1,
      # Loss (DVE regression_loss) and optimiser (shared).
      loss_alpha=10.0, beta=1.0, amsgrad=True, decoupled_weight_decay=False,
      # All annotations (--mode=all_annotations).
      learning_rate=1e-3, weight_decay=5e-4, epochs=300, batch_size=32,
      schedule="piecewise", lr_drops=(1 / 3, 5 / 6), lr_drop_factor=0.1,
      warmup_steps=0,
      flip=True, tps_augment=False, eval_every=1, cache_dtype="float32",
      mean_shape_faces=256,
      # TPS warp of cached features (tps.<warp>(key, **warp_kwargs)).
      warp="random_dve_warp",
      warp_kwargs=dict(warpsd_all=0.0005, warpsd_subset=0.0, transsd=0.02,
                       scalesd=0.02, rotsd=2.0),
      # Few annotations (--mode=fewshot).
      fewshot_counts=(1, 5, 10, 20, 50, 100), fewshot_seeds=(0, 1, 2),
      fewshot_steps=0, fewshot_epochs=50, fewshot_epoch_length=1000,
      fewshot_batch_size=32, fewshot_learning_rate=0.01,
      fewshot_weight_decay=5e-4, fewshot_schedule="cosine",
      fewshot_warmup_steps=0, fewshot_tps=True))
  c.optimizer.learning_rate = 1e-3
  return c

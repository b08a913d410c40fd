r"""The embedded default: STAR on procedural faces, no download, CPU-sized.

Commands (2 CPU cores, under 10 minutes each):
  python run.py --config=configs/default.py --workdir=runs/default_star
  python run.py --config=configs/default.py --workdir=runs/default_l1 \
      --config.loss.star=False          # the smooth-L1 (eq. 2) baseline

Data: data/synthetic/ renders 68-point faces (iBUG order) on demand from
(seed, index): `data.synthetic.num_train` training faces (seed 0) and
`num_eval` evaluation faces (seed 1, disjoint). `contour_noise` > 0 (in units
of the outer-eye-corner distance) moves the stored contour annotation of the
TRAINING faces along the face edge (the STAR paper's semantic ambiguity);
evaluation faces always keep their exact points, so NME measures the true
error:
  python run.py --config=configs/default.py --workdir=runs/default_noisy \
      --config.data.synthetic.contour_noise=0.1

Model: a small STAR hourglass (2 stacks, depth 2, width 32) without AAM on
64x64 crops (16x16 heatmaps; see the comment at model.use_aam), STAR loss per
stack with the 2^i / 2^(S-1) weights, Adam 1e-3 with x0.1 at
70 % and 90 % of training, EMA. Prints NME / FR / AUC (300W normaliser: outer
eye corners 36, 45; threshold 0.1) of the raw and EMA parameters at the end of
every eval epoch and writes them to <workdir>/final_metrics.json. Results
and the mean-shape baseline: README "Measured".
"""

from configs import common


def get_config():
  c = common.star()
  c.data.name = "synthetic"
  c.data.scheme = "300w"
  c.data.train_split = "train"
  c.data.eval_splits = ("test",)
  c.data.crop_size = 64
  c.data.crop_mode = "points"
  c.data.synthetic.num_train = 1024
  c.data.synthetic.num_eval = 256
  c.data.synthetic.image_size = 96
  c.data.synthetic.seed = 0
  c.data.synthetic.eval_seed = 1
  c.data.num_workers = 1          # one grain worker: decode || train step.
  c.data.check_images = "none"

  c.model.num_stacks = 2
  c.model.depth = 2
  c.model.width = 32
  # No AAM at 64 px: the public point/edge targets scale with the crop
  # (sigma = 1.5 * S / 256 = 0.375 px, 1 px lines at 256 px), which at a
  # 16x16 heatmap is sub-pixel: half of the point targets have a peak < 0.01,
  # the AAM masks learn to suppress those heatmaps, and training stalls
  # (near the mean shape; README "Measured"). The AAM is used at 256 px
  # (configs/*_star.py).
  c.model.use_aam = False

  c.eval.normaliser = "300w"
  c.eval.threshold = 0.1

  c.batch_size = 32
  c.eval_batch_size = 64
  # 32 epochs = 1,024 steps, minutes on 2 cores (README "Measured" compares
  # budgets).
  c.num_epochs = 32
  c.optimizer.decay_epochs = (22.4, 28.8)  # 70 % and 90 % of training.
  c.ema.half_life_examples = 2000.0
  c.eval_every_epochs = 8
  c.checkpoint_every_steps = 200
  c.log_every_steps = 20
  c.progress_every_steps = 20
  c.best_metric = "test_ema/nme"
  return c

r"""STAR on yt68: real YouTube-Faces frames with 68 iBUG points (dev data).

Command (from the repository root, data in ../shared/data/yt68):
  python run.py --config=configs/yt68_star.py --workdir=runs/yt68_star
  python run.py --config=configs/yt68_star.py --workdir=runs/yt68_star \
      --mode=eval --config.eval_checkpoint=best

Expected layout under data.root (data/readers/yt68.py):
  train.csv, val.csv   header `,0,1,...,135`, then `path,x0,y0,...,x67,y67`
  images/<path>
Another csv of the same format can be evaluated by putting it (and its
images/) in a folder laid out the same way and pointing
--config.data.root at it, with the split name given by
--config.data.eval_splits='("val",)' (the yt68 reader knows the splits
"train" and "val").

The set has no face boxes: boxes are the tight boxes of the ground-truth points
(the usual 300W protocol) and the crop uses crop_mode "points" (box side x
1.25, see data/transforms.py). Frames are small (150-350 px) and blurred.
Numbers on this set are yt68 "val" numbers (identity-disjoint from train),
never WFLW / 300W / COFW results.

CPU budget (the README's real result: <= 60 min of CPU per run): the paper's
loss, optimiser and augmentation, on a model sized for the budget: 64x64
crops (16x16 heatmaps; the frames are 150-350 px and blurred, faces ~100-200
px), 2 stacks, hourglass depth 3, width 64, no AAM (at 16x16 heatmaps the
public point/edge targets are sub-pixel, see configs/default.py), batch 32,
2,800 steps (~30 epochs of 92 steps), Adam 1e-3 x0.1 at 70 % and 90 %. The
smooth-L1 baseline is the same run with --config.loss.star=False.
Results, the smooth-L1 baseline and the effect of flip augmentation on
yt68's labels: README "Measured"; flips stay on here, as in the paper.
The paper-sized model (256 px, 4 stacks, depth 4, width 256, AAM, batch 128)
is `--config.data.crop_size=256 --config.model.num_stacks=4
--config.model.depth=4 --config.model.width=256 --config.model.use_aam=True
--config.batch_size=128 --config.max_steps=0
--config.optimizer.decay_fractions='()'` (then the base schedule: 500 epochs,
x0.1 at 200 / 350 / 450; GPU territory).
"""

from configs import common


def get_config():
  c = common.star()
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
  c.max_steps = 2800              # overrides num_epochs (92 steps / epoch).
  c.optimizer.decay_fractions = (0.7, 0.9)   # of max_steps.
  c.eval_every_epochs = 2
  c.checkpoint_every_steps = 200
  c.log_every_steps = 50
  c.progress_every_steps = 50
  c.best_metric = "val_ema/nme"
  return c

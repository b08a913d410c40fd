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
  c = common.yt68_star()
  return c

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
never WFLW / 300W / COFW results. Same model, loss and optimiser as the paper;
fewer epochs (2,951 training faces, 23 steps per epoch at batch 128).
"""

from star_jax import method


def get_config():
  c = method.base_config()
  c.data.name = "yt68"
  c.data.root = "../shared/data/yt68"
  c.data.scheme = "300w"
  c.data.train_split = "train"
  c.data.eval_splits = ("val",)
  c.data.crop_mode = "points"
  c.eval.normaliser = "300w"          # outer eye corners 36, 45.
  c.eval.threshold = 0.1
  c.num_epochs = 120
  c.optimizer.decay_epochs = (60, 90, 110)
  c.best_metric = "val_ema/nme"
  return c

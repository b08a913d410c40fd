r"""STAR on 300W (68 points): the paper's setting.

Command:
  python run.py --config=configs/300w_star.py --workdir=runs/300w_star \
      --config.data.root=/path/to/300W

Expected layout under data.root (the iBUG tree; data/readers/ibug_300w.py):
  afw/*.jpg + *.pts
  helen/{trainset,testset}/*.jpg + *.pts
  lfpw/{trainset,testset}/*.png + *.pts
  ibug/*.jpg + *.pts
Splits: train = afw + helen/trainset + lfpw/trainset (3,148 faces); the "full"
test set (689) = common (helen/testset + lfpw/testset, 554) + challenge (ibug,
135), reported as full/nme, full/common/nme, full/challenge/nme. Face boxes are
the tight boxes of the 68 points (the usual protocol; crop_mode "box" with the
public code's 1.05 factor).

Settings as configs/wflw_star.py (public code); NME with the outer eye corners
(36, 45); FR / AUC at 0.05 as the public code's 300W evaluation (override with
--config.eval.threshold=0.1).

Result to reach (paper, Table 6): full 2.87, common 2.52, challenge 4.32 (NME %).
"""

from configs import common


def get_config():
  c = common.star()
  c.data.name = "300w"
  c.data.scheme = "300w"
  c.data.train_split = "train"
  c.data.eval_splits = ("full",)
  c.data.crop_mode = "auto"          # metadata centre/scale, else the box.
  c.data.subset_groups = {"common": ("helen_testset", "lfpw_testset"),
                          "challenge": ("ibug",)}
  c.eval.normaliser = "300w"          # outer eye corners 36, 45.
  c.eval.threshold = 0.05
  c.best_metric = "full_ema/nme"
  return c

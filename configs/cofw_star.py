r"""STAR on COFW (29 points): the paper's setting.

Command:
  python run.py --config=configs/cofw_star.py --workdir=runs/cofw_star \
      --config.data.root=/path/to/COFW

Expected layout under data.root (data/readers/cofw.py):
  COFW_train_color.mat   (1,345 faces)
  COFW_test_color.mat    (507 faces)

Settings as configs/wflw_star.py (public code), 7 AAM edge groups for COFW.
NME with the inter-pupil distance (points 16, 17), the paper's default for
COFW (inter-ocular 8, 9: --config.eval.normaliser=cofw_inter_ocular), FR / AUC
at 0.1.

Result to reach (paper, Table 7): NME 4.62 (inter-pupil), 3.21 (inter-ocular).
"""

from configs import common


def get_config():
  c = common.star()
  c.data.name = "cofw"
  c.data.scheme = "cofw"
  c.data.train_split = "train"
  c.data.eval_splits = ("test",)
  c.data.crop_mode = "auto"          # metadata centre/scale, else the box.
  c.eval.normaliser = "cofw"          # inter-pupil 16, 17.
  c.eval.threshold = 0.1
  c.best_metric = "test_ema/nme"
  return c

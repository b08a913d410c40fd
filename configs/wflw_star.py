r"""STAR on WFLW (98 points): the paper's setting.

Command:
  python run.py --config=configs/wflw_star.py --workdir=runs/wflw_star \
      --config.data.root=/path/to/WFLW

Expected layout under data.root (data/readers/wflw.py):
  WFLW_images/<event folder>/<image>.jpg
  WFLW_annotations/list_98pt_rect_attr_train_test/
      list_98pt_rect_attr_{train,test}.txt

Settings (public code, ZhenglinZhou/STAR): 256x256 crops from the annotation's
box (scale = min(w, h) / 200 * 1.05), 4-stack hourglass (depth 4, width 256)
with AAM, STAR loss (smooth-l1, w = 1) + 10 x AWing on point and edge maps,
stack weights 2^i / 2^3; Adam lr 1e-3, x0.1 at epochs 200, 350, 450 of 500,
global batch 128, EMA decay 0.5^(128 / 10000) per step. Evaluation: NME with
the outer-eye-corner distance (60, 72), FR and AUC at 0.1, on the full test
set and the six attribute subsets (reported as test/pose/nme, ...), for the
raw and the EMA parameters; the best checkpoint is chosen by test_ema/nme
(WFLW has no validation split, as the public code).

Result to reach (paper, Table 5): NME 4.02, FR 2.32 %, AUC 0.605.
"""

from configs import common


def get_config():
  c = common.star()
  c.data.name = "wflw"
  c.data.scheme = "wflw"
  c.data.train_split = "train"
  c.data.eval_splits = ("test",)
  c.data.crop_mode = "auto"          # metadata centre/scale, else the box.
  c.eval.normaliser = "wflw"          # outer eye corners 60, 72.
  c.eval.threshold = 0.1
  c.best_metric = "test_ema/nme"
  return c

r"""SCE-MAE stage 1 (MAE) on CelebA, the paper's pretraining set.

Command (from the repository root):
  python run.py --config=configs/celeba_mae.py --workdir=runs/celeba_mae_t \
      --config.data.root=/data/CelebA
  # DeiT-S/8 (the decoder becomes MAE's 512 x 8):
  python run.py --config=configs/celeba_mae.py --workdir=runs/celeba_mae_s \
      --config.data.root=/data/CelebA --config.model.preset=deit_small

Expected layout under data.root (data/readers/celeba.py, mafl.py):
  Img/img_align_celeba/000001.jpg ...        aligned 178 x 218 images
  Anno/list_landmarks_align_celeba.txt
  Eval/list_eval_partition.txt
  MAFL/testing.txt                           the 1,000 MAFL test names

Training set: the CelebA train partition (162,770 images, the paper's count)
minus the MAFL test images (DVE/SCE-MAE never pretrain on the matching /
detection test faces). Held-out set: the MAFL test images (heldout/
masked_loss and the reconstruction grid).

Crop (DVE, as the paper): rows 30..208 of the aligned image (178 x 178) ->
136 px -> centre 96 px (sce_crop "dve_celeba"), then RandomResizedCrop
(0.2, 1) + flip 0.5 (MAE).

Paper (Sec. 4): 400 epochs, batch 512, lr 3e-4, patch 8. MAE: mask 0.75,
norm_pix_loss, AdamW betas (0.9, 0.95), weight decay 0.05 (none on biases,
norms, pos/cls/mask tokens), 40 warm-up epochs then cosine to 0. The paper's
3e-4 equals MAE's base lr 1.5e-4 * 512 / 256, so lr follows the MAE rule
`base_learning_rate * batch_size / 256` (configs/common.py mae()).
"""

from configs import common


def get_config():
  c = common.mae()
  c.data.name = "celeba"
  c.data.root = ""                  # --config.data.root=/path/to/CelebA
  c.data.crop_mode = "dve_celeba"
  c.data.num_workers = 8
  c.model.preset = "deit_tiny"      # deit_small / deit_base as in the paper.
  c.model.decoder = None            # tiny: "small"; small/base: MAE 512 x 8.
  c.batch_size = 512
  c.eval_batch_size = 500
  c.num_epochs = 400
  c.optimizer.warmup_epochs = 40.0
  c.eval_every_epochs = 10
  c.log_every_steps = 50
  c.progress_every_steps = 50
  c.checkpoint_every_steps = 1000
  return c

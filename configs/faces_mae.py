r"""SCE-MAE stage 1 (MAE) on the unlabelled faces of ../shared/data, 2 CPU cores.

Command (from the repository root):
  python run.py --config=configs/faces_mae.py --workdir=runs/faces_mae
  # resume: the same command; the reconstruction grid of the latest checkpoint:
  python run.py --config=configs/faces_mae.py --workdir=runs/faces_mae \
      --mode=reconstruct

Data layout (config.data.yt68_root, config.data.mtfl_root):
  ../shared/data/yt68/images/{training,test}/*.jpg   4,600 frames (3,373
      labelled in train.csv / val.csv, 1,227 unlabelled)
  ../shared/data/yt68/val.csv                        names the held-out ids
  ../shared/data/mtfl/training.txt + {lfw_5590,net_7876}/*.jpg   7,650 faces

Training images: every yt68 frame (labelled or not) EXCEPT the frames of the
35 yt68 val identities, plus the MTFL faces of the fixed "train" split of
configs/mtfl_sce.py (6,650; `splits.mtfl_split_paths`, paths only): 4,025 +
6,650 = 10,675. The 1,000 MTFL val faces the stage-2 protocols score on are
never pretrained on. Held-out set (heldout/masked_loss, the grid): the 575
frames of the yt68 val identities (422 labelled + 153 unlabelled). No label
is read: the images are cropped without landmarks.

Crops: the yt68 frames are loose face crops from video; the MTFL images are
80 x 80 face crops. Both use sce_crop("center"): the largest centred square
-> 136 px -> centre 96 px (DVE's resize-and-centre-crop), then (training
only) RandomResizedCrop (0.2, 1) + flip, as MAE.

Model: DeiT-T/8 at 96 px (144 patches, 36 kept at mask ratio 0.75), the
"small" decoder (256 wide x 4 blocks x 8 heads), norm_pix_loss. Optimiser as
the paper / MAE (AdamW (0.9, 0.95), wd 0.05, warm-up then cosine), but with a
base rate of 1.5e-3 (lr = 1.5e-3 * 64 / 256 = 3.75e-4) instead of MAE's
1.5e-4: MAE's rate is tuned for 400-1600 epochs; this budget is 10 (one
background run on a 2-core CPU; results in README "Measured"). On a faster
machine raise --config.num_epochs (the schedule follows it; decide it before
the run: a run resumes with the same command, and num_epochs changes the
cosine schedule).
"""

from configs import common


def get_config():
  c = common.mae()
  c.data.name = "faces"
  c.data.yt68_root = "../shared/data/yt68"
  c.data.mtfl_root = "../shared/data/mtfl"
  c.data.crop_mode = "center"
  c.data.num_eval = 256             # first 256 held-out frames (sorted paths).
  c.model.preset = "deit_tiny"
  c.model.decoder = "small"
  c.batch_size = 64
  c.eval_batch_size = 64
  c.num_epochs = 10
  c.optimizer.base_learning_rate = 1.5e-3   # 10x MAE's blr: 4 epochs, not 400.
  c.optimizer.warmup_epochs = 1.0
  c.eval_every_epochs = 1
  c.log_every_steps = 5
  c.progress_every_steps = 5
  c.checkpoint_every_steps = 50
  return c

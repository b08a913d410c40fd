r"""SCE-MAE stage 2 with the paper's settings: CelebA training, MAFL test.

Command (from the repository root):
  python run.py --config=configs/celeba_sce.py --workdir=runs/celeba_sce \
      --config.data.root=/data/celeba \
      --config.backbone.checkpoint=runs/celeba_pretrain
  python run.py --config=configs/celeba_sce.py --workdir=runs/celeba_sce \
      --config.data.root=/data/celeba --mode=matching
Detection on the frozen features: configs/mtfl_detection.py with
--config.data.name=mafl (or aflw_m / aflw_r / 300w) and
--config.detection.stage2_workdir=runs/celeba_sce.

Data layout under data.root (data/readers/celeba.py + mafl.py):
  root/Img/img_align_celeba/000001.jpg ...      (178 x 218 aligned images)
  root/Anno/list_landmarks_align_celeba.txt
  root/Eval/list_eval_partition.txt
  root/MAFL/training.txt, root/MAFL/testing.txt (1,000 test names)
Stage 2 trains on CelebA "train"; evaluation (LCR, matching, t-SNE) on MAFL
"test". Crops: DVE's (rows 30..208, resize 136, centre 96): crop_mode
"dve_celeba".

Paper settings (SCE-MAE, CVPR 2024, Sec. 4): DeiT-S (DeiT-T: eta 0.1; DeiT-B:
eta 0.25), patch 8, 96 x 96 input, CARB after encoder layer 3, K = 4 clusters,
r_att-att = 5, r_att-inatt = 5, r_inatt-inatt = 2, projector 64/128/256 (64
here). The paper gives no stage-2 optimiser settings; Adam 1e-3, 10 epochs is
our choice.

Paper numbers (DeiT-B): matching same / different identity 0.27 / 1.61
(mean pixel error, 70 x 70 frame, MAFL); detection NME (% inter-ocular) MAFL
2.07, AFLW_M 5.23, AFLW_R 5.33, 300W 3.94. Not reproduced here (no CelebA on
this machine).
"""

from configs import common


def get_config():
  c = common.sce()
  c.data.name = "celeba"
  c.data.root = ""                  # --config.data.root=/path/to/celeba
  c.data.train_split = "train"
  c.data.eval_name = "mafl"          # MAFL test (1,000 faces), same root.
  c.data.eval_splits = ("test",)
  c.data.crop_mode = "dve_celeba"
  c.backbone.preset = "deit_small"
  c.carb.layer = 3
  c.carb.eta = 0.1
  c.carb.num_clusters = 4
  c.projector.dim = 64
  c.batch_size = 64
  c.num_epochs = 10
  c.matching.num_pairs = 1000
  c.tsne.num_faces = 1000
  c.tsne.runs = 100
  return c

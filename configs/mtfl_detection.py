r"""Landmark detection on frozen SCE-MAE features, shared MTFL faces (CPU).

Commands (from the repository root):
  python run.py --config=configs/mtfl_detection.py --workdir=runs/mtfl_det \
      --config.detection.stage2_workdir=runs/mtfl_sce \
      --config.backbone.checkpoint=runs/faces_mae
  python run.py --config=configs/mtfl_detection.py --workdir=runs/mtfl_fewshot \
      --config.detection.stage2_workdir=runs/mtfl_sce --mode=fewshot
The first trains the regressor with the generic loop (features recomputed per
step, flip augmentation); `--mode=fewshot` runs the limited-annotation table
(1, 5, 10, 20, 50, 100 faces x 3 seeds, cached features) and writes
fewshot.md + fewshot.json in the workdir. A tiny smoke run:
  --config.detection.fewshot_counts='(1,5)' --config.detection.fewshot_steps=20

Data: as configs/mtfl_sce.py (fixed split of the shared training.txt: 9,000
train / 1,000 val by `default_rng(0).permutation(10000)`). NME in % of the
inter-ocular distance (eye centres, points 0 and 1). For MAFL / AFLW_M /
AFLW_R (5 points) set data.name/root/splits and crop_mode; for 300W use
detection.normaliser="300w" (outer eye corners 36, 45).
Result (measured, 2-core CPU, README "Measured"; fewshot_steps=200): NME
18.9 / 17.9 / 15.8 / 15.4 / 15.3 / 13.6 % for 1 / 5 / 10 / 20 / 50 / 100
faces, worse than the mean shape of the same faces (17.3 ... 12.9 %): at
this scale the few-shot head over-fits; MTFL val, not AFLW numbers.
With an empty detection.stage2_workdir the projector is random and the
backbone comes from backbone.checkpoint (or is random).
"""

from sce_mae_jax import detection


def get_config():
  c = detection.base_config()
  c.data.name = "mtfl"
  c.data.root = "../shared/data/mtfl"
  c.data.train_split = "train"
  c.data.eval_splits = ("val",)
  c.data.crop_mode = "points"
  c.data.margin = 3.0
  c.detection.normaliser = "five_point"
  c.detection.feature_kind = "concat"
  # CPU budget: stride 4 (24 x 24 dense maps; cached val features of 1,000
  # faces x 128 channels = 0.3 GB) and a 64-channel conv block. The paper's
  # settings: stride 2 or 1 and a wider block (detection.hidden=256).
  c.inference.stride = 4
  c.backbone.preset = "deit_tiny"   # as configs/mtfl_sce.py / celeba_mae.py.
  c.detection.hidden = 64
  c.batch_size = 32
  c.num_epochs = 5
  c.best_metric = "val/nme"
  return c

r"""SCE-MAE stage 2 (CARB + LCR) on the shared MTFL faces: the CPU config.

Commands (from the repository root; data in ../shared/data/mtfl; the
backbone is stage 1 of configs/faces_mae.py):
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --config.backbone.checkpoint=runs/faces_mae
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --mode=matching          # DVE matching on the val faces -> matching.json
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --mode=tsne              # Fig. 5 t-SNE + silhouette -> tsne.png/json
A tiny smoke run: add --config.max_steps=5 --config.batch_size=8.
Results: README "Measured" (MTFL-val numbers, never MAFL / AFLW results).

Data layout (data/readers/mtfl.py, reader "mtfl"): root/training.txt
(`path x1..x5 y1..y5`), root/lfw_5590/, root/net_7876/ (80 x 80 faces, 5
points: eye centres, nose, mouth corners).

Split (fixed, documented, label-free): the 7,650 lines of training.txt are
permuted with `np.random.default_rng(0).permutation(7650)`; "val" = the first
1,000 of the permutation, "train" = the other 6,650 (`splits.fixed_split`).
The MAE stage (configs/faces_mae.py) leaves the val faces out too.

Crops: "center", the whole 80 x 80 MTFL image resized to 136, centre 96
(DVE's AFLW_M protocol); the labels never place a crop.

Evaluating on another folder in the MTFL layout (e.g. the MTFL / AFLW_M test
half: root/testing.txt + its images) without retraining:
  --config.data.eval_name=aflw_m --config.data.eval_root=/path/to/MTFL \
  --config.data.eval_splits='("test",)'

Backbone: the stage-1 run's encoder, built from the config stored in its
workdir (configs/faces_mae.py: DeiT-T, the CPU-sized stage 1; the paper's
default is DeiT-S). The backbone fields here describe only the random ViT
used without a checkpoint (ablation row (a)). Dense inference at stride 4
(24 x 24 maps) for the CPU budget; the paper-like setting is
--config.inference.stride=2. Without --config.backbone.checkpoint the
backbone is a random ViT. Stage 2 runs for 10 epochs (the CL budget); the
frozen encoder's outputs for every training crop and its mirror image are
computed once (`cache_encoder`, the same maths as encoding in every step).
"""

from configs import common


def get_config():
  c = common.sce()
  c.data.name = "mtfl"
  c.data.root = "../shared/data/mtfl"
  c.data.train_split = "train"
  c.data.eval_splits = ("val",)
  c.data.crop_mode = "center"
  c.data.num_val = 1000
  c.data.split_seed = 0
  c.backbone.preset = "deit_tiny"
  c.carb.eta = 0.1                  # DeiT-T/S; 0.25 for DeiT-B.
  c.projector.dim = 64
  c.batch_size = 32
  c.num_epochs = 10
  c.cache_encoder = True            # frozen encoder run once per crop + mirror.
  c.eval_every_epochs = 2
  c.inference.stride = 4
  c.matching.num_pairs = 0          # 0: every (2k, 2k+1) pair of the split.
  c.tsne.num_faces = 100
  return c

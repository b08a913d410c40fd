r"""SCE-MAE stage 2 (CARB + LCR) on the shared MTFL faces: the CPU config.

Command (from the repository root; data in ../shared/data/mtfl):
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --config.backbone.checkpoint=runs/faces_mae
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --mode=matching          # DVE matching on the val faces -> matching.json
  python run.py --config=configs/mtfl_sce.py --workdir=runs/mtfl_sce \
      --mode=tsne              # Fig. 5 t-SNE + silhouette -> tsne.png/json
A tiny smoke run: add --config.max_steps=5 --config.batch_size=8.
The backbone: stage 1 of configs/faces_mae.py (runs/faces_mae).

Result (measured, 2-core CPU, README "Measured"): 2 epochs (562 steps) in
6 min; val LCR 15.50 -> 13.16; matching on MTFL val (500 pairs, stride 4)
same 1.27 / diff 5.12 px (raw MAE features: 1.38 / 4.91); t-SNE silhouette
0.78. Not MAFL / AFLW numbers.

Data layout (data/readers/mtfl.py, reader "mtfl"): root/training.txt
(`path x1..x5 y1..y5`), root/lfw_5590/, root/net_7876/ (80 x 80 faces, 5
points: eye centres, nose, mouth corners).

Split (fixed, documented): the 10,000 faces of training.txt in file order are
permuted with `np.random.default_rng(0).permutation(10000)`; "val" = the first
1,000 of the permutation, "train" = the other 9,000 (both kept in file order);
`stage2.fixed_split`. Crops: `sce_crop(mode="points", margin=3.0)` (the box
of 5 points is small; the 96 px crop shows 3x its larger side).

Backbone: DeiT-T (the CPU-sized preset that configs/celeba_mae.py pretrains by
default; the paper's default is DeiT-S: set backbone.preset / width / depth /
num_heads to the stage-1 run's, a mismatch is refused with the differing
parameter named). Dense inference at stride 4 (24 x 24 maps) for the CPU
budget; the paper-like setting is --config.inference.stride=2. Without --config.backbone.checkpoint the backbone is a
random ViT (ablation row (a)). Numbers from this set are MTFL-val numbers,
never MAFL / AFLW results.
"""

from sce_mae_jax import stage2


def get_config():
  c = stage2.base_config()
  c.data.name = "mtfl"
  c.data.root = "../shared/data/mtfl"
  c.data.train_split = "train"
  c.data.eval_splits = ("val",)
  c.data.crop_mode = "points"
  c.data.margin = 3.0
  c.data.num_val = 1000
  c.data.split_seed = 0
  c.backbone.preset = "deit_tiny"
  c.carb.eta = 0.1                  # DeiT-T/S; 0.25 for DeiT-B.
  c.projector.dim = 64
  c.batch_size = 32
  c.num_epochs = 2
  c.inference.stride = 4
  c.matching.num_pairs = 200
  c.tsne.num_faces = 100
  return c

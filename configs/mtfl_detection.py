r"""Landmark detection on frozen SCE-MAE features, shared MTFL faces (CPU).

Commands (from the repository root):
  python run.py --config=configs/mtfl_detection.py --workdir=runs/mtfl_det \
      --config.detection.stage2_workdir=runs/mtfl_sce --mode=all_annotations
  python run.py --config=configs/mtfl_detection.py --workdir=runs/mtfl_fewshot \
      --config.detection.stage2_workdir=runs/mtfl_sce --mode=fewshot
`--mode=all_annotations` trains the paper's conv-block head on the cached
features of every training face (and its mirror image) with a decaying
schedule and writes all_annotations.json / .md (with the per-epoch curve);
`--mode=fewshot` runs the limited-annotation table (1, 5, 10, 20, 50, 100
faces x 3 seeds, DVE / CL regressor, TPS augmentation of the cached maps,
weight decay) and writes fewshot.md + fewshot.json. Both print the
mean-shape reference beside the result. Results: README "Measured"
(MTFL-val numbers, never MAFL / AFLW results).

Data: as configs/mtfl_sce.py (the fixed label-free split of the shared
training.txt, "center" crops). NME in % of the inter-ocular distance (eye
centres, points 0 and 1). To score trained models on another folder in the
MTFL layout (`testing.txt`, the AFLW_M test half) without retraining:
  --config.data.eval_name=aflw_m --config.data.eval_root=/path/to/MTFL \
  --config.data.eval_splits='("test",)'
For 300W use detection.normaliser="300w" (outer eye corners 36, 45).

CPU budget (our choices, the paper's in brackets): features at stride 8
(12 x 12 maps) [stride 2 or 1]; conv block 64 wide [256]; 8 epochs of the
training faces and their mirror images (3,320 steps of 32), lr
x0.1 after 1/3 and 5/6 of them [DVE: 300 epochs, drops at 100 / 250];
few-shot runs of 30 epochs of 1,000 picks. With an empty
detection.stage2_workdir the projector is random and the backbone comes from
backbone.checkpoint (or is random).
"""

from configs import common
from configs import mtfl_sce


def get_config():
  c = common.detection()
  base = mtfl_sce.get_config()
  for key in ("data", "backbone", "carb", "projector", "inference"):
    c[key] = base[key]
  c.detection.normaliser = "five_point"
  c.detection.feature_kind = "concat"
  c.detection.stride = 8
  c.detection.hidden = 64
  c.detection.epochs = 8
  c.detection.cache_dtype = "float16"
  c.detection.fewshot_epochs = 30
  c.batch_size = 32
  c.num_epochs = 5                  # the generic loop (--mode=train) only.
  c.best_metric = "val/nme"
  return c

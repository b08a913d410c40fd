r"""DVE landmark matching on the shared MTFL val faces (CPU).

Command: python run.py --config=configs/mtfl_matching.py \
    --workdir=runs/mtfl_sce --mode=matching
(the stage-2 workdir; without a checkpoint there the projector is random).
Same as configs/mtfl_sce.py with the matching protocol's settings: 500
references, each matched against its TPS warp (same identity) and against the
warp of another face (different identity); errors in a 70 x 70 frame.
"""

from configs import mtfl_sce


def get_config():
  c = mtfl_sce.get_config()
  c.matching.num_pairs = 500
  c.matching.feature_kind = "projector"
  c.inference.stride = 4            # CPU budget; 2 for paper-like maps.
  return c

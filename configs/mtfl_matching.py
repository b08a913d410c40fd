r"""DVE landmark matching on the shared MTFL val faces (CPU).

Command: python run.py --config=configs/mtfl_matching.py \
    --workdir=runs/mtfl_sce --mode=matching
(the stage-2 workdir; without a checkpoint there the projector is random).
Same as configs/mtfl_sce.py: DVE's pairing, (2k, 2k+1) over the whole val
split, with DVE's evaluation TPS warps; errors in a 70 x 70 frame; the
identity and mean-shape matchers are written beside the result. Also the
default --config of `python -m sce_mae_jax.ablation`.
"""

from configs import mtfl_sce


def get_config():
  c = mtfl_sce.get_config()
  c.matching.num_pairs = 0          # every pair of the split.
  c.matching.feature_kind = "projector"
  c.inference.stride = 4            # CPU budget; 2 for paper-like maps.
  return c

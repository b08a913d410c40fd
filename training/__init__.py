"""The training spine shared by STAR and SCE-MAE: mesh, state, checkpoints, logging, loop."""

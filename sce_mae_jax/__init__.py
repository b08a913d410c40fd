"""SCE-MAE (Yin et al., CVPR 2024) in JAX/Flax: MAE pretraining, CARB + LCR, protocols."""

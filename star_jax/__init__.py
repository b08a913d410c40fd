"""STAR loss (Zhou et al., CVPR 2023) in JAX/Flax: loss, metrics, stacked hourglass."""

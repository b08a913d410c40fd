"""Landmark core shared by STAR and SCE-MAE: coordinates, decoding, metrics, plots."""

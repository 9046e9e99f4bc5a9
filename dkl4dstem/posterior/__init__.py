"""The GP posterior over every candidate position: incremental updates, latent grid, calibrated sigma."""

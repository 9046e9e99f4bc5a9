"""Against the ground truth: scalar maps from every pattern, NRMSE, calibration metrics, reconstructions."""

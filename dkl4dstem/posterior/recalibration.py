"""Recalibrating the uncertainty map from the loop's own out-of-sample residuals.

Why: a DKL trained on the marginal likelihood fits its network to the measured points, so its posterior is far
too confident at the positions it has not seen (benchmarks/RESULTS.md, "Calibration"), and every in-sample check
says it is fine: the closed-form leave-one-out residuals of the trained GP stay near one, because the network that
embeds a left-out point was trained on it. Out-of-sample residuals are free in an active-learning loop: before each measurement the map model
predicted the value at that position (mean and the standard deviation of a measurement, latent variance plus the
trained noise), then the measurement arrives. `PrequentialCalibration` keeps these z-scores and scales the
predictive variance so that their weighted mean square is one (Dawid's prequential principle).

The z-scores come from positions the acquisition chose, not from random ones; the scale is a single factor for the
whole map, so the map keeps the model's shape of the uncertainty and only its level is set by the data. Recent
residuals weigh more (the model improves as points arrive), and a prior of a few pseudo-residuals at the level of
the leave-one-out residuals stands in before the first out-of-sample one.
"""
from __future__ import annotations

import math

import numpy
import torch

HALF_LIFE = 20          # residuals: the weight of a z-score halves every this many newer ones
PRIOR_WEIGHT = 2.0      # pseudo-residuals at the leave-one-out level before (and beside) the out-of-sample ones
MIN_SCALE = 1.0         # never narrower than the model's own predictive variance


def loo_variance_scale(factor: torch.Tensor, residual: torch.Tensor) -> float:
    """Mean squared leave-one-out z-score of an exact GP from its Cholesky factor (Sundararajan & Keerthi 2001).

    With K = L L^T (noise included) and a = K^-1 r, the LOO residual of point i is a_i / [K^-1]_ii and its
    predictive variance 1 / [K^-1]_ii, so z_i^2 = a_i^2 / [K^-1]_ii: O(n^3) once, no refit.
    """
    if residual.numel() < 2:
        return 1.0
    inverse = torch.cholesky_inverse(factor)
    alpha = inverse @ residual
    return float((alpha * alpha / inverse.diagonal()).mean())


class PrequentialCalibration:
    """z-scores of the values measured against the prediction made just before; the variance scale from them."""

    def __init__(self, half_life: float = HALF_LIFE, prior_weight: float = PRIOR_WEIGHT) -> None:
        self.half_life = half_life
        self.prior_weight = prior_weight
        self.z: list[float] = []
        self._pending: dict[int, tuple[float, float]] = {}

    def predicted(self, index: int, mean: float, variance: float) -> None:
        """The map model's prediction of a measurement at `index` (scalar units), made before it is measured."""
        if math.isfinite(mean) and math.isfinite(variance) and variance > 0:
            self._pending = {index: (mean, variance)}

    def measured(self, index: int, value: float) -> None:
        prediction = self._pending.pop(index, None)
        if prediction is not None and math.isfinite(value):
            mean, variance = prediction
            self.z.append((value - mean) / math.sqrt(variance))

    def variance_scale(self, prior_scale: float = 1.0) -> float:
        """Factor for the predictive variance: weighted mean square of the z-scores, shrunk towards `prior_scale`."""
        z = numpy.asarray(self.z, dtype=numpy.float64)
        weights = 0.5 ** (numpy.arange(z.size)[::-1] / self.half_life)
        prior = max(float(prior_scale), MIN_SCALE) if math.isfinite(prior_scale) else MIN_SCALE
        scale = (self.prior_weight * prior + float(weights @ (z * z))) / (self.prior_weight + float(weights.sum()))
        return max(scale, MIN_SCALE)

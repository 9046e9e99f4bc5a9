"""How far to trust an uncertainty map: coverage and negative log predictive density against a known truth.

Evaluated over the *unmeasured* positions only (at a measured position the truth is the value the model saw).
`sigma` is the standard deviation of the value a measurement would give there, in the scalar's units; a
calibrated map has about 68% of |prediction - truth| within 1 sigma and 95% within 2 sigma, and a mean Gaussian
NLPD below that of a flat prediction with the measured values' mean and standard deviation (`baseline_nlpd`), so
calibration cannot come from inflating sigma.
"""
from __future__ import annotations

import math

import numpy

LOG_2PI = math.log(2 * math.pi)


def _unmeasured(truth: numpy.ndarray, measured: numpy.ndarray | None, *maps: numpy.ndarray) -> numpy.ndarray:
    valid = numpy.isfinite(truth)
    for array in maps:
        valid &= numpy.isfinite(array)
    if measured is not None:
        valid &= ~numpy.asarray(measured, dtype=bool).reshape(truth.shape)
    return valid


def gaussian_nlpd(prediction: numpy.ndarray, sigma: numpy.ndarray, truth: numpy.ndarray) -> float:
    """Mean of -log N(truth | prediction, sigma^2) (nats per position)."""
    sigma = numpy.maximum(sigma, 1e-300)
    z = (truth - prediction) / sigma
    return float(numpy.mean(0.5 * LOG_2PI + numpy.log(sigma) + 0.5 * z * z))


def calibration_metrics(prediction: numpy.ndarray, sigma: numpy.ndarray, truth: numpy.ndarray,
                        measured: numpy.ndarray | None = None) -> dict[str, float]:
    """coverage_1sigma, coverage_2sigma, nlpd and nrmse over the unmeasured positions with a finite truth.

    nrmse here is the RMSE over those positions divided by the truth's standard deviation over all positions (the
    map-wide `groundtruth.nrmse` includes the measured positions).
    """
    prediction, sigma, truth = (numpy.asarray(a, dtype=numpy.float64) for a in (prediction, sigma, truth))
    keep = _unmeasured(truth, measured, prediction, sigma)
    if not keep.any():
        return {"coverage_1sigma": math.nan, "coverage_2sigma": math.nan, "nlpd": math.nan, "nrmse": math.nan}
    error = numpy.abs(prediction[keep] - truth[keep])
    spread = float(numpy.std(truth[numpy.isfinite(truth)]))
    return {
        "coverage_1sigma": float(numpy.mean(error <= sigma[keep])),
        "coverage_2sigma": float(numpy.mean(error <= 2 * sigma[keep])),
        "nlpd": gaussian_nlpd(prediction[keep], sigma[keep], truth[keep]),
        "nrmse": float(numpy.sqrt(numpy.mean(error ** 2)) / spread) if spread > 0 else math.nan,
    }


def baseline_nlpd(values: numpy.ndarray, truth: numpy.ndarray, measured: numpy.ndarray | None = None) -> float:
    """NLPD of predicting the measured values' mean with their standard deviation everywhere (the bar to beat)."""
    values = numpy.asarray(values, dtype=numpy.float64)
    values = values[numpy.isfinite(values)]
    truth = numpy.asarray(truth, dtype=numpy.float64)
    keep = _unmeasured(truth, measured)
    if values.size < 2 or not keep.any():
        return math.nan
    return gaussian_nlpd(numpy.full(int(keep.sum()), values.mean()), numpy.full(int(keep.sum()), values.std()),
                         truth[keep])

"""The paper's Fig. 3: how well does DKL reconstruct the full map from a random subset of the patterns?"""
from __future__ import annotations

import dataclasses
import logging
import math
import typing

import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.evaluation.groundtruth import nrmse
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.models import fit as fitting
from dkl4dstem.posterior.predictive import Predictive

logger = logging.getLogger(__name__)

MAX_EXACT_POINTS = 4096  # exact GP training beyond this is minutes per fit on a CPU; larger subsets are sampled


@dataclasses.dataclass
class Reconstruction:
    fraction: float
    n_points: int
    prediction: numpy.ndarray
    nrmse: float


def reconstruct(survey: numpy.ndarray, truth: numpy.ndarray, fractions: typing.Sequence[float], *, window: int = 12,
                seed: int = 0, iterations: int = 300, config: ExperimentConfig | None = None,
                progress: typing.Callable[[str], None] | None = None) -> list[Reconstruction]:
    """Train a fresh DKL on a random subset per fraction and predict the whole map."""
    height, width = survey.shape
    finite = numpy.flatnonzero(numpy.isfinite(truth.reshape(-1)))
    if finite.size < 2:
        raise InputError("the ground-truth map has fewer than 2 finite values")
    patches = extract_patches(survey, window)
    results = []
    for fraction in fractions:
        if not (0 < fraction <= 1):
            raise InputError(f"fractions must lie in (0, 1], got {fraction}")
        n_points = min(max(2, int(round(fraction * height * width))), finite.size, MAX_EXACT_POINTS)
        rng = numpy.random.default_rng(seed)
        indices = [int(i) for i in rng.choice(finite, size=n_points, replace=False)]
        values = [float(v) for v in truth.reshape(-1)[indices]]
        base = config or ExperimentConfig()
        fit_config = dataclasses.replace(base, window=window, seed=seed, seeds=n_points, steps=0)
        if progress is not None:
            progress(f"fraction {fraction:g}: training on {n_points} points")
        predictive = _fit(patches, indices, values, fit_config, iterations)
        if predictive is None:
            prediction = numpy.full((height, width), math.nan)
        else:
            prediction = predictive.mean_in_units().cpu().numpy().reshape(height, width)
        results.append(Reconstruction(fraction, n_points, prediction, nrmse(prediction, truth)))
    return results


def fit_subset(survey: numpy.ndarray, indices: list[int], values: list[float], *, window: int = 12, seed: int = 0,
               iterations: int = 200, folds: int = 5, config: ExperimentConfig | None = None
               ) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Prediction and calibrated uncertainty (std of a measurement, scalar units) from one fit on given points.

    A one-shot fit has no prequential residuals (`recalibration`), so its variance scale comes from K-fold
    cross-validation with fresh fits (the network retrained without the held-out points; leave-one-out on the
    trained network is in-sample and far too optimistic).
    """
    height, width = survey.shape
    patches = extract_patches(survey, window)
    base = dataclasses.replace(config or ExperimentConfig(), window=window, seed=seed, steps=0)

    def fit(subset: list[int]) -> tuple[numpy.ndarray, numpy.ndarray] | None:
        predictive = _fit(patches, [indices[i] for i in subset], [values[i] for i in subset],
                          dataclasses.replace(base, seeds=len(subset)), iterations)
        if predictive is None:
            return None
        return (predictive.mean_in_units().cpu().numpy(),
                predictive.variance_in_units(observation_noise=True).cpu().numpy())

    everything = fit(list(range(len(indices))))
    if everything is None:
        nan = numpy.full((height, width), math.nan)
        return nan, nan
    fold_of = numpy.random.default_rng(seed).permutation(len(indices)) % max(2, min(folds, len(indices)))
    z: list[float] = []
    for fold in numpy.unique(fold_of):
        held_out = numpy.flatnonzero(fold_of == fold)
        fitted = fit([int(i) for i in numpy.flatnonzero(fold_of != fold)])
        if fitted is None:
            continue
        for i in held_out:
            z.append((values[i] - fitted[0][indices[i]]) / math.sqrt(fitted[1][indices[i]]))
    scale = max(1.0, float(numpy.mean(numpy.square(z)))) if z else 1.0
    mean, variance = everything[0], everything[1]
    return mean.reshape(height, width), numpy.sqrt(variance * scale).reshape(height, width)


def _fit(patches: numpy.ndarray, indices: list[int], values: list[float], config: ExperimentConfig,
         iterations: int) -> Predictive | None:
    """A fresh model's posterior on the points (`models.fit`); None when the fit failed (logged): a NaN map."""
    try:
        result = fitting.fit(patches, indices, values, config, iterations=iterations)
    except Exception as exc:
        logger.warning("DKL fit on %d points failed: %s", len(indices), exc, exc_info=True)
        return None
    if result.posterior is None:
        return None
    return result.posterior.predict(numpy.asarray([v for v in values if math.isfinite(v)]))

"""The paper's Fig. 3: how well does DKL reconstruct the full map from a random subset of the patterns?"""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.experiment.loop import ExperimentConfig
from dkl4dstem.evaluation.groundtruth import nrmse
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.models.trainer import BackgroundTrainer

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
        trainer_config = dataclasses.replace(base, window=window, seed=seed, seeds=n_points, steps=0)
        trainer = BackgroundTrainer(patches, trainer_config)
        if progress is not None:
            progress(f"fraction {fraction:g}: training on {n_points} points")
        trainer.fit_now(indices, values, iterations=iterations)
        posterior = trainer.take_result(wait=True)
        if posterior is None:
            prediction = numpy.full((height, width), math.nan)
        else:
            mean, _, target_mean, target_std = posterior.predict(numpy.asarray(values))
            prediction = (mean.cpu().numpy() * target_std + target_mean).reshape(height, width)
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

    def fit(subset: list[int]) -> tuple[numpy.ndarray, numpy.ndarray, float, float] | None:
        trainer = BackgroundTrainer(patches, dataclasses.replace(base, seeds=len(subset)))
        subset_values = [values[i] for i in subset]
        trainer.fit_now([indices[i] for i in subset], subset_values, iterations=iterations)
        posterior = trainer.take_result(wait=True)
        if posterior is None:
            return None
        mean, variance, target_mean, target_std = posterior.predict(numpy.asarray(subset_values))
        return (mean.cpu().numpy() * target_std + target_mean,
                (variance.cpu().numpy() + posterior.noise) * target_std ** 2, target_mean, target_std)

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

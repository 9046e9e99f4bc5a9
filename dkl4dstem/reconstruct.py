"""The paper's Fig. 3: how well does DKL reconstruct the full map from a random subset of the patterns?"""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.experiment import ExperimentConfig
from dkl4dstem.groundtruth import nrmse
from dkl4dstem.patches import extract_patches
from dkl4dstem.trainer import BackgroundTrainer

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

"""A trained model's frozen kernel + embedding, conditioned incrementally on measured points: what a fit publishes."""
from __future__ import annotations

import math
import typing

import numpy
import torch

from dkl4dstem.posterior.cache import PosteriorCache
from dkl4dstem.posterior.predictive import Predictive, standardization


def new_points(indices: typing.Sequence[int], values: typing.Sequence[float], known: typing.Container[int]
               ) -> tuple[list[int], list[float]]:
    """The measured points with a usable value that the posterior is not yet conditioned on."""
    pairs = [(i, v) for i, v in zip(indices, values) if i not in known and math.isfinite(v)]
    return [i for i, _ in pairs], [v for _, v in pairs]


class TrainedPosterior:
    """The exact GP posterior of one trained model over every candidate; `predict` gives the `Predictive`."""

    def __init__(self, cache: PosteriorCache, version: int, training_seconds: float, refit: bool = False,
                 loo_scale: float = 1.0) -> None:
        self.cache = cache
        self.version = version
        self.training_seconds = training_seconds
        self.refit = refit  # trained afresh (first fit or a refit): the loop's map model until the next one
        self.loo_scale = loo_scale  # mean squared leave-one-out z-score on its training points (in-sample)
        self._in_cache: set[int] = set(cache.indices)

    def catch_up(self, indices: typing.Sequence[int], values: typing.Sequence[float]) -> None:
        """Condition on the points measured since (those without a usable value are skipped)."""
        missing, missing_values = new_points(indices, values, self._in_cache)
        try:
            self.cache.add_many(missing, missing_values)
        except torch.linalg.LinAlgError:  # block factor not PD numerically (nothing was added): rank-1 updates
            for index, value in zip(missing, missing_values):  # clamp and cannot fail
                self.cache.add(index, value)
        self._in_cache.update(missing)

    @property
    def noise(self) -> float:
        """The trained observation-noise variance, in standardized units."""
        return self.cache.noise

    def predict(self, finite_values: numpy.ndarray) -> Predictive:
        """The posterior at every candidate, standardized over `finite_values` (the values it is conditioned on)."""
        target_mean, target_std = standardization(finite_values)
        mean, variance = self.cache.predict(target_mean, target_std)
        return Predictive(mean, variance, self.cache.noise, target_mean, target_std)

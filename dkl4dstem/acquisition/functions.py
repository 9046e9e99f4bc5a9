"""Acquisition functions over the discrete candidate set (every survey pixel).

BoTorch's analytic acquisition functions do the numerics (LogExpectedImprovement is computed in log space, so
it never underflows to an all-zero or NaN map far from the incumbent; Ament et al., NeurIPS 2023). They read the
precomputed `posterior.predictive.Predictive` through a minimal BoTorch `Model` whose inputs are candidate indices, so
no second prediction pass is made; they work in its standardized units.
"""
from __future__ import annotations

import typing

import numpy
import torch
from botorch.acquisition import analytic
from botorch.models.model import Model
from botorch.posteriors import Posterior

from dkl4dstem.config import ACQUISITIONS
from dkl4dstem.errors import InputError
from dkl4dstem.posterior.predictive import Predictive


class _CandidatePosterior(Posterior):
    def __init__(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
        self._mean = mean
        self._variance = variance

    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def variance(self) -> torch.Tensor:
        return self._variance

    @property
    def device(self) -> torch.device:
        return self._mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self._mean.dtype

    def rsample(self, sample_shape: torch.Size | None = None) -> torch.Tensor:
        raise NotImplementedError("only analytic acquisition functions are supported")


class CandidateModel(Model):
    """BoTorch model over candidate indices: X[..., 0] is the index into a precomputed `Predictive`.

    `observation_noise`: its posterior is that of the next measurement (latent + noise) whatever the caller asks;
    BoTorch's analytic acquisition functions ask for the latent one.
    """

    def __init__(self, predictive: Predictive, observation_noise: bool = False) -> None:
        super().__init__()
        self.predictive = predictive
        self.observation_noise = observation_noise

    @property
    def num_outputs(self) -> int:
        return 1

    def posterior(self, X: torch.Tensor, output_indices: typing.Any = None, observation_noise: typing.Any = False,
                  posterior_transform: typing.Any = None) -> Posterior:
        index = X[..., 0].long()  # (b, q)
        variance = self.predictive.variance(self.observation_noise or bool(observation_noise))
        return _CandidatePosterior(self.predictive.mean[index].unsqueeze(-1), variance[index].unsqueeze(-1))


def acquisition_values(predictive: Predictive, best: float, *, kind: str = "ei", xi: float = 0.01,
                       beta: float = 4.0, maximize: bool = True, observation_noise: bool = True) -> torch.Tensor:
    """Acquisition value at every candidate (standardized units; larger is better, 'ei' is log EI).

    `best`: the incumbent in the scalar's units. `observation_noise`: on the predictive distribution of the next
    measurement (latent variance + noise, as gpax does) instead of the noiseless function's.
    """
    model = CandidateModel(predictive, observation_noise)
    if kind == "ei":
        # xi shifts the incumbent towards the direction of improvement, as in the paper's EI(xi).
        best_standardized = predictive.standardize(best)
        best_f = best_standardized + xi if maximize else best_standardized - xi
        function: analytic.AnalyticAcquisitionFunction = analytic.LogExpectedImprovement(
            model, best_f=best_f, maximize=maximize)
    elif kind == "ucb":
        function = analytic.UpperConfidenceBound(model, beta=beta, maximize=maximize)
    elif kind == "uncertainty":
        function = analytic.PosteriorStandardDeviation(model)
    elif kind == "map":
        raise InputError("the 'map' acquisition is a design over the survey's patches: mapping.FeatureSpaceDesign")
    else:
        raise InputError(f"unknown acquisition {kind!r}; choose one of {', '.join(ACQUISITIONS)}")
    mean = predictive.mean
    X = torch.arange(mean.shape[0], dtype=mean.dtype, device=mean.device).reshape(-1, 1, 1)
    with torch.no_grad():
        return function(X)


def choose_next(values: torch.Tensor, blocked: numpy.ndarray) -> int | None:
    """Index of the best candidate that is neither measured nor excluded; None when none is left."""
    masked = torch.where(torch.isnan(values), -torch.inf, values)
    masked[torch.as_tensor(blocked, device=values.device)] = -torch.inf
    best = int(torch.argmax(masked))
    if not bool(torch.isfinite(masked[best])):
        allowed = numpy.flatnonzero(~blocked)
        return int(allowed[0]) if len(allowed) else None
    return best

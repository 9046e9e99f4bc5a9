"""Acquisition functions over the discrete candidate set (every survey pixel).

BoTorch's analytic acquisition functions do the numerics (LogExpectedImprovement is computed in log space, so
it never underflows to an all-zero or NaN map far from the incumbent; Ament et al., NeurIPS 2023). They are fed
the precomputed posterior of `PosteriorCache` through a minimal BoTorch `Model` whose inputs are candidate
indices, so no second prediction pass is made.
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
    """BoTorch model over candidate indices: X[..., 0] is the index into a precomputed posterior."""

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
        super().__init__()
        self._mean = mean
        self._variance = variance

    @property
    def num_outputs(self) -> int:
        return 1

    def posterior(self, X: torch.Tensor, output_indices: typing.Any = None, observation_noise: typing.Any = False,
                  posterior_transform: typing.Any = None) -> Posterior:
        index = X[..., 0].long()  # (b, q)
        return _CandidatePosterior(self._mean[index].unsqueeze(-1), self._variance[index].unsqueeze(-1))


def acquisition_values(mean: torch.Tensor, variance: torch.Tensor, best: float, *, kind: str = "ei",
                       xi: float = 0.01, beta: float = 4.0, maximize: bool = True) -> torch.Tensor:
    """Acquisition value at every candidate (standardized units; larger is better, 'ei' is log EI)."""
    model = CandidateModel(mean, variance)
    if kind == "ei":
        # xi shifts the incumbent towards the direction of improvement, as in the paper's EI(xi).
        best_f = best + xi if maximize else best - xi
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

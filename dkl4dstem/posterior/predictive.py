"""The posterior over every candidate as the acquisition and the maps read it: the seam between model and acquisition.

As in BoTorch, the acquisition functions never see the model, only its posterior. The GP is trained on standardized
targets, (y - mean) / std over the values it is conditioned on; the acquisition works in those units (its incumbent
is standardized the same way, `standardize`), the maps in the scalar's. This object is the one place where the
observation noise is added to the latent variance (`variance(observation_noise)`) and the one place where the
standardization is undone (`mean_in_units`, `variance_in_units`).
"""
from __future__ import annotations

import dataclasses

import numpy
import torch


def standardization(values: numpy.ndarray) -> tuple[float, float]:
    """(mean, std) the targets are standardized with; std 1 for fewer than two values or constant ones."""
    mean = float(values.mean()) if values.size else 0.0
    std = float(values.std()) if values.size > 1 else 1.0
    return mean, (std if std > 1e-12 * max(1.0, abs(mean)) else 1.0)


@dataclasses.dataclass(frozen=True)
class Predictive:
    """Predictive distribution at every candidate: the latent function's and, with the noise, a measurement's."""

    mean: torch.Tensor             # (N,) posterior mean, standardized units
    latent_variance: torch.Tensor  # (N,) variance of the noiseless function, standardized units
    noise: float                   # trained observation-noise variance, standardized units
    target_mean: float             # the standardization: y = mean + std * standardized
    target_std: float

    def variance(self, observation_noise: bool) -> torch.Tensor:
        """Variance of a measurement (latent + noise) with `observation_noise`, else of the latent function."""
        return self.latent_variance + self.noise if observation_noise else self.latent_variance

    def standardize(self, value: float) -> float:
        """A value in the scalar's units (e.g. the incumbent) in the posterior's standardized units."""
        return (value - self.target_mean) / self.target_std

    def mean_in_units(self) -> torch.Tensor:
        return self.mean * self.target_std + self.target_mean

    def variance_in_units(self, observation_noise: bool) -> torch.Tensor:
        return self.variance(observation_noise) * self.target_std ** 2

    def first(self, n: int) -> Predictive:
        """The first n candidates (a transferred run's prior rows follow the survey's and are never candidates)."""
        return dataclasses.replace(self, mean=self.mean[:n], latent_variance=self.latent_variance[:n])

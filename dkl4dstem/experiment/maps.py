"""The prediction, uncertainty and acquisition maps shown after each decision, in the scalar's units.

They come from the map model, not from the DKL that steers the acquisition: by default a GP on fixed survey
features (models/survey_map.py), which reads a map from few points where a network trained on those points does
not; else (map_model="dkl", --init-from, very large surveys) the last fresh DKL fit (first fit or refit)
conditioned on every point since (the warm-started rounds between refits drift ever more overconfident). The
uncertainty is the standard deviation of a measurement there (latent variance + noise), scaled by the prequential
recalibration; the map model's prediction of the next position is recorded for it. Computed after the decision is
timed, still before the next move.
"""
from __future__ import annotations

import typing

import numpy
import torch

from dkl4dstem.posterior.recalibration import PrequentialCalibration
from dkl4dstem.posterior.trained import TrainedPosterior

if typing.TYPE_CHECKING:
    from dkl4dstem.experiment.deciding import Decision
    from dkl4dstem.experiment.points import Points
    from dkl4dstem.models.survey_map import SurveyMapModel

Maps = tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]  # prediction, uncertainty (1 sigma), acquisition: (H, W)


class MapModel:
    def __init__(self, shape: tuple[int, int], survey_map: SurveyMapModel | None = None) -> None:
        self.shape = shape
        self.survey_map = survey_map
        self.posterior: TrainedPosterior | None = None  # the last fresh fit
        self.recalibration = PrequentialCalibration()
        self.latest: Maps | None = None

    def swapped_in(self, posterior: TrainedPosterior) -> None:
        if posterior.refit:
            self.posterior = posterior

    def measured(self, index: int, value: float) -> None:
        self.recalibration.measured(index, value)

    def update(self, current: TrainedPosterior, decision: Decision, points: Points) -> Maps:
        """The maps after a decision made on `current`."""
        if self.survey_map is not None:
            prediction, measurement_variance, prior_scale = self.survey_map.maps(points.indices, points.values)
        else:
            prediction, measurement_variance, prior_scale = self._dkl_maps(current, decision, points)
        next_index = decision.next_index
        if next_index is not None:
            self.recalibration.predicted(next_index, float(prediction[next_index]),
                                         float(measurement_variance[next_index]))
        scale = self.recalibration.variance_scale(prior_scale)
        self.latest = (prediction.cpu().numpy().reshape(self.shape),
                       (measurement_variance * scale).sqrt().cpu().numpy().reshape(self.shape),
                       decision.acquisition.cpu().numpy().reshape(self.shape))
        return self.latest

    def _dkl_maps(self, current: TrainedPosterior, decision: Decision, points: Points
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Prediction and variance of a measurement from the last fresh DKL fit, and its leave-one-out scale."""
        model = self.posterior or current
        predictive = decision.predictive
        if model is not current:
            model.catch_up(points.indices, points.values)
            predictive = model.predict(decision.targets).first(predictive.mean.shape[0])
        return predictive.mean_in_units(), predictive.variance_in_units(observation_noise=True), model.loo_scale

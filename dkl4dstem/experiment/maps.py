"""The prediction, uncertainty and acquisition maps shown after each decision, in the scalar's units.

They come from the map model, the last fresh fit (first fit or refit) conditioned on every point since: the
warm-started rounds between refits keep fitting the network to the measured points, and their posterior drifts
ever more overconfident (RESULTS.md, calibration). The uncertainty is the standard deviation of a measurement there
(latent variance + trained noise), scaled by the prequential recalibration; the map model's prediction of the next
position is recorded for it. Computed after the decision is timed, still before the next move.
"""
from __future__ import annotations

import typing

import numpy

from dkl4dstem.posterior.recalibration import PrequentialCalibration
from dkl4dstem.posterior.trained import TrainedPosterior

if typing.TYPE_CHECKING:
    from dkl4dstem.experiment.deciding import Decision
    from dkl4dstem.experiment.points import Points

Maps = tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]  # prediction, uncertainty (1 sigma), acquisition: (H, W)


class MapModel:
    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
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
        model = self.posterior or current
        predictive = decision.predictive
        if model is not current:
            model.catch_up(points.indices, points.values)
            predictive = model.predict(decision.targets).first(predictive.mean.shape[0])
        next_index = decision.next_index
        measurement_variance = predictive.variance_in_units(observation_noise=True)
        prediction = predictive.mean_in_units()
        if next_index is not None:
            self.recalibration.predicted(next_index, float(prediction[next_index]),
                                         float(measurement_variance[next_index]))
        scale = self.recalibration.variance_scale(model.loo_scale)
        self.latest = (prediction.cpu().numpy().reshape(self.shape),
                       (measurement_variance * scale).sqrt().cpu().numpy().reshape(self.shape),
                       decision.acquisition.cpu().numpy().reshape(self.shape))
        return self.latest

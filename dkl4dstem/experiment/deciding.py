"""Where to measure next: the seed positions, then posterior -> acquisition -> the best free candidate.

Free means neither measured nor excluded (the user's region / exclusion mask, positions whose frames failed); a
position the user forced (`Experiment.force_next`) comes before the model's choice.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing

import numpy
import torch

from dkl4dstem.acquisition import functions as acquisition
from dkl4dstem.acquisition.mapping import FeatureSpaceDesign
from dkl4dstem.errors import InputError
from dkl4dstem.experiment.control import RunControl
from dkl4dstem.experiment.points import Points
from dkl4dstem.experiment.steering import DKL, Steering
from dkl4dstem.posterior.predictive import Predictive, standardization
from dkl4dstem.posterior.trained import TrainedPosterior

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.models.survey_map import SurveyMapModel
    from dkl4dstem.models.trainer import BackgroundTrainer

logger = logging.getLogger(__name__)


def blocked_mask(exclude_mask: numpy.ndarray | None, shape: tuple[int, int]) -> numpy.ndarray:
    """(N,) bool: the candidates the user excluded (True) before anything is measured."""
    blocked = numpy.zeros(shape[0] * shape[1], dtype=bool)
    if exclude_mask is not None:
        mask = numpy.asarray(exclude_mask, dtype=bool)
        if mask.shape != shape:
            raise InputError(f"exclude mask shape {mask.shape} does not match the survey {shape[0]}x{shape[1]}")
        blocked |= mask.reshape(-1)
    return blocked


def forced_or(index: int, control: RunControl, points: Points, height: int) -> int:
    """The user's forced position when one is waiting and still free, else `index`."""
    while (position := control.pop_forced()) is not None:
        y, x = position
        if points.is_free(y, x, height):
            control.forced_measured.append(position)
            return y * points.width + x
        logger.warning("forced point (%d, %d) skipped: outside the survey, measured or excluded", y, x)
    return index


def seed_candidates(config: ExperimentConfig, n_candidates: int, trainer: BackgroundTrainer,
                    patches: numpy.ndarray, pretrained: bool) -> typing.Iterator[int]:
    """Seed positions in order (the caller skips measured or excluded ones): a fixed permutation's first, then,
    with pre-training, the points spread over the pre-trained embedding from it (pretrain.spread_points;
    pre-training runs while the first is measured), then the rest of the permutation. Deterministic per seed, so
    a resumed run continues the same sequence."""
    from dkl4dstem.models import pretrain

    order = numpy.random.default_rng(config.seed).permutation(n_candidates)
    yield int(order[0])
    count = min(config.seeds, pretrain.SPREAD_SEEDS)
    if pretrained and count > 1:
        trainer.join()
        latent = trainer.model.embed(patches[:n_candidates])
        yield from pretrain.spread_points(latent, count, int(order[0]))[1:]
    yield from (int(i) for i in order[1:])


@dataclasses.dataclass
class Decision:
    next_index: int | None       # None: the last measurement was made, or no free candidate is left
    predictive: Predictive       # the acquisition's posterior over the candidates
    acquisition: torch.Tensor    # (N,) its values
    targets: numpy.ndarray       # the values the posterior was standardized over
    seconds: float
    steered_by: str = DKL        # whose posterior the acquisition read: the DKL's or the map model's (steering.py)


class Decider:
    """posterior -> `Predictive` -> acquisition values -> the best free candidate."""

    def __init__(self, config: ExperimentConfig, patches: numpy.ndarray, n_candidates: int,
                 prior_values: numpy.ndarray | None, survey_map: SurveyMapModel | None = None) -> None:
        self.config = config
        self.patches = patches
        self.n_candidates = n_candidates
        self.prior_values = prior_values  # a transferred run's values: standardized together with this run's
        self.design: FeatureSpaceDesign | None = None  # --acquisition map with map_model="dkl"
        self.survey_map = survey_map  # --acquisition map: the design targets the map model
        # early in a run the map model may steer (steering.py): with pre-training, on the survey's own candidates
        self.steering = Steering(survey_map is not None and config.pretrain and config.steer == "auto")

    def targets(self, values: numpy.ndarray) -> numpy.ndarray:
        """The values the posterior's targets are standardized over: this run's plus a transferred run's."""
        return values if self.prior_values is None else numpy.concatenate([self.prior_values, values])

    def decide(self, posterior: TrainedPosterior, points: Points, final: bool = False) -> Decision:
        start = time.perf_counter()
        posterior.catch_up(points.indices, points.values)
        valid = points.training_values()
        targets = self.targets(valid)
        predictive = posterior.predict(targets).first(self.n_candidates)
        incumbent = valid if valid.size else targets  # no own point yet: the earlier run's best
        best = float(incumbent.max() if self.config.maximize else incumbent.min())
        steered_by = DKL
        if self.config.acquisition == "map" and self.survey_map is not None:  # the mapping mode (survey_map.py)
            values = self.survey_map.design_values(points.indices, points.values, points.blocked)
        elif self.config.acquisition == "map":  # with the DKL map model: a design in fixed patch features
            if self.design is None:
                self.design = FeatureSpaceDesign(self.patches, capacity=self.config.seeds + self.config.steps + 1,
                                                 seed=self.config.seed)
            values = self.design.values(points.indices)
        else:
            steered_by = self.steering.leader
            steering = predictive if steered_by == DKL else self._survey_predictive(points, valid, predictive)
            values = self._acquisition(steering, best)
            if steered_by != DKL and not worth_steering(values, steering, points.blocked, self.config.acquisition):
                steered_by, values = DKL, self._acquisition(predictive, best)
            if not final:
                self.steering.steered(steered_by)
        next_index = None if final else acquisition.choose_next(values, points.blocked)
        return Decision(next_index, predictive, values, targets, time.perf_counter() - start, steered_by)

    def _acquisition(self, predictive: Predictive, best: float) -> torch.Tensor:
        # on the predictive distribution of the next *measurement* by default (`observation_noise`, as gpax
        # does), not of the noiseless latent function: measured values are noisy and so is the incumbent
        return acquisition.acquisition_values(
            predictive, best, kind=self.config.acquisition, xi=self.config.xi, beta=self.config.beta,
            maximize=self.config.maximize, observation_noise=self.config.observation_noise)

    def _survey_predictive(self, points: Points, valid: numpy.ndarray, like: Predictive) -> Predictive:
        """The map model's posterior, conditioned on every point with its hyperparameters kept (they are refitted
        after the decision, with the maps), standardized like the DKL's targets."""
        assert self.survey_map is not None
        self.survey_map.fit(points.indices, points.values, refit=False)
        mean, variance = self.survey_map.predict()
        shift, scale = standardization(valid)
        dtype = like.mean.dtype
        return Predictive(((mean - shift) / scale).to(dtype)[:self.n_candidates],
                          (variance / scale ** 2).to(dtype)[:self.n_candidates],
                          self.survey_map.noise / scale ** 2, shift, scale)


def worth_steering(values: torch.Tensor, predictive: Predictive, blocked: numpy.ndarray, kind: str) -> bool:
    """Whether the map model's EI still expects an improvement larger than the measurement noise anywhere: once it
    does not, it has found the maxima it can see (more of its picks would be near-duplicates of them, at the cost
    of the map), and the DKL steers this decision."""
    if kind != "ei" or bool(blocked.all()):
        return True
    best = float(values[torch.as_tensor(~blocked)].max())  # log EI, standardized units
    return best > 0.5 * math.log(max(predictive.noise, 1e-300))

"""When a training round is a warm-start update and when a refit from the initial weights."""
from __future__ import annotations

import dataclasses
import math
import typing

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig


def next_refit(n: int, config: ExperimentConfig) -> int:
    """The data-set size of the first refit after one at n points.

    Every `refit_every` points while n is small; once that is less than `refit_growth` of the data, when the data
    grew by that fraction: a refit from the initial weights is `refit_iterations` Adam iterations of O(n^3) while
    a fixed number of new points changes a large data set only a little (RESULTS.md, latency). By default: 25, 50,
    ..., 125, then 150, 180, 216...
    """
    every = config.refit_every
    step = refit_interval(n, config)
    return (n // every + 1) * every if step == every else n + step


def refit_interval(n: int, config: ExperimentConfig) -> int:
    """Points between refits around a data set of n points."""
    return max(config.refit_every, math.ceil(config.refit_growth * n))


@dataclasses.dataclass(frozen=True)
class Round:
    iterations: int     # Adam iterations
    from_initial: bool  # restart from the initial (pre-trained or transferred) weights
    refit: bool         # a fresh fit: the loop's map model until the next one


class RefitSchedule:
    """The rounds of one run's trainer, in order of the data-set size they train on."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self._next_refit = next_refit(0, config)

    def round_for(self, n: int) -> Round:
        """The round to train on n points."""
        if n >= self._next_refit:
            self._next_refit = next_refit(n, self.config)
            return Round(self.config.refit_iterations, self.config.refit_from_initial, True)
        return Round(self.config.update_iterations, False, False)

    def fitted(self, n: int) -> None:
        """A fit on n points was made outside the schedule (the first fit on the seeds): the next refit follows it."""
        self._next_refit = next_refit(n, self.config)

"""Which model steers the acquisition: the map model on fixed survey features early, the DKL once it predicts better.

Why: a DKL network trained on the few points measured early in a run extrapolates poorly, while the map model
(models/survey_map.py: GPs on fixed features of the whole survey, a handful of hyperparameters) reads a usable map
from ten points (RESULTS.md, "Maps after 1%"). Its features were chosen with the physics of |CoM| in mind, though;
for another scalar or sample they may not carry the signal, and the DKL, which learns its features, catches up as
points arrive. So the data decide who steers, by the prequential principle (Dawid): before each measurement both
models predict the value at the chosen position, and once it is measured each one's squared error is kept. These
errors are out of sample for both (the DKL's network has not seen the value either, unlike its leave-one-out
residuals). The next decision is made on the posterior of the model with the smaller recency-weighted mean squared
error; before the first such residual the map model steers. Nothing is final: a model that predicts better again
steers again. One more condition (deciding.worth_steering): with EI, the map model steers a decision only while its
EI somewhere expects an improvement larger than its noise std; once it does not, it has found the maxima it can
see, and its further picks would be near-duplicates of them (EI on fixed features harvests one kind of structure;
measured: maps after 1% and calibration at 40 points worse on the 48 x 48 set, RESULTS.md "Head start, round 3"),
so the DKL steers that decision. Part of the dose-free head start: on only with pre-training (`--no-pretrain`
turns it off).
"""
from __future__ import annotations

import math

import numpy

from dkl4dstem.posterior.recalibration import HALF_LIFE

SURVEY, DKL = "survey", "dkl"


class Steering:
    """Out-of-sample squared errors of both models' predictions; `leader` is the one with the smaller weighted mean."""

    def __init__(self, enabled: bool, half_life: float = HALF_LIFE) -> None:
        self.enabled = enabled
        self.half_life = half_life
        self.errors: dict[str, list[float]] = {SURVEY: [], DKL: []}  # paired: one entry per measured prediction
        self.history: list[str] = []  # who steered each decision, in order
        self._pending: dict[int, dict[str, float]] = {}

    def predicted(self, index: int, predictions: dict[str, float]) -> None:
        """Each model's predicted mean (scalar units) at `index`, made before it is measured."""
        if self.enabled and all(math.isfinite(v) for v in predictions.values()) and len(predictions) == 2:
            self._pending = {index: dict(predictions)}

    def measured(self, index: int, value: float) -> None:
        prediction = self._pending.pop(index, None)
        if prediction is not None and math.isfinite(value):
            for name, mean in prediction.items():
                self.errors[name].append((value - mean) ** 2)

    def weighted_errors(self) -> dict[str, float]:
        """Recency-weighted mean squared error of each model (NaN before the first residual)."""
        n = len(self.errors[DKL])
        if not n:
            return {SURVEY: math.nan, DKL: math.nan}
        weights = 0.5 ** (numpy.arange(n)[::-1] / self.half_life)
        return {name: float(weights @ numpy.asarray(e)) / float(weights.sum()) for name, e in self.errors.items()}

    @property
    def leader(self) -> str:
        """Who steers the next decision: the map model until the DKL's weighted error is the smaller."""
        if not self.enabled:
            return DKL
        errors = self.weighted_errors()
        return DKL if errors[DKL] < errors[SURVEY] else SURVEY  # NaN (no residual yet): the map model

    def steered(self, name: str) -> None:
        self.history.append(name)

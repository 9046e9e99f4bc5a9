"""What the run tells: a `StepEvent` per measurement to the listener (the UI, the CLI's progress), the timings,
and the `ExperimentResult` at the end."""
from __future__ import annotations

import logging
import typing

from dkl4dstem.data.patches import position_of
from dkl4dstem.experiment.events import ExperimentResult, StepEvent

if typing.TYPE_CHECKING:
    from dkl4dstem.experiment.deciding import Decision
    from dkl4dstem.experiment.maps import MapModel
    from dkl4dstem.experiment.points import Points

logger = logging.getLogger(__name__)


class Reporter:
    def __init__(self, on_event: typing.Callable[[StepEvent], None] | None, points: Points, maps: MapModel,
                 n_total: int, units: str, maximize: bool) -> None:
        self.on_event = on_event
        self.points = points
        self.maps = maps
        self.n_total = n_total
        self.units = units
        self.maximize = maximize
        self.timings: dict[str, list[float]] = {"decision": [], "step": [], "training": [], "instrument": []}

    def emit(self, index: int, value: float, phase: str, decision: Decision | None, training_seconds: float,
             instrument_seconds: float, step_seconds: float, model_version: int) -> None:
        """One measurement made (`decision`: the one made after it, None while seeding)."""
        decision_seconds = decision.seconds if decision is not None else 0.0
        self.timings["instrument"].append(instrument_seconds)
        if phase == "step":  # decision, training and step times are per DKL step (seed points have none)
            for name, seconds in (("decision", decision_seconds), ("training", training_seconds),
                                  ("step", step_seconds)):
                self.timings[name].append(seconds)
        if self.on_event is None:
            return
        width = self.points.width
        best_value, best_position = self.points.best(self.maximize)
        maps = self.maps.latest if phase == "step" else None
        next_index = decision.next_index if decision is not None else None
        event = StepEvent(
            step=len(self.points) - 1, phase=phase, position=position_of(index, width), value=value,
            next_position=None if next_index is None else position_of(next_index, width),
            prediction=None if maps is None else maps[0], uncertainty=None if maps is None else maps[1],
            acquisition=None if maps is None else maps[2], decision_seconds=decision_seconds,
            training_seconds=training_seconds, instrument_seconds=instrument_seconds, step_seconds=step_seconds,
            n_measured=len(self.points), n_total=self.n_total, best_value=best_value, best_position=best_position,
            units=self.units, model_version=model_version, excluded=self.points.is_excluded(index),
            steered_by=decision.steered_by if decision is not None else "dkl")
        try:
            self.on_event(event)
        except Exception:  # a broken listener (UI) must never stop the microscope
            logger.exception("experiment event listener failed")

    def result(self, stopped: bool, error: str | None, steered_by: list[str] | None = None) -> ExperimentResult:
        best_value, best_position = self.points.best(self.maximize)
        maps = self.maps.latest or (None, None, None)
        return ExperimentResult(
            visited=self.points.positions(self.points.indices), values=list(self.points.values),
            phases=list(self.points.phases), best_value=best_value, best_position=best_position,
            decision_seconds=self.timings["decision"], step_seconds=self.timings["step"],
            training_seconds=self.timings["training"], instrument_seconds=self.timings["instrument"],
            prediction=maps[0], uncertainty=maps[1], acquisition=maps[2], stopped=stopped, error=error,
            units=self.units, n_candidates=len(self.points.blocked),
            excluded=self.points.positions(self.points.excluded), steered_by=list(steered_by or []))

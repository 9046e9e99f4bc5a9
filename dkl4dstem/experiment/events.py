"""What a run reports: one `StepEvent` per measurement (to `on_event`), one `ExperimentResult` at the end."""
from __future__ import annotations

import dataclasses

import numpy


@dataclasses.dataclass
class StepEvent:
    step: int
    phase: str
    position: tuple[int, int]
    value: float
    next_position: tuple[int, int] | None
    prediction: numpy.ndarray | None   # (H, W) the map model's mean, scalar units; None while seeding
    uncertainty: numpy.ndarray | None  # (H, W) calibrated 1 sigma of a measurement there, scalar units (`units`)
    acquisition: numpy.ndarray | None
    decision_seconds: float
    training_seconds: float
    instrument_seconds: float
    step_seconds: float
    n_measured: int
    n_total: int
    best_value: float
    best_position: tuple[int, int] | None
    units: str
    model_version: int = 0
    excluded: bool = False  # the position's frames all failed: not measured, not counted in n_measured
    steered_by: str = "dkl"  # whose posterior chose next_position: "dkl" or "survey" (the map model, steering.py)


@dataclasses.dataclass
class ExperimentResult:
    visited: list[tuple[int, int]]
    values: list[float]
    phases: list[str]
    best_value: float
    best_position: tuple[int, int] | None
    decision_seconds: list[float]
    step_seconds: list[float]
    training_seconds: list[float]
    instrument_seconds: list[float]
    prediction: numpy.ndarray | None
    uncertainty: numpy.ndarray | None
    acquisition: numpy.ndarray | None
    stopped: bool
    error: str | None
    units: str
    n_candidates: int
    excluded: list[tuple[int, int]]
    steered_by: list[str] = dataclasses.field(default_factory=list)  # per decision: "survey" or "dkl" (steering.py)

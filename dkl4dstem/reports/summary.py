"""summary.json: the run's settings, points, timings, dose and (with a truth) its scores; written whole or not at all.

The CLI and the Swift panel write the same keys (docs/ARCHITECTURE.md lists them).
"""
from __future__ import annotations

import json
import math
import os
import typing

import numpy

from dkl4dstem.evaluation.calibration import baseline_nlpd, calibration_metrics

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.experiment.loop import ExperimentResult
    from dkl4dstem.instruments.replay import ReplayInstrument


def clean_json(value: typing.Any) -> typing.Any:
    """JSON-safe: NaN/Inf become null, numpy scalars/tuples become plain Python."""
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (numpy.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, numpy.integer):
        return int(value)
    return value


def first_top_percent(visited: list[tuple[int, int]], truth: numpy.ndarray, maximize: bool,
                      percent: float = 1.0) -> int | None:
    """Number of measurements (seeds included) until a position in the truth's top percent is measured."""
    hits = _top_hits(visited, truth, maximize, percent)
    return next((k + 1 for k, hit in enumerate(hits) if hit), None)


def first_top_percent_dkl(visited: list[tuple[int, int]], phases: list[str], truth: numpy.ndarray,
                          maximize: bool, percent: float = 1.0) -> int | None:
    """The same counted among the DKL-chosen steps only (1 = the first step): a random seed can hit by luck."""
    hits = _top_hits(visited, truth, maximize, percent)
    steps = [hit for hit, phase in zip(hits, phases) if phase != "seed"]
    return next((k + 1 for k, hit in enumerate(steps) if hit), None)


def _top_hits(visited: list[tuple[int, int]], truth: numpy.ndarray, maximize: bool, percent: float) -> list[bool]:
    finite = truth[numpy.isfinite(truth)]
    if maximize:
        threshold = numpy.quantile(finite, 1 - percent / 100)
        return [bool(truth[y, x] >= threshold) for y, x in visited]
    threshold = numpy.quantile(finite, percent / 100)
    return [bool(truth[y, x] <= threshold) for y, x in visited]


def dose_summary(n_measured: int, n_candidates: int, survey_dose_ratio: float) -> dict[str, typing.Any]:
    """Dose relative to a full 4D scan: patterns at the measured positions plus the survey at every position
    (each survey pixel costs `survey_dose_ratio` of a pattern's dose: dwell x beam current ratio)."""
    fraction = (n_measured + survey_dose_ratio * n_candidates) / n_candidates
    return {"survey_dose_ratio": survey_dose_ratio, "dose_fraction": fraction,
            "dose_reduction_with_survey": 1 / fraction if fraction > 0 else None}


def run_summary(config: ExperimentConfig, result: ExperimentResult, data_path: str,
                survey_dose_ratio: float = 0.0) -> dict[str, typing.Any]:
    """The fields of summary.json for one run (the CLI and the Swift panel write the same)."""
    n_measured = len(result.visited)
    summary: dict[str, typing.Any] = {
        "scalarizer": config.scalarizer, "scalarizer_params": config.scalarizer_params, "units": result.units,
        "window": config.window, "n_candidates": result.n_candidates, "seeds": config.seeds, "steps": config.steps,
        "acquisition": config.acquisition, "xi": config.xi, "beta": config.beta, "maximize": config.maximize,
        "seed": config.seed, "data": os.path.abspath(data_path),
        "visited": [list(p) for p in result.visited], "values": result.values, "phases": result.phases,
        "best_value": result.best_value, "best_position": list(result.best_position) if result.best_position else None,
        "n_measured": n_measured, "fraction_measured": n_measured / result.n_candidates,
        "dose_reduction": result.n_candidates / n_measured if n_measured else None,  # patterns only
        **dose_summary(n_measured, result.n_candidates, survey_dose_ratio),
        "decision_seconds": result.decision_seconds, "step_seconds": result.step_seconds,
        "training_seconds": result.training_seconds, "instrument_seconds": result.instrument_seconds,
        "median_decision_seconds": _median(result.decision_seconds),
        "median_step_seconds": _median(result.step_seconds),
        "excluded": [list(p) for p in result.excluded], "stopped": result.stopped, "error": result.error,
        "steered_by": result.steered_by,  # per decision: "survey" (the map model) or "dkl" (experiment/steering.py)
    }
    return summary


def write_summary(path: str, summary: dict[str, typing.Any]) -> None:
    """Written whole, then renamed: a kill never leaves half a summary."""
    try:
        with open(path + ".part", "w") as file:
            json.dump(clean_json(summary), file, indent=1)
        os.replace(path + ".part", path)
    except OSError:
        if os.path.exists(path + ".part"):
            os.remove(path + ".part")
        raise


def instrument_summary(instrument: ReplayInstrument) -> dict[str, typing.Any]:
    """The data's format, calibrations and where each came from (file metadata, a flag, or unknown)."""
    calibration = instrument.calibration()
    return {"file_format": instrument.file_format, "survey_name": instrument.survey_name,
            "scan_shape": list(instrument.scan_shape), "detector_shape": list(instrument.detector_shape),
            "calibration": {"nm_per_px": instrument.nm_per_px, "mrad_per_px": calibration.mrad_per_px,
                            "semiangle_mrad": calibration.semiangle_mrad,
                            "has_reference": calibration.reference is not None},
            "calibration_sources": instrument.calibration_sources}


def uncertainty_scores(result: ExperimentResult, truth: numpy.ndarray) -> dict[str, float]:
    """coverage_1sigma, coverage_2sigma, nlpd (and the flat baseline's NLPD) over the unmeasured positions."""
    assert result.prediction is not None and result.uncertainty is not None
    measured = numpy.zeros(truth.shape, dtype=bool)
    for y, x in result.visited:
        measured[y, x] = True
    scores = calibration_metrics(result.prediction, result.uncertainty, truth, measured)
    return {"coverage_1sigma": scores["coverage_1sigma"], "coverage_2sigma": scores["coverage_2sigma"],
            "nlpd": scores["nlpd"], "nlpd_baseline": baseline_nlpd(numpy.asarray(result.values), truth, measured)}


def _median(values: list[float]) -> float | None:
    return float(numpy.median(values)) if values else None


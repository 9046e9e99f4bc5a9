"""What a CLI run leaves behind: progress, summary.json, reconstruct.json, figures and the printed summary."""
from __future__ import annotations

import json
import math
import os
import typing

import numpy
from tqdm import tqdm

from dkl4dstem import figures
from dkl4dstem.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.experiment import ExperimentConfig, ExperimentResult, StepEvent
from dkl4dstem.calibration_metrics import baseline_nlpd, calibration_metrics
from dkl4dstem.groundtruth import ground_truth_map, nrmse
from dkl4dstem.replay import ReplayInstrument
from dkl4dstem.scalarizers import get_scalarizer

if typing.TYPE_CHECKING:
    from dkl4dstem.reconstruct import Reconstruction

N_SNAPSHOTS = 4


class RunRecorder:
    """Experiment listener: a progress bar and map snapshots at a few evenly spaced steps for the figures."""

    def __init__(self, config: ExperimentConfig) -> None:
        total = config.seeds + config.steps
        self.snapshot_steps = {int(round(s)) for s in numpy.linspace(config.seeds, total - 1, N_SNAPSHOTS)}
        self.snapshots: list[dict[str, typing.Any]] = []
        self.visited: list[tuple[int, int]] = []
        self.bar = tqdm(total=total, desc="dkl4dstem", unit="pt", disable=None, leave=False)

    def __call__(self, event: StepEvent) -> None:
        if event.excluded:
            return
        self.visited.append(event.position)
        if self.bar.n < event.n_measured:
            self.bar.update(event.n_measured - self.bar.n)
        if math.isfinite(event.best_value):
            self.bar.set_postfix(best=f"{event.best_value:.4g}", refresh=False)
        if event.phase == "step" and event.step in self.snapshot_steps and event.prediction is not None:
            self.snapshots.append({"step": event.step, "n_measured": event.n_measured, "visited": list(self.visited),
                                   "prediction": event.prediction, "uncertainty": event.uncertainty,
                                   "acquisition": event.acquisition, "next_position": event.next_position})

    def close(self) -> None:
        self.bar.close()


def truth_for(instrument: ReplayInstrument, config: ExperimentConfig, dask: str | bool | None = None
              ) -> numpy.ndarray:
    scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
    with tqdm(total=instrument.scan_shape[0], desc="ground truth", unit="row", disable=None, leave=False) as bar:
        return ground_truth_map(instrument.data, scalarizer, instrument.calibration(), dask=dask,
                                progress=bar.update)


def _clean(value: typing.Any) -> typing.Any:
    """JSON-safe: NaN/Inf become null, numpy scalars/tuples become plain Python."""
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (numpy.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, numpy.integer):
        return int(value)
    return value


def first_top_percent(visited: list[tuple[int, int]], truth: numpy.ndarray, maximize: bool,
                      percent: float = 1.0) -> int | None:
    """Number of measurements (seeds included) until a position in the truth's top percent is measured."""
    finite = truth[numpy.isfinite(truth)]
    if maximize:
        threshold = numpy.quantile(finite, 1 - percent / 100)
        hits = [truth[y, x] >= threshold for y, x in visited]
    else:
        threshold = numpy.quantile(finite, percent / 100)
        hits = [truth[y, x] <= threshold for y, x in visited]
    return next((k + 1 for k, hit in enumerate(hits) if hit), None)


def write_run_outputs(out: str, survey: numpy.ndarray, config: ExperimentConfig, result: ExperimentResult,
                      recorder: RunRecorder, truth: numpy.ndarray | None, data_path: str) -> dict[str, typing.Any]:
    n_measured = len(result.visited)
    summary: dict[str, typing.Any] = {
        "scalarizer": config.scalarizer, "scalarizer_params": config.scalarizer_params, "units": result.units,
        "window": config.window, "n_candidates": result.n_candidates, "seeds": config.seeds, "steps": config.steps,
        "acquisition": config.acquisition, "xi": config.xi, "beta": config.beta, "maximize": config.maximize,
        "seed": config.seed, "data": os.path.abspath(data_path),
        "visited": [list(p) for p in result.visited], "values": result.values, "phases": result.phases,
        "best_value": result.best_value, "best_position": list(result.best_position) if result.best_position else None,
        "n_measured": n_measured, "fraction_measured": n_measured / result.n_candidates,
        "dose_reduction": result.n_candidates / n_measured if n_measured else None,
        "decision_seconds": result.decision_seconds, "step_seconds": result.step_seconds,
        "training_seconds": result.training_seconds, "instrument_seconds": result.instrument_seconds,
        "median_decision_seconds": _median(result.decision_seconds),
        "median_step_seconds": _median(result.step_seconds),
        "excluded": [list(p) for p in result.excluded], "stopped": result.stopped, "error": result.error,
    }
    if truth is not None:
        summary["truth_best_value"] = float(numpy.nanmax(truth) if config.maximize else numpy.nanmin(truth))
        summary["first_top1_measurement"] = first_top_percent(result.visited, truth, config.maximize)
        if result.prediction is not None:
            summary["nrmse"] = nrmse(result.prediction, truth)
        if result.prediction is not None and result.uncertainty is not None:
            summary.update(uncertainty_scores(result, truth))
    with open(os.path.join(out, "summary.json"), "w") as file:
        json.dump(_clean(summary), file, indent=1)
    if result.prediction is not None:
        final = {"prediction": result.prediction, "uncertainty": result.uncertainty,
                 "acquisition": result.acquisition}
        summary["figures"] = figures.run_figure(out, survey, result.visited, config.seeds, final, recorder.snapshots,
                                                result.units, config.scalarizer, truth)
    return summary


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


def print_summary(summary: dict[str, typing.Any], stream: typing.TextIO) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1e3:.1f} ms"
    best = summary["best_value"]
    where = summary["best_position"]
    print(f"best {summary['scalarizer']}: {best:.4g} {summary['units']} at (y, x) = {tuple(where) if where else None}"
          if best is not None and math.isfinite(best) else "best: no usable value", file=stream)
    print(f"measured {summary['n_measured']} of {summary['n_candidates']} positions "
          f"({100 * summary['fraction_measured']:.1f}%), dose reduction x{summary['dose_reduction'] or 0:.1f}",
          file=stream)
    if summary.get("first_top1_measurement"):
        print(f"first top-1% position measured at measurement {summary['first_top1_measurement']}", file=stream)
    if summary.get("coverage_2sigma") is not None:
        print(f"map vs ground truth: NRMSE {summary.get('nrmse', math.nan):.3f}; at the unmeasured positions "
              f"{100 * summary['coverage_1sigma']:.0f}% / {100 * summary['coverage_2sigma']:.0f}% within 1 / 2 sigma "
              f"(nominal 68 / 95%), NLPD {summary['nlpd']:.3g} (flat map: {summary['nlpd_baseline']:.3g})",
              file=stream)
    print(f"median decision {ms(summary['median_decision_seconds'])}, median step {ms(summary['median_step_seconds'])}",
          file=stream)
    if summary.get("figures"):
        print("figures: " + ", ".join(summary["figures"]), file=stream)


def write_reconstruct_outputs(out: str, survey: numpy.ndarray, truth: numpy.ndarray, config: ExperimentConfig,
                              results: list[Reconstruction], calibration: DetectorCalibration) -> None:
    os.makedirs(out, exist_ok=True)
    units = get_scalarizer(config.scalarizer, **config.scalarizer_params).units_for(calibration)
    figures.reconstruct_figure(out, survey, truth, [r.fraction for r in results], [r.prediction for r in results],
                               [r.nrmse for r in results], units, config.scalarizer)
    payload = {"scalarizer": config.scalarizer, "window": config.window, "seed": config.seed,
               "fractions": [r.fraction for r in results], "n_points": [r.n_points for r in results],
               "nrmse": [r.nrmse for r in results]}
    with open(os.path.join(out, "reconstruct.json"), "w") as file:
        json.dump(_clean(payload), file, indent=1)


def resource_path(name: str) -> str:
    """A file shipped in `resources/` (repository checkout) or installed as package data."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "resources", name), os.path.join(os.path.dirname(here), "resources", name)):
        if os.path.exists(candidate):
            return candidate
    raise InputError(f"built-in dataset {name} not found (reinstall dkl4dstem, or run from a repository checkout)")

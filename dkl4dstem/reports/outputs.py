"""What a CLI run leaves behind: progress, summary.json, reconstruct.json, figures and the printed summary."""
from __future__ import annotations

import json
import math
import os
import typing

import h5py
import numpy
from tqdm import tqdm

from dkl4dstem.reports import export, figures
from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.evaluation.calibration import baseline_nlpd, calibration_metrics
from dkl4dstem.experiment.loop import ExperimentConfig, ExperimentResult, StepEvent
from dkl4dstem.evaluation.groundtruth import ground_truth_map, nrmse
from dkl4dstem.instruments.replay import ReplayInstrument
from dkl4dstem.scalarizers.registry import get_scalarizer

if typing.TYPE_CHECKING:
    from dkl4dstem.evaluation.reconstruct import Reconstruction

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
    }
    return summary


def write_summary(path: str, summary: dict[str, typing.Any]) -> None:
    """Written whole, then renamed: a kill never leaves half a summary."""
    try:
        with open(path + ".part", "w") as file:
            json.dump(_clean(summary), file, indent=1)
        os.replace(path + ".part", path)
    except OSError:
        if os.path.exists(path + ".part"):
            os.remove(path + ".part")
        raise


def write_run_outputs(out: str, survey: numpy.ndarray, config: ExperimentConfig, result: ExperimentResult,
                      recorder: RunRecorder, truth: numpy.ndarray | None, data_path: str,
                      instrument: ReplayInstrument | None = None, survey_dose_ratio: float = 0.0,
                      with_figures: bool = True) -> dict[str, typing.Any]:
    """summary.json, then (with_figures) maps.npz, results.emd and the figures (see docs for every key and file)."""
    summary = run_summary(config, result, data_path, survey_dose_ratio)
    if instrument is not None:
        summary.update(instrument_summary(instrument))
    if truth is not None:
        summary["truth_best_value"] = float(numpy.nanmax(truth) if config.maximize else numpy.nanmin(truth))
        summary["first_top1_measurement"] = first_top_percent(result.visited, truth, config.maximize)
        summary["first_top1_dkl_step"] = first_top_percent_dkl(result.visited, result.phases, truth,
                                                               config.maximize)
        if result.prediction is not None:
            summary["nrmse"] = nrmse(result.prediction, truth)
        if result.prediction is not None and result.uncertainty is not None:
            summary.update(uncertainty_scores(result, truth))
    write_summary(os.path.join(out, "summary.json"), summary)
    if not with_figures:  # the summary alone, first: the ground truth may still be cut short
        return summary
    final = {"prediction": result.prediction, "uncertainty": result.uncertainty, "acquisition": result.acquisition}
    shape = (int(survey.shape[0]), int(survey.shape[1]))
    summary["files"] = [export.write_maps_npz(os.path.join(out, "maps.npz"), shape, final, result.visited, truth)]
    summary["files"].append(_write_emd(out, survey, final, truth, result, summary, instrument))
    if result.prediction is not None:
        summary["figures"] = _run_figures(out, survey, config, result, recorder, truth, summary)
    return summary


def _write_emd(out: str, survey: numpy.ndarray, final: dict[str, typing.Any], truth: numpy.ndarray | None,
               result: ExperimentResult, summary: dict[str, typing.Any], instrument: ReplayInstrument | None) -> str:
    patterns = None
    session_path = os.path.join(out, "session.h5")
    if os.path.exists(session_path):
        with h5py.File(session_path, "r") as session:
            stored = session["points/pattern"]
            patterns = stored[:min(len(result.visited), stored.shape[0])]
    calibration = instrument.calibration() if instrument is not None else None
    return export.write_emd(
        os.path.join(out, "results.emd"), survey=survey, maps=final, truth=truth, visited=result.visited,
        values=result.values, phases=result.phases, patterns=patterns, units=result.units,
        nm_per_px=instrument.nm_per_px if instrument is not None else None,
        mrad_per_px=calibration.mrad_per_px if calibration else None,
        semiangle_mrad=calibration.semiangle_mrad if calibration else None,
        info=_clean({k: v for k, v in summary.items() if k not in ("decision_seconds", "step_seconds",
                                                                    "training_seconds", "instrument_seconds")}))


def _run_figures(out: str, survey: numpy.ndarray, config: ExperimentConfig, result: ExperimentResult,
                 recorder: RunRecorder, truth: numpy.ndarray | None, summary: dict[str, typing.Any]) -> list[str]:
    style = {"survey_name": summary.get("survey_name", "survey"),
             "nm_per_px": (summary.get("calibration") or {}).get("nm_per_px"), "acquisition": config.acquisition}
    final = {"prediction": result.prediction, "uncertainty": result.uncertainty, "acquisition": result.acquisition}
    written = [figures.save_png(figures.overview_figure(survey, result.visited, config.seeds, final, result.units,
                                                        config.scalarizer, truth, nrmse=summary.get("nrmse"),
                                                        **style), os.path.join(out, "overview.png"))]
    if recorder.snapshots:
        written.append(figures.save_png(figures.steps_figure(survey, config.seeds, recorder.snapshots, result.units,
                                                             **style), os.path.join(out, "steps.png"), dpi=90))
    return written


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


def print_summary(summary: dict[str, typing.Any], stream: typing.TextIO) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1e3:.1f} ms"
    best = summary["best_value"]
    where = summary["best_position"]
    print(f"best {summary['scalarizer']}: {best:.4g} {summary['units']} at (y, x) = {tuple(where) if where else None}"
          if best is not None and math.isfinite(best) else "best: no usable value", file=stream)
    n, total = summary["n_measured"], summary["n_candidates"]
    print(f"measured {n} of {total} positions ({100 * summary['fraction_measured']:.1f}%): "
          f"{summary['seeds']} random seeds + {max(0, n - summary['seeds'])} DKL steps", file=stream)
    ratio = summary.get("survey_dose_ratio", 0.0)
    print(f"dose vs a full 4D scan: {100 * summary['dose_fraction']:.1f}% including the survey at every position "
          f"(survey pixel = {ratio:g} of a pattern's dose, --survey-dose-ratio), dose reduction "
          f"x{summary['dose_reduction_with_survey'] or 0:.1f} (patterns alone x{summary['dose_reduction'] or 0:.1f})",
          file=stream)
    if summary.get("survey_name"):
        print(f"survey: {summary['survey_name']}", file=stream)
    if "first_top1_measurement" in summary:
        first, dkl = summary.get("first_top1_measurement"), summary.get("first_top1_dkl_step")
        seeds = summary["seeds"]
        where = "never" if first is None else f"measurement {first}" + (" (a random seed)" if first <= seeds else "")
        chosen = "no DKL step" if dkl is None else f"DKL step {dkl} (measurement {seeds + dkl})"
        print(f"first top-1% position of the ground truth: {where}; first chosen by the model: {chosen}", file=stream)
    if summary.get("nrmse") is not None:
        print(f"map NRMSE vs the ground truth: {summary['nrmse']:.3f} (1.0 = no better than its mean)", file=stream)
    if summary.get("coverage_2sigma") is not None:
        print(f"uncertainty at the unmeasured positions: {100 * summary['coverage_1sigma']:.0f}% / "
              f"{100 * summary['coverage_2sigma']:.0f}% within 1 / 2 sigma (nominal 68 / 95%), NLPD "
              f"{summary['nlpd']:.3g} (flat map: {summary['nlpd_baseline']:.3g})", file=stream)
    sources = summary.get("calibration_sources")
    if sources:
        print("calibration: " + "; ".join(_calibration_words(summary, key, source)
                                          for key, source in sources.items() if key != "survey"), file=stream)
    print(f"median decision {ms(summary['median_decision_seconds'])}, median step {ms(summary['median_step_seconds'])}",
          file=stream)
    if summary.get("files"):
        print("results: " + ", ".join(summary["files"]), file=stream)
    if summary.get("figures"):
        print("figures: " + ", ".join(summary["figures"]), file=stream)


def _calibration_words(summary: dict[str, typing.Any], key: str, source: str) -> str:
    calibration = summary.get("calibration") or {}
    if key == "reference":
        return f"vacuum reference from {source}" if calibration.get("has_reference") else "no vacuum reference"
    value = calibration.get(key)
    return f"{key} unknown" + (f" {source[len('unknown'):].strip()}" if len(source) > len("unknown") else "") \
        if value is None else f"{key} {value:.4g} from {source}"


def write_reconstruct_outputs(out: str, survey: numpy.ndarray, truth: numpy.ndarray, config: ExperimentConfig,
                              results: list[Reconstruction], calibration: DetectorCalibration,
                              instrument: ReplayInstrument | None = None) -> None:
    os.makedirs(out, exist_ok=True)
    units = get_scalarizer(config.scalarizer, **config.scalarizer_params).units_for(calibration)
    style: dict[str, typing.Any] = {}
    if instrument is not None:
        style = {"survey_name": instrument.survey_name, "nm_per_px": instrument.nm_per_px}
    figures.save_png(figures.reconstruct_figure(survey, truth, [r.fraction for r in results],
                                                [r.prediction for r in results], [r.nrmse for r in results], units,
                                                config.scalarizer, **style), os.path.join(out, "reconstruct.png"))
    payload = {"scalarizer": config.scalarizer, "window": config.window, "seed": config.seed,
               "fractions": [r.fraction for r in results], "n_points": [r.n_points for r in results],
               "nrmse": [r.nrmse for r in results]}
    if instrument is not None:
        payload.update(instrument_summary(instrument))
    with open(os.path.join(out, "reconstruct.json"), "w") as file:
        json.dump(_clean(payload), file, indent=1)


def resource_path(name: str) -> str:
    """A file shipped in `resources/` (repository checkout) or installed as package data."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dkl4dstem/
    for candidate in (os.path.join(package, "resources", name), os.path.join(os.path.dirname(package), "resources", name)):
        if os.path.exists(candidate):
            return candidate
    raise InputError(f"built-in dataset {name} not found (reinstall dkl4dstem, or run from a repository checkout)")

"""What a CLI run leaves behind: summary.json first, then maps.npz, results.emd and the figures; reconstruct.json."""
from __future__ import annotations

import json
import os
import typing

import h5py
import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.evaluation.groundtruth import nrmse
from dkl4dstem.reports import export, figures
from dkl4dstem.reports.summary import (clean_json, first_top_percent, first_top_percent_dkl, instrument_summary,
                                       run_summary, uncertainty_scores, write_summary)
from dkl4dstem.scalarizers.registry import get_scalarizer

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.evaluation.reconstruct import Reconstruction
    from dkl4dstem.experiment.loop import ExperimentResult
    from dkl4dstem.instruments.replay import ReplayInstrument
    from dkl4dstem.reports.progress import RunRecorder


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
        info=clean_json({k: v for k, v in summary.items() if k not in ("decision_seconds", "step_seconds",
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
        json.dump(clean_json(payload), file, indent=1)


def resource_path(name: str) -> str:
    """A file shipped in `resources/` (repository checkout) or installed as package data."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # dkl4dstem/
    for candidate in (os.path.join(package, "resources", name), os.path.join(os.path.dirname(package), "resources", name)):
        if os.path.exists(candidate):
            return candidate
    raise InputError(f"built-in dataset {name} not found (reinstall dkl4dstem, or run from a repository checkout)")


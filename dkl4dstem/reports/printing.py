"""The summary printed at the end of a CLI run: best value, dose, scores, calibrations, files."""
from __future__ import annotations

import math
import typing


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


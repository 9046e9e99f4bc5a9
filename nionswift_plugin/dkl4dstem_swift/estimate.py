"""Before Start: how many points, what fraction of the survey, how long the beam is on and how long the run takes."""
from __future__ import annotations

import math

DEFAULT_OVERHEAD_MS = 20.0  # per point besides the exposure: probe move, frame readout, decision (usim: ~15-25 ms)


def estimate_text(n_points: int, n_open: int, n_survey: int, exposure_ms: float,
                  per_point_ms: float | None = None) -> str:
    """One line for the panel. per_point_ms: measured in the last run (else exposure + DEFAULT_OVERHEAD_MS)."""
    if n_survey <= 0 or n_points <= 0:
        return "Estimate: –"
    per_point = per_point_ms if per_point_ms is not None and math.isfinite(per_point_ms) and per_point_ms > 0 \
        else exposure_ms + DEFAULT_OVERHEAD_MS
    beam_s = n_points * exposure_ms / 1000.0
    run_s = n_points * per_point / 1000.0
    where = f"of {n_open:,} open positions, " if n_open < n_survey else ""
    text = (f"Estimate: {n_points:,} patterns {where}{100.0 * n_points / n_survey:.2g} % of the {n_survey:,}-pixel "
            f"survey; dose: beam on {_duration(beam_s)} ({n_points} x {exposure_ms:g} ms); run about {_duration(run_s)} "
            f"(~{per_point:.0f} ms per point)")
    if n_points > n_open:
        text += f"; ⚠ more points than the {n_open} open positions"
    return text


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"

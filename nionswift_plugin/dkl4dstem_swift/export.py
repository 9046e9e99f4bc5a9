"""When a panel run with a session file ends: the run summary (the CLI's summary.json fields, from
dkl4dstem.reports.summary) and the final maps beside the session file, and the user's choices added to its settings.

  run1.h5               the engine's session file (every pattern)
  run1.summary.json     summary.run_summary(...) + the plug-in's fields (region, forced points, positions in nm)
  run1.maps.npz         the CLI's maps.npz: prediction, uncertainty, acquisition, measured (bool)
Runs on a worker thread (matplotlib and h5py are imported there, not on the UI thread).
"""
from __future__ import annotations

import json
import os
import typing

import numpy

from . import region as region_module


def paths_for(session_path: str) -> tuple[str, str]:
    stem = os.path.splitext(session_path)[0]
    return stem + ".summary.json", stem + ".maps.npz"


def plugin_fields(result: typing.Any, calibrations: typing.Sequence[typing.Any], *, shapes: list[dict[str, typing.Any]],
                  forced: list[tuple[int, int]], extra: typing.Mapping[str, typing.Any]) -> dict[str, typing.Any]:
    """What only the plug-in knows: region shapes, forced points, calibrated positions."""
    best_nm = region_module.position_nm(result.best_position, calibrations) if result.best_position else None
    visited_nm = [region_module.position_nm(p, calibrations) for p in result.visited]
    return {"region": shapes, "forced": [list(p) for p in forced],
            "best_position_nm": list(best_nm) if best_nm is not None else None,
            "visited_nm": [list(p) if p is not None else None for p in visited_nm] if best_nm is not None else None,
            **dict(extra)}


def save_run(session_path: str, config: typing.Any, result: typing.Any, survey: numpy.ndarray,
             fields: typing.Mapping[str, typing.Any]) -> list[str]:
    """Write the summary and maps; add the plug-in fields to the session's settings. Returns the files written."""
    from dkl4dstem.reports import export
    from dkl4dstem.reports.summary import run_summary, write_summary
    summary_path, maps_path = paths_for(session_path)
    summary = run_summary(config, result, session_path)
    summary.update(fields)
    summary["session"] = os.path.abspath(session_path)
    write_summary(summary_path, summary)
    maps = {name: getattr(result, name) for name in ("prediction", "uncertainty", "acquisition")}
    height, width = survey.shape
    export.write_maps_npz(maps_path, (height, width), maps, result.visited, truth=None)  # the CLI's maps.npz keys
    _add_to_session_settings(session_path, {"region": fields.get("region", []), "forced": fields.get("forced", [])})
    return [summary_path, maps_path]


def _add_to_session_settings(session_path: str, values: typing.Mapping[str, typing.Any]) -> None:
    """The session file's settings attribute (JSON) gets the forced points known only at the end."""
    import h5py  # type: ignore[import-untyped]
    if not os.path.exists(session_path):
        return
    with h5py.File(session_path, "a") as file:
        settings = json.loads(file.attrs["settings"])
        settings.update(values)
        file.attrs["settings"] = json.dumps(settings)

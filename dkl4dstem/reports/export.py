"""A run's results in the formats users open: `maps.npz` (numpy) and `results.emd` (EMD 1.0, written with emdfile,
opened by py4DSTEM / emdfile: `py4DSTEM.read("results.emd")`).

`maps.npz`: float arrays `prediction`, `uncertainty`, `acquisition` (scan_y, scan_x; NaN when the run ended
before the model was fitted), bool `measured` (scan_y, scan_x), and `truth` when the ground truth is known.

`results.emd` (root `dkl4dstem`):
  survey, prediction, uncertainty, acquisition, truth   2D arrays, dims in nm (px when uncalibrated)
  measured_mask                                         2D bool array (as uint8)
  measured                                              PointList (y, x, value, phase: 0 seed / 1 DKL step),
                                                        in measurement order, positions in survey pixels
  patterns                                              (n, det_y, det_x) patterns in measurement order, dims mrad
  metadata `dkl4dstem`: the calibration under py4DSTEM's Calibration keys (R_pixel_size/units, Q_pixel_size/units,
  convergence_semiangle_mrad), `units` of the maps, and `summary_json` (the run's summary.json: settings, where
  each calibration came from). Not named `calibration`: py4DSTEM.read would take it for its Calibration class.
"""
from __future__ import annotations

import json
import os
import typing

import numpy

MAP_KEYS = ("prediction", "uncertainty", "acquisition")


def measured_mask(shape: tuple[int, int], visited: typing.Sequence[tuple[int, int]]) -> numpy.ndarray:
    mask = numpy.zeros(shape, dtype=bool)
    for y, x in visited:
        mask[y, x] = True
    return mask


def write_maps_npz(path: str, shape: tuple[int, int], maps: typing.Mapping[str, numpy.ndarray | None],
                   visited: typing.Sequence[tuple[int, int]], truth: numpy.ndarray | None) -> str:
    arrays: dict[str, numpy.ndarray] = {}
    for key in MAP_KEYS:
        value = maps.get(key)
        arrays[key] = numpy.full(shape, numpy.nan) if value is None else numpy.asarray(value, dtype=numpy.float64)
    arrays["measured"] = measured_mask(shape, visited)
    if truth is not None:
        arrays["truth"] = numpy.asarray(truth, dtype=numpy.float64)
    numpy.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as bool
    return path


def write_emd(path: str, *, survey: numpy.ndarray, maps: typing.Mapping[str, numpy.ndarray | None],
              truth: numpy.ndarray | None, visited: typing.Sequence[tuple[int, int]], values: typing.Sequence[float],
              phases: typing.Sequence[str], patterns: numpy.ndarray | None, units: str,
              nm_per_px: float | None, mrad_per_px: float | None, semiangle_mrad: float | None,
              info: typing.Mapping[str, typing.Any]) -> str:
    """EMD 1.0 with every map, the measured points and their patterns, calibrated where the data was."""
    import emdfile
    root = emdfile.Root(name="dkl4dstem")
    scan_step, scan_units = (nm_per_px, "nm") if nm_per_px else (1.0, "pixels")
    scan_dims = [numpy.array([0.0, scan_step]), numpy.array([0.0, scan_step])]

    def image(name: str, data: numpy.ndarray, data_units: str) -> None:
        root.tree(emdfile.Array(data=numpy.ascontiguousarray(data), name=name, units=data_units, dims=scan_dims,
                                dim_names=["Ry", "Rx"], dim_units=[scan_units, scan_units]))

    image("survey", numpy.asarray(survey, dtype=numpy.float32), "counts")
    for key in MAP_KEYS:
        if maps.get(key) is not None:
            image(key, numpy.asarray(maps[key], dtype=numpy.float64), units if key != "acquisition" else "")
    if truth is not None:
        image("truth", numpy.asarray(truth, dtype=numpy.float64), units)
    image("measured_mask", measured_mask(tuple(survey.shape), visited).astype(numpy.uint8), "")
    points = numpy.zeros(len(visited), dtype=[("y", "i4"), ("x", "i4"), ("value", "f8"), ("phase", "i1")])
    if len(visited):
        points["y"], points["x"] = numpy.asarray(visited, dtype=int).T
        points["value"] = numpy.asarray(values, dtype=float)
        points["phase"] = [0 if phase == "seed" else 1 for phase in phases]
    root.tree(emdfile.PointList(data=points, name="measured"))
    if patterns is not None and len(patterns):
        q_step, q_units = (mrad_per_px, "mrad") if mrad_per_px else (1.0, "pixels")
        root.tree(emdfile.Array(data=numpy.asarray(patterns, dtype=numpy.float32), name="patterns", units="counts",
                                dims=[numpy.array([0, 1]), numpy.array([0.0, q_step]), numpy.array([0.0, q_step])],
                                dim_names=["measurement", "Qx", "Qy"], dim_units=["index", q_units, q_units]))
    # Not a root metadata named `calibration`: py4DSTEM.read would take it for its own Calibration class.
    about = emdfile.Metadata(name="dkl4dstem")
    for key, value in {"R_pixel_size": scan_step, "R_pixel_units": scan_units,
                       "Q_pixel_size": mrad_per_px or 1.0, "Q_pixel_units": "mrad" if mrad_per_px else "pixels",
                       "convergence_semiangle_mrad": semiangle_mrad, "units": units,
                       "summary_json": json.dumps(info)}.items():
        if value is not None:
            about[key] = value
    root.metadata = about
    if os.path.exists(path):
        os.remove(path)
    emdfile.save(path, root, mode="o")
    return path

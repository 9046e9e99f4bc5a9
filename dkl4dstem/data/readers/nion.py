"""Nion Swift data items: `.h5` (HDF5 handler: dataset `data`, JSON `properties` attribute) and `.ndata` (zip of
`data.npy` + `metadata.json`). A 4D item is a 2D collection of 2D data (collection_dimension_count 2,
datum_dimension_count 2); its dimensional calibrations give nm/px (scan) and mrad/px (camera)."""
from __future__ import annotations

import json
import typing
import zipfile

import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import Opened, ScanView, calibrate_axes, find_number, scan_shape_for

SEMIANGLE_KEYS = ("convergence_semiangle_mrad", "convergence_angle_mrad")
SEMIANGLE_RAD_KEYS = ("ConvergenceAngle", "convergence_angle_rad")
ENERGY_V_KEYS = ("high_tension", "high_tension_v", "EHT", "energy_ev")


def energy_ev(metadata: typing.Mapping[str, typing.Any]) -> float | None:
    found = find_number(metadata, ENERGY_V_KEYS)
    return found[1] if found else None


def semiangle(opened: Opened, metadata: typing.Mapping[str, typing.Any], where: str) -> None:
    found = find_number(metadata, SEMIANGLE_KEYS)
    if found:
        opened.set("semiangle_mrad", found[1], f"{where} metadata ({found[0]})")
        return
    found = find_number(metadata, SEMIANGLE_RAD_KEYS)
    if found:  # Nion instruments report the convergence angle in radians
        opened.set("semiangle_mrad", found[1] * 1e3, f"{where} metadata ({found[0]}, rad)")


def from_properties(data: typing.Any, props: typing.Mapping[str, typing.Any], path: str, kind: str,
                    scan_shape: tuple[int, int] | None) -> Opened:
    if props.get("is_sequence"):
        raise InputError(f"{path}: a sequence data item; pick one 4D scan (Swift: Processing > Pick)")
    collection = int(props.get("collection_dimension_count", 0))
    datum = int(props.get("datum_dimension_count", len(data.shape)))
    if datum != 2 or collection not in (1, 2) or len(data.shape) != collection + 2:
        raise InputError(f"{path}: not a 4D-STEM data item (shape {tuple(data.shape)}, {collection} collection and "
                         f"{datum} datum dimensions)")
    calibrations = [(float(c.get("scale", 1.0)), str(c.get("units", ""))) for c in props.get(
        "dimensional_calibrations", [])]
    if collection == 1:  # a flat frame stack recorded as a 1D collection
        data = ScanView(data, scan_shape_for(int(data.shape[0]), scan_shape, path))
        calibrations = [(1.0, ""), *calibrations] if len(calibrations) == 3 else []
    title = props.get("title") or ""
    opened = Opened(data, kind + (f" '{title}'" if title else ""))
    metadata = props.get("metadata", {}) or {}
    if len(calibrations) == 4:
        calibrate_axes(opened, calibrations, "Swift calibrations", energy_ev(metadata))
    semiangle(opened, metadata, "Swift")
    return opened


def open_ndata(path: str, scan_shape: tuple[int, int] | None) -> Opened:
    """The zip members are read whole: Swift keeps large items as .h5 (lazy), small ones as .ndata."""
    try:
        with zipfile.ZipFile(path) as archive:
            props = json.loads(archive.read("metadata.json"))
            with archive.open("data.npy") as member:
                data = numpy.lib.format.read_array(member)
    except KeyError as exc:
        raise InputError(f"{path}: not a Swift .ndata file (missing {exc})") from None
    return from_properties(data, props, path, "Nion Swift data item (.ndata)", scan_shape)

"""Readers for the 4D-STEM files users have, with their calibrations. `open_file` picks one by suffix (and by
what an HDF5 file holds); `complete` applies the user's overrides and records where each calibration came from.

| suffix | format | lazy |
|---|---|---|
| .npy / .npz | numpy (.npz: the replay layout) | .npy: pread |
| .h5 .hdf5 .emd .hspy .nxs | HDF5: py4DSTEM/emdfile EMD 1.0, Swift item, DECTRIS master, HyperSpy, 4D dataset | h5py |
| .emd (Velox) .dm3 .dm4 | rosettasciio (extra `io`) | dask |
| .zspy | HyperSpy zarr | zarr |
| .ndata | Nion Swift data item | whole |
| .mib, .raw / .xml (EMPAD) | Merlin, EMPAD | pread |
"""
from __future__ import annotations

import os
import typing
import zipfile

import h5py
import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import CALIBRATIONS, Opened, parse_scan_shape

SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".emd", ".hspy", ".nxs", ".zspy", ".ndata", ".mib", ".raw", ".xml",
            ".dm3", ".dm4")

HDF5_SUFFIXES = (".h5", ".hdf5", ".emd", ".hspy", ".nxs")

__all__ = ["CALIBRATIONS", "Opened", "SUFFIXES", "complete", "load_reference", "open_file", "parse_scan_shape"]


def open_file(path: str, data_key: str | None = None, scan_shape: tuple[int, int] | None = None) -> Opened:
    """The 4D dataset in `path` with what the file says about its calibration (lazy where the format allows)."""
    from dkl4dstem.data.readers import hdf5, hyperspy, nion, rawformats, rosetta
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".zspy" or (os.path.isdir(path) and os.path.exists(os.path.join(path, "Experiments"))):
        return hyperspy.open_zspy(path, data_key, scan_shape)
    if suffix == ".ndata":
        return nion.open_ndata(path, scan_shape)
    if suffix == ".mib":
        return rawformats.open_mib(path, scan_shape)
    if suffix in (".raw", ".xml"):
        return rawformats.open_empad(path, scan_shape)
    if suffix in (".dm3", ".dm4"):
        return rosetta.open_rosetta(path, suffix, scan_shape)
    if h5py.is_hdf5(path):
        try:
            return hdf5.open_hdf5(path, data_key, scan_shape)
        except InputError as exc:
            if suffix == ".emd" and "Velox" in str(exc):
                return rosetta.open_rosetta(path, suffix, scan_shape)
            raise
    if suffix in HDF5_SUFFIXES:
        raise InputError(f"{path}: cannot read file (not an HDF5 file)")
    raise InputError(f"{path}: unsupported file type {suffix!r} (readable: {', '.join(SUFFIXES)})")


def load_reference(spec: str) -> tuple[numpy.ndarray, str]:
    """`FILE[:KEY]`: a 2D vacuum pattern (.npy, .npz, HDF5 dataset, Swift .ndata), or the mean pattern of a 3D/4D
    vacuum recording in any readable format."""
    path, key = spec, None
    if not os.path.exists(spec) and ":" in spec:
        path, key = spec.rsplit(":", 1)
    if not os.path.exists(path):
        raise InputError(f"--reference {spec}: no such file")
    try:
        array = _reference_array(path, key)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise InputError(f"--reference {spec}: cannot read it ({exc})") from None
    array = numpy.asarray(array, dtype=numpy.float32)
    if array.ndim != 2:
        raise InputError(f"--reference {spec}: expected a 2D pattern (or a 3D/4D stack to average), "
                         f"got shape {array.shape}")
    return array, f"--reference {spec}"


def _reference_array(path: str, key: str | None) -> typing.Any:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        array = numpy.load(path, mmap_mode="r")
    elif suffix == ".npz":
        with numpy.load(path) as npz:
            name = key or ("reference" if "reference" in npz.files else npz.files[0])
            array = npz[name]
    elif key and h5py.is_hdf5(path):
        with h5py.File(path, "r") as file:
            array = file[key][()]
    else:
        opened = _open_any(path)
        if opened is not None:
            return opened
        raise InputError(f"--reference {path}: no 2D pattern found")
    return _mean_pattern(array)


def _open_any(path: str) -> numpy.ndarray | None:
    """A 2D dataset (a Swift .ndata / .h5 image, the only 2D dataset of an HDF5 file) or a 4D file's mean."""
    if path.lower().endswith(".ndata"):
        with zipfile.ZipFile(path) as archive, archive.open("data.npy") as member:
            return _mean_pattern(numpy.lib.format.read_array(member))
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as file:
            from dkl4dstem.data.readers.hdf5 import datasets
            flat = [item for _, item in datasets(file) if item.ndim == 2 and min(item.shape) > 4]
            if len(flat) == 1:
                return numpy.asarray(flat[0][()])
    opened = open_file(path)
    try:
        from dkl4dstem.data.bigfile import iter_row_chunks
        total = numpy.zeros(opened.data.shape[2:], dtype=numpy.float64)
        for _, block in iter_row_chunks(opened.data):
            total += block.sum(axis=(0, 1), dtype=numpy.float64)
        return total / (opened.data.shape[0] * opened.data.shape[1])
    finally:
        if opened.closer is not None:
            opened.closer()


def _mean_pattern(array: typing.Any) -> numpy.ndarray:
    array = numpy.asarray(array)
    while array.ndim > 2:
        array = array.mean(axis=0)
    return array


def complete(opened: Opened, overrides: typing.Mapping[str, float | None], reference: str | None) -> Opened:
    """Apply command-line calibrations over the file's, and say where every calibration comes from."""
    for name in CALIBRATIONS:
        value = overrides.get(name)
        if value is not None:
            flag = "--" + name.replace("_", "-")
            if getattr(opened, name) is not None:
                flag += f" (file said {getattr(opened, name):.6g}: {opened.sources[name]})"
            opened.sources[name] = flag
            setattr(opened, name, float(value))
    if reference is not None:
        opened.reference, opened.sources["reference"] = load_reference(reference)
    for name in (*CALIBRATIONS, "reference"):
        if getattr(opened, name) is None:
            opened.sources.setdefault(name, "unknown")
    opened.sources["survey"] = opened.survey_name or "virtual ADF computed from the 4D data"
    return opened

"""Replay of pre-acquired 4D-STEM data as an Instrument: how results are verified against ground truth.

Files are opened lazily: `.npy` streamed with pread (`bigfile.NpyPatterns`), HDF5 read per pattern, so a 4D file
larger than memory replays with bounded RSS. `.npz` members are loaded whole (zip members cannot be memory-mapped).
"""
from __future__ import annotations

import os
import time
import typing
import zipfile

import h5py
import numpy

from dkl4dstem.bigfile import CHUNK_BYTES, NpyPatterns, iter_row_chunks
from dkl4dstem.diffraction import DetectorCalibration, Measurement
from dkl4dstem.errors import InputError
from dkl4dstem.survey import Survey, validate_survey

SUFFIXES = (".npy", ".npz", ".h5", ".hdf5", ".emd")


class ReplayInstrument:
    measure_timeout_s = 60.0  # a file on a stalled network share must not hang the loop (engine: excluded point)

    def __init__(self, data: typing.Any, *, survey: numpy.ndarray | None = None,
                 reference: numpy.ndarray | None = None, mrad_per_px: float | None = None,
                 nm_per_px: float | None = None, semiangle_mrad: float | None = None,
                 source: str = "", closer: typing.Callable[[], None] | None = None) -> None:
        if len(getattr(data, "shape", ())) != 4:
            raise InputError(f"{source or 'data'}: expected 4D data (scan_y, scan_x, det_y, det_x), "
                             f"got shape {tuple(getattr(data, 'shape', ()))}")
        if min(data.shape) < 1:
            raise InputError(f"{source or 'data'}: empty 4D data {tuple(data.shape)}")
        _check_dtype(getattr(data, "dtype", None), source)
        self.data = data
        self.source = source
        self._closer = closer
        self._survey = None if survey is None else validate_survey(survey)
        if self._survey is not None and self._survey.shape != tuple(data.shape[:2]):
            raise InputError(f"survey shape {self._survey.shape} does not match the scan shape {tuple(data.shape[:2])}"
                             " of the 4D data")
        if reference is not None:
            reference = numpy.asarray(reference, dtype=numpy.float32)
            if reference.shape != tuple(data.shape[2:]):
                raise InputError(f"reference shape {reference.shape} does not match the detector shape "
                                 f"{tuple(data.shape[2:])}")
            if not numpy.all(numpy.isfinite(reference)):
                raise InputError("reference pattern contains NaN/Inf")
        for name, value in (("mrad_per_px", mrad_per_px), ("nm_per_px", nm_per_px),
                            ("semiangle_mrad", semiangle_mrad)):
            if value is not None and not (numpy.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value}")
        self._calibration = DetectorCalibration(reference, mrad_per_px, semiangle_mrad)
        self.nm_per_px = nm_per_px
        self.measure_count = 0

    @property
    def scan_shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def detector_shape(self) -> tuple[int, int]:
        return (int(self.data.shape[2]), int(self.data.shape[3]))

    def survey(self) -> Survey:
        if self._survey is None:
            self._survey = validate_survey(virtual_adf(self.data))
        return Survey(self._survey, self.nm_per_px, {"source": self.source})

    def calibration(self) -> DetectorCalibration:
        return self._calibration

    def measure(self, y: int, x: int) -> Measurement:
        start = time.time()
        pattern = numpy.asarray(self.data[y, x], dtype=numpy.float32)
        self.measure_count += 1
        return Measurement(pattern, {"position": (int(y), int(x)), "timestamp": start, "source": self.source})

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


def _check_dtype(dtype: typing.Any, source: str) -> None:
    """Intensities must be real numbers: integer, unsigned and float16 data are summed in float64 (exact);
    complex data would silently lose its imaginary part."""
    if dtype is None:
        return
    dtype = numpy.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(f"{source or 'data'}: complex data ({dtype}) is not supported: give the intensities, "
                         "e.g. abs(wave)**2")
    if dtype.kind not in "biuf":
        raise InputError(f"{source or 'data'}: data of type {dtype} is not numeric intensity")


def virtual_adf(data: typing.Any) -> numpy.ndarray:
    """A virtual annular dark-field image (outside the bright disc estimate), in bounded-memory chunks.

    Sums in float64 whatever the data type (int16 / uint8 / float16 sums overflow in their own type)."""
    # chunks are converted to float64, so read fewer rows at once: the same bounded memory
    chunk_bytes = CHUNK_BYTES * max(1, numpy.dtype(data.dtype).itemsize) // 8
    mean_pattern = numpy.zeros(data.shape[2:], dtype=numpy.float64)
    for _, block in iter_row_chunks(data, chunk_bytes):
        mean_pattern += block.sum(axis=(0, 1), dtype=numpy.float64)
    det_y, det_x = mean_pattern.shape
    yy, xx = numpy.mgrid[0:det_y, 0:det_x]
    total = mean_pattern.sum()
    cy, cx = (float((yy * mean_pattern).sum() / total), float((xx * mean_pattern).sum() / total)) if total > 0 \
        else ((det_y - 1) / 2, (det_x - 1) / 2)
    radius = numpy.hypot(yy - cy, xx - cx)
    bright = mean_pattern > 0.1 * mean_pattern.max()
    disc_radius = float(radius[bright].max()) if bright.any() else min(det_y, det_x) / 4
    mask = radius > disc_radius * 1.2
    if not mask.any():
        mask = radius > disc_radius * 0.5
    image = numpy.empty(data.shape[:2], dtype=numpy.float64)
    for start, block in iter_row_chunks(data, chunk_bytes):
        image[start:start + len(block)] = numpy.tensordot(block.astype(numpy.float64, copy=False),
                                                          mask.astype(numpy.float64), axes=([2, 3], [0, 1]))
    return image.astype(numpy.float32)


def _scalar(container: typing.Any, key: str) -> float | None:
    if key not in container:
        return None
    return float(numpy.asarray(container[key]).reshape(-1)[0])


def open_replay(path: str | os.PathLike[str], data_key: str | None = None) -> ReplayInstrument:
    """Open `.npy` (4D), `.npz` (replay layout) or HDF5 (`data_key` names the dataset; default `data`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as file:
                if file.read(4) == b"PK\x03\x04":
                    raise InputError(f"{path}: this is an .npz archive (zip) named .npy; rename it to .npz")
            try:
                patterns = NpyPatterns(path)  # streamed with pread: bounded RSS for files larger than memory
            except ValueError:
                return ReplayInstrument(numpy.load(path, mmap_mode="r"), source=path)
            try:
                return ReplayInstrument(patterns, source=path, closer=patterns.close)
            except BaseException:
                patterns.close()
                raise
        if suffix == ".npz":
            with numpy.load(path) as npz:
                key = data_key or "data"
                if key not in npz.files:
                    raise InputError(f"{path}: no array {key!r} (has: {', '.join(npz.files)})")
                arrays = {name: npz[name] for name in npz.files}
            return ReplayInstrument(arrays[key], survey=arrays.get("survey"), reference=arrays.get("reference"),
                                    mrad_per_px=_scalar(arrays, "mrad_per_px"), nm_per_px=_scalar(arrays, "nm_per_px"),
                                    semiangle_mrad=_scalar(arrays, "semiangle_mrad"), source=path)
        if suffix in (".h5", ".hdf5", ".emd"):
            file = h5py.File(path, "r")
            try:
                key = data_key or "data"
                if key not in file or not isinstance(file[key], h5py.Dataset):
                    raise InputError(f"{path}: no dataset {key!r}; pass --data-key (datasets: "
                                     f"{', '.join(_datasets(file))})")
                group = file[key].parent
                survey = group["survey"][()] if "survey" in group else None
                reference = group["reference"][()] if "reference" in group else None
                attrs = dict(file[key].attrs)
                scalars = {name: _scalar(group, name) if name in group else _scalar(attrs, name)
                           for name in ("mrad_per_px", "nm_per_px", "semiangle_mrad")}
                return ReplayInstrument(file[key], survey=survey, reference=reference, source=path,
                                        closer=file.close, **scalars)
            except BaseException:
                file.close()
                raise
        raise InputError(f"{path}: unsupported file type {suffix!r} (use {', '.join(SUFFIXES)})")
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: cannot read file ({exc})") from None


def _datasets(file: h5py.File) -> list[str]:
    names: list[str] = []
    file.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names[:20]

"""Replay of pre-acquired 4D-STEM data as an Instrument: how results are verified against ground truth.

Files are opened lazily where the format allows (`dkl4dstem.data.readers`): `.npy`, `.mib` and EMPAD `.raw` streamed
with pread, HDF5 / EMD / .hspy / .zspy read per pattern, so a 4D file larger than memory replays with bounded RSS.
`.npz` and Swift `.ndata` members are loaded whole (zip members cannot be memory-mapped).
"""
from __future__ import annotations

import contextlib
import os
import time
import typing
import zipfile

import numpy

from dkl4dstem.data import readers
from dkl4dstem.data.bigfile import CHUNK_BYTES, NpyPatterns, iter_row_chunks
from dkl4dstem.data.diffraction import DetectorCalibration, Measurement
from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import ScanView, scan_shape_for
from dkl4dstem.data.survey import Survey, validate_survey

SUFFIXES = readers.SUFFIXES
VIRTUAL_ADF = "virtual ADF computed from the 4D data"


class ReplayInstrument:
    measure_timeout_s = 60.0  # a file on a stalled network share must not hang the loop (engine: excluded point)

    def __init__(self, data: typing.Any, *, survey: numpy.ndarray | None = None,
                 reference: numpy.ndarray | None = None, mrad_per_px: float | None = None,
                 nm_per_px: float | None = None, semiangle_mrad: float | None = None,
                 source: str = "", closer: typing.Callable[[], None] | None = None,
                 calibration_sources: dict[str, str] | None = None, survey_name: str | None = None,
                 file_format: str = "") -> None:
        if len(getattr(data, "shape", ())) != 4:
            hint = " (a flat frame stack? give --scan-shape Y,X)" if len(getattr(data, "shape", ())) == 3 else ""
            raise InputError(f"{source or 'data'}: expected 4D data (scan_y, scan_x, det_y, det_x), "
                             f"got shape {tuple(getattr(data, 'shape', ()))}{hint}")
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
        self.calibration_sources = dict(calibration_sources or {})
        self.survey_name = survey_name or VIRTUAL_ADF
        self.file_format = file_format
        self._held = 0
        self._close_pending = False

    @property
    def scan_shape(self) -> tuple[int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def detector_shape(self) -> tuple[int, int]:
        return (int(self.data.shape[2]), int(self.data.shape[3]))

    def survey(self) -> Survey:
        if self._survey is None:
            self._survey = validate_survey(virtual_adf(self.data))
        return Survey(self._survey, self.nm_per_px, {"source": self.source, "name": self.survey_name})

    def calibration(self) -> DetectorCalibration:
        return self._calibration

    def measure(self, y: int, x: int) -> Measurement:
        start = time.time()
        pattern = numpy.asarray(self.data[y, x], dtype=numpy.float32)
        return Measurement(pattern, {"position": (int(y), int(x)), "timestamp": start, "source": self.source})

    @contextlib.contextmanager
    def held_open(self) -> typing.Iterator[ReplayInstrument]:
        """Defer close() until the block ends: the experiment closes its instrument when the run ends, while the
        caller still reads the file afterwards (the ground truth from every pattern)."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
            if self._held == 0 and self._close_pending:
                self.close()

    def close(self) -> None:
        if self._held:
            self._close_pending = True
            return
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
        image[start:start + len(block)] = numpy.tensordot(numpy.asarray(block).astype(numpy.float64, copy=False),
                                                          mask.astype(numpy.float64), axes=([2, 3], [0, 1]))
    return image.astype(numpy.float32)


def _scalar(container: typing.Any, key: str) -> float | None:
    if key not in container:
        return None
    return float(numpy.asarray(container[key]).reshape(-1)[0])


def open_replay(path: str | os.PathLike[str], data_key: str | None = None, *,
                scan_shape: tuple[int, int] | None = None, mrad_per_px: float | None = None,
                nm_per_px: float | None = None, semiangle_mrad: float | None = None,
                reference: str | None = None) -> ReplayInstrument:
    """Open a 4D-STEM file (see `dkl4dstem.data.readers` for the formats) as a replay instrument.

    The keyword calibrations override the file's (`reference`: `FILE[:KEY]`); `calibration_sources` on the result
    says where each one came from. `scan_shape` (Y, X) turns a flat frame stack (n, det_y, det_x) into a scan."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    overrides = {"mrad_per_px": mrad_per_px, "nm_per_px": nm_per_px, "semiangle_mrad": semiangle_mrad}
    try:
        opened = _open(path, data_key, scan_shape)
        try:
            readers.complete(opened, overrides, reference)
            return ReplayInstrument(opened.data, survey=opened.survey, reference=opened.reference,
                                    mrad_per_px=opened.mrad_per_px, nm_per_px=opened.nm_per_px,
                                    semiangle_mrad=opened.semiangle_mrad, source=path, closer=opened.closer,
                                    calibration_sources=opened.sources, survey_name=opened.survey_name,
                                    file_format=opened.format)
        except BaseException:
            if opened.closer is not None:
                opened.closer()
            raise
    except InputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: cannot read file ({exc})") from None


def _open(path: str, data_key: str | None, scan_shape: tuple[int, int] | None) -> readers.Opened:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        with open(path, "rb") as file:
            if file.read(4) == b"PK\x03\x04":
                raise InputError(f"{path}: this is an .npz archive (zip) named .npy; rename it to .npz")
        try:
            patterns = NpyPatterns(path)  # streamed with pread: bounded RSS for files larger than memory
        except ValueError:
            array = numpy.load(path, mmap_mode="r")
            return readers.Opened(_stack(array, scan_shape, path), ".npy")
        if patterns.ndim == 3:  # a flat frame stack: memory-mapped
            patterns.close()
            return readers.Opened(_stack(numpy.load(path, mmap_mode="r"), scan_shape, path), ".npy frame stack")
        return readers.Opened(patterns, ".npy", closer=patterns.close)
    if suffix == ".npz":
        with numpy.load(path) as npz:
            key = data_key or "data"
            if key not in npz.files:
                raise InputError(f"{path}: no array {key!r} (has: {', '.join(npz.files)})")
            arrays = {name: npz[name] for name in npz.files}
        opened = readers.Opened(_stack(arrays[key], scan_shape, path), ".npz", survey=arrays.get("survey"),
                                survey_name="survey image from the file" if "survey" in arrays else None,
                                reference=arrays.get("reference"))
        if opened.reference is not None:
            opened.sources["reference"] = "file (reference)"
        for name in readers.CALIBRATIONS:
            opened.set(name, _scalar(arrays, name), f"file ({name})")
        return opened
    return readers.open_file(path, data_key, scan_shape)


def _stack(array: numpy.ndarray, scan_shape: tuple[int, int] | None, path: str) -> typing.Any:
    if array.ndim == 3 and scan_shape is not None:
        return ScanView(array, scan_shape_for(array.shape[0], scan_shape, path))
    return array

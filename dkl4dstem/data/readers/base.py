"""What every reader returns, unit conversions, and array views that keep big files on disk.

A reader yields an `Opened`: a 4D array-like (`shape`, `dtype`, `nbytes`, `[y, x]` and `[row_start:row_stop]`
indexing; the replay instrument and the chunked ground truth use nothing else), the calibrations it found and
where each came from. Views here read a pattern or a few scan rows at a time, so a file larger than memory
replays with bounded RSS.
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing

import numpy

from dkl4dstem.data.bigfile import ScanIndexing, pread_exact
from dkl4dstem.errors import InputError

CALIBRATIONS = ("nm_per_px", "mrad_per_px", "semiangle_mrad")

_NM = {"nm": 1.0, "nanometer": 1.0, "nanometers": 1.0, "a": 0.1, "å": 0.1, "angstrom": 0.1, "ang": 0.1,
       "µm": 1e3, "um": 1e3, "micron": 1e3, "pm": 1e-3, "m": 1e9, "mm": 1e6}
_MRAD = {"mrad": 1.0, "rad": 1e3, "µrad": 1e-3, "urad": 1e-3, "deg": 1e3 * math.pi / 180}
_INVERSE_NM = {"1/nm": 1.0, "nm^-1": 1.0, "nm-1": 1.0, "1/a": 10.0, "1/å": 10.0, "a^-1": 10.0, "å^-1": 10.0,
               "a-1": 10.0}


@dataclasses.dataclass
class Opened:
    """A 4D dataset as found in a file: data (scan_y, scan_x, det_y, det_x) plus what the file says about it."""

    data: typing.Any
    format: str
    survey: numpy.ndarray | None = None
    survey_name: str | None = None  # e.g. "HAADF (from the file)"; None: a virtual ADF is computed
    reference: numpy.ndarray | None = None
    mrad_per_px: float | None = None
    nm_per_px: float | None = None
    semiangle_mrad: float | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    closer: typing.Callable[[], None] | None = None

    def set(self, name: str, value: float | None, source: str) -> None:
        """Record a calibration found in the file (ignored when None or not a positive number)."""
        if value is not None and math.isfinite(value) and value > 0:
            setattr(self, name, float(value))
            self.sources[name] = source


def _unit_key(units: str) -> str:
    return str(units).strip().lower().replace(" ", "").replace("^{-1}", "^-1").replace("μ", "µ")


def nm_per_unit(units: str) -> float | None:
    return _NM.get(_unit_key(units))


def wavelength_nm(energy_ev: float) -> float:
    """Relativistic electron wavelength."""
    return 1.2398419843320026e3 / math.sqrt(energy_ev * (2 * 510998.95 + energy_ev))


def mrad_per_unit(units: str, energy_ev: float | None = None) -> float | None:
    """mrad per unit of an angular or reciprocal-space axis (reciprocal needs the beam energy); None: unknown."""
    key = _unit_key(units)
    if key in _MRAD:
        return _MRAD[key]
    if key in _INVERSE_NM and energy_ev:
        return _INVERSE_NM[key] * wavelength_nm(energy_ev) * 1e3  # small angles: theta = lambda / d
    return None


def calibrate_axes(opened: Opened, axes: typing.Sequence[tuple[float, str]], where: str,
                   energy_ev: float | None = None) -> None:
    """Scan (axes 0, 1) and detector (axes 2, 3) calibrations from (scale, units) pairs."""
    scale, units = axes[1]
    factor = nm_per_unit(units)
    if factor is not None:
        opened.set("nm_per_px", abs(scale) * factor, f"{where} (scan axis {scale:g} {units})")
    scale, units = axes[3]
    factor = mrad_per_unit(units, energy_ev)
    if factor is None and _unit_key(units) in _INVERSE_NM:
        opened.sources.setdefault("mrad_per_px", f"unknown ({where}: {scale:g} {units} needs the beam energy; "
                                  "give --mrad-per-px)")
    if factor is not None:
        energy = f", {energy_ev / 1e3:g} kV" if energy_ev and _unit_key(units) in _INVERSE_NM else ""
        opened.set("mrad_per_px", abs(scale) * factor, f"{where} (detector axis {scale:g} {units}{energy})")


def find_number(tree: typing.Any, names: typing.Iterable[str]) -> tuple[str, float] | None:
    """First numeric value under one of `names` (case-insensitive) anywhere in nested dicts; (key path, value)."""
    wanted = {name.lower() for name in names}
    stack: list[tuple[str, typing.Any]] = [("", tree)]
    while stack:
        path, node = stack.pop(0)
        if not isinstance(node, typing.Mapping):
            continue
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower() in wanted:
                try:
                    number = float(numpy.asarray(value).reshape(-1)[0])
                except (TypeError, ValueError, IndexError):
                    continue
                if math.isfinite(number):
                    return here, number
            stack.append((here, value))
    return None


def parse_scan_shape(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        y, x = (int(part) for part in str(text).replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--scan-shape expects Y,X (two positive integers), got {text!r}") from None
    if y < 1 or x < 1:
        raise InputError(f"--scan-shape expects Y,X (two positive integers), got {text!r}")
    return (y, x)


def scan_shape_for(n_frames: int, scan_shape: tuple[int, int] | None, source: str) -> tuple[int, int]:
    """The scan of a flat frame stack: --scan-shape, or a square when the frame count is a square number."""
    if scan_shape is None:
        side = math.isqrt(n_frames)
        if side * side != n_frames:
            raise InputError(f"{source}: {n_frames} frames in a flat stack; give the scan with --scan-shape Y,X")
        return (side, side)
    if scan_shape[0] * scan_shape[1] > n_frames:
        raise InputError(f"{source}: --scan-shape {scan_shape[0]},{scan_shape[1]} needs "
                         f"{scan_shape[0] * scan_shape[1]} frames, the file has {n_frames}")
    return scan_shape


class ScanView(ScanIndexing):
    """A flat frame stack (n, det_y, det_x) seen as (scan_y, scan_x, det_y, det_x); reads only what is asked."""

    def __init__(self, frames: typing.Any, scan_shape: tuple[int, int]) -> None:
        self.frames = frames
        self.shape = (scan_shape[0], scan_shape[1], int(frames.shape[1]), int(frames.shape[2]))
        self.dtype = numpy.dtype(frames.dtype)
        self.ndim = 4
        self.size = int(numpy.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize

    def rows(self, start: int, stop: int) -> numpy.ndarray:
        start, stop = max(0, start), min(self.shape[0], stop)
        width = self.shape[1]
        block = numpy.asarray(self.frames[start * width:max(start, stop) * width])
        return block.reshape((max(0, stop - start), *self.shape[1:]))

    def pattern(self, y: int, x: int) -> numpy.ndarray:
        return numpy.asarray(self.frames[y * self.shape[1] + x])


class RawFrames:
    """Fixed-stride frames in a binary file (Merlin .mib, EMPAD .raw) read with pread: nothing stays resident.

    Frame k's pixels start at `offset + k * stride + header`; `raw_shape` rows x cols of `dtype`, of which the
    first `shape[1]` rows are kept (EMPAD appends two rows of per-frame metadata); `flip_rows` for cameras that
    store rows bottom-up (Merlin)."""

    def __init__(self, path: str, n_frames: int, raw_shape: tuple[int, int], dtype: typing.Any, *,
                 offset: int = 0, header: int = 0, stride: int | None = None, keep_rows: int | None = None,
                 flip_rows: bool = False) -> None:
        self.path = path
        self.dtype = numpy.dtype(dtype)
        self.raw_shape = raw_shape
        self.frame_bytes = raw_shape[0] * raw_shape[1] * self.dtype.itemsize
        self.stride = stride or header + self.frame_bytes
        self.offset, self.header = offset, header
        self.flip_rows = flip_rows
        self.shape = (n_frames, keep_rows or raw_shape[0], raw_shape[1])
        self.nbytes = int(numpy.prod(self.shape)) * self.dtype.itemsize
        self._fd: int | None = os.open(path, os.O_RDONLY)

    def _read(self, first: int, count: int) -> numpy.ndarray:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        buffer = pread_exact(self._fd, count * self.stride, self.offset + first * self.stride, self.path)
        frames = numpy.ndarray((count, *self.raw_shape), dtype=self.dtype, buffer=buffer, offset=self.header,
                               strides=(self.stride, self.raw_shape[1] * self.dtype.itemsize, self.dtype.itemsize))
        frames = frames[:, :self.shape[1]]
        return frames[:, ::-1] if self.flip_rows else frames

    def __getitem__(self, key: typing.Any) -> numpy.ndarray:
        if isinstance(key, (int, numpy.integer)):
            if not 0 <= int(key) < self.shape[0]:
                raise IndexError(f"frame {key} outside 0..{self.shape[0] - 1}")
            return self._read(int(key), 1)[0]
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(self.shape[0])
            return self._read(start, max(0, stop - start))
        raise TypeError(f"unsupported index {key!r}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

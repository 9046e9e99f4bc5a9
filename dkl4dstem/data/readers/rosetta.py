"""Formats read through rosettasciio (optional extra `pip install 'dkl4dstem[io]'`): Gatan `.dm3`/`.dm4` and
Thermo Fisher Velox `.emd`, lazily (dask over a memory map / HDF5). Velox stores camera frames as an image stack
(frames, y, x): the scan goes in `--scan-shape`."""
from __future__ import annotations

import importlib
import typing

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import Opened, ScanView, calibrate_axes, find_number, scan_shape_for

MODULES = {".dm3": "rsciio.digitalmicrograph", ".dm4": "rsciio.digitalmicrograph", ".emd": "rsciio.emd"}


def open_rosetta(path: str, suffix: str, scan_shape: tuple[int, int] | None) -> Opened:
    try:
        module = importlib.import_module(MODULES[suffix])
    except ImportError:
        raise InputError(f"{path}: {suffix} files need rosettasciio: pip install 'dkl4dstem[io]'") from None
    try:
        signals = module.file_reader(path, lazy=True)
    except Exception as exc:  # rsciio raises many types on a file it cannot parse
        raise InputError(f"{path}: rosettasciio cannot read it ({type(exc).__name__}: {exc})") from None
    cubes = [s for s in signals if len(s["data"].shape) == 4 or (len(s["data"].shape) == 3 and scan_shape)]
    if len(cubes) != 1:
        shapes = ", ".join(str(tuple(s["data"].shape)) for s in signals)
        raise InputError(f"{path}: {len(cubes)} 4D signals (signals: {shapes}); a flat stack needs --scan-shape")
    signal = cubes[0]
    data = signal["data"]
    axes = [(float(a.get("scale", 1.0)), str(a.get("units") or "")) for a in signal.get("axes", [])]
    if len(data.shape) == 3:
        data = ScanView(data, scan_shape_for(int(data.shape[0]), scan_shape, path))
        axes = [(1.0, ""), *axes]
    metadata: dict[str, typing.Any] = signal.get("metadata", {}) or {}
    original: dict[str, typing.Any] = signal.get("original_metadata", {}) or {}
    opened = Opened(data, f"{suffix} via rosettasciio")
    energy_ev = _energy_ev(metadata, original)
    if len(axes) == 4:
        calibrate_axes(opened, axes, "rosettasciio axes", energy_ev)
    angle = find_number(metadata, ("convergence_angle",))
    if angle:
        opened.set("semiangle_mrad", angle[1], f"file metadata ({angle[0]}, mrad)")
    else:
        angle = find_number(original, ("BeamConvergence",))  # Velox: Optics.BeamConvergence in rad
        if angle:
            opened.set("semiangle_mrad", angle[1] * 1e3, f"file metadata ({angle[0]}, rad)")
    return opened


def _energy_ev(metadata: dict[str, typing.Any], original: dict[str, typing.Any]) -> float | None:
    """Beam energy: HyperSpy's `beam_energy` (keV), else Velox's Optics.AccelerationVoltage (V)."""
    found = find_number(metadata, ("beam_energy",))
    if found:
        return found[1] * 1e3
    found = find_number(original, ("AccelerationVoltage",))
    return found[1] if found else None

"""HyperSpy `.hspy` (HDF5) and `.zspy` (zarr) read lazily without hyperspy: `Experiments/<title>/data` with
groups `axis-0`.. (one per array dimension, in array order: scale, units, navigate) and `metadata`
(Acquisition_instrument.TEM: beam_energy in keV, convergence_angle in mrad)."""
from __future__ import annotations

import os
import typing

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers.base import Opened, ScanView, calibrate_axes, find_number, scan_shape_for


def _tree(group: typing.Any) -> dict[str, typing.Any]:
    """A metadata group as nested dicts (attributes and subgroups)."""
    node: dict[str, typing.Any] = dict(group.attrs)
    for name in group.keys():
        child = group[name]
        if hasattr(child, "keys") and not hasattr(child, "shape"):
            node[name] = _tree(child)
    return node


def from_group(root: typing.Any, path: str, scan_shape: tuple[int, int] | None, kind: str = ".hspy") -> Opened:
    experiments = root.get("Experiments")
    if experiments is None or not list(experiments.keys()):
        raise InputError(f"{path}: a HyperSpy file without a signal")
    names = list(experiments.keys())
    if len(names) > 1:
        raise InputError(f"{path}: {len(names)} signals ({', '.join(names)}); choose one with --data-key "
                         "Experiments/NAME/data")
    return from_experiment(experiments[names[0]], path, scan_shape, kind)


def from_experiment(group: typing.Any, path: str, scan_shape: tuple[int, int] | None, kind: str) -> Opened:
    data = group["data"]
    axes = [dict(group[f"axis-{i}"].attrs) for i in range(len(data.shape)) if f"axis-{i}" in group]
    navigate = [bool(axis.get("navigate", index < len(data.shape) - 2)) for index, axis in enumerate(axes)]
    if len(data.shape) == 3 and navigate[:1] == [True]:
        data = ScanView(data, scan_shape_for(int(data.shape[0]), scan_shape, path))
        axes = [{"scale": 1.0, "units": ""}, *axes]
    elif len(data.shape) != 4 or (axes and navigate != [True, True, False, False]):
        raise InputError(f"{path}: not a 4D-STEM signal (shape {tuple(data.shape)}, navigate {navigate}); "
                         "expected 2 navigation and 2 signal axes")
    title = os.path.basename(group.name) if hasattr(group, "name") else ""
    opened = Opened(data, f"HyperSpy {kind}" + (f" '{title}'" if title and title != "__unnamed__" else ""))
    metadata = _tree(group["metadata"]) if "metadata" in group else {}
    energy = find_number(metadata, ("beam_energy",))
    if len(axes) == 4:
        calibrate_axes(opened, [(float(a.get("scale", 1.0)), _text(a.get("units", ""))) for a in axes],
                       "HyperSpy axes", energy[1] * 1e3 if energy else None)
    angle = find_number(metadata, ("convergence_angle",))
    if angle:
        opened.set("semiangle_mrad", angle[1], f"HyperSpy metadata ({angle[0]}, mrad)")
    return opened


def _text(value: typing.Any) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return "" if text == "_None_" else text


def open_zspy(path: str, data_key: str | None, scan_shape: tuple[int, int] | None) -> Opened:
    try:
        import zarr
    except ImportError:
        raise InputError(f"{path}: .zspy needs zarr: pip install 'dkl4dstem[io]'") from None
    root = zarr.open_group(path, mode="r")
    if data_key:
        return from_experiment(root[os.path.dirname(data_key.strip("/"))], path, scan_shape, ".zspy")
    return from_group(root, path, scan_shape, ".zspy")

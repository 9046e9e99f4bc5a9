"""HDF5 files: py4DSTEM / emdfile EMD 1.0, Nion Swift data items, DECTRIS (ARINA, EIGER) master files with
external links, HyperSpy .hspy, and any file holding one 4D dataset. Read lazily (h5py, one pattern or a few scan
rows at a time)."""
from __future__ import annotations

import json
import typing

import h5py
import numpy

from dkl4dstem.errors import InputError
from dkl4dstem.data.readers import hyperspy, nion
from dkl4dstem.data.readers.base import Opened, ScanView, calibrate_axes, find_number, scan_shape_for

CALIBRATION_KEYS = ("mrad_per_px", "nm_per_px", "semiangle_mrad")


class ConcatFrames:
    """Frames split over several datasets (a DECTRIS master's data_000001, data_000002, ...) as one stack."""

    def __init__(self, parts: list[h5py.Dataset]) -> None:
        self.parts = parts
        self.starts = numpy.cumsum([0] + [int(part.shape[0]) for part in parts])
        self.shape = (int(self.starts[-1]), *(int(n) for n in parts[0].shape[1:]))
        self.dtype = parts[0].dtype

    def __getitem__(self, key: typing.Any) -> numpy.ndarray:
        if isinstance(key, (int, numpy.integer)):
            part = int(numpy.searchsorted(self.starts, int(key), side="right")) - 1
            return numpy.asarray(self.parts[part][int(key) - self.starts[part]])
        start, stop, _ = key.indices(self.shape[0])
        blocks = []
        for index, part in enumerate(self.parts):
            lo, hi = max(start, self.starts[index]), min(stop, self.starts[index + 1])
            if lo < hi:
                blocks.append(part[lo - self.starts[index]:hi - self.starts[index]])
        return numpy.concatenate(blocks) if blocks else numpy.empty((0, *self.shape[1:]), self.dtype)


def datasets(file: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    found: list[tuple[str, h5py.Dataset]] = []
    file.visititems(lambda name, item: found.append((name, item)) if isinstance(item, h5py.Dataset) else None)
    return found


def open_hdf5(path: str, data_key: str | None, scan_shape: tuple[int, int] | None) -> Opened:
    file = h5py.File(path, "r")
    try:
        opened = _dispatch(file, path, data_key, scan_shape)
    except BaseException:
        file.close()
        raise
    opened.closer = file.close
    return opened


def _dispatch(file: h5py.File, path: str, data_key: str | None, scan_shape: tuple[int, int] | None) -> Opened:
    if data_key is None:
        if file.attrs.get("file_format") == "HyperSpy":
            return hyperspy.from_group(file, path, scan_shape)
        if isinstance(file.get("data"), h5py.Dataset) and "properties" in file["data"].attrs:
            props = json.loads(file["data"].attrs["properties"])
            return nion.from_properties(file["data"], props, path, "Nion Swift data item (.h5)", scan_shape)
        if isinstance(file.get("entry/data"), h5py.Group) and _dectris_parts(file):
            return _dectris(file, path, scan_shape)
        if file.attrs.get("emd_group_type") == "file":
            return _emd(file, path, None, scan_shape)
        if "Version" in file and "Data" in file:
            raise InputError(f"{path}: a Velox EMD file; read it through rosettasciio: pip install 'dkl4dstem[io]'")
    key = data_key or _single_4d(file, path, scan_shape)
    item = file.get(key)
    if not isinstance(item, h5py.Dataset):
        raise InputError(f"{path}: no dataset {key!r}; pass --data-key (datasets: "
                         f"{', '.join(name for name, _ in datasets(file)[:20])})")
    if item.parent.attrs.get("emd_group_type") == "array":
        return _emd(file, path, item.parent.name, scan_shape)
    if "axis-0" in item.parent and file.attrs.get("file_format") == "HyperSpy":
        return hyperspy.from_experiment(item.parent, path, scan_shape, ".hspy")
    return _plain(item, path, scan_shape)


def _single_4d(file: h5py.File, path: str, scan_shape: tuple[int, int] | None) -> str:
    found = datasets(file)
    for ndim in (4, 3) if scan_shape else (4,):
        candidates = [name for name, item in found if item.ndim == ndim]
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise InputError(f"{path}: {len(candidates)} {ndim}D datasets ({', '.join(candidates[:8])}); "
                             "choose one with --data-key")
    if "data" in file:
        return "data"
    shapes = ", ".join(f"{name} {tuple(item.shape)}" for name, item in found[:8])
    hint = " (a flat frame stack? give --scan-shape Y,X)" if any(item.ndim == 3 for _, item in found) else ""
    raise InputError(f"{path}: no 4D dataset (datasets: {shapes or 'none'}){hint}")


def _as_4d(item: typing.Any, path: str, scan_shape: tuple[int, int] | None) -> typing.Any:
    if item.ndim == 3 and scan_shape is not None:
        return ScanView(item, scan_shape_for(int(item.shape[0]), scan_shape, path))
    return item


def _plain(item: h5py.Dataset, path: str, scan_shape: tuple[int, int] | None) -> Opened:
    """Our replay layout: siblings `survey`, `reference`, scalars as siblings or attributes of the dataset."""
    opened = Opened(_as_4d(item, path, scan_shape), "HDF5")
    group = item.parent
    if isinstance(group.get("survey"), h5py.Dataset) and group["survey"].ndim == 2:
        opened.survey, opened.survey_name = group["survey"][()], f"survey image from the file ({group['survey'].name})"
    if isinstance(group.get("reference"), h5py.Dataset):
        opened.reference = group["reference"][()]
        opened.sources["reference"] = f"file ({group['reference'].name})"
    for name in CALIBRATION_KEYS:
        holder = group[name] if isinstance(group.get(name), h5py.Dataset) else item.attrs.get(name)
        if holder is not None:
            opened.set(name, float(numpy.asarray(holder[()] if isinstance(holder, h5py.Dataset) else holder)
                                   .reshape(-1)[0]), f"file ({name})")
    return opened


def _emd_metadata(group: h5py.Group) -> dict[str, typing.Any]:
    """EMD 1.0 metadata groups (`emd_group_type` 'metadata') under a node: {name: {key: value}}."""
    found: dict[str, typing.Any] = {}
    bundle = group.get("metadatabundle")
    if isinstance(bundle, h5py.Group):
        for name, meta in bundle.items():
            if isinstance(meta, h5py.Group):
                found[name] = {key: _decode(value[()]) for key, value in meta.items()
                               if isinstance(value, h5py.Dataset)}
    return found


def _decode(value: typing.Any) -> typing.Any:
    return value.decode() if isinstance(value, bytes) else value


def _emd(file: h5py.File, path: str, array_path: str | None, scan_shape: tuple[int, int] | None) -> Opened:
    """py4DSTEM / emdfile: the 4D array node; calibration from the py4DSTEM Calibration metadata (root or node),
    else from the dim vectors."""
    if array_path is None:
        arrays: list[str] = []
        file.visititems(lambda name, item: arrays.append(name) if isinstance(item, h5py.Group)
                        and item.attrs.get("emd_group_type") == "array" and item["data"].ndim in (3, 4) else None)
        cubes = [name for name in arrays if file[name]["data"].ndim == 4] or arrays
        if len(cubes) != 1:
            raise InputError(f"{path}: {len(cubes)} 4D arrays in this EMD file ({', '.join(cubes[:8]) or 'none'}); "
                             "choose one with --data-key GROUP/data")
        array_path = cubes[0]
    node = file[array_path]
    kind = str(_decode(node.attrs.get("python_class", "Array")))
    opened = Opened(_as_4d(node["data"], path, scan_shape), f"EMD 1.0 ({kind}, {array_path.strip('/')})")
    root = file[array_path.strip("/").split("/")[0]]
    calibration = _emd_metadata(node).get("calibration") or _emd_metadata(root).get("calibration") or {}
    energy = find_number(calibration, ("E", "beam_energy_ev", "accelerating_voltage"))
    energy_ev = energy[1] if energy else None
    units_q, units_r = str(calibration.get("Q_pixel_units", "")), str(calibration.get("R_pixel_units", ""))
    if "Q_pixel_size" in calibration or "R_pixel_size" in calibration:
        calibrate_axes(opened, [(1.0, "px"), (float(calibration.get("R_pixel_size", 1.0)), units_r),
                                (1.0, "px"), (float(calibration.get("Q_pixel_size", 1.0)), units_q)],
                       "py4DSTEM calibration", energy_ev)
    if "mrad_per_px" not in opened.sources or "nm_per_px" not in opened.sources:
        axes = [_emd_dim(node, index) for index in range(4)] if node["data"].ndim == 4 else []
        if axes:
            calibrate_axes(opened, axes, "EMD dim vectors", energy_ev)
    semiangle = find_number(calibration, ("convergence_semiangle_mrad", "probe_convergence_semiangle_mrad"))
    if semiangle:
        opened.set("semiangle_mrad", semiangle[1], f"py4DSTEM calibration ({semiangle[0]})")
    return opened


def _emd_dim(node: h5py.Group, index: int) -> tuple[float, str]:
    dim = node.get(f"dim{index}")
    if not isinstance(dim, h5py.Dataset) or dim.shape[0] < 2:
        return (1.0, "px")
    values = dim[()]
    return (float(values[1] - values[0]), str(_decode(dim.attrs.get("units", "px"))))


def _dectris_parts(file: h5py.File) -> list[h5py.Dataset]:
    group = file["entry/data"]
    parts = []
    for name in sorted(group.keys()):
        if not name.startswith("data_"):
            continue
        try:
            item = group[name]  # an external link to a missing file raises KeyError
        except KeyError:
            raise InputError(f"{file.filename}: entry/data/{name} links to a missing data file "
                             f"({group.get(name, getlink=True).filename}); keep it beside the master file") from None
        if isinstance(item, h5py.Dataset) and item.ndim == 3:
            parts.append(item)
    return parts


def _dectris(file: h5py.File, path: str, scan_shape: tuple[int, int] | None) -> Opened:
    """NeXus master file (DECTRIS EIGER / ARINA): frames in linked data files, calibration from the geometry."""
    frames = ConcatFrames(_dectris_parts(file))
    opened = Opened(ScanView(frames, scan_shape_for(frames.shape[0], scan_shape, path)), "DECTRIS master file")
    detector = file.get("entry/instrument/detector")
    if isinstance(detector, h5py.Group) and "x_pixel_size" in detector and "detector_distance" in detector:
        pixel_m = float(detector["x_pixel_size"][()])
        distance_m = float(detector["detector_distance"][()])
        if distance_m > 0:
            opened.set("mrad_per_px", 1e3 * pixel_m / distance_m,
                       f"DECTRIS geometry (pixel {pixel_m * 1e6:g} um at {distance_m * 1e3:g} mm)")
    return opened

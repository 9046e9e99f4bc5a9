"""Streaming writers of a large 4D file in each lazily read format, for `large_replay.py --format`.

The layouts are those the readers in `dkl4dstem/data/readers/` parse (and that the tests check against the formats'
own libraries); written row by row so the writer never holds more than one scan row.
"""
from __future__ import annotations

import os
import typing

import h5py
import numpy

Rows = typing.Iterator[tuple[int, numpy.ndarray]]  # (y, (scan_x, det, det) float32)


def write_h5(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    with h5py.File(path, "w") as file:  # one 4D dataset, found without --data-key
        data = file.create_dataset("scan/frames", shape=shape, dtype="f4", chunks=(1, 1, *shape[2:]))
        for y, row in rows:
            data[y] = row
    return []


def write_emd(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    """The EMD 1.0 layout emdfile / py4DSTEM write (emdfile itself needs the whole array in memory)."""
    with h5py.File(path, "w") as file:
        file.attrs.update({"emd_group_type": "file", "version_major": 1, "version_minor": 0,
                           "authoring_program": "emdfile"})
        root = file.create_group("datacube_root")
        root.attrs.update({"emd_group_type": "root", "python_class": "Root"})
        cube = root.create_group("datacube")
        cube.attrs.update({"emd_group_type": "array", "python_class": "DataCube"})
        data = cube.create_dataset("data", shape=shape, dtype="f4", chunks=(1, 1, *shape[2:]))
        for index, (name, units, step) in enumerate([("Rx", "nm", 0.05), ("Ry", "nm", 0.05), ("Qx", "mrad", 1.978),
                                                      ("Qy", "mrad", 1.978)]):
            dim = cube.create_dataset(f"dim{index}", data=numpy.array([0.0, step]))
            dim.attrs.update({"name": name, "units": units})
        for y, row in rows:
            data[y] = row
    return []


def write_hspy(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    with h5py.File(path, "w") as file:
        file.attrs.update({"file_format": "HyperSpy", "file_format_version": "3.3"})
        group = file.create_group("Experiments/big")
        data = group.create_dataset("data", shape=shape, dtype="f4", chunks=(1, 1, *shape[2:]))
        for index, (scale, units, navigate) in enumerate([(0.05, "nm", True), (0.05, "nm", True),
                                                           (1.978, "mrad", False), (1.978, "mrad", False)]):
            group.create_group(f"axis-{index}").attrs.update({"scale": scale, "units": units, "navigate": navigate,
                                                              "offset": 0.0, "size": shape[index]})
        for y, row in rows:
            data[y] = row
    return []


def write_zspy(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    import zarr
    root = zarr.open_group(path, mode="w", zarr_format=2)
    root.attrs.update({"file_format": "HyperSpy", "file_format_version": "3.3"})
    group = root.create_group("Experiments").create_group("big")
    data = group.create_array("data", shape=shape, dtype="f4", chunks=(1, 16, *shape[2:]))
    for index, (scale, units, navigate) in enumerate([(0.05, "nm", True), (0.05, "nm", True),
                                                       (1.978, "mrad", False), (1.978, "mrad", False)]):
        group.create_group(f"axis-{index}").attrs.update({"scale": scale, "units": units, "navigate": navigate,
                                                          "offset": 0.0, "size": shape[index]})
    for y, row in rows:
        data[y] = row
    return []


def write_mib(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    """Merlin U16 frames (counts = intensity x 3e7), rows bottom-up; the scan goes in --scan-shape."""
    height, width = shape[2:]
    with open(path, "wb") as file:
        count = 0
        for _, row in rows:
            for frame in numpy.round(row * 3e7).clip(0, 65535).astype(">u2"):
                count += 1
                header = f"MQ1,{count:06d},00384,01,{width:04d},{height:04d},U16,   1x1,01,"
                file.write(header.encode("ascii").ljust(384, b"\0"))
                file.write(frame[::-1].tobytes())
    return ["--scan-shape", f"{shape[0]},{shape[1]}", "--mrad-per-px", "1.978"]


def write_raw(path: str, rows: Rows, shape: tuple[int, int, int, int]) -> list[str]:
    """EMPAD: 130 x 128 float32 frames (the detector must be 128 x 128); the scan goes in --scan-shape."""
    if shape[2:] != (128, 128):
        raise SystemExit("--format raw needs --det 128 (the EMPAD detector)")
    with open(path, "wb") as file:
        for _, row in rows:
            frames = numpy.zeros((row.shape[0], 130, 128), dtype="<f4")
            frames[:, :128] = row
            file.write(frames.tobytes())
    return ["--scan-shape", f"{shape[0]},{shape[1]}", "--mrad-per-px", "1.978"]


WRITERS: dict[str, tuple[str, typing.Callable[[str, Rows, tuple[int, int, int, int]], list[str]]]] = {
    "h5": ("big.h5", write_h5), "emd": ("big.emd", write_emd), "hspy": ("big.hspy", write_hspy),
    "zspy": ("big.zspy", write_zspy), "mib": ("big.mib", write_mib), "raw": ("big.raw", write_raw),
}


def size_of(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)

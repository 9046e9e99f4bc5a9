"""4D `.npy` files larger than memory, read with bounded RSS.

A `numpy.memmap` keeps every page it has touched resident and counted in the process's RSS until the mapping
goes, so one pass over a 20 GB file (virtual survey, ground truth) grows RSS towards 20 GB. `NpyPatterns` reads
with `os.pread` instead: one pattern per probe position, a few scan rows per chunked pass, nothing kept.
"""
from __future__ import annotations

import os
import typing

import numpy

CHUNK_BYTES = 64 << 20


def pread_exact(fd: int, size: int, position: int, path: str) -> bytearray:
    """`size` bytes at `position`, read with pread (no page stays mapped); a short file is an OSError."""
    buffer = bytearray(size)
    view, done = memoryview(buffer), 0
    while done < size:
        got = os.preadv(fd, [view[done:]], position + done)
        if got <= 0:
            raise OSError(f"{path}: file is truncated")
        done += got
    return buffer


class ScanIndexing:
    """`[y, x]`, `[rows]` and dask-style slice tuples over a (scan_y, scan_x, ...) array-like that defines `shape`,
    `pattern(y, x)` and `rows(start, stop)`: what the engine and the ground truth index with."""

    shape: tuple[int, ...]

    def pattern(self, y: int, x: int) -> numpy.ndarray:
        raise NotImplementedError

    def rows(self, start: int, stop: int) -> numpy.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: typing.Any) -> numpy.ndarray:
        if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (int, numpy.integer)) for k in key):
            y, x = (int(k) for k in key)
            if not (0 <= y < self.shape[0] and 0 <= x < self.shape[1]):
                raise IndexError(f"position ({y}, {x}) outside the scan {self.shape[:2]}")
            return self.pattern(y, x)
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, (int, numpy.integer)):
            return self.rows(int(first), int(first) + 1)[(0, *rest)]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(self.shape[0])
            return self.rows(start, stop)[(slice(None), *rest)]
        raise TypeError(f"unsupported index {key!r}")


class NpyPatterns(ScanIndexing):
    """Array-like view of a C-ordered 4D `.npy` file: `[y, x]`, `[rows]` and dask-style slice tuples."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as file:
            major, _ = numpy.lib.format.read_magic(file)
            read_header = numpy.lib.format.read_array_header_1_0 if major == 1 else \
                numpy.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(file)
            self.offset = file.tell()
        if fortran_order:
            raise ValueError("Fortran-ordered .npy is not supported for streaming")
        self.path = path
        self.shape = tuple(int(n) for n in shape)
        self.dtype = numpy.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = int(numpy.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        actual = os.path.getsize(path)
        if actual < self.offset + self.nbytes:
            raise OSError(f"file is truncated: {actual} bytes, the header promises {self.offset + self.nbytes}")
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self._pattern_items = int(numpy.prod(self.shape[2:])) if self.ndim == 4 else 0
        self._row_items = self.shape[1] * self._pattern_items if self.ndim == 4 else 0

    def _read(self, first_item: int, count: int) -> numpy.ndarray:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        buffer = pread_exact(self._fd, count * self.dtype.itemsize, self.offset + first_item * self.dtype.itemsize,
                             self.path)
        return numpy.frombuffer(buffer, dtype=self.dtype, count=count)

    def rows(self, start: int, stop: int) -> numpy.ndarray:
        start, stop = max(0, start), min(self.shape[0], stop)
        block = self._read(start * self._row_items, max(0, stop - start) * self._row_items)
        return block.reshape((max(0, stop - start), *self.shape[1:]))

    def pattern(self, y: int, x: int) -> numpy.ndarray:
        start = (y * self.shape[1] + x) * self._pattern_items
        return self._read(start, self._pattern_items).reshape(self.shape[2:])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def rows_per_chunk(data: typing.Any, target_bytes: int = CHUNK_BYTES) -> int:
    """How many scan rows make a chunk of about target_bytes (at least one)."""
    row_bytes = int(numpy.prod(data.shape[1:])) * numpy.dtype(data.dtype).itemsize
    return max(1, target_bytes // max(1, row_bytes))


def iter_row_chunks(data: typing.Any, target_bytes: int = CHUNK_BYTES) -> typing.Iterator[tuple[int, numpy.ndarray]]:
    """(first row, block) over the scan, each block about target_bytes: every full pass has bounded memory."""
    step = rows_per_chunk(data, target_bytes)
    for start in range(0, data.shape[0], step):
        yield start, numpy.asarray(data[start:start + step])

"""What identifies a row and a data set: row checksums, the data fingerprint, the settings a resume may not change."""
from __future__ import annotations

import hashlib
import math
import typing

import numpy

FINGERPRINT_SAMPLES = 64  # patterns hashed for the data fingerprint (evenly spread over the scan)


def row_checksum(position: typing.Any, value: float, timestamp: float, phase: int, pattern: numpy.ndarray) -> int:
    """BLAKE2b-64 of one row as stored (int32 position, float64 value/timestamp, int8 phase, float32 pattern)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(numpy.asarray(position, dtype="<i4").tobytes())
    digest.update(numpy.asarray([value, timestamp], dtype="<f8").tobytes())
    digest.update(numpy.asarray(phase, dtype="i1").tobytes())
    digest.update(numpy.ascontiguousarray(pattern, dtype="<f4").tobytes())
    return int.from_bytes(digest.digest(), "little")


def data_fingerprint(data: typing.Any) -> dict[str, typing.Any]:
    """Shape, dtype and a hash of a fixed sample of patterns: tells 'the same data' apart from 'other data with the
    same survey' on resume, without reading a file of many GB in full."""
    shape = tuple(int(n) for n in data.shape)
    count = shape[0] * shape[1]
    digest = hashlib.sha256(repr(shape).encode())
    for index in sorted({int(i) for i in numpy.linspace(0, count - 1, min(FINGERPRINT_SAMPLES, count))}):
        pattern = numpy.asarray(data[index // shape[1], index % shape[1]])
        digest.update(numpy.ascontiguousarray(pattern, dtype="<f8").tobytes())
    return {"shape": list(shape), "dtype": str(numpy.dtype(data.dtype)), "patterns_sha256": digest.hexdigest()}


def resume_differences(stored: dict[str, typing.Any], current: dict[str, typing.Any]) -> list[str]:
    """What a resume would change that mixes incompatible rows in one session: data, scalarizer, its parameters,
    the window. ('steps', 'acquisition' and the like may change: they do not change what a row means.)"""
    differences = []
    for key in ("scalarizer", "scalarizer_params", "window", "data_fingerprint"):
        if key not in stored or key not in current:
            continue  # a session from an older version has no fingerprint
        old, new = stored[key], current[key]
        if key == "scalarizer_params":
            old, new = _params(old), _params(new)
        if old != new:
            what = "the data (sampled patterns, shape or dtype)" if key == "data_fingerprint" else key
            differences.append(what if key == "data_fingerprint" else f"{what}: session {old!r}, now {new!r}")
    return differences


def _params(params: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """Parameters compared by value; NaN (= the default) equals NaN."""
    values = {}
    for key, value in (params or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            values[key] = value
            continue
        values[key] = "default" if math.isnan(number) else number
    return values


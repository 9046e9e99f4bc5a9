"""The origin of every builtin scalarizer: the vacuum reference's centre of mass and disc radius, cached per reference.

Origin: the centre of mass (CoM) of the vacuum reference when there is one, otherwise the pattern centre
((n - 1) / 2 along each axis). Pattern axes are (det_y, det_x). The reference is treated as immutable: its CoM and
radius are computed once per array (these run once per probe position on the microscope).
"""
from __future__ import annotations

import functools
import math
import weakref

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError

_REFERENCE_CACHE: dict[int, tuple[weakref.ref, tuple[float, float], float]] = {}


@functools.lru_cache(maxsize=16)
def coordinates(shape: tuple[int, int]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Pixel-centre coordinate vectors (y, x) for a detector shape, cached because shapes never change."""
    ys, xs = numpy.arange(shape[0], dtype=numpy.float64), numpy.arange(shape[1], dtype=numpy.float64)
    ys.flags.writeable = xs.flags.writeable = False  # shared through the cache
    return ys, xs


def as_pattern(pattern: numpy.ndarray) -> numpy.ndarray:
    array = numpy.asarray(pattern)
    if array.ndim != 2:
        raise InputError(f"a diffraction pattern must be 2-D (det_y, det_x), got shape {array.shape}")
    return array.astype(numpy.float64, copy=False)


def com_px(array: numpy.ndarray) -> tuple[float, float]:
    """Centre of mass (y, x) in pixel coordinates via the two marginals (2 passes, no 2-D temporaries)."""
    ys, xs = coordinates(array.shape)
    total = array.sum()
    if not total > 0:
        return math.nan, math.nan
    return float(array.sum(axis=1) @ ys) / total, float(array.sum(axis=0) @ xs) / total


def reference_center_px(calibration: DetectorCalibration, shape: tuple[int, int]) -> tuple[float, float]:
    """Origin (y, x) in px: CoM of the vacuum reference, else the pattern centre ((n - 1) / 2)."""
    ref = calibration.reference
    if ref is None:
        return (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    if tuple(ref.shape) != tuple(shape):
        raise InputError(f"pattern shape {tuple(shape)} differs from the vacuum reference shape {tuple(ref.shape)}")
    return _reference_stats(ref)[0]


def reference_disc_radius_px(reference: numpy.ndarray) -> float:
    """Radius (px) of the vacuum probe's disc: sqrt(total / plateau intensity / pi), plateau = mean above half max."""
    return _reference_stats(reference)[1]


def _reference_stats(ref: numpy.ndarray) -> tuple[tuple[float, float], float]:
    """(CoM (y, x), disc radius) of the reference, cached: the reference is treated as immutable."""
    entry = _REFERENCE_CACHE.get(id(ref))
    if entry is not None and entry[0]() is ref:
        return entry[1], entry[2]
    array = as_pattern(ref)
    center = com_px(array)
    if math.isnan(center[0]):
        raise InputError("the vacuum reference pattern has no positive intensity")
    plateau = array[array > 0.5 * array.max()].mean()
    radius = math.sqrt(array.sum() / plateau / math.pi)  # equivalent-area radius: robust to a soft edge
    try:
        if len(_REFERENCE_CACHE) > 32:  # references rarely change; drop stale entries wholesale
            _REFERENCE_CACHE.clear()
        _REFERENCE_CACHE[id(ref)] = (weakref.ref(ref), center, radius)
    except TypeError:  # not weak-referenceable (e.g. a memmap subclass in some versions): just don't cache
        pass
    return center, radius


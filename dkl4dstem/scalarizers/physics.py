"""The builtin scalarizers' physics: centre-of-mass shift and virtual detectors on one diffraction pattern.

Conventions:
* Pattern axes are (det_y, det_x); det_x is the column axis. x/y below are detector column/row directions.
* Values are relative to the vacuum reference's centre of mass (reference.py): CoM values are beam *deflections*
  relative to the undisturbed probe.
* Units: mrad when ``calibration.mrad_per_px`` is known, otherwise detector pixels; angles in radians.
* Virtual detectors return the *sum* of the intensity in the region (abTEM's AnnularDetector normalisation),
  with the mask ``inner <= r < outer`` evaluated at pixel centres.

These run once per probe position on the microscope, so the hot paths use cached coordinate vectors and masks.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers.reference import as_pattern, com_px, coordinates, reference_center_px, reference_disc_radius_px


def _scale(calibration: DetectorCalibration) -> float:
    return 1.0 if calibration.mrad_per_px is None else float(calibration.mrad_per_px)


def _com_offset(pattern: numpy.ndarray, calibration: DetectorCalibration) -> tuple[float, float]:
    """CoM shift (x, y) relative to the origin, in mrad (or px when uncalibrated)."""
    array = as_pattern(pattern)
    cy, cx = com_px(array)
    oy, ox = reference_center_px(calibration, array.shape)
    s = _scale(calibration)
    return (cx - ox) * s, (cy - oy) * s


def com_x(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM shift along det_x (columns) relative to the vacuum reference's CoM; mrad, or px uncalibrated."""
    return _com_offset(pattern, calibration)[0]


def com_y(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM shift along det_y (rows, pointing down the array) relative to the reference's CoM; mrad or px."""
    return _com_offset(pattern, calibration)[1]


def com_magnitude(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """|CoM shift| = hypot(com_x, com_y): the beam deflection, largest next to heavy atoms."""
    return math.hypot(*_com_offset(pattern, calibration))


def com_angle(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """Direction of the CoM shift, atan2(com_y, com_x) in radians in the detector frame (y down)."""
    x, y = _com_offset(pattern, calibration)
    return math.atan2(y, x)


def _alpha_px(calibration: DetectorCalibration) -> float:
    """Convergence semi-angle in detector pixels: from the calibration, else the reference disc radius."""
    if calibration.semiangle_mrad is not None and calibration.mrad_per_px is not None:
        return float(calibration.semiangle_mrad) / float(calibration.mrad_per_px)
    if calibration.reference is not None:
        return reference_disc_radius_px(calibration.reference)
    raise InputError("virtual detector radii default to the convergence semi-angle: give semiangle_mrad and "
                     "mrad_per_px (or a vacuum reference), or set inner_mrad/outer_mrad explicitly")


@functools.lru_cache(maxsize=64)
def _annulus(shape: tuple[int, int], cy: float, cx: float, inner_px: float, outer_px: float) -> numpy.ndarray:
    """Flat float mask inner <= r < outer (pixel centres, as abTEM's AnnularDetector); cached per geometry."""
    ys, xs = coordinates(shape)
    r2 = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2
    mask = (r2 >= inner_px ** 2) & (r2 < outer_px ** 2)
    flat = mask.ravel().astype(numpy.float64)
    flat.flags.writeable = False  # shared through the cache
    return flat


def _virtual(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float, outer_mrad: float,
             default: Callable[[float, float], tuple[float, float]]) -> float:
    """Sum of intensity in inner <= r < outer around the reference CoM. NaN radii -> `default(alpha, edge)` (px).

    Radii are mrad when mrad_per_px is known; without it the same parameters are read as pixels."""
    array = as_pattern(pattern)
    cy, cx = reference_center_px(calibration, array.shape)
    s = _scale(calibration)
    inner, outer = inner_mrad / s, outer_mrad / s
    if math.isnan(inner) or math.isnan(outer):
        # edge: largest circle that stays on the detector (to the outer edge of the border pixels)
        edge = min(cy, cx, array.shape[0] - 1 - cy, array.shape[1] - 1 - cx) + 0.5
        d_inner, d_outer = default(_alpha_px(calibration), edge)
        inner = d_inner if math.isnan(inner) else inner
        outer = d_outer if math.isnan(outer) else outer
    if not 0 <= inner < outer:
        raise InputError(f"virtual detector needs 0 <= inner < outer, got {inner * s:g} and {outer * s:g} "
                         f"({'mrad' if calibration.mrad_per_px else 'px'}); the defaults follow the convergence "
                         "semi-angle and the detector edge: set inner_mrad/outer_mrad explicitly")
    mask = _annulus(array.shape, round(cy, 6), round(cx, 6), round(inner, 9), round(outer, 9))
    return float(array.ravel() @ mask)


def vbf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
        outer_mrad: float = math.nan) -> float:
    """Virtual bright field: summed intensity in the disc; default 0 .. alpha (the whole central disc)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (0.0, min(a, edge)))


def vabf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
         outer_mrad: float = math.nan) -> float:
    """Virtual annular bright field: default alpha/2 .. alpha (outer half of the disc, sees light atoms)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (a / 2, min(a, edge)))


def vadf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
         outer_mrad: float = math.nan) -> float:
    """Virtual annular dark field: default alpha .. min(3 alpha, detector edge) (scattering out of the disc)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (a, min(3 * a, edge)))



def validate_radii(params: dict[str, float]) -> None:
    inner, outer = params["inner_mrad"], params["outer_mrad"]
    if (not math.isnan(inner) and inner < 0) or (not math.isnan(outer) and outer <= 0):
        raise InputError(f"virtual detector radii must be positive, got inner={inner:g}, outer={outer:g}")
    if not math.isnan(inner) and not math.isnan(outer) and inner >= outer:
        raise InputError(f"virtual detector needs inner_mrad < outer_mrad, got {inner:g} >= {outer:g}")


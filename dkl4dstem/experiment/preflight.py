"""Checks before any dose: everything the scalarizer needs must be there before the first seed point.

Called by the engine (`Experiment`, so the Swift plug-in gets it too) and by the CLI before it touches the output
folder. Each failure is an InputError: one line, exit 2, nothing measured or written.
"""
from __future__ import annotations

import math

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers.reference import reference_center_px
from dkl4dstem.scalarizers.registry import Scalarizer, builtin_scalarizer

VIRTUAL_DETECTORS = ("vbf", "vabf", "vadf")


def check_before_dose(scalarizer: Scalarizer, calibration: DetectorCalibration,
                      detector_shape: tuple[int, ...] | None) -> None:
    _check_reference(calibration, detector_shape)
    scalarizer.check_calibration(calibration)
    _check_params(scalarizer, calibration)
    if detector_shape is not None:
        _dry_run(scalarizer, calibration, (int(detector_shape[0]), int(detector_shape[1])))


def _check_reference(calibration: DetectorCalibration, detector_shape: tuple[int, ...] | None) -> None:
    reference = calibration.reference
    if reference is None:
        return
    reference = numpy.asarray(reference)
    if detector_shape is not None and tuple(reference.shape) != tuple(detector_shape):
        raise InputError(f"reference shape {tuple(reference.shape)} does not match the detector shape "
                         f"{tuple(detector_shape)}")
    if not numpy.all(numpy.isfinite(reference)):
        raise InputError("reference pattern contains NaN/Inf")
    if not float(numpy.sum(reference, dtype=numpy.float64)) > 0:
        raise InputError("the vacuum reference pattern has no positive intensity (all zero?): the camera gives no "
                         "signal, or the reference is wrong")


def _check_params(scalarizer: Scalarizer, calibration: DetectorCalibration) -> None:
    for name, value in scalarizer.params.items():
        if math.isinf(value):
            raise InputError(f"parameter {name}={value} of scalarizer {scalarizer.name!r} must be a finite number")
        if name.endswith("_mrad") and not math.isnan(value) and calibration.mrad_per_px is None:
            raise InputError(f"{name}={value:g} is an angle, but the detector has no angular calibration "
                             "(mrad_per_px): give it with the data, or leave the radius at its default")


def _dry_run(scalarizer: Scalarizer, calibration: DetectorCalibration, shape: tuple[int, int]) -> None:
    """Run the scalarizer on the reference (or a flat frame): a configuration it cannot work with shows up as an
    InputError now instead of a NaN at every seed point. Other errors on this synthetic frame are not held
    against a user's scalarizer."""
    pattern = (numpy.asarray(calibration.reference, dtype=numpy.float32) if calibration.reference is not None
               else numpy.ones(shape, dtype=numpy.float32))
    try:
        scalarizer(pattern, calibration)
    except InputError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt):  # the engine handles these per point, keeping the pattern
        pass
    if builtin_scalarizer(scalarizer) in VIRTUAL_DETECTORS:
        pixels = scalarizer(numpy.ones(shape, dtype=numpy.float32), calibration)
        if pixels == 0:
            raise InputError(f"{scalarizer.name}: the detector region {_radii(scalarizer)} holds no detector pixel; "
                             f"the detector reaches {_reach(calibration, shape)} from the centre")


def _radii(scalarizer: Scalarizer) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in scalarizer.params.items() if not math.isnan(v)) or "(defaults)"


def _reach(calibration: DetectorCalibration, shape: tuple[int, int]) -> str:
    cy, cx = reference_center_px(calibration, shape)
    corner = max(math.hypot(y - cy, x - cx) for y in (0, shape[0] - 1) for x in (0, shape[1] - 1))
    if calibration.mrad_per_px is None:
        return f"{corner:.1f} px"
    return f"{corner * float(calibration.mrad_per_px):.1f} mrad"

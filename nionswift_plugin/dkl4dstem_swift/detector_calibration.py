"""The detector calibration a scalarizer needs, read from the camera (angular scale) and the STEM controller
(convergence semi-angle); what is not there stays None."""
from __future__ import annotations

import typing

import numpy

from nion.data import Calibration

from dkl4dstem.data.diffraction import DetectorCalibration


def detector_calibration_for(camera: typing.Any, stem_controller: typing.Any,
                             reference: numpy.ndarray | None = None) -> DetectorCalibration:
    """Angular scale from the camera's calibration (rad or mrad) and semi-angle from the instrument when it has one."""
    mrad_per_px: float | None = None
    try:
        calibrations = camera.get_camera_calibrations(camera.get_current_frame_parameters())
        calibration = calibrations[-1] if calibrations else Calibration.Calibration()
        factor = {"rad": 1000.0, "mrad": 1.0}.get(calibration.units or "")
        if factor is not None and calibration.scale:
            mrad_per_px = abs(float(calibration.scale)) * factor
    except Exception:  # calibration is optional; scalarizers that need it report that themselves
        mrad_per_px = None
    semiangle_mrad: float | None = None
    try:
        ok, value = stem_controller.TryGetVal("ConvergenceAngle")
        if ok and value:
            semiangle_mrad = float(value) * 1000.0  # usim and Nion report radians
    except Exception:
        semiangle_mrad = None
    return DetectorCalibration(reference=reference, mrad_per_px=mrad_per_px, semiangle_mrad=semiangle_mrad)

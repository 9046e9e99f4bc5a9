"""The survey: one HAADF frame recorded with the panel's settings, or an existing image checked against the current
scan context, as the engine's Survey."""
from __future__ import annotations

import dataclasses
import math
import typing

import numpy

from nion.data import DataAndMetadata
from nion.utils import Geometry

from dkl4dstem.data.survey import Survey
from dkl4dstem.errors import InputError
from dkl4dstem.errors import InstrumentError

from . import devices


@dataclasses.dataclass(frozen=True)
class SurveySettings:
    size_px: int = 64
    fov_nm: float = 16.0
    pixel_time_us: float = 2.0
    channel: str = "HAADF"


def acquire_survey_xdata(scan: typing.Any, settings: SurveySettings) -> DataAndMetadata.DataAndMetadata:
    """Record one frame of the chosen channel with the given size, FOV and pixel time (blocking; any thread).

    Setting the current frame parameters is what updates the STEM controller's scan context, so the probe positions
    used afterwards refer to this survey's field of view.
    """
    names = devices.channel_names(scan)
    matches = [i for i, name in enumerate(names) if name.upper() == settings.channel.upper()]
    if not matches:
        raise InputError(f"scan device '{scan.display_name}' has no channel '{settings.channel}' (has {', '.join(names)})")
    channel_index = matches[0]
    if scan.is_playing:
        scan.abort_playing(sync_timeout=5.0)
    frame_parameters = scan.get_current_frame_parameters()
    frame_parameters.size = Geometry.IntSize(height=settings.size_px, width=settings.size_px)
    frame_parameters.fov_nm = float(settings.fov_nm)
    frame_parameters.pixel_time_us = float(settings.pixel_time_us)
    scan.set_current_frame_parameters(frame_parameters)
    old_enabled = list(scan.get_enabled_channel_indexes())
    scan.set_enabled_channels([channel_index])
    try:
        xdatas = scan.record_immediate(frame_parameters)
    except Exception as e:
        raise InstrumentError(f"survey acquisition failed: {e}") from e
    finally:
        scan.set_enabled_channels(old_enabled)
    xdata = xdatas[0] if xdatas else None
    if xdata is None:
        raise InstrumentError("the scan device returned no survey data")
    return xdata


def survey_from_xdata(xdata: DataAndMetadata.DataAndMetadata, metadata: typing.Mapping[str, typing.Any] | None = None) -> Survey:
    if xdata.is_sequence or xdata.is_collection or len(xdata.data_shape) != 2 or xdata.datum_dimension_count != 2:
        raise InputError(f"the survey must be a 2D image, got shape {tuple(xdata.data_shape)}")
    calibration = xdata.dimensional_calibrations[-1]
    nm_per_px: float | None = None
    scale = {"nm": 1.0, "µm": 1e3, "um": 1e3, "Å": 0.1, "A": 0.1, "pm": 1e-3}.get(calibration.units or "")
    if scale is not None and calibration.scale:
        nm_per_px = float(calibration.scale) * scale
    return Survey(image=numpy.asarray(xdata.data, dtype=numpy.float32), nm_per_px=nm_per_px,
                  metadata=dict(metadata or {}))


def scan_context_problem(xdata: DataAndMetadata.DataAndMetadata | None, stem_controller: typing.Any) -> str | None:
    """Return why this data cannot serve as the survey for the current scan context, or None when it can."""
    if xdata is None:
        return "the selected item has no data"
    if xdata.is_sequence or xdata.is_collection or len(xdata.data_shape) != 2:
        return f"the selected item is not a 2D image (shape {tuple(xdata.data_shape)}); select a HAADF survey image"
    scan_md = dict(xdata.metadata).get("scan", dict())
    if not scan_md or "fov_nm" not in scan_md:
        return "the selected image was not recorded by a scan device; acquire a HAADF survey first"
    if stem_controller is None:
        return "no STEM controller is available"
    context = stem_controller.scan_context
    if context is None or context.fov_nm is None or not context.size:
        return "the STEM controller has no current scan context; acquire a HAADF survey first"
    problems = list()
    if not math.isclose(float(scan_md["fov_nm"]), float(context.fov_nm), rel_tol=1e-6):
        problems.append(f"FOV {scan_md['fov_nm']:g} nm vs {context.fov_nm:g} nm now")
    center = Geometry.FloatPoint(y=float(scan_md.get("center_y_nm", 0.0)), x=float(scan_md.get("center_x_nm", 0.0)))
    if abs(center.x - context.center_nm.x) > 1e-6 or abs(center.y - context.center_nm.y) > 1e-6:
        problems.append("scan centre moved")
    if abs(float(scan_md.get("rotation", 0.0)) - float(context.rotation_rad)) > 1e-9:
        problems.append("scan rotation changed")
    if scan_md.get("subscan_fractional_size") is not None:
        problems.append("image is a subscan")
    height, width = xdata.data_shape
    if not math.isclose(width / height, context.size.width / context.size.height, rel_tol=1e-6):
        problems.append("aspect ratio differs")
    if problems:
        return "the selected image does not belong to the current scan context (" + "; ".join(problems) + "); re-acquire the survey"
    return None

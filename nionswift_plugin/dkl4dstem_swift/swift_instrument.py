"""SwiftInstrument: the engine's Instrument protocol on top of Nion Swift's scan device, camera and STEM controller.

Glue only. The survey comes from the scan hardware source (or from an existing HAADF data item of the current scan
context); measure(y, x) parks the probe at the survey pixel centre (normalized, always inside [0, 1]) and grabs one
camera frame that started after the move. close() stops the camera and releases (or parks) the probe; it is
idempotent and safe from any thread.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import typing

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.instrumentation import HardwareSource
from nion.utils import Geometry

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.data.diffraction import Measurement
from dkl4dstem.errors import InputError
from dkl4dstem.errors import InstrumentError
from dkl4dstem.data.survey import Survey

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SurveySettings:
    size_px: int = 64
    fov_nm: float = 16.0
    pixel_time_us: float = 2.0
    channel: str = "HAADF"


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    exposure_ms: float = 5.0
    binning: int = 8


@dataclasses.dataclass(frozen=True)
class RecordedPattern:
    """One measured pattern, kept so that nothing measured is lost."""
    step: int
    position: tuple[int, int]
    probe_position: tuple[float, float]
    pattern: numpy.ndarray
    metadata: dict[str, typing.Any]


def hardware_sources() -> typing.Sequence[typing.Any]:
    return list(HardwareSource.HardwareSourceManager().hardware_sources)


def scan_devices() -> list[typing.Any]:
    return [hs for hs in hardware_sources() if hs.features.get("is_scanning", False)]


def cameras() -> list[typing.Any]:
    return [hs for hs in hardware_sources() if hs.features.get("is_camera", False)]


def channel_names(scan: typing.Any) -> list[str]:
    return [str(scan.get_channel_name(i)) for i in range(scan.channel_count)]


def default_scan_device() -> typing.Any | None:
    """The scan device with a HAADF channel, else the first scan device."""
    devices = scan_devices()
    for scan in devices:
        if any(name.upper() == "HAADF" for name in channel_names(scan)):
            return scan
    return devices[0] if devices else None


def default_camera() -> typing.Any | None:
    """The ronchigram camera, else the first camera."""
    devices = cameras()
    for camera in devices:
        if camera.features.get("is_ronchigram_camera", False):
            return camera
    return devices[0] if devices else None


def find_hardware_source(hardware_source_id: str | None) -> typing.Any | None:
    if not hardware_source_id:
        return None
    return HardwareSource.HardwareSourceManager().get_hardware_source_for_hardware_source_id(hardware_source_id)


def acquire_survey_xdata(scan: typing.Any, settings: SurveySettings) -> DataAndMetadata.DataAndMetadata:
    """Record one frame of the chosen channel with the given size, FOV and pixel time (blocking; any thread).

    Setting the current frame parameters is what updates the STEM controller's scan context, so the probe positions
    used afterwards refer to this survey's field of view.
    """
    names = channel_names(scan)
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


def probe_point(y: float, x: float, shape: tuple[int, int]) -> Geometry.FloatPoint:
    """Normalized probe position of survey pixel (y, x): the pixel centre, clamped into [0, 1]."""
    height, width = shape
    return Geometry.FloatPoint(y=min(max((y + 0.5) / height, 0.0), 1.0), x=min(max((x + 0.5) / width, 0.0), 1.0))


def _normalized(point: Geometry.FloatPoint | None) -> tuple[float, float] | None:
    """The value the STEM controller stores for a probe position (clamped into [0, 1]), comparable as a tuple."""
    if point is None:
        return None
    return max(min(float(point.y), 1.0), 0.0), max(min(float(point.x), 1.0), 0.0)


class ProbeGuard:
    """Keeps the probe where this instrument last put it against Swift's stale echoes of its earlier moves.

    Why: nion.instrumentation's ProbeView mirrors the probe in a "Probe" graphic on the UI thread (`_update_graphic`
    reads the probe position, then writes it into the graphic, whose change handler sets the probe position). When a
    worker thread moves or releases the probe in between, the UI thread writes the old position back: after a Stop the
    probe sat on a measured pixel again (dose), and mid-run a frame could be taken at the previous point. Any change
    to a position this instrument set earlier, but is not its current one, is such an echo and is undone at once;
    a move to any other position (the user's) is left alone and ends the guarding. Thread safe.
    """

    def __init__(self, stem_controller: typing.Any) -> None:
        self.__stem_controller = stem_controller
        self.__lock = threading.RLock()
        self.__target: tuple[float, float] | None = None
        self.__own: set[tuple[float, float]] = set()
        self.__listener: typing.Any = None
        self.__disposed = False
        self.echoes_undone = 0

    def move(self, point: Geometry.FloatPoint | None) -> None:
        """Set the probe position (None releases it) and guard it; the lock orders it against an undo in flight."""
        with self.__lock:
            if self.__listener is None and not self.__disposed:
                self.__listener = self.__stem_controller.probe_state_changed_event.listen(self.__changed)
            self.__target = _normalized(point)
            if self.__target is not None:
                self.__own.add(self.__target)
            self.__stem_controller.probe_position = point

    def dispose(self) -> None:
        """Stop guarding (UI thread, once the UI has caught up with the last move)."""
        with self.__lock:
            self.__disposed = True
            listener, self.__listener = self.__listener, None
        if listener is not None:
            listener.close()

    def __changed(self, probe_state: str, probe_position: Geometry.FloatPoint | None) -> None:
        with self.__lock:
            if self.__disposed:
                return
            position = _normalized(probe_position)
            if position == self.__target:
                return
            if position is None or position not in self.__own:
                self.__own.clear()  # someone else moved the probe on purpose: theirs from now on
                self.__target = position
                return
            self.echoes_undone += 1
            target = self.__target
            _logger.info("probe moved back to an earlier position %s by a stale update; restored to %s", position, target)
            self.__stem_controller.probe_position = Geometry.FloatPoint(y=target[0], x=target[1]) if target else None


class SwiftInstrument:
    """The engine's Instrument on Swift hardware sources. Construct on the UI thread; use from the loop thread."""

    def __init__(self, stem_controller: typing.Any, scan: typing.Any, camera: typing.Any, *,
                 survey: Survey | None = None,
                 survey_settings: SurveySettings | None = None,
                 camera_settings: CameraSettings | None = None,
                 reference: numpy.ndarray | None = None,
                 park_position: Geometry.FloatPoint | None = None,
                 grab_timeout_s: float | None = None) -> None:
        if stem_controller is None:
            raise InputError("no STEM controller is available")
        if camera is None:
            raise InputError("no camera is available")
        if survey is None and scan is None:
            raise InputError("no scan device is available to acquire the survey")
        self.__stem_controller = stem_controller
        self.__scan = scan
        self.__camera = camera
        self.__survey = survey
        self.__survey_settings = survey_settings or SurveySettings()
        self.__camera_settings = camera_settings or CameraSettings()
        self.__reference = reference
        self.__park_position = park_position
        self.__grab_timeout_s = grab_timeout_s or max(5.0, 20.0 * self.__camera_settings.exposure_ms / 1000.0)
        self.__lock = threading.RLock()
        self.__measure_lock = threading.Lock()  # held while a frame is being taken
        self.__closed = False
        self.__camera_configured = False
        self.__recorded: list[RecordedPattern] = list()
        self.__probe_positions_set: list[tuple[float, float]] = list()
        self.__probe_guard = ProbeGuard(stem_controller)
        self.survey_xdata: DataAndMetadata.DataAndMetadata | None = None

    @property
    def camera(self) -> typing.Any:
        return self.__camera

    @property
    def detector_shape(self) -> tuple[int, int] | None:
        """Pattern shape at the chosen binning (the engine's session file needs it before the first frame)."""
        try:
            height, width = self.__camera.get_expected_dimensions(int(self.__camera_settings.binning))
            return int(height), int(width)
        except Exception:
            return None

    @property
    def is_closed(self) -> bool:
        return self.__closed

    def recorded_since(self, start: int) -> list[RecordedPattern]:
        """Patterns measured since index start (thread safe; the list only grows)."""
        with self.__lock:
            return self.__recorded[start:]

    @property
    def recorded_count(self) -> int:
        with self.__lock:
            return len(self.__recorded)

    @property
    def probe_positions_set(self) -> list[tuple[float, float]]:
        with self.__lock:
            return list(self.__probe_positions_set)

    # Instrument protocol

    def survey(self) -> Survey:
        if self.__survey is None:
            xdata = acquire_survey_xdata(self.__scan, self.__survey_settings)
            self.survey_xdata = xdata
            self.__survey = survey_from_xdata(xdata, {"source": "acquired", "settings": dataclasses.asdict(self.__survey_settings)})
        return self.__survey

    def calibration(self) -> DetectorCalibration:
        self.__configure_camera()
        return detector_calibration_for(self.__camera, self.__stem_controller, self.__reference)

    def measure(self, y: int, x: int) -> Measurement:
        with self.__measure_lock:
            return self.__measure(y, x)

    def release_after_current(self) -> None:
        """Any thread but the UI thread: wait for the frame in flight (if any), then stop the camera and release the
        probe. A Stop does this on its own thread, so the probe is released within one measurement of the click,
        whatever the loop (training, checkpoint) or Swift's UI thread are doing."""
        with self.__measure_lock:
            self.close()

    def __measure(self, y: int, x: int) -> Measurement:
        if self.__closed:
            raise InstrumentError("the instrument was closed")
        survey = self.survey()
        height, width = survey.shape
        if not (0 <= y < height and 0 <= x < width):
            raise InstrumentError(f"position ({y}, {x}) is outside the {height}x{width} survey")
        self.__configure_camera()
        point = probe_point(y, x, (height, width))
        with self.__lock:
            self.__probe_positions_set.append((point.y, point.x))
        t_move = time.time()
        self.__probe_guard.move(point)
        try:
            xdatas = self.__camera.grab_next_to_start(timeout=self.__grab_timeout_s)
        except Exception as e:
            raise InstrumentError(f"camera '{self.__camera.display_name}' failed: {e}") from e
        xdata = xdatas[0] if xdatas else None
        if xdata is None or xdata.data is None:
            raise InstrumentError(f"camera '{self.__camera.display_name}' returned no frame within {self.__grab_timeout_s:g} s")
        pattern = numpy.array(xdata.data, dtype=numpy.float32, copy=True)
        if pattern.ndim != 2:
            raise InstrumentError(f"camera returned a {pattern.ndim}D frame; a 2D diffraction pattern is needed")
        metadata: dict[str, typing.Any] = {
            "position": [int(y), int(x)],
            "probe_position": [point.y, point.x],
            "timestamp": t_move,
            "exposure_ms": self.__camera_settings.exposure_ms,
            "binning": self.__camera_settings.binning,
            "camera": self.__camera.hardware_source_id,
        }
        with self.__lock:
            self.__recorded.append(RecordedPattern(len(self.__recorded), (int(y), int(x)), (point.y, point.x), pattern, metadata))
        return Measurement(pattern=pattern, metadata=metadata)

    def close(self) -> None:
        with self.__lock:
            if self.__closed:
                return
            self.__closed = True
        try:
            self.__camera.abort_playing(sync_timeout=5.0)
        except Exception as e:
            _logger.warning("stopping camera failed: %s", e)
        try:
            self.__probe_guard.move(self.__park_position)
        except Exception as e:
            _logger.warning("releasing probe failed: %s", e)

    def dispose(self) -> None:
        """UI thread, a tick after the run ended (closes it first if needed): stop guarding the released probe
        (ProbeGuard), so that the user can move it again."""
        self.close()
        self.__probe_guard.dispose()

    @property
    def probe_echoes_undone(self) -> int:
        """How many stale moves of the probe back onto an earlier position were undone (ProbeGuard)."""
        return self.__probe_guard.echoes_undone

    def __configure_camera(self) -> None:
        if self.__camera_configured:
            return
        frame_parameters = self.__camera.get_current_frame_parameters()
        frame_parameters.exposure_ms = float(self.__camera_settings.exposure_ms)
        frame_parameters.binning = int(self.__camera_settings.binning)
        self.__camera.set_current_frame_parameters(frame_parameters)
        if self.__scan is not None and self.__scan.is_playing:
            self.__scan.abort_playing(sync_timeout=5.0)  # the probe must be parked, not scanning
        self.__camera_configured = True

    def grab_reference(self, y: float, x: float) -> numpy.ndarray:
        """One pattern at a (fractional) survey position, e.g. vacuum; leaves the camera stopped."""
        survey = self.survey()
        self.__configure_camera()
        self.__probe_guard.move(probe_point(y, x, survey.shape))
        try:
            xdatas = self.__camera.grab_next_to_start(timeout=self.__grab_timeout_s)
        except Exception as e:
            raise InstrumentError(f"camera '{self.__camera.display_name}' failed: {e}") from e
        finally:
            try:
                self.__camera.abort_playing(sync_timeout=5.0)
            finally:
                self.__probe_guard.move(self.__park_position)
        if not xdatas or xdatas[0] is None:
            raise InstrumentError("the camera returned no reference frame")
        return numpy.array(xdatas[0].data, dtype=numpy.float32, copy=True)

"""SwiftInstrument: the engine's Instrument protocol on top of Nion Swift's scan device, camera and STEM controller.

Glue only. The survey comes from the scan hardware source (or from an existing HAADF data item of the current scan
context); measure(y, x) parks the probe at the survey pixel centre (normalized, always inside [0, 1]) and grabs one
camera frame that started after the move. close() stops the camera and releases (or parks) the probe; it is
idempotent and safe from any thread.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing

import numpy

from nion.data import DataAndMetadata
from nion.utils import Geometry

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.data.diffraction import Measurement
from dkl4dstem.errors import InputError
from dkl4dstem.errors import InstrumentError
from dkl4dstem.data.survey import Survey

from . import camera_frames
from . import detector_calibration
from . import devices
from . import probe_control
from . import survey_acquisition

_logger = logging.getLogger(__name__)

# The names the rest of the plug-in (and its tests) use through this module; each is defined where its job is.
SurveySettings = survey_acquisition.SurveySettings
CameraSettings = camera_frames.CameraSettings
acquire_survey_xdata = survey_acquisition.acquire_survey_xdata
survey_from_xdata = survey_acquisition.survey_from_xdata
scan_context_problem = survey_acquisition.scan_context_problem
detector_calibration_for = detector_calibration.detector_calibration_for
probe_point = probe_control.probe_point
find_hardware_source = devices.find_hardware_source


@dataclasses.dataclass(frozen=True)
class RecordedPattern:
    """One measured pattern, kept so that nothing measured is lost."""
    step: int
    position: tuple[int, int]
    probe_position: tuple[float, float]
    pattern: numpy.ndarray
    metadata: dict[str, typing.Any]


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
        self.__survey = survey
        self.__survey_settings = survey_settings or SurveySettings()
        self.__frames = camera_frames.CameraFrames(camera, scan, camera_settings or camera_frames.CameraSettings(),
                                                   grab_timeout_s)
        self.__reference = reference
        self.__park_position = park_position
        self.__lock = threading.RLock()
        self.__measure_lock = threading.Lock()  # held while a frame is being taken
        self.__closed = False
        self.__recorded: list[RecordedPattern] = list()
        self.__probe_guard = probe_control.ProbeGuard(stem_controller)
        self.survey_xdata: DataAndMetadata.DataAndMetadata | None = None

    @property
    def camera(self) -> typing.Any:
        return self.__frames.camera

    @property
    def detector_shape(self) -> tuple[int, int] | None:
        """Pattern shape at the chosen binning (the engine's session file needs it before the first frame)."""
        return self.__frames.detector_shape

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

    # Instrument protocol

    def survey(self) -> Survey:
        if self.__survey is None:
            xdata = survey_acquisition.acquire_survey_xdata(self.__scan, self.__survey_settings)
            self.survey_xdata = xdata
            self.__survey = survey_acquisition.survey_from_xdata(
                xdata, {"source": "acquired", "settings": dataclasses.asdict(self.__survey_settings)})
        return self.__survey

    def calibration(self) -> DetectorCalibration:
        self.__frames.configure()
        return detector_calibration.detector_calibration_for(self.__frames.camera, self.__stem_controller,
                                                             self.__reference)

    def measure(self, y: int, x: int) -> Measurement:
        with self.__measure_lock:
            return self.__measure(y, x)

    def release_after_current(self) -> None:
        """Any thread but the UI thread: wait for the frame in flight (if any), then stop the camera and release the
        probe. A Stop does this on its own thread, so the probe is released within one measurement of the click,
        whatever the loop (training, checkpoint) or Swift's UI thread are doing."""
        with self.__measure_lock:
            self.close()

    def rest(self) -> None:
        """The run pauses (the loop's thread): stop the camera and park the probe, so that no dose falls on the last
        point while paused; the next measure() moves the probe and starts the camera again."""
        with self.__measure_lock:
            if self.__closed:
                return
            try:
                self.__frames.stop()
            finally:
                self.__probe_guard.move(self.__park_position)

    def __measure(self, y: int, x: int) -> Measurement:
        if self.__closed:
            raise InstrumentError("the instrument was closed")
        survey = self.survey()
        height, width = survey.shape
        if not (0 <= y < height and 0 <= x < width):
            raise InstrumentError(f"position ({y}, {x}) is outside the {height}x{width} survey")
        frames = self.__frames
        frames.configure()
        point = probe_control.probe_point(y, x, (height, width))
        t_move = time.time()
        self.__probe_guard.move(point)
        pattern = frames.grab_next()
        if pattern is None:
            raise InstrumentError(f"camera '{frames.camera.display_name}' returned no frame within "
                                  f"{frames.grab_timeout_s:g} s")
        if pattern.ndim != 2:
            raise InstrumentError(f"camera returned a {pattern.ndim}D frame; a 2D diffraction pattern is needed")
        metadata: dict[str, typing.Any] = {
            "position": [int(y), int(x)],
            "probe_position": [point.y, point.x],
            "timestamp": t_move,
            "exposure_ms": frames.settings.exposure_ms,
            "binning": frames.settings.binning,
            "camera": frames.camera.hardware_source_id,
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
            self.__frames.stop()
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

    def grab_reference(self, y: float, x: float) -> numpy.ndarray:
        """One pattern at a (fractional) survey position, e.g. vacuum; leaves the camera stopped."""
        survey = self.survey()
        self.__frames.configure()
        self.__probe_guard.move(probe_control.probe_point(y, x, survey.shape))
        try:
            pattern = self.__frames.grab_next()
        finally:
            try:
                self.__frames.stop()
            finally:
                self.__probe_guard.move(self.__park_position)
        if pattern is None:
            raise InstrumentError("the camera returned no reference frame")
        return pattern

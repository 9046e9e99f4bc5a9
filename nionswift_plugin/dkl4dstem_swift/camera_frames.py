"""The camera, one frame at a time: set up once (exposure, binning; the scan stopped so that the probe stays parked),
a frame that started after the call, and the camera stopped again."""
from __future__ import annotations

import dataclasses
import typing

import numpy

from dkl4dstem.errors import InstrumentError


@dataclasses.dataclass(frozen=True)
class CameraSettings:
    exposure_ms: float = 5.0
    binning: int = 8


class CameraFrames:
    """Frames from one camera for SwiftInstrument (which orders the calls; any thread but the UI thread)."""

    def __init__(self, camera: typing.Any, scan: typing.Any, settings: CameraSettings,
                 grab_timeout_s: float | None = None) -> None:
        self.camera = camera
        self.settings = settings
        self.grab_timeout_s = grab_timeout_s or max(5.0, 20.0 * settings.exposure_ms / 1000.0)
        self.__scan = scan
        self.__configured = False

    @property
    def detector_shape(self) -> tuple[int, int] | None:
        """Pattern shape at the chosen binning (the engine's session file needs it before the first frame)."""
        try:
            height, width = self.camera.get_expected_dimensions(int(self.settings.binning))
            return int(height), int(width)
        except Exception:
            return None

    def configure(self) -> None:
        """Exposure and binning on the camera, the scan stopped; once (the user's later changes are kept)."""
        if self.__configured:
            return
        frame_parameters = self.camera.get_current_frame_parameters()
        frame_parameters.exposure_ms = float(self.settings.exposure_ms)
        frame_parameters.binning = int(self.settings.binning)
        self.camera.set_current_frame_parameters(frame_parameters)
        if self.__scan is not None and self.__scan.is_playing:
            self.__scan.abort_playing(sync_timeout=5.0)  # the probe must be parked, not scanning
        self.__configured = True

    def grab_next(self) -> numpy.ndarray | None:
        """A copy of the next frame that started after this call; None when the camera returned none in time."""
        try:
            xdatas = self.camera.grab_next_to_start(timeout=self.grab_timeout_s)
        except Exception as e:
            raise InstrumentError(f"camera '{self.camera.display_name}' failed: {e}") from e
        xdata = xdatas[0] if xdatas else None
        if xdata is None or xdata.data is None:
            return None
        return numpy.array(xdata.data, dtype=numpy.float32, copy=True)

    def stop(self) -> None:
        self.camera.abort_playing(sync_timeout=5.0)

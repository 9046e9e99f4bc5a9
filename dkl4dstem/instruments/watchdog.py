"""A time limit around `Instrument.measure`: a camera whose frame never arrives must not hang the experiment.

The call runs on a short-lived helper thread. When the limit passes, the attempt counts as a failed frame (the
engine retries the position, then excludes it). The hung call is never overlapped by a new one: the next call
first waits up to one more limit for it, and if the camera still has not answered the run stops
(`CameraNotResponding`), since measuring again could not be trusted.
"""
from __future__ import annotations

import threading
import typing

from dkl4dstem.data.diffraction import Measurement
from dkl4dstem.errors import InstrumentError


class CameraNotResponding(InstrumentError):
    """A timed-out `measure()` never returned: no further measurement is attempted."""


class TimedMeasure:
    def __init__(self, measure: typing.Callable[[int, int], Measurement], timeout_s: float | None) -> None:
        self.measure = measure
        self.timeout_s = timeout_s
        self._pending: threading.Thread | None = None
        self._pending_at: tuple[int, int] | None = None

    def __call__(self, y: int, x: int) -> Measurement:
        if self.timeout_s is None:
            return self.measure(y, x)
        if self._pending is not None:
            self._pending.join(self.timeout_s)
            if self._pending.is_alive():
                raise CameraNotResponding(f"measure() at {self._pending_at} has not returned for more than "
                                          f"{2 * self.timeout_s:g} s; the camera does not respond")
            self._pending = None  # it answered late: that frame is dropped
        box: dict[str, typing.Any] = {}

        def target() -> None:
            try:
                box["result"] = self.measure(y, x)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        thread = threading.Thread(target=target, name="dkl4dstem-measure", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            self._pending, self._pending_at = thread, (int(y), int(x))
            raise InstrumentError(f"measure() timed out after {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return typing.cast(Measurement, box["result"])

"""The probe: survey pixel -> normalized probe position, and ProbeGuard against Swift's stale echoes of a move."""
from __future__ import annotations

import logging
import threading
import typing

from nion.utils import Geometry

_logger = logging.getLogger(__name__)


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

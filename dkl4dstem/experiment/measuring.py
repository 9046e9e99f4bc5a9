"""One position's measurement: the watchdog's time limit, retries, checks of the frame, the scalar value.

A position whose frames keep failing is given up (the loop excludes it) rather than retried forever; too many such
positions in a row stop the run. The scalarizer may be the user's code: whatever it raises costs one NaN value,
not the run (a SystemExit / KeyboardInterrupt from it stops the run cleanly).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import typing
import warnings

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration, Measurement
from dkl4dstem.errors import InstrumentError
from dkl4dstem.experiment.control import RunControl
from dkl4dstem.instruments.watchdog import CameraNotResponding, TimedMeasure
from dkl4dstem.scalarizers.registry import Scalarizer

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.instruments.base import Instrument

logger = logging.getLogger(__name__)  # under "dkl4dstem.experiment": the plug-in listens there


def quiet_scalarizers() -> None:
    """Silence the RuntimeWarnings our scalarizers raise on a poor pattern (a NaN value says it, and the loop
    logs it). A filter installed once, at start-up, not `warnings.catch_warnings` around each call: that swaps the
    process-wide filter list and is not thread safe (the loop, the trainer and dask run on threads)."""
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"dkl4dstem\.scalarizers\.")


def scalarize(scalarizer: Scalarizer, pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """The scalar value of one pattern, floating-point warnings off (`numpy.errstate` is thread local)."""
    with numpy.errstate(all="ignore"):
        return float(scalarizer(pattern, calibration))


@dataclasses.dataclass
class Measured:
    pattern: numpy.ndarray | None  # None: every attempt failed (`problem` says why)
    value: float                   # NaN when unusable
    problem: str
    instrument_seconds: float


class Measurer:
    def __init__(self, instrument: Instrument, config: ExperimentConfig, scalarizer: Scalarizer,
                 calibration: DetectorCalibration, pattern_shape: tuple[int, ...] | None, control: RunControl) -> None:
        self.config = config
        self.scalarizer = scalarizer
        self.calibration = calibration
        # every frame must have this shape; when nothing tells it beforehand, the first good frame sets it
        self.pattern_shape = pattern_shape
        self.control = control
        timeout_s = config.measure_timeout_s or getattr(instrument, "measure_timeout_s", None)
        self._instrument = instrument
        self._timed_measure = TimedMeasure(instrument.measure, timeout_s)
        self.failures = 0  # consecutive positions whose frames all failed
        self.error: str | None = None  # the scalarizer stopped the run
        quiet_scalarizers()

    def measure(self, y: int, x: int) -> Measured:
        """Measure (y, x) with retries; a hung camera raises `CameraNotResponding`."""
        start = time.perf_counter()
        measurement, problem = self._attempts(y, x)
        instrument_seconds = time.perf_counter() - start
        if measurement is None:
            return Measured(None, math.nan, problem, instrument_seconds)
        self.failures = 0
        if self.pattern_shape is None:
            self.pattern_shape = tuple(numpy.shape(measurement.pattern))
        value = self._scalarize(measurement.pattern, y, x)
        return Measured(measurement.pattern, value, "", instrument_seconds)

    def rest(self) -> None:
        """The run pauses: the instrument takes the beam off the last point, where it can (Instrument.rest)."""
        rest = getattr(self._instrument, "rest", None)
        if callable(rest):
            try:
                rest()
            except Exception as e:  # the pause goes on; the next measure() moves the probe anyway
                logger.warning("could not rest the instrument for the pause: %s", e)

    def given_up(self, y: int, x: int, problem: str) -> None:
        """(y, x) is excluded after failed frames; too many such positions in a row stop the run (raises)."""
        self.failures += 1
        warnings.warn(f"position ({y}, {x}) excluded: {problem}", RuntimeWarning, stacklevel=3)
        if self.failures >= self.config.max_consecutive_failures:
            raise InstrumentError(f"{self.failures} positions in a row failed; last: {problem}")

    def _attempts(self, y: int, x: int) -> tuple[Measurement | None, str]:
        measurement: Measurement | None = None
        problem = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt and self.control.stopped:  # a stop does not wait for retries of a failing camera
                break
            try:
                measurement = self._timed_measure(y, x)
                problem = frame_problem(measurement.pattern, self.pattern_shape)
                if not problem:
                    break
            except CameraNotResponding:
                raise  # a hung camera: measuring again cannot be trusted
            except InstrumentError as exc:
                problem = str(exc)
            except Exception as exc:  # a camera driver may raise anything; the point is what matters
                problem = f"{type(exc).__name__}: {exc}"
            logger.warning("measurement at (%d, %d) attempt %d failed: %s", y, x, attempt + 1, problem)
            measurement = None
        return measurement, problem

    def _scalarize(self, pattern: numpy.ndarray, y: int, x: int) -> float:
        try:
            value = scalarize(self.scalarizer, pattern, self.calibration)
        except Exception as exc:
            logger.warning("scalarizer %s failed at (%d, %d): %s", self.scalarizer.name, y, x,
                           str(exc) or type(exc).__name__)  # never an empty reason
            return math.nan
        except (SystemExit, KeyboardInterrupt) as exc:  # from the user's code, not a signal (the CLI handles those)
            if isinstance(exc, KeyboardInterrupt) and self.control.stopped:
                raise  # a second Ctrl-C: abort
            self.error = (f"scalarizer {self.scalarizer.name} raised {type(exc).__name__}({exc}) at ({y}, {x}); the "
                          "run stopped (the point is kept with value NaN)")
            logger.error("%s", self.error)
            self.control.stop()
            return math.nan
        if not math.isfinite(value):
            logger.warning("scalarizer %s gave %s at (%d, %d); the point is kept but not used for training",
                           self.scalarizer.name, value, y, x)
            return math.nan
        return value


def frame_problem(pattern: typing.Any, expected_shape: tuple[int, ...] | None) -> str:
    """Why a camera frame is unusable ('' when it is fine)."""
    array = numpy.asarray(pattern) if pattern is not None else None
    if array is None or array.size == 0:
        return "empty frame"
    if array.ndim != 2:
        return f"frame is not 2D (shape {array.shape})"
    if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
        return f"frame shape {array.shape} differs from the expected {tuple(expected_shape)}"
    if not numpy.all(numpy.isfinite(array)):
        return "frame contains NaN/Inf"
    return ""


"""Fault injection for reliability tests: Instrument wrappers around `ReplayInstrument` and faulty scalarizers.

`FaultyInstrument` behaves like a camera + scan controller: `measure` "starts the camera" and "moves the probe",
`close` stops the camera and parks the probe. Faults are scheduled either by measure-call number (a transient
fault: the retry of the same position gets a good frame) or by position (a persistent fault: every attempt at that
position fails). A hanging camera is guarded by a timeout inside the wrapper, as a real driver's acquisition
timeout would be, so a test never hangs on it.

The scalarizers at the bottom are addressed as `tests.faults:<name>` (ExperimentConfig(scalarizer=...) or
`--scalarizer`). Which patterns they fail on is a pure function of the pattern (deterministic, no global state).
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
import typing
import zlib

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration, Measurement
from dkl4dstem.errors import InstrumentError
from dkl4dstem.scalarizers import get_scalarizer
from dkl4dstem.data.survey import Survey

FAULTS = ("raise", "error", "timeout", "hang", "nan", "inf", "empty", "wrong_shape", "not_2d", "none")


class FaultyInstrument:
    """An Instrument that injects camera faults into a wrapped instrument (normally a ReplayInstrument).

    on_calls:     {measure call number (0-based, retries count): fault} -- transient faults
    at_positions: {(y, x): fault} -- every attempt at that position fails
    always:       a fault for every call (a dead camera)
    delay:        seconds every measure takes (a slow camera)
    timeout:      the wrapper's acquisition timeout guarding a hanging camera
    """

    def __init__(self, inner: typing.Any, *, on_calls: dict[int, str] | None = None,
                 at_positions: dict[tuple[int, int], str] | None = None, always: str | None = None,
                 delay: float = 0.0, timeout: float = 0.5, fault_sleep: float = 0.05) -> None:
        for fault in [*(on_calls or {}).values(), *(at_positions or {}).values(), *([always] if always else [])]:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}")
        self.inner = inner
        self.on_calls = dict(on_calls or {})
        self.at_positions = dict(at_positions or {})
        self.always = always
        self.delay = delay
        self.timeout = timeout
        self.fault_sleep = fault_sleep
        # observable state
        self.calls: list[tuple[int, int]] = []          # every measure call, in order
        self.faults_injected: list[tuple[int, int, str]] = []
        self.good: list[tuple[int, int]] = []           # positions that got a good frame
        self.close_calls = 0
        self.camera_running = False
        self.probe_parked = True
        self.measure_after_close = 0
        self.active_measures = 0
        self.max_active_measures = 0
        self.hanging = False                            # an acquisition is hanging right now
        self._release_hang = threading.Event()
        self._hung_threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # --- Instrument protocol ---------------------------------------------------------------------------------
    def survey(self) -> Survey:
        return self.inner.survey()

    def calibration(self) -> DetectorCalibration:
        return self.inner.calibration()

    @property
    def detector_shape(self) -> tuple[int, int]:
        return typing.cast(tuple[int, int], tuple(self.inner.detector_shape))

    @property
    def closed(self) -> bool:
        return self.close_calls > 0

    def measure(self, y: int, x: int) -> Measurement:
        with self._lock:
            call = len(self.calls)
            self.calls.append((int(y), int(x)))
            if self.closed:
                self.measure_after_close += 1
            self.active_measures += 1
            self.max_active_measures = max(self.max_active_measures, self.active_measures)
        try:
            self.camera_running = True
            self.probe_parked = False
            if self.delay:
                time.sleep(self.delay)
            fault = self.on_calls.get(call) or self.at_positions.get((int(y), int(x))) or self.always
            if fault:
                self.faults_injected.append((int(y), int(x), fault))
                return self._fault(fault, y, x)
            measurement = self.inner.measure(y, x)
            self.good.append((int(y), int(x)))
            return measurement
        finally:
            with self._lock:
                self.active_measures -= 1

    def close(self) -> None:
        self.close_calls += 1
        self.camera_running = False
        self.probe_parked = True
        self._release_hang.set()  # a hung acquisition is abandoned when the camera is stopped
        self.inner.close()

    # --- faults ----------------------------------------------------------------------------------------------
    def _fault(self, fault: str, y: int, x: int) -> Measurement:
        good = self.inner.measure(y, x).pattern
        meta = {"position": (int(y), int(x)), "fault": fault}
        if fault == "raise":
            raise InstrumentError(f"camera error at ({y}, {x})")
        if fault == "error":  # a driver raising something that is not an InstrumentError
            raise OSError(f"driver I/O error at ({y}, {x})")
        if fault == "timeout":  # the camera gives up after a short wait
            time.sleep(self.fault_sleep)
            raise InstrumentError(f"camera timed out at ({y}, {x})")
        if fault == "hang":  # a frame that never arrives, guarded by the wrapper's own timeout
            thread = threading.Thread(target=self._release_hang.wait, daemon=True, name="hung-acquisition")
            self._hung_threads.append(thread)
            thread.start()
            self.hanging = True
            try:
                thread.join(self.timeout)
            finally:
                self.hanging = False
            if thread.is_alive():
                raise InstrumentError(f"camera acquisition timed out after {self.timeout} s at ({y}, {x})")
            raise InstrumentError(f"camera stopped during acquisition at ({y}, {x})")
        if fault == "nan":
            pattern = good.copy()
            pattern[pattern.shape[0] // 2, :] = numpy.nan
            return Measurement(pattern, meta)
        if fault == "inf":
            pattern = good.copy()
            pattern[0, 0] = numpy.inf
            return Measurement(pattern, meta)
        if fault == "empty":
            return Measurement(numpy.zeros((0, 0), dtype=numpy.float32), meta)
        if fault == "wrong_shape":
            return Measurement(good[:-3, :-5].copy(), meta)
        if fault == "not_2d":
            return Measurement(good.reshape(-1), meta)
        if fault == "none":
            return typing.cast(Measurement, None)
        raise AssertionError(fault)

    def release(self) -> None:
        """Let any hung acquisition thread finish (test cleanup)."""
        self._release_hang.set()
        for thread in self._hung_threads:
            thread.join(1.0)


def wait_for(condition: typing.Callable[[], bool], timeout: float, interval: float = 0.002) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False): a hang guard, not a timing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --- scalarizers -------------------------------------------------------------------------------------------
_COM = get_scalarizer("com_magnitude")


def _hit(pattern: numpy.ndarray, every: int, salt: int = 0) -> bool:
    """True for about one pattern in `every`: a deterministic hash of the pattern's bytes."""
    return zlib.crc32(numpy.ascontiguousarray(pattern, dtype=numpy.float32).tobytes(), salt) % every == 0


def flaky_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM magnitude; raises for about a third of the patterns."""
    if _hit(pattern, 3):
        raise ZeroDivisionError("flaky scalarizer failed")
    return _COM(pattern, calibration)


def nan_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM magnitude; NaN for about a third of the patterns, +Inf for another few."""
    if _hit(pattern, 3):
        return math.nan
    if _hit(pattern, 7, salt=1):
        return math.inf
    return _COM(pattern, calibration)


def always_nan_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    return math.nan


def always_raising_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    raise RuntimeError("this scalarizer never works")


def huge_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM magnitude, but about one pattern in four gives 1e300 (finite, yet overflows any variance)."""
    if _hit(pattern, 4, salt=2):
        return 1e300
    return _COM(pattern, calibration)


def not_a_number_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> typing.Any:
    """Returns something float() cannot convert."""
    return "twelve"


def string_number_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> typing.Any:
    """Returns a string that float() would convert: still not a number."""
    return "3.5"


def complex_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> typing.Any:
    return complex(_COM(pattern, calibration), 1.0)


def exiting_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM magnitude for the first patterns of a run, then sys.exit(3) (a user script's `exit()` left in)."""
    if _hit(pattern, 3):
        sys.exit(3)
    return _COM(pattern, calibration)


def interrupting_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    raise KeyboardInterrupt


def slow_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM magnitude, 20 ms per pattern: a ground truth over the fixture's 1,024 patterns takes about 20 s."""
    time.sleep(0.02)
    return _COM(pattern, calibration)


def scaled_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = 0.0) -> float:
    """CoM magnitude plus a parameter (for resume checks on parameters)."""
    return _COM(pattern, calibration) + inner_mrad


MARKER_ENV = "DKL4DSTEM_TEST_MARKER"


def marker_scalarizer(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """Writes the file named by $DKL4DSTEM_TEST_MARKER when called: shows whether a session's spec was run."""
    path = os.environ.get(MARKER_ENV)
    if path:
        with open(path, "w") as file:
            file.write("called")
    return _COM(pattern, calibration)




# --- a CLI that reports each measured point (for the SIGKILL test) ------------------------------------------
FAST_TRAINING = {"initial_iterations": 20, "update_iterations": 5, "refit_iterations": 20}


def report_points_cli(argv: list[str]) -> int:
    """`python -m tests.faults run DATA --out DIR ...`: the real `dkl4dstem` CLI, plus one stdout line
    `MEASURED <n> <y> <x> <value>` (flushed) as soon as the engine reports point n as measured. With
    DKL4DSTEM_FAULTS_FAST=1 the model trains briefly (`--set`, recorded in the session settings)."""
    from dkl4dstem import cli
    from dkl4dstem.experiment import loop as experiment

    original_init = experiment.Experiment.__init__
    if os.environ.get("DKL4DSTEM_FAULTS_FAST") == "1" and argv[:1] == ["run"]:
        argv = [*argv, *(f"--set={name}={value}" for name, value in FAST_TRAINING.items())]

    def init(self: experiment.Experiment, instrument: typing.Any, config: experiment.ExperimentConfig,
             **kwargs: typing.Any) -> None:
        listener = kwargs.get("on_event")
        reported = [0]

        def on_event(event: experiment.StepEvent) -> None:
            if event.n_measured > reported[0]:  # a recorded point (an excluded position does not count)
                reported[0] = event.n_measured
                y, x = event.position
                print(f"MEASURED {event.n_measured} {y} {x} {event.value!r}", flush=True)
            if listener is not None:
                listener(event)

        kwargs["on_event"] = on_event
        original_init(self, instrument, config, **kwargs)

    experiment.Experiment.__init__ = init  # type: ignore[method-assign]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(report_points_cli(sys.argv[1:]))

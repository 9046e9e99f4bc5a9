"""The run's worker thread and what it needs: the experiment's loop with the engine's last warning caught
(run_experiment), the stop that also releases the probe after the frame in flight (signal_stop), the watch on the
first seed points (SeedWatch), and the status line at the end (end_message)."""
from __future__ import annotations

import logging
import math
import threading
import typing

from dkl4dstem.errors import InputError

from . import run_state

if typing.TYPE_CHECKING:
    from . import swift_instrument

_logger = logging.getLogger(__name__)

NAN_SEEDS_TO_STOP = 3        # a scalarizer that gives nothing at the first seed points stops the run there


def signal_stop(experiment: typing.Any, instrument: swift_instrument.SwiftInstrument | None) -> None:
    """The loop sees the stop at once (an Event); the probe is released after the frame in flight (on a thread)."""
    experiment.stop()
    if instrument is not None and not instrument.is_closed:
        threading.Thread(target=instrument.release_after_current, name="dkl-release", daemon=True).start()


def start(experiment: typing.Any, instrument: swift_instrument.SwiftInstrument, log_tail: run_state.LastWarning,
          on_done: typing.Callable[[typing.Any, str | None], None]) -> threading.Thread:
    """The loop on its worker thread; on_done(result, error) on that thread when it has ended."""
    def run() -> None:
        on_done(*run_experiment(experiment, instrument, log_tail))

    thread = threading.Thread(target=run, name="dkl-experiment", daemon=True)
    thread.start()
    return thread


def run_experiment(experiment: typing.Any, instrument: swift_instrument.SwiftInstrument,
                   log_tail: run_state.LastWarning) -> tuple[typing.Any, str | None]:
    """Worker thread: run the loop, close the instrument; (result, error). Nothing escapes into Swift."""
    result, error = None, None
    engine_logger = logging.getLogger("dkl4dstem.experiment")
    log_tail.last = ""
    engine_logger.addHandler(log_tail)
    try:
        result = experiment.run()
        error = getattr(result, "error", None)
    except Exception as e:  # the panel shows the message
        _logger.exception("DKL experiment failed")
        error = f"{type(e).__name__}: {e}" if not isinstance(e, InputError) else str(e)
    finally:
        engine_logger.removeHandler(log_tail)
        instrument.close()
    return result, error


class SeedWatch:
    """Why a run stopped early: unusable (NaN) values at the first seed points (after NAN_SEEDS_TO_STOP, with the
    engine's last warning, caught by log_tail during the run), or a reason the owner sets (the panel was closed)."""

    def __init__(self) -> None:
        self.__nan_seeds = 0
        self.reason: str | None = None
        self.log_tail = run_state.LastWarning()

    def must_stop(self, event: typing.Any) -> bool:
        """Loop thread: whether this event means the run must stop now (the reason is set)."""
        if event.phase != "seed" or event.excluded or self.__nan_seeds < 0:
            return False
        if math.isfinite(event.value):
            self.__nan_seeds = -1  # a usable value: the scalarizer works here
            return False
        self.__nan_seeds += 1
        if self.__nan_seeds < NAN_SEEDS_TO_STOP:
            return False
        last_warning = self.log_tail.last
        self.reason = (f"scalarizer gave no usable value at the first {self.__nan_seeds} points"
                       f"{': ' + last_warning if last_warning else ''}")
        return True


def stop_and_join(experiment: typing.Any, thread: threading.Thread | None,
                  instrument: swift_instrument.SwiftInstrument | None, close_began: int | None, timeout_s: float) -> None:
    """Stop the loop (within one step), wait for the step in flight (bounded: a hung camera driver), dispose the
    instrument; log how many measurements were made from the close on (close_began: when the window began closing,
    if it did)."""
    running = thread is not None and thread.is_alive() and instrument is not None
    at_close = instrument.recorded_count if running and instrument is not None else 0
    if close_began is not None:
        at_close = close_began  # the window began closing before Swift closed the panel
    if experiment is not None:
        signal_stop(experiment, instrument)
    if thread is not None:
        thread.join(timeout_s)
        if thread.is_alive():
            _logger.warning("DKL experiment thread did not end within %s s", timeout_s)
    if (running or close_began is not None) and instrument is not None:
        _logger.info("DKL: closed during a run: %d measurements when the close began, %d at the end",
                     at_close, instrument.recorded_count)
    if instrument is not None:
        instrument.dispose()  # closes (idempotent; normally already done by Experiment.run), ends the probe guard


def end_status(step: int, result: typing.Any, error: str | None, seed_problem: str | None,
               after_run: str) -> dict[str, typing.Any]:
    """The status fields when the run has ended (step: the measurements the status showed last)."""
    n = len(result.visited) if result is not None else step
    message = end_message(n, result, error, seed_problem, "parked" if after_run == "park" else "released")
    if result is not None:
        return dict(state="idle", message=message, step=n, best_value=result.best_value,
                    best_position=result.best_position)
    return dict(state="idle", message=message)


def end_message(n: int, result: typing.Any, error: str | None, seed_problem: str | None, probe_words: str) -> str:
    """The status line when the run has ended."""
    if error:
        return f"Failed after {n} measurements: {error}. Camera stopped, probe released."
    if seed_problem:
        return f"Stopped after {n} measurements: {seed_problem}. Camera stopped, probe released."
    if result is not None and result.stopped:
        return f"Stopped after {n} measurements. Camera stopped, probe {probe_words}."
    return f"Finished: {n} measurements. Camera stopped, probe {probe_words}."

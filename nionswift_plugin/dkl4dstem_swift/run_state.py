"""Run state shared by the controller and the panel: the status record, the engine's background import, the
one-run-per-microscope registry, and the engine's last warning (why a scalarizer failed)."""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import typing

from dkl4dstem.errors import InputError

_logger = logging.getLogger(__name__)

# one run per STEM controller, across all document windows
active_lock = threading.Lock()
active_instruments: set[int] = set()

# the engine (torch, gpytorch, botorch) takes seconds to import: the extension starts it in the background when Swift
# starts, and a Start that comes earlier waits for it without blocking the UI thread
ENGINE_LOADING = threading.Event()


def load_engine_in_background() -> None:
    def load() -> None:
        start = time.perf_counter()
        try:
            import dkl4dstem.experiment.loop  # noqa: F401
            _logger.info("dkl4dstem engine loaded in %.1f s", time.perf_counter() - start)
        except Exception as e:
            _logger.warning("dkl4dstem engine import failed: %s", e)
        finally:
            ENGINE_LOADING.clear()

    ENGINE_LOADING.set()
    threading.Thread(target=load, name="dkl-import", daemon=True).start()


class LastWarning(logging.Handler):
    """The engine's last warning during a run (e.g. why a scalarizer failed), for the panel's message."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last = record.getMessage()
        except Exception:
            pass


@dataclasses.dataclass
class RunStatus:
    state: str = "idle"             # idle | acquiring | running | paused | stopping
    message: str = ""
    step: int = 0                   # measurements done
    n_total: int = 0
    phase: str = ""
    last_value: float = math.nan
    best_value: float = math.nan
    best_position: tuple[int, int] | None = None
    units: str = ""
    decision_ms: float = math.nan
    training_ms: float = math.nan
    instrument_ms: float = math.nan
    step_ms: float = math.nan

    @property
    def progress(self) -> int:
        return int(round(100 * self.step / self.n_total)) if self.n_total else 0


class InstrumentClaim:
    """This window's claim on one microscope (active_instruments): claim() refuses a second run or acquisition on the
    same STEM controller from another window; release() (idempotent) frees it."""

    def __init__(self) -> None:
        self.__key: int | None = None

    def claim(self, stem_controller: typing.Any) -> None:
        with active_lock:
            if id(stem_controller) in active_instruments:
                raise InputError("another DKL run or acquisition is using this microscope (in another window)")
            active_instruments.add(id(stem_controller))
            self.__key = id(stem_controller)

    def release(self) -> None:
        with active_lock:
            if self.__key is not None:
                active_instruments.discard(self.__key)
                self.__key = None


def status_changes_for(status: RunStatus, event: typing.Any) -> dict[str, typing.Any]:
    """The status fields a step event changes while a run goes on (none once it has ended)."""
    if status.state not in ("running", "paused", "stopping"):
        return dict()
    phase = "seed point" if event.phase == "seed" else "step"
    message = status.message if status.state != "running" else f"Running: {phase} {event.n_measured} of {event.n_total}"
    # training runs in the background: a step reports its time only when it swaps a new model in
    training_ms = 1000 * event.training_seconds if event.training_seconds > 0 else status.training_ms
    return dict(step=int(event.n_measured), n_total=int(event.n_total), phase=event.phase,
                last_value=float(event.value), best_value=float(event.best_value),
                best_position=event.best_position, units=event.units, message=message,
                decision_ms=1000 * event.decision_seconds, training_ms=training_ms,
                instrument_ms=1000 * event.instrument_seconds, step_ms=1000 * event.step_seconds)

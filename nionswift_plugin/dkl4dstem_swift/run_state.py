"""Run state shared by the controller and the panel: the status record, the engine's background import, the
one-run-per-microscope registry, and the engine's last warning (why a scalarizer failed)."""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time

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

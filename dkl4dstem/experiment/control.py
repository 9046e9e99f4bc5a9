"""The signals a run's caller sends from any thread (stop, pause, forced points) and the run reads."""
from __future__ import annotations

import threading
import typing


class RunControl:
    """Shared by `Experiment` (the caller's side: UI, Ctrl-C handler) and its run (the loop's side); thread safe."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._forced: list[tuple[int, int]] = []  # force() queue, taken in order before the model's choice
        self._lock = threading.Lock()
        self._on_stop: list[typing.Callable[[], None]] = []
        self.forced_measured: list[tuple[int, int]] = []  # the forced positions measured, in order

    # --- the caller's side ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Takes effect within one step; a running (re)fit is cancelled through `on_stop` callbacks."""
        self._stop.set()
        self._running.set()
        with self._lock:
            callbacks = list(self._on_stop)
        for callback in callbacks:
            callback()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def force(self, y: int, x: int) -> None:
        with self._lock:
            self._forced.append((y, x))

    # --- the run's side ------------------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def on_stop(self, callback: typing.Callable[[], None]) -> None:
        """Call `callback` at stop() (at once when already stopped), until `clear_on_stop`."""
        with self._lock:
            self._on_stop.append(callback)
        if self.stopped:
            callback()

    def clear_on_stop(self) -> None:
        with self._lock:
            self._on_stop.clear()

    def wait_if_paused(self, on_pause: typing.Callable[[], None] | None = None) -> None:
        """Block while paused; `on_pause` runs once when a pause begins here (e.g. to park the probe)."""
        if self._running.is_set():
            return
        if on_pause is not None:
            on_pause()
        while not self._running.wait(timeout=0.1):
            if self.stopped:
                return

    def pop_forced(self) -> tuple[int, int] | None:
        with self._lock:
            return self._forced.pop(0) if self._forced else None

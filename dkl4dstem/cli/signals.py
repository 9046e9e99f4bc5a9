"""Ctrl-C, SIGTERM and SIGHUP during and after a run: stop after the current point, never lose a measured one."""
from __future__ import annotations

import signal
import sys
import threading
import typing

if typing.TYPE_CHECKING:
    from dkl4dstem.experiment.loop import Experiment, ExperimentResult
    from dkl4dstem.reports.progress import RunRecorder

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class PostRunSignals:
    """Stop signals after the run: raise KeyboardInterrupt inside `interruptible` work, otherwise note them."""

    def __init__(self) -> None:
        self.raising = False
        self.previous: dict[int, typing.Any] = {}

    def _on_signal(self, signum: int, frame: typing.Any) -> None:
        if self.raising:
            raise KeyboardInterrupt

    def __enter__(self) -> PostRunSignals:
        self.previous = _install(self._on_signal)
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        _restore(self.previous)

    def interruptible(self, work: typing.Callable[[], typing.Any]) -> typing.Any:
        """`work()`, or None when a signal cut it short."""
        self.raising = True
        try:
            return work()
        except KeyboardInterrupt:
            return None
        finally:
            self.raising = False


def _install(handler: typing.Callable[[int, typing.Any], None]) -> dict[int, typing.Any]:
    if not _main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous: dict[int, typing.Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def run_interruptible(experiment: Experiment, recorder: RunRecorder) -> ExperimentResult:
    """First Ctrl-C (or SIGTERM / SIGHUP) stops after the current point (everything measured is in session.h5); a
    second one aborts."""
    def on_signal(signum: int, frame: typing.Any) -> None:
        if experiment.stopped:
            raise KeyboardInterrupt
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\ndkl4dstem: {name}: stopping after the current point (Ctrl-C again to abort)", file=sys.stderr)
        experiment.stop()

    previous = _install(on_signal)
    try:
        return experiment.run()
    finally:
        recorder.close()
        _restore(previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

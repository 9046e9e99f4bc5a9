"""Changes to the document's item list only while no thumbnail thread can run.

Nion Swift's data panel (nionui GridFlowCanvasItem) takes two locks in opposite orders: the UI thread, inserting or
removing an item of the data panel's list (append_data_item, a live state that begins or ends, a non-live item whose
data changes and so moves to the top), holds the grid's canvas lock and then wants a cell's; a thumbnail thread that
has just finished (or, for a new cell, just started) a thumbnail holds the cell's lock and then wants the grid's.
When both happen at once Swift hangs for good. Two ways in:
- a thumbnail computation already in flight when the list changes (a live camera view keeps them coming), and
- the list change itself: a new cell creates its thumbnail source, whose constructor submits the first computation
  to Swift's thumbnail executor, and that thread fires "thumbnail updated" at once, while the UI thread is still
  inside the list change (seen in the real app; a short GIL switch interval makes it likely).
`when_idle` closes both: each change runs in its own UI task, inside which every NEW thumbnail computation is held
(Swift's thumbnail executor is swapped for one that keeps the submissions, from any thread) and which makes its
change only when none is in flight; at the end of the task the held computations go to Swift's executor, after the
UI thread has left the change. Nothing is held across UI tasks, so a window that closes between them leaves nothing
behind.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
import typing

from . import ui_tasks

_logger = logging.getLogger(__name__)

MAX_WAIT_S = 2.0  # a live camera or scan view keeps thumbnails busy: after this the change is made anyway (its own held)


def _thumbnail_source_class() -> typing.Any:
    try:
        from nion.swift import Thumbnails
        return Thumbnails.ThumbnailSource
    except Exception:  # another Swift version
        return None


class _HeldSubmissions:
    """Stands in for Swift's thumbnail executor: submit() returns a future that runs on the real executor only when
    released. Futures keep their semantics (cancel, done) for Swift's ThumbnailSource."""

    def __init__(self, executor: concurrent.futures.Executor) -> None:
        self.executor = executor
        self.__lock = threading.Lock()
        self.__held: list[tuple[concurrent.futures.Future[typing.Any], typing.Callable[..., typing.Any], tuple[typing.Any, ...], dict[str, typing.Any]]] = list()

    def submit(self, fn: typing.Callable[..., typing.Any], /, *args: typing.Any, **kwargs: typing.Any) -> concurrent.futures.Future[typing.Any]:
        future: concurrent.futures.Future[typing.Any] = concurrent.futures.Future()
        with self.__lock:
            self.__held.append((future, fn, args, kwargs))
        return future

    def is_held(self, future: typing.Any) -> bool:
        with self.__lock:
            return any(future is held[0] for held in self.__held)

    def release(self) -> int:
        with self.__lock:
            held, self.__held = self.__held, list()
        for future, fn, args, kwargs in held:
            self.executor.submit(_run_into, future, fn, args, kwargs)
        return len(held)


def _run_into(future: concurrent.futures.Future[typing.Any], fn: typing.Callable[..., typing.Any],
              args: tuple[typing.Any, ...], kwargs: dict[str, typing.Any]) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled while held (its display item closed)
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as e:
        future.set_exception(e)


class _Deferral:
    """Reference-counted (a step may hold again inside a held task): thumbnails are held from the first hold() to
    the last release(). UI thread; always used as a pair around a synchronous block (thumbnails_held)."""

    def __init__(self) -> None:
        self.__lock = threading.Lock()
        self.__count = 0
        self.held: _HeldSubmissions | None = None

    def hold(self) -> None:
        with self.__lock:
            self.__count += 1
            source_class = _thumbnail_source_class()
            executor = getattr(source_class, "_executor", None)
            if self.__count == 1 and executor is not None and not isinstance(executor, _HeldSubmissions):
                self.held = _HeldSubmissions(executor)
                source_class._executor = self.held

    def release(self) -> None:
        with self.__lock:
            self.__count = max(0, self.__count - 1)
            if self.__count > 0:
                return
            held, self.held = self.held, None
        if held is not None:
            source_class = _thumbnail_source_class()
            if source_class is not None and source_class._executor is held:
                source_class._executor = held.executor
            held.release()


_deferral = _Deferral()


@contextlib.contextmanager
def thumbnails_held() -> typing.Iterator[None]:
    """Around a list change made at once on the UI thread: no thumbnail computation started meanwhile (by the change
    itself, or by any thread) runs before the block ends. when_idle uses it for each step; a user's menu action or
    a preview uses it alone (the computations already in flight are when_idle's business)."""
    _deferral.hold()
    try:
        yield
    finally:
        _deferral.release()


def thumbnails_busy() -> bool:
    """True while a thumbnail of any display item is being (re)computed, or waits to be, on Swift's threads (the
    computations held by when_idle do not count: they cannot run)."""
    try:
        from nion.swift import Thumbnails
        manager = Thumbnails.ThumbnailManager()
        sources = list(getattr(manager, "_ThumbnailManager__thumbnail_sources", dict()).values())
    except Exception:  # another Swift version: nothing to wait for
        return False
    held = _deferral.held
    for source in sources:
        future = getattr(source, "_ThumbnailSource__recompute_future", None)
        if future is not None and not future.done() and not (held is not None and held.is_held(future)):
            return True
    return False


def when_idle(document_controller: typing.Any, steps: typing.Sequence[typing.Callable[[], bool | None]], *,
              on_done: typing.Callable[[], None] | None = None,
              cancelled: typing.Callable[[], bool] = lambda: False,
              max_wait_s: float = MAX_WAIT_S, kind: str = "item list change") -> None:
    """Run steps on the UI thread, one per UI task, each with new thumbnail computations held (thumbnails_held) and
    only when none is in flight; then on_done (see the module docstring).

    A step that returns False is not done: it runs again on the next UI tick (work split into short pieces).
    Call on the UI thread; the first step runs at once when no thumbnail is in flight (the usual case)."""
    pending = list(steps)
    state = {"since": time.perf_counter()}

    def tick() -> str | None:
        """One UI task; returns the name of the step it ran (for ui_tasks.LOG)."""
        if cancelled():
            return None
        name = None
        with thumbnails_held():
            if pending and thumbnails_busy() and time.perf_counter() - state["since"] < max_wait_s:
                ui_tasks.queue(document_controller, kind, tick)
                return "waiting for thumbnails"
            if pending and thumbnails_busy():
                _logger.warning("DKL: a thumbnail still computing after %.0f s; changing the item list anyway", max_wait_s)
            if pending:
                name = getattr(pending[0], "__name__", None)
                if pending[0]() is not False:
                    pending.pop(0)
                state["since"] = time.perf_counter()
        if pending:
            ui_tasks.queue(document_controller, kind, tick)  # the held thumbnails run now: look again next tick
        elif on_done is not None:
            ui_tasks.queue(document_controller, kind, done)  # its own UI task
        return name

    def done() -> str:
        if not cancelled() and on_done is not None:
            on_done()
        return "done"

    tick()

"""Every UI task the plug-in queues goes through queue(): timed (wall and UI-thread CPU) and logged by kind.

Why: the plug-in must never hold Swift's UI thread for long (a busy UI thread delays Stop clicks, paints and Swift's
own camera view). The log lets a test or a benchmark check the longest of the plug-in's own tasks, apart from Swift's
work in the same UI tick. It is bounded (the newest MAX_ENTRIES tasks) and costs two clock reads per task. Python's
garbage collections that run inside a task (triggered by whatever allocated last; see gc_pause) are logged apart, so
that the task's own work can be told from them.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import os
import threading
import time
import typing


MAX_ENTRIES = 50_000


@dataclasses.dataclass(frozen=True)
class TaskTiming:
    kind: str
    wall_s: float
    cpu_s: float  # CPU time of the UI thread: not inflated by waiting for the GIL or by other threads' GC pauses
    at: float     # time.perf_counter() at the start
    gc_s: float = 0.0  # CPU time of the garbage collections that ran inside the task
    ready_s: float = 0.0  # time the UI thread was runnable but had no core (Linux, with MEASURE_CORE_WAIT only)

    @property
    def blocked_s(self) -> float:
        """Time neither running nor waiting for a core: waiting for the GIL, a lock or I/O (and for a core, unless
        MEASURE_CORE_WAIT)."""
        return max(0.0, self.wall_s - self.cpu_s - self.ready_s)

    @property
    def own_cpu_s(self) -> float:
        """CPU time without the garbage collections in it (a collection runs on the thread that triggered it)."""
        return max(0.0, self.cpu_s - self.gc_s)


class TaskLog:
    """Durations of the plug-in's UI tasks, newest last. Thread safe."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.__lock = threading.Lock()
        self.__entries: collections.deque[TaskTiming] = collections.deque(maxlen=max_entries)

    def add(self, timing: TaskTiming) -> None:
        with self.__lock:
            self.__entries.append(timing)

    def since(self, start: float) -> list[TaskTiming]:
        """The tasks that began at or after start (a time.perf_counter() value)."""
        with self.__lock:
            return [t for t in self.__entries if t.at >= start]

    def clear(self) -> None:
        with self.__lock:
            self.__entries.clear()


LOG = TaskLog()


Task = typing.Callable[[], typing.Optional[str]]  # may return a more precise kind (e.g. the piece it applied)


class _GCClock:
    """Garbage-collection time on the thread that runs a timed task (a gc callback; a no-op on other threads)."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.total_s = 0.0
        self.__started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != self.thread:
            return
        if phase == "start":
            self.__started = time.thread_time()
        elif self.__started is not None:
            self.total_s += time.thread_time() - self.__started
            self.__started = None


# Off by default: the two /proc reads per task each give up the GIL, and getting it back cost the UI thread 1-2 ms
# per task in the real app on a busy 2-core machine (py-spy). For diagnosis: DKL4DSTEM_UI_CORE_WAIT=1.
MEASURE_CORE_WAIT = os.environ.get("DKL4DSTEM_UI_CORE_WAIT") == "1"


def _ready_s() -> float:
    """The calling thread's total run-queue wait (/proc/thread-self/schedstat, ns); 0 when not measured."""
    if not MEASURE_CORE_WAIT:
        return 0.0
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) * 1e-9
    except (OSError, IndexError, ValueError):
        return 0.0


_gc_clock = _GCClock()
gc.callbacks.append(_gc_clock)


@contextlib.contextmanager
def timing(kind: str) -> typing.Iterator[list[str]]:
    """Time a block on the UI thread (e.g. a button's handler) into LOG; append to the yielded list to refine kind."""
    outer = _gc_clock.thread
    _gc_clock.thread = threading.get_ident()
    gc_start = _gc_clock.total_s
    start, cpu_start, ready_start = time.perf_counter(), time.thread_time(), _ready_s()
    detail: list[str] = list()
    try:
        yield detail
    finally:
        LOG.add(TaskTiming(": ".join([kind] + detail), time.perf_counter() - start, time.thread_time() - cpu_start,
                           start, _gc_clock.total_s - gc_start, _ready_s() - ready_start))
        _gc_clock.thread = outer


def timed(kind: str, fn: Task) -> typing.Callable[[], None]:
    """fn, timed into LOG when it runs (on the UI thread)."""
    def run() -> None:
        with timing(kind) as detail:
            piece = fn()
            if piece:
                detail.append(piece)
    return run


def queue(document_controller: typing.Any, kind: str, fn: Task) -> None:
    """Queue fn as one UI task (any thread), timed under kind."""
    document_controller.queue_task(timed(kind, fn))

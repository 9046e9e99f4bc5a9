"""Changes to the document's item list only while no thumbnail is being computed.

Nion Swift's data panel (nionui GridFlowCanvasItem) takes two locks in opposite orders: the UI thread, inserting or
removing an item of the data panel's list (append_data_item, a live state that begins or ends, a non-live item whose
data changes and so moves to the top), holds the list model's lock and then wants the grid's canvas lock; a thumbnail
thread that has just finished a thumbnail holds the canvas lock and then wants the list's. When both happen at once
Swift hangs for good (seen once in ten Starts). Thumbnails are only recomputed after a change made on the UI thread,
so a list change made on the UI thread while no thumbnail computation is in flight cannot meet one. `when_idle`
runs such changes one at a time, each on a UI tick that finds the thumbnail threads idle.
"""
from __future__ import annotations

import logging
import time
import typing

from . import ui_tasks

_logger = logging.getLogger(__name__)

MAX_WAIT_S = 2.0  # a live camera or scan view keeps thumbnails busy all the time: after this the change is made anyway


def thumbnails_busy() -> bool:
    """True while any thumbnail of any display item is being (re)computed on Swift's thumbnail threads."""
    try:
        from nion.swift import Thumbnails
        manager = Thumbnails.ThumbnailManager()
        sources = list(getattr(manager, "_ThumbnailManager__thumbnail_sources", dict()).values())
    except Exception:  # another Swift version: nothing to wait for
        return False
    for source in sources:
        future = getattr(source, "_ThumbnailSource__recompute_future", None)
        if future is not None and not future.done():
            return True
    return False


def when_idle(document_controller: typing.Any, steps: typing.Sequence[typing.Callable[[], bool | None]], *,
              on_done: typing.Callable[[], None] | None = None,
              cancelled: typing.Callable[[], bool] = lambda: False,
              max_wait_s: float = MAX_WAIT_S, kind: str = "item list change") -> None:
    """Run steps on the UI thread, one per UI tick on which no thumbnail is being computed, then on_done.

    A step that returns False is not done: it runs again on the next such tick (work split into short pieces).
    Call on the UI thread; the first step runs at once when the thumbnails are idle (the usual case)."""
    pending = list(steps)
    state = {"since": time.perf_counter()}

    def tick() -> str | None:
        """One UI task; returns the name of the step it ran (for ui_tasks.LOG)."""
        if cancelled():
            return None
        if pending and thumbnails_busy() and time.perf_counter() - state["since"] < max_wait_s:
            ui_tasks.queue(document_controller, kind, tick)
            return "waiting for thumbnails"
        name = None
        if pending and thumbnails_busy():
            _logger.warning("DKL: thumbnails still busy after %.0f s; changing the item list anyway", max_wait_s)
        if pending:
            name = getattr(pending[0], "__name__", None)
            if pending[0]() is not False:
                pending.pop(0)
            state["since"] = time.perf_counter()
        if pending:
            ui_tasks.queue(document_controller, kind, tick)  # the change just made starts thumbnails: look again next tick
        elif on_done is not None:
            ui_tasks.queue(document_controller, kind, done)  # its own UI task
        return name

    def done() -> str:
        if not cancelled() and on_done is not None:
            on_done()
        return "done"

    tick()

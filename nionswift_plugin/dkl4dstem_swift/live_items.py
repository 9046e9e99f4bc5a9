"""Live data items and survey marks for one run.

Items (run_items.RunItems): every run gets its own prediction, uncertainty, acquisition, measured and raw-pattern
items, titled with the run number ("DKL prediction #3") and grouped in a data group "DKL run 3". They are created on
the UI thread before the loop starts, one per UI tick on which no thumbnail is being computed (`ui_gate`), already
live, so the data panel does not reorder them while the run updates them.

Updates: the loop thread only calls post() (store the newest event, append the measured point, queue at most one UI
task). The UI task applies the newest state in small pieces, one per UI tick (marks, then one map after the other,
then the patterns), each reading the newest data when it runs (latest wins, never a queue of every step), so no
single UI task grows with the run. A full round of pieces starts at most every interval (MIN_INTERVAL_S ..
MAX_INTERVAL_S, adapted so that it uses about MAX_UI_FRACTION of the UI thread). The status line follows every event.
"""
from __future__ import annotations

import logging
import threading
import time
import typing

from nion.data import DataAndMetadata
from nion.swift.model import DataItem

from . import gc_pause
from . import live_pieces
from . import run_items
from . import survey_marks
from . import ui_gate
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DataGroup
    from nion.swift.model import DisplayItem
    from . import swift_instrument

_logger = logging.getLogger(__name__)

# the run's items and their titles (run_items), under the names the rest of the plug-in and the tests use
PREDICTION_TITLE = run_items.PREDICTION_TITLE
UNCERTAINTY_TITLE = run_items.UNCERTAINTY_TITLE
ACQUISITION_TITLE = run_items.ACQUISITION_TITLE
MEASURED_TITLE = run_items.MEASURED_TITLE
PATTERNS_TITLE = run_items.PATTERNS_TITLE
MAP_TITLES = run_items.MAP_TITLES
COLOR_MAPS = run_items.COLOR_MAPS
METADATA_KEY = run_items.METADATA_KEY
run_title = run_items.run_title
next_run_number = run_items.next_run_number

POINT_COLOR = survey_marks.POINT_COLOR
NEWEST_COLOR = survey_marks.NEWEST_COLOR
MIN_INTERVAL_S = 1.0      # a full round of updates at most once per second ...
MAX_UI_FRACTION = 0.03    # ... and at most 3 % of the UI thread spent applying them (Swift works as much again on threads)
MAX_INTERVAL_S = 3.0      # ... but never slower than one round every 3 s
PIECE_BUDGET_S = 0.010    # graphics per UI tick (marks, colour bars): as many as fit in this, at least one


class LiveItems:
    """Owns the run's data items. Construct, prepare, apply and finish on the UI thread; post() from any thread."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 survey_display_item: DisplayItem.DisplayItem | None, survey_xdata: DataAndMetadata.DataAndMetadata,
                 run_metadata: typing.Mapping[str, typing.Any], units: str, n_total: int,
                 instrument: swift_instrument.SwiftInstrument | None = None,
                 on_applied: typing.Callable[[typing.Any], None] | None = None,
                 min_interval_s: float = MIN_INTERVAL_S, run: int = 1,
                 earlier_points: tuple[typing.Sequence[typing.Sequence[int]], typing.Sequence[float]] = ((), ())) -> None:
        self.__on_applied = on_applied
        self.__min_interval_s = float(min_interval_s)
        self.__interval_s = float(min_interval_s)
        self.__round_start = -1e9
        self.__round_cpu_s = 0.0
        self.__stages: list[str] = list()
        self.__dirty = False
        self.__finishing = False
        self.__latest_event: typing.Any = None
        self.__status_event: typing.Any = None
        self.__document_controller = document_controller
        self.__survey_display_item = survey_display_item
        self.__pieces = live_pieces.LivePieces(document_controller, survey_display_item, survey_xdata, run_metadata,
                                               units, n_total, instrument, run)
        self.__pieces.add_earlier_points(*earlier_points)  # a continued run's (shown with the first new point)
        self.__run_items = self.__pieces.items
        self.run = self.__run_items.run
        self.__lock = threading.RLock()
        self.__closed = False
        self.__task_queued = False
        self.__gc_pause: gc_pause.Pause | None = None
        self.apply_count = 0
        self.apply_cpu_s = 0.0

    @property
    def items(self) -> dict[str, DataItem.DataItem]:
        """The run's map items by title (MAP_TITLES), once created."""
        return self.__run_items.items

    @property
    def data_group(self) -> DataGroup.DataGroup | None:
        return self.__run_items.data_group

    def prepare(self, on_ready: typing.Callable[[], None] | None = None, *, patterns_shape: tuple[int, int] | None = None) -> None:
        """UI thread: create the run's items (one per thumbnail-idle UI tick), then call on_ready."""
        self.__gc_pause = gc_pause.Pause()  # until the run's end (__end): no full collections of Swift's objects
        steps = self.__pieces.creation_steps(patterns_shape, PIECE_BUDGET_S)
        ui_gate.when_idle(self.__document_controller, [_named(name, step) for name, step in steps],
                          on_done=on_ready, cancelled=lambda: self.__closed, kind="run items")

    @property
    def is_ready(self) -> bool:
        return len(self.items) == len(MAP_TITLES)

    # any thread

    def post(self, event: typing.Any) -> None:
        """Called on the loop thread: remember the newest state and queue one UI update if none is queued."""
        with self.__lock:
            if self.__closed:
                return
            self.__latest_event = event
            self.__dirty = True
            self.__pieces.post(event)
        self.__queue_apply()

    def __queue_apply(self) -> None:
        """At most one apply task in Swift's queue at any time (so one piece per UI tick)."""
        with self.__lock:
            if self.__task_queued or self.__closed:
                return
            self.__task_queued = True
        ui_tasks.queue(self.__document_controller, "live update", self.__apply_task)

    def __apply_task(self) -> str | None:
        with self.__lock:
            self.__task_queued = False
        return self.apply()  # (timed into ui_tasks.LOG under the piece it applied)

    def add_run_metadata(self, **values: typing.Any) -> None:
        """What is known only at the end (e.g. the forced points): in every item written from now on."""
        self.__run_items.add_run_metadata(**values)

    # UI thread

    @property
    def graphics(self) -> list[typing.Any]:
        """Our point graphics on the survey (at most survey_marks.MAX_MARKS)."""
        return survey_marks.marks_on(self.__survey_display_item)

    @property
    def display_items(self) -> list[DisplayItem.DisplayItem]:
        """The display items of the run's maps and patterns."""
        patterns_item = self.__pieces.patterns.item
        return self.__run_items.display_items([patterns_item] if patterns_item else [])

    def apply(self, force: bool = False) -> str | None:
        """One UI task: the status, then one piece of the current round of item updates (all of them when forced).
        Returns the piece applied (the last one when forced), None when none."""
        with self.__lock:
            if self.__closed:
                return None
            latest_event = self.__latest_event
        if latest_event is not None and latest_event is not self.__status_event and self.__on_applied:
            self.__status_event = latest_event
            self.__on_applied(latest_event)  # a few label texts: cheap
        if not self.is_ready and not force:
            self.__queue_apply()  # the items are still being created
            return None
        if not self.__stages and not self.__start_round(force):
            return None
        stage: str | None = None
        while self.__stages:
            stage = self.__stages.pop(0)
            cpu_start = time.thread_time()
            try:
                detail = self.__apply_stage(stage, force)
                stage = f"{stage} {detail}" if detail else stage
            except Exception as e:  # a user may delete an item mid-run; never let that escape into Swift
                _logger.warning("DKL live update (%s) failed: %s", stage, e)
            cpu_s = time.thread_time() - cpu_start
            self.apply_cpu_s += cpu_s
            self.__round_cpu_s += cpu_s
            if not force:
                break
        if self.__stages:
            self.__queue_apply()  # the next piece on the next UI tick
        else:
            self.__interval_s = min(max(self.__min_interval_s, self.__round_cpu_s / MAX_UI_FRACTION),
                                    max(self.__min_interval_s, MAX_INTERVAL_S))
            with self.__lock:
                dirty = self.__dirty
            if dirty:
                self.__queue_apply()  # events during the round: the next round after the interval
        return stage

    def __start_round(self, force: bool) -> bool:
        """A new round of pieces when there is something new and the interval has passed (or when forced)."""
        with self.__lock:
            dirty = self.__dirty
        if not dirty and not force:
            return False  # nothing new: no task until the next event
        if not force and not self.__finishing and time.perf_counter() - self.__round_start < self.__interval_s:
            self.__queue_apply()  # too soon: look again on the next UI tick
            return False
        with self.__lock:
            self.__dirty = False  # events from now on start another round
        self.__stages = list(live_pieces.ROUND)
        if self.__finishing and not force:
            self.__stages += live_pieces.END_OF_RUN
        self.__round_start = time.perf_counter()
        self.__round_cpu_s = 0.0
        self.apply_count += 1
        return True

    def __apply_stage(self, stage: str, force: bool) -> str | None:
        if stage == "end":
            self.__stages = list()
            self.__end()
            return None
        return self.__pieces.apply(stage, self.__stages, float("inf") if force else PIECE_BUDGET_S)

    def finish(self, *, window_closing: bool = False) -> None:
        """Apply what is left, trim the pattern sequence to what was measured, and end the live state: normally in
        pieces, one per UI tick (live_pieces.END_OF_RUN), so that the end of a run is no long UI task either; when the
        window is closing, everything now (run_items.RunItems.end says when the live state ends)."""
        if not window_closing and self.is_ready:
            with self.__lock:
                if self.__closed or self.__finishing:
                    return
                self.__finishing = True
                self.__dirty = True
            self.__queue_apply()
            return
        self.__finish_now(window_closing)

    def __finish_now(self, window_closing: bool) -> None:
        if self.is_ready:
            self.__stages = list()
            self.apply(force=True)
        with self.__lock:
            if self.__closed:
                return
            self.__closed = True
        try:
            self.__pieces.finish_now()
        except Exception as e:
            _logger.warning("DKL final update failed: %s", e)
        self.__end(window_closing)

    def __end(self, window_closing: bool = False) -> None:
        """Close the transactions and end the live state (see finish)."""
        with self.__lock:
            self.__closed = True
        self.__run_items.end(window_closing)
        if self.__gc_pause is not None:
            self.__gc_pause.release()

    def close(self) -> None:
        self.finish()


def _named(name: str, step: typing.Callable[[], bool | None]) -> typing.Callable[[], bool | None]:
    def run() -> bool | None:
        return step()
    run.__name__ = name  # the kind of its UI task in ui_tasks.LOG (ui_gate)
    return run


def follow_run(document_controller: typing.Any, previous: typing.Mapping[str, DataItem.DataItem], live_items: LiveItems) -> None:
    """Display panels that show the previous run's maps show this run's from now on."""
    workspace_controller = document_controller.workspace_controller
    if workspace_controller is None or not previous:
        return
    document_model = document_controller.document_model
    replacements = dict()
    for title, old in previous.items():
        new = live_items.items.get(title)
        old_display = document_model.get_display_item_for_data_item(old) if not old._closed else None
        new_display = document_model.get_display_item_for_data_item(new) if new is not None else None
        if old_display is not None and new_display is not None:
            replacements[id(old_display)] = new_display
    for display_panel in workspace_controller.display_panels:
        new_display = replacements.get(id(display_panel.display_item))
        if new_display is not None:
            display_panel.set_display_panel_display_item(new_display)

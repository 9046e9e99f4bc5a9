"""Live data items and survey marks for one run.

Items: every run gets its own prediction, uncertainty, acquisition, measured and raw-pattern items, titled with the
run number ("DKL prediction #3") and grouped in a data group "DKL run 3". They are created on the UI thread before
the loop starts, one per UI tick on which no thumbnail is being computed (`ui_gate`), already live, so the data
panel does not reorder them while the run updates them.

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

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataGroup
from nion.swift.model import DataItem

from . import colour_scale
from . import gc_pause
from . import pattern_sequence
from . import survey_marks
from . import ui_gate
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from . import swift_instrument

_logger = logging.getLogger(__name__)

PREDICTION_TITLE = "DKL prediction"
UNCERTAINTY_TITLE = "DKL uncertainty"
ACQUISITION_TITLE = "DKL acquisition"
MEASURED_TITLE = "DKL measured"
PATTERNS_TITLE = pattern_sequence.PATTERNS_TITLE
MAP_TITLES = (PREDICTION_TITLE, UNCERTAINTY_TITLE, ACQUISITION_TITLE, MEASURED_TITLE)
COLOR_MAPS = {PREDICTION_TITLE: "viridis", UNCERTAINTY_TITLE: "magma", ACQUISITION_TITLE: "plasma",
              MEASURED_TITLE: "viridis"}
METADATA_KEY = "dkl4dstem"

POINT_COLOR = survey_marks.POINT_COLOR
NEWEST_COLOR = survey_marks.NEWEST_COLOR
MIN_INTERVAL_S = 1.0      # a full round of updates at most once per second ...
MAX_UI_FRACTION = 0.03    # ... and at most 3 % of the UI thread spent applying them (Swift works as much again on threads)
MAX_INTERVAL_S = 3.0      # ... but never slower than one round every 3 s
PIECE_BUDGET_S = 0.010    # graphics per UI tick (marks, colour bars): as many as fit in this, at least one


def run_title(kind: str, run: int) -> str:
    """Title of one run's item, e.g. 'DKL prediction #3'."""
    return f"{kind} #{run}"


def next_run_number(document_model: typing.Any) -> int:
    """One more than the highest run number of the DKL items in the document (1 for the first)."""
    runs = [0]
    for data_item in document_model.data_items:
        run = dict(data_item.metadata).get(METADATA_KEY, dict()).get("run")
        if isinstance(run, int):
            runs.append(run)
    return max(runs) + 1


class LiveItems:
    """Owns the run's data items. Construct, prepare, apply and finish on the UI thread; post() from any thread."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 survey_display_item: DisplayItem.DisplayItem | None,
                 survey_xdata: DataAndMetadata.DataAndMetadata,
                 run_metadata: typing.Mapping[str, typing.Any],
                 units: str,
                 n_total: int,
                 instrument: swift_instrument.SwiftInstrument | None = None,
                 on_applied: typing.Callable[[typing.Any], None] | None = None,
                 min_interval_s: float = MIN_INTERVAL_S,
                 run: int = 1) -> None:
        self.__on_applied = on_applied
        self.__min_interval_s = float(min_interval_s)
        self.__interval_s = float(min_interval_s)
        self.__round_start = -1e9
        self.__round_cpu_s = 0.0
        self.__stages: list[str] = list()
        self.__dirty = False
        self.__forcing = False
        self.__finishing = False
        self.__latest_event: typing.Any = None
        self.__status_event: typing.Any = None
        self.__document_controller = document_controller
        self.__document_model = document_controller.document_model
        self.__survey_display_item = survey_display_item
        self.__shape = (int(survey_xdata.data_shape[0]), int(survey_xdata.data_shape[1]))
        self.__calibrations = list(survey_xdata.dimensional_calibrations)
        self.__units = units
        self.__n_total = max(1, int(n_total))
        self.__instrument = instrument
        self.run = int(run)
        self.__run_metadata = dict(run_metadata) | {"run": self.run}
        self.__lock = threading.RLock()
        self.__closed = False
        self.__task_queued = False
        self.__latest_maps: typing.Any = None
        self.__maps_shown: dict[str, typing.Any] = dict()
        self.__pending: list[tuple[int, tuple[int, int], float]] = list()
        self.__measured = numpy.full(self.__shape, numpy.nan, dtype=numpy.float32)
        self.__measured_count_shown = 0
        self.__positions: list[list[int]] = list()
        self.__values: list[float] = list()
        self.__steps: list[int] = list()
        self.__excluded: list[list[int]] = list()
        self.__marks = survey_marks.SurveyMarks(survey_display_item, self.__shape)
        self.__patterns = pattern_sequence.PatternSequence(instrument, self.__n_total,
                                                           run_title(PATTERNS_TITLE, self.run), self.__metadata,
                                                           self.__append)
        self.__transactions: list[typing.Any] = list()
        self.__live_items: list[DataItem.DataItem] = list()
        self.__scales: dict[str, colour_scale.ColourScale] = dict()
        self.data_group: DataGroup.DataGroup | None = None
        self.__gc_pause: gc_pause.Pause | None = None
        self.apply_count = 0
        self.apply_cpu_s = 0.0
        self.items: dict[str, DataItem.DataItem] = dict()

    def prepare(self, on_ready: typing.Callable[[], None] | None = None, *, patterns_shape: tuple[int, int] | None = None) -> None:
        """UI thread: create the run's items (one per thumbnail-idle UI tick), then call on_ready."""
        self.__gc_pause = gc_pause.Pause()  # until the run's end (__end): no full collections of Swift's objects
        steps: list[tuple[str, typing.Callable[[], bool | None]]] = [("group", self.__create_group)]
        for title in MAP_TITLES:
            steps.append((f"map {title}", lambda title=title: self.__create_map(title)))  # type: ignore[misc]
            steps.append((f"colour bar {title}", lambda title=title: self.__build_scale(title)))  # type: ignore[misc]
        if patterns_shape is not None:
            steps.append(("patterns", lambda: self.__patterns.create_piece(tuple(patterns_shape))))
        steps.append(("survey transaction", self.__begin_survey_transaction))
        steps.append(("marks", lambda: self.__marks.prepare(PIECE_BUDGET_S)))  # all marks exist before the first point
        ui_gate.when_idle(self.__document_controller, [self.__named(name, step) for name, step in steps],
                          on_done=on_ready, cancelled=lambda: self.__closed, kind="run items")

    @staticmethod
    def __named(name: str, step: typing.Callable[[], bool | None]) -> typing.Callable[[], bool | None]:
        def run() -> bool | None:
            return step()
        run.__name__ = name  # the kind of its UI task in ui_tasks.LOG (ui_gate)
        return run

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
            if getattr(event, "prediction", None) is not None:
                self.__latest_maps = event
            position = getattr(event, "position", None)
            if position is not None and getattr(event, "excluded", False):
                self.__excluded.append([int(position[0]), int(position[1])])  # all frames failed: not measured
            elif position is not None:
                self.__pending.append((int(event.step), (int(position[0]), int(position[1])), float(event.value)))
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

    # UI thread

    @property
    def graphics(self) -> list[typing.Any]:
        """Our point graphics on the survey (at most survey_marks.MAX_MARKS)."""
        return survey_marks.marks_on(self.__survey_display_item)

    @property
    def patterns_item(self) -> DataItem.DataItem | None:
        return self.__patterns.item

    @property
    def display_items(self) -> list[DisplayItem.DisplayItem]:
        result = list()
        for data_item in list(self.items.values()) + ([self.__patterns.item] if self.__patterns.item else []):
            display_item = self.__document_model.get_display_item_for_data_item(data_item)
            if display_item:
                result.append(display_item)
        return result

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
            self.__requeue()  # the items are still being created
            return None
        if not self.__stages:
            with self.__lock:
                dirty = self.__dirty
            if not dirty and not force:
                return None  # nothing new: no task until the next event
            if not force and not self.__finishing and time.perf_counter() - self.__round_start < self.__interval_s:
                self.__requeue()  # too soon: look again on the next UI tick
                return None
            with self.__lock:
                self.__dirty = False  # events from now on start another round
            self.__stages = ["measured", "marks", PREDICTION_TITLE, UNCERTAINTY_TITLE, ACQUISITION_TITLE, "patterns"]
            if self.__finishing and not force:
                self.__stages += ["final", "scales", "trim", "close", "end"]
            self.__round_start = time.perf_counter()
            self.__round_cpu_s = 0.0
            self.apply_count += 1
        self.__forcing = force
        stage: str | None = None
        while self.__stages:
            stage = self.__stages.pop(0)
            cpu_start = time.thread_time()
            try:
                self.__apply_stage(stage)
            except Exception as e:  # a user may delete an item mid-run; never let that escape into Swift
                _logger.warning("DKL live update (%s) failed: %s", stage, e)
            cpu_s = time.thread_time() - cpu_start
            self.apply_cpu_s += cpu_s
            self.__round_cpu_s += cpu_s
            if not force:
                break
        if self.__stages:
            self.__requeue()  # the next piece on the next UI tick
        else:
            self.__interval_s = min(max(self.__min_interval_s, self.__round_cpu_s / MAX_UI_FRACTION),
                                    max(self.__min_interval_s, MAX_INTERVAL_S))
            self.__requeue_if_dirty()  # events during the round: the next round after the interval
        return stage

    def __requeue(self) -> None:
        self.__queue_apply()

    def __requeue_if_dirty(self) -> None:
        with self.__lock:
            dirty = self.__dirty
        if dirty:
            self.__queue_apply()

    def finish(self, *, window_closing: bool = False) -> None:
        """Apply what is left, trim the pattern sequence to what was measured, and end the live state.

        Normally in pieces, one per UI tick (the last round, the final metadata, exact colour-scale labels, the trim,
        closing each item's transaction, the end), so that the end of a run is no long UI task either. The live state ends on later UI ticks with no thumbnail being computed
        (ending it reorders the data panel). When the window is closing: everything now, and the live state ends on
        the document model's next call-soon round, run by a window that stays open.
        """
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
            self.__patterns.trim()
            self.__final_measured()
            for scale in self.__scales.values():
                scale.finalize()
        except Exception as e:
            _logger.warning("DKL final update failed: %s", e)
        self.__end(window_closing)

    def __final_measured(self) -> None:
        self.__set_map(MEASURED_TITLE, self.__measured, self.__units, n_measured=len(self.__values),
                       positions=list(self.__positions), values=list(self.__values), steps=list(self.__steps),
                       excluded=list(self.__excluded))

    def __end(self, window_closing: bool = False) -> None:
        """Close the transactions and end the live state (see finish)."""
        with self.__lock:
            self.__closed = True
        for transaction in self.__transactions:
            transaction.close()
        self.__transactions = list()
        if self.__gc_pause is not None:
            self.__gc_pause.release()
        live_items, self.__live_items = self.__live_items, list()
        document_model = self.__document_model

        def end_live(data_item: DataItem.DataItem) -> None:
            if not data_item._closed:
                document_model.end_data_item_live(data_item)

        call_soon = getattr(document_model, "_call_soon", None)
        def end_all() -> None:
            for data_item in live_items:
                end_live(data_item)

        if window_closing and callable(call_soon):
            call_soon(end_all)
        else:
            ui_gate.when_idle(self.__document_controller, [lambda d=d: end_live(d) for d in live_items],  # type: ignore[misc]
                              kind="live state end")

    def close(self) -> None:
        self.finish()

    # creating the items

    def __create_group(self) -> None:
        data_group = DataGroup.DataGroup()
        data_group.title = f"DKL run {self.run}"
        self.__document_model.append_data_group(data_group)
        self.data_group = data_group

    def __append(self, data_item: DataItem.DataItem) -> None:
        """Append an item that is live from the start (one insertion into the data panel, no reorder later)."""
        self.__document_model.begin_data_item_live(data_item)
        self.__live_items.append(data_item)
        self.__document_model.append_data_item(data_item)
        self.__transactions.append(self.__document_model.item_transaction(data_item))
        display_item = self.__document_model.get_display_item_for_data_item(data_item)
        if self.data_group is not None and display_item is not None:
            self.data_group.append_display_item(display_item)

    def __create_map(self, title: str) -> None:
        units = "" if title == ACQUISITION_TITLE else self.__units
        empty = numpy.full(self.__shape, numpy.nan, dtype=numpy.float32)
        data_item = DataItem.new_data_item(self.__map_xdata(empty, units, title))
        data_item.title = run_title(title, self.run)
        self.__append(data_item)
        self.items[title] = data_item
        display_item = self.__document_model.get_display_item_for_data_item(data_item)
        if display_item is not None and display_item.display_data_channel:
            display_item.display_data_channel.color_map_id = COLOR_MAPS[title]
            self.__scales[title] = colour_scale.ColourScale(display_item, COLOR_MAPS[title], units)

    def __build_scale(self, title: str) -> bool:
        scale = self.__scales.get(title)
        return scale.build(PIECE_BUDGET_S) if scale is not None else True

    def __begin_survey_transaction(self) -> None:
        survey = self.__survey_display_item
        if survey is not None and not survey._closed:
            self.__transactions.append(self.__document_model.begin_display_item_transaction(survey))

    # internals

    def add_run_metadata(self, **values: typing.Any) -> None:
        """What is known only at the end (e.g. the forced points): in the metadata of every item written from now on
        (the end of a run is written in pieces over several UI ticks, so setting it on an item once would be lost)."""
        with self.__lock:
            self.__run_metadata.update(values)

    def __metadata(self, title: str, **extra: typing.Any) -> dict[str, typing.Any]:
        d = {"title": title, "kind": title, "settings": self.__run_metadata.get("settings", dict())}
        d.update({k: v for k, v in self.__run_metadata.items() if k != "settings"})
        d.update(extra)
        return {METADATA_KEY: d}

    def __map_xdata(self, data: numpy.ndarray, units: str, title: str, **extra: typing.Any) -> DataAndMetadata.DataAndMetadata:
        return DataAndMetadata.new_data_and_metadata(numpy.asarray(data, dtype=numpy.float32),
                                                     intensity_calibration=Calibration.Calibration(units=units),
                                                     dimensional_calibrations=self.__calibrations,
                                                     metadata=self.__metadata(title, **extra))

    def __set_map(self, title: str, data: numpy.ndarray | None, units: str, **extra: typing.Any) -> None:
        data_item = self.items.get(title)
        if data is None or data_item is None or data_item._closed:
            return
        data = numpy.asarray(data, dtype=numpy.float32)
        if data.shape != self.__shape:
            raise ValueError(f"{title}: map shape {data.shape} differs from the survey {self.__shape}")
        data_item.set_xdata(self.__map_xdata(data, units, title, **extra))
        scale = self.__scales.get(title)
        if scale is not None:
            scale.update(data)

    def __apply_stage(self, stage: str) -> None:
        if stage == "measured":
            self.__apply_measured()
        elif stage == "marks":
            if not self.__marks.apply(float("inf") if self.__forcing else PIECE_BUDGET_S):
                # the rest on a later UI tick, after the maps (and before the end of a finishing run)
                at = self.__stages.index("final") if "final" in self.__stages else len(self.__stages)
                self.__stages.insert(at, "marks")
        elif stage == "patterns":
            if not self.__patterns.apply(float("inf") if self.__forcing else PIECE_BUDGET_S):
                at = self.__stages.index("final") if "final" in self.__stages else len(self.__stages)
                self.__stages.insert(at, "patterns")  # the rest on the next UI tick
        elif stage == "final":
            self.__final_measured()
        elif stage == "scales":
            for scale in self.__scales.values():
                scale.finalize()
        elif stage == "trim":
            self.__patterns.trim()
        elif stage == "close":  # one transaction per UI tick: each writes its item
            if self.__transactions:
                self.__transactions.pop(0).close()
            if self.__transactions:
                self.__stages.insert(0, "close")
        elif stage == "end":
            self.__stages = list()
            self.__end()
        else:
            maps_event = self.__latest_maps  # the newest maps when this piece runs
            if maps_event is None or self.__maps_shown.get(stage) is maps_event:
                return
            self.__maps_shown[stage] = maps_event
            data = {PREDICTION_TITLE: maps_event.prediction, UNCERTAINTY_TITLE: maps_event.uncertainty,
                    ACQUISITION_TITLE: maps_event.acquisition}[stage]
            # the uncertainty map is the engine's calibrated sigma: 1 sigma of a measurement, in the scalar's units
            extra = {"quantity": "1 sigma of a measurement (recalibrated)"} if stage == UNCERTAINTY_TITLE else {}
            self.__set_map(stage, data, "" if stage == ACQUISITION_TITLE else self.__units,
                           step=int(maps_event.step), n_measured=int(maps_event.n_measured), **extra)

    def __apply_measured(self) -> None:
        with self.__lock:
            pending, self.__pending = self.__pending, list()
        if not pending:
            return
        for step, (y, x), value in pending:
            self.__measured[y, x] = value
            self.__positions.append([y, x])
            self.__values.append(value)
            self.__steps.append(step)
        self.__marks.add([(step, position) for step, position, _ in pending])
        self.__set_map(MEASURED_TITLE, self.__measured, self.__units, n_measured=len(self.__values))


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

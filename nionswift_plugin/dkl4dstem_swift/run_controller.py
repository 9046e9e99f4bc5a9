"""RunController: one per document window. Starts the engine's Experiment on a worker thread, feeds the live items,
reports status to the panel on the UI thread, and makes sure every exit path stops the camera and releases the probe.

Its parts: run_start (the checks and parts of a Start), run_worker (the worker thread, the stop, the seed watch),
captures (survey and vacuum reference), run_state (the status record, the engine's import, the microscope claim).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import typing

import numpy

from nion.swift.model import DataItem
from nion.utils import Geometry

from dkl4dstem.errors import InputError

from . import captures
from . import live_items as live_items_module
from . import run_items
from . import run_start
from . import run_state
from . import run_worker
from . import settings as settings_module
from . import swift_instrument
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

_logger = logging.getLogger(__name__)

SURVEY_TITLE = captures.SURVEY_TITLE
REFERENCE_TITLE = captures.REFERENCE_TITLE
JOIN_TIMEOUT_S = 10.0        # window close: the loop ends within one step; this bounds a hung camera driver
NAN_SEEDS_TO_STOP = run_worker.NAN_SEEDS_TO_STOP

RunStatus = run_state.RunStatus
ENGINE_LOADING = run_state.ENGINE_LOADING
load_engine_in_background = run_state.load_engine_in_background


class RunController:
    """Glue between the panel / menu actions and the engine. Public methods are for the UI thread."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 on_status: typing.Callable[[RunStatus], None] | None = None) -> None:
        self.__document_controller = document_controller
        self.__on_status = on_status
        self.__lock = threading.RLock()
        self.__closed = False
        self.status = RunStatus()
        self.experiment: typing.Any = None
        self.instrument: swift_instrument.SwiftInstrument | None = None
        self.live_items: live_items_module.LiveItems | None = None
        self.thread: threading.Thread | None = None
        self.result: typing.Any = None
        self.survey_display_item: DisplayItem.DisplayItem | None = None
        self.settings: settings_module.RunSettings | None = None
        self.__claim = run_state.InstrumentClaim()
        self.__captures = captures.Captures(document_controller, self.__claim, self.__set_status, self.__queue_ui)
        self.__last_items: dict[str, DataItem.DataItem] = dict()
        self.__seed_watch = run_worker.SeedWatch()
        self.stop_requested: tuple[float, int] | None = None  # (time, measurements) when Stop reached the loop
        self.__close_began: int | None = None

    # lifetime

    def close(self, *, window_closing: bool = False) -> None:
        """Stop a running experiment (within one step), release the hardware, end the live state. Swift closes the
        panel when its document window closes: the stop signal reaches the loop at once (an Event, not a UI task);
        the join only lets the step in flight finish so that its pattern is kept."""
        with self.__lock:
            self.__closed = True
        run_worker.stop_and_join(self.experiment, self.thread, self.instrument, self.__close_began, JOIN_TIMEOUT_S)
        self.__captures.close()
        if self.live_items is not None:
            self.live_items.finish(window_closing=window_closing)
        self.__claim.release()
        self.live_items, self.experiment, self.instrument, self.thread, self.survey_display_item = None, None, None, None, None
        self.__last_items = dict()
        self.__on_status = None

    @property
    def is_busy(self) -> bool:
        return self.status.state in ("acquiring", "running", "paused", "stopping")

    # survey and vacuum reference (captures)

    @property
    def reference(self) -> numpy.ndarray | None:
        """The last vacuum reference (for the runs' scalarizers), None before one is recorded."""
        return self.__captures.reference

    def acquire_survey(self, settings: settings_module.RunSettings,
                       on_done: typing.Callable[[DisplayItem.DisplayItem], None] | None = None) -> None:
        """Record a survey on a thread; the data item is created on the UI thread."""
        self.__captures.acquire_survey(self.is_busy, settings, lambda d: setattr(self, "survey_display_item", d), on_done)

    def acquire_reference(self, survey_display_item: DisplayItem.DisplayItem, position: Geometry.FloatPoint,
                          settings: settings_module.RunSettings) -> None:
        """Record one pattern at a normalized survey position (vacuum) on a thread."""
        self.__captures.acquire_reference(self.is_busy, survey_display_item, position, settings)

    # run

    survey_problem = staticmethod(run_start.survey_problem)  # why a survey cannot be used now (None when it can)

    def start(self, survey_display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings, *,
              park_position: Geometry.FloatPoint | None = None,
              options: settings_module.RunOptions | None = None) -> None:
        """Validate everything (before any dose; InputError with a message), create the run's items, then run the
        experiment on a worker thread. options: region mask, forced points, a session to continue (RunOptions). The
        items are created on the next thumbnail-idle UI ticks (ui_gate); the loop starts when they exist (a Stop
        before that ends the run without a measurement)."""
        options = options or settings_module.RunOptions()
        if self.is_busy:
            raise InputError("a run or acquisition is already in progress")
        plan = run_start.plan_run(survey_display_item, settings, options, park_position, self.__captures.reference,
                                  self.__captures.reference_binning)
        self.__claim.claim(plan.stem_controller)
        try:
            live_items, experiment = self.__begin_run(plan, survey_display_item, settings, options)
        except Exception:
            self.__claim.release()
            plan.instrument.dispose()
            raise
        previous_items = dict(self.__last_items)

        def launch() -> None:
            if self.experiment is experiment and not self.__closed:
                self.__launch(experiment, plan.instrument, live_items, previous_items)

        live_items.prepare(launch, patterns_shape=plan.instrument.detector_shape)

    def __begin_run(self, plan: run_start.RunPlan, survey_display_item: DisplayItem.DisplayItem,
                    settings: settings_module.RunSettings,
                    options: settings_module.RunOptions) -> tuple[live_items_module.LiveItems, typing.Any]:
        """The run's live items and experiment, and the status 'running'."""
        live_items = run_start.make_live_items(self.__document_controller, plan, survey_display_item, settings, options,
                                               self.__handle_event_applied)
        self.live_items = live_items
        self.instrument = plan.instrument
        self.settings = settings
        self.survey_display_item = survey_display_item
        self.result = None
        self.__seed_watch = run_worker.SeedWatch()
        self.experiment = run_start.make_experiment(plan, settings, options, self.__handle_event)
        self.__set_status(**dataclasses.asdict(RunStatus(state="running", message=f"Run {live_items.run}: preparing its items ...",
                                                         n_total=settings.n_total, units=plan.units, phase="seed")))
        return live_items, self.experiment

    def __launch(self, experiment: typing.Any, instrument: swift_instrument.SwiftInstrument,
                 live_items: live_items_module.LiveItems, previous_items: dict[str, DataItem.DataItem]) -> None:
        """The run's items exist: panels follow them, and the loop starts on its worker thread."""
        self.__last_items = dict(live_items.items)
        live_items_module.follow_run(self.__document_controller, previous_items, live_items)
        if not experiment.stopped:
            self.__set_status(message=f"Run {live_items.run}: seed points ...")

        def finished(result: typing.Any, error: str | None) -> None:  # worker thread
            self.__queue_ui("run finished", lambda: self.__finished(experiment, live_items, result, error))

        self.thread = run_worker.start(experiment, instrument, self.__seed_watch.log_tail, finished)

    def stop(self, message: str = "Stopping after this step ...") -> None:
        """The loop sees the stop at once (an Event); the probe is released after the frame in flight."""
        if self.experiment is not None and self.status.state in ("running", "paused"):
            instrument = self.instrument
            self.stop_requested = (time.time(), instrument.recorded_count if instrument is not None else -1)
            run_worker.signal_stop(self.experiment, instrument)
            self.__set_status(state="stopping", message=message)

    def window_closing(self) -> None:
        """The document window begins to close (its on_close, before Swift closes workspace and panels): stop now."""
        experiment, instrument, thread = self.experiment, self.instrument, self.thread
        if experiment is not None and thread is not None and thread.is_alive():
            self.__close_began = instrument.recorded_count if instrument is not None else None
            run_worker.signal_stop(experiment, instrument)

    def panel_closed(self) -> None:
        """The panel's close button (Swift only hides the panel): a run never goes on unseen."""
        if self.experiment is not None and self.status.state in ("running", "paused"):
            self.__seed_watch.reason = "the DKL panel was closed during the run"
            self.stop("Stopping: the DKL panel was closed during the run ...")

    def pause(self) -> None:
        if self.experiment is not None and self.status.state == "running":
            self.experiment.pause()
            self.__set_status(state="paused", message="Paused (camera stopped, probe parked once the step in progress ends).")

    def resume(self) -> None:
        if self.experiment is not None and self.status.state == "paused":
            self.experiment.resume()
            self.__set_status(state="running", message="Running ...")

    def map_display_items(self) -> list[DisplayItem.DisplayItem]:
        """Display items of the current (or last) run's prediction, uncertainty and acquisition maps."""
        titles = (live_items_module.PREDICTION_TITLE, live_items_module.UNCERTAINTY_TITLE, live_items_module.ACQUISITION_TITLE)
        return run_items.display_items_for(self.__document_controller.document_model, self.__last_items, titles)

    # loop thread

    def __handle_event(self, event: typing.Any) -> None:
        """Loop thread."""
        if self.__seed_watch.must_stop(event) and self.experiment is not None:
            run_worker.signal_stop(self.experiment, self.instrument)
        live_items = self.live_items
        if live_items is not None and not self.__closed:
            live_items.post(event)

    # UI thread

    def __finished(self, experiment: typing.Any, live_items: live_items_module.LiveItems, result: typing.Any, error: str | None) -> None:
        if experiment is not self.experiment:
            return
        live_items.finish()
        self.__claim.release()
        if self.instrument is not None:
            # next tick: Swift's probe graphic caught up by then; until then a stale echo is undone (ProbeGuard)
            self.__queue_ui("probe guard end", self.instrument.dispose)
        self.result = result
        after_run = self.settings.after_run if self.settings is not None else ""
        self.__set_status(**run_worker.end_status(self.status.step, result, error, self.__seed_watch.reason, after_run))
        self.thread = None

    def __handle_event_applied(self, event: typing.Any) -> None:
        changes = run_state.status_changes_for(self.status, event)
        if changes:
            self.__set_status(**changes)

    def __set_status(self, **kwargs: typing.Any) -> None:
        self.status = dataclasses.replace(self.status, **kwargs)
        if self.__on_status:
            self.__on_status(self.status)

    def __queue_ui(self, kind: str, fn: typing.Callable[[], None]) -> None:
        with self.__lock:
            if self.__closed:
                return
            ui_tasks.queue(self.__document_controller, kind, fn)

"""RunController: one per document window. Starts the engine's Experiment on a worker thread, feeds the live items,
reports status to the panel on the UI thread, and makes sure every exit path stops the camera and releases the probe.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import typing

import numpy

from nion.data import DataAndMetadata
from nion.swift.model import DataItem
from nion.utils import Geometry

from dkl4dstem.errors import InputError

from . import live_items as live_items_module
from . import settings as settings_module
from . import run_state
from . import swift_instrument
from . import ui_gate
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

_logger = logging.getLogger(__name__)

SURVEY_TITLE = "DKL survey"
REFERENCE_TITLE = "DKL vacuum reference"
JOIN_TIMEOUT_S = 10.0        # window close: the loop ends within one step; this bounds a hung camera driver
NAN_SEEDS_TO_STOP = 3        # a scalarizer that gives nothing at the first seed points stops the run there

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
        self.survey_thread: threading.Thread | None = None
        self.result: typing.Any = None
        self.reference: numpy.ndarray | None = None
        self.survey_display_item: DisplayItem.DisplayItem | None = None
        self.settings: settings_module.RunSettings | None = None
        self.__stem_key: int | None = None
        self.__last_items: dict[str, DataItem.DataItem] = dict()
        self.__reference_binning: int | None = None
        self.__seed_problem: str | None = None
        self.__nan_seeds = 0
        self.__log_tail = run_state.LastWarning()
        self.stop_requested: tuple[float, int] | None = None  # (time, measurements) when Stop reached the loop
        self.__close_began: int | None = None

    # lifetime

    def close(self, *, window_closing: bool = False) -> None:
        """Stop a running experiment (within one step), release the hardware, end the live state.

        Swift closes the panel when its document window closes: the stop signal reaches the loop at once (an Event,
        not a UI task); the join only lets the step in flight finish so that its pattern is kept."""
        with self.__lock:
            self.__closed = True
        experiment, thread, instrument = self.experiment, self.thread, self.instrument
        running = thread is not None and thread.is_alive() and instrument is not None
        at_close = instrument.recorded_count if running and instrument is not None else 0
        if self.__close_began is not None:
            at_close = self.__close_began  # the window began closing before Swift closed this panel
        if experiment is not None:
            self.__signal_stop(experiment, instrument)
        if thread is not None:
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                _logger.warning("DKL experiment thread did not end within %s s", JOIN_TIMEOUT_S)
        if (running or self.__close_began is not None) and instrument is not None:
            _logger.info("DKL: closed during a run: %d measurements when the close began, %d at the end",
                         at_close, instrument.recorded_count)
        if self.survey_thread is not None:
            self.survey_thread.join(JOIN_TIMEOUT_S)
        if instrument is not None:
            instrument.dispose()  # closes (idempotent; normally already done by Experiment.run), ends the probe guard
        if self.live_items is not None:
            self.live_items.finish(window_closing=window_closing)
        self.__release_instrument()
        self.live_items = None
        self.experiment = None
        self.instrument = None
        self.thread = None
        self.survey_thread = None
        self.survey_display_item = None
        self.__last_items = dict()
        self.__on_status = None

    @property
    def is_busy(self) -> bool:
        return self.status.state in ("acquiring", "running", "paused", "stopping")

    # survey

    def acquire_survey(self, settings: settings_module.RunSettings,
                       on_done: typing.Callable[[DisplayItem.DisplayItem], None] | None = None) -> None:
        """Record a survey on a thread; the data item is created on the UI thread."""
        if self.is_busy:
            raise InputError("a run or acquisition is in progress")
        scan = swift_instrument.find_hardware_source(settings.scan_id)
        if scan is None:
            raise InputError("choose a scan device (none is available)")
        self.__set_status(state="acquiring", message=f"Acquiring {settings.survey.size_px}x{settings.survey.size_px} survey ...")

        def acquire() -> None:
            try:
                xdata = swift_instrument.acquire_survey_xdata(scan, settings.survey)
            except Exception as e:
                message = str(e)
                self.__queue_ui("survey failed", lambda: self.__set_status(state="idle", message=f"Survey failed: {message}"))
                return

            def create() -> None:
                display_item = self.__create_survey_item(xdata, settings)
                self.__set_status(state="idle", message=f"Survey acquired ({xdata.data_shape[0]}x{xdata.data_shape[1]}, "
                                                        f"{settings.survey.fov_nm:g} nm).")
                if on_done:
                    on_done(display_item)

            # a new item in the data panel: only while no thumbnail is being computed (see ui_gate)
            self.__queue_ui("survey item", lambda: ui_gate.when_idle(self.__document_controller, [create], kind="survey item"))

        self.survey_thread = threading.Thread(target=acquire, name="dkl-survey", daemon=True)
        self.survey_thread.start()

    def __create_survey_item(self, xdata: DataAndMetadata.DataAndMetadata, settings: settings_module.RunSettings) -> DisplayItem.DisplayItem:
        metadata = dict(xdata.metadata)
        metadata[live_items_module.METADATA_KEY] = {"title": SURVEY_TITLE, "survey_settings": dataclasses.asdict(settings.survey)}
        xdata = DataAndMetadata.new_data_and_metadata(xdata.data, intensity_calibration=xdata.intensity_calibration,
                                                      dimensional_calibrations=xdata.dimensional_calibrations,
                                                      metadata=metadata, timestamp=xdata.timestamp)
        data_item = DataItem.new_data_item(xdata)
        data_item.title = f"{SURVEY_TITLE} ({settings.survey.channel})"
        document_model = self.__document_controller.document_model
        document_model.append_data_item(data_item)
        display_item = document_model.get_display_item_for_data_item(data_item)
        assert display_item is not None
        self.survey_display_item = display_item
        self.__document_controller.show_display_item(display_item, request_focus=False)
        return display_item

    # run

    def survey_problem(self, display_item: DisplayItem.DisplayItem | None, settings: settings_module.RunSettings) -> str | None:
        if display_item is None or display_item.data_item is None:
            return "no survey: acquire one or select a HAADF image"
        scan = swift_instrument.find_hardware_source(settings.scan_id)
        stem_controller = getattr(scan, "stem_controller", None) if scan else None
        if stem_controller is None:
            return "choose a scan device (none is available)"
        return swift_instrument.scan_context_problem(display_item.data_item.xdata, stem_controller)

    def start(self, survey_display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings, *,
              park_position: Geometry.FloatPoint | None = None,
              options: settings_module.RunOptions | None = None) -> None:
        """Validate everything (before any dose), create the run's items, then run the experiment on a worker thread.

        Raises InputError with a message. options: region mask, forced points, a session to continue
        (settings.RunOptions). The items are created on the next UI ticks on which no thumbnail is being computed
        (ui_gate); the loop starts when they exist. A Stop before that ends the run without a measurement."""
        options = options or settings_module.RunOptions()
        if self.is_busy:
            raise InputError("a run or acquisition is already in progress")
        problem = self.survey_problem(survey_display_item, settings)
        if problem:
            raise InputError(problem)
        data_item = survey_display_item.data_item
        assert data_item is not None and data_item.xdata is not None
        survey_xdata = data_item.xdata
        scan = swift_instrument.find_hardware_source(settings.scan_id)
        camera = swift_instrument.find_hardware_source(settings.camera_id)
        if camera is None:
            raise InputError("choose a camera (none is available)")
        stem_controller = scan.stem_controller
        survey = swift_instrument.survey_from_xdata(survey_xdata, {"data_item_uuid": str(data_item.uuid)})
        config = settings.config
        config.validate(survey.shape, options.n_excluded)
        if settings.after_run == "park" and park_position is None:
            raise InputError("after-run 'park' needs a 'park' mark on the survey (click 'Mark park')")
        if options.resume is None and self.reference is not None and not self.__reference_matches(settings):
            raise InputError("the vacuum reference was taken with another camera binning; acquire it again")
        reference = options.reference if options.resume is not None else self.reference
        from dkl4dstem.experiment import Experiment
        from dkl4dstem.scalarizers import get_scalarizer
        scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
        calibration = swift_instrument.detector_calibration_for(camera, stem_controller, reference)
        scalarizer.check_calibration(calibration)  # e.g. bragg_distance without a vacuum reference: refused here
        instrument = swift_instrument.SwiftInstrument(stem_controller, scan, camera, survey=survey,
                                                      camera_settings=settings.camera, reference=reference,
                                                      park_position=park_position if settings.after_run == "park" else None)
        units = scalarizer.units_for(calibration)
        self.__claim_instrument(stem_controller)
        try:
            document_model = self.__document_controller.document_model
            run = live_items_module.next_run_number(document_model)
            run_metadata = {"settings": settings.as_metadata(), "survey_uuid": str(data_item.uuid),
                            "survey_title": data_item.title, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "units": units, **options.as_metadata()}
            live_items = live_items_module.LiveItems(self.__document_controller, survey_display_item, survey_xdata,
                                                     run_metadata, units, settings.n_total, instrument,
                                                     on_applied=self.__handle_event_applied, run=run)
            previous_items = dict(self.__last_items)
            self.live_items = live_items
            self.instrument = instrument
            self.settings = settings
            self.survey_display_item = survey_display_item
            self.result = None
            self.__seed_problem = None
            self.__nan_seeds = 0
            experiment = Experiment(instrument, config, session_path=settings.session_path or None,
                                    on_event=self.__handle_event, exclude_mask=options.exclude_mask,
                                    resume=options.resume, session_settings=dict(
                                        plugin=settings.as_metadata(), survey_uuid=str(data_item.uuid),
                                        survey_title=data_item.title, **options.as_metadata()))
            for y, x in options.forced:
                experiment.force_next(y, x)
            self.experiment = experiment
            self.__set_status(state="running", message=f"Run {run}: preparing its items ...", step=0,
                              n_total=settings.n_total, units=units, phase="seed", last_value=math.nan,
                              best_value=math.nan, best_position=None, decision_ms=math.nan, training_ms=math.nan,
                              instrument_ms=math.nan, step_ms=math.nan)
        except Exception:
            self.__release_instrument()
            instrument.dispose()
            raise

        def launch() -> None:
            if self.experiment is not experiment or self.__closed:
                return
            self.__last_items = dict(live_items.items)
            live_items_module.follow_run(self.__document_controller, previous_items, live_items)
            if not experiment.stopped:
                self.__set_status(message=f"Run {run}: seed points ...")
            self.thread = threading.Thread(target=self.__run, args=(experiment, instrument, live_items),
                                           name="dkl-experiment", daemon=True)
            self.thread.start()

        live_items.prepare(launch, patterns_shape=instrument.detector_shape)

    def stop(self, message: str = "Stopping after this step ...") -> None:
        """The loop sees the stop at once (an Event); the probe is released after the frame in flight."""
        if self.experiment is not None and self.status.state in ("running", "paused"):
            instrument = self.instrument
            self.stop_requested = (time.time(), instrument.recorded_count if instrument is not None else -1)
            self.__signal_stop(self.experiment, instrument)
            self.__set_status(state="stopping", message=message)

    def window_closing(self) -> None:
        """The document window begins to close (its on_close, before Swift closes workspace and panels): stop now."""
        experiment, instrument, thread = self.experiment, self.instrument, self.thread
        if experiment is not None and thread is not None and thread.is_alive():
            self.__close_began = instrument.recorded_count if instrument is not None else None
            self.__signal_stop(experiment, instrument)

    def panel_closed(self) -> None:
        """The panel's close button (Swift only hides the panel): a run never goes on unseen."""
        if self.experiment is not None and self.status.state in ("running", "paused"):
            self.__seed_problem = "the DKL panel was closed during the run"
            self.stop("Stopping: the DKL panel was closed during the run ...")

    @staticmethod
    def __signal_stop(experiment: typing.Any, instrument: swift_instrument.SwiftInstrument | None) -> None:
        experiment.stop()
        if instrument is not None and not instrument.is_closed:
            threading.Thread(target=instrument.release_after_current, name="dkl-release", daemon=True).start()

    def pause(self) -> None:
        if self.experiment is not None and self.status.state == "running":
            self.experiment.pause()
            self.__set_status(state="paused", message="Paused (the probe stays where it is).")

    def resume(self) -> None:
        if self.experiment is not None and self.status.state == "paused":
            self.experiment.resume()
            self.__set_status(state="running", message="Running ...")

    def map_display_items(self) -> list[DisplayItem.DisplayItem]:
        """Display items of the current (or last) run's prediction, uncertainty and acquisition maps."""
        document_model = self.__document_controller.document_model
        result = list()
        for title in (live_items_module.PREDICTION_TITLE, live_items_module.UNCERTAINTY_TITLE, live_items_module.ACQUISITION_TITLE):
            data_item = self.__last_items.get(title)
            display_item = document_model.get_display_item_for_data_item(data_item) if data_item else None
            if display_item is not None:
                result.append(display_item)
        return result

    # vacuum reference

    def acquire_reference(self, survey_display_item: DisplayItem.DisplayItem, position: Geometry.FloatPoint,
                          settings: settings_module.RunSettings) -> None:
        """Record one pattern at a normalized survey position (vacuum) on a thread."""
        if self.is_busy:
            raise InputError("a run or acquisition is in progress")
        problem = self.survey_problem(survey_display_item, settings)
        if problem:
            raise InputError(problem)
        scan = swift_instrument.find_hardware_source(settings.scan_id)
        camera = swift_instrument.find_hardware_source(settings.camera_id)
        if camera is None:
            raise InputError("choose a camera (none is available)")
        xdata = survey_display_item.data_item.xdata
        survey = swift_instrument.survey_from_xdata(xdata)
        instrument = swift_instrument.SwiftInstrument(scan.stem_controller, scan, camera, survey=survey,
                                                      camera_settings=settings.camera)
        self.__claim_instrument(scan.stem_controller)
        self.__set_status(state="acquiring", message="Acquiring vacuum reference ...")
        height, width = survey.shape

        def acquire() -> None:
            try:
                pattern = instrument.grab_reference(position.y * height - 0.5, position.x * width - 0.5)
                error = None
            except Exception as e:
                pattern, error = None, str(e)
            finally:
                instrument.close()

            def done() -> None:
                self.__release_instrument()
                self.__queue_ui("probe guard end", instrument.dispose)  # next tick: after Swift's probe graphic caught up (ProbeGuard)
                if pattern is None:
                    self.__set_status(state="idle", message=f"Vacuum reference failed: {error}")
                    return
                self.reference = pattern
                self.__reference_binning = settings.camera.binning
                self.__create_reference_item(pattern, position, settings)
                self.__set_status(state="idle", message=f"Vacuum reference recorded ({pattern.shape[0]}x{pattern.shape[1]}) "
                                                        f"at ({position.y:.2f}, {position.x:.2f}).")

            self.__queue_ui("reference done", done)

        self.survey_thread = threading.Thread(target=acquire, name="dkl-reference", daemon=True)
        self.survey_thread.start()

    def __reference_matches(self, settings: settings_module.RunSettings) -> bool:
        return self.__reference_binning in (None, settings.camera.binning)

    def __create_reference_item(self, pattern: numpy.ndarray, position: Geometry.FloatPoint,
                                settings: settings_module.RunSettings) -> None:
        metadata = {live_items_module.METADATA_KEY: {"title": REFERENCE_TITLE, "probe_position": [position.y, position.x],
                                                     "camera_settings": dataclasses.asdict(settings.camera)}}
        data_item = DataItem.new_data_item(DataAndMetadata.new_data_and_metadata(pattern, metadata=metadata))
        data_item.title = REFERENCE_TITLE
        self.__document_controller.document_model.append_data_item(data_item)

    # loop thread

    def __handle_event(self, event: typing.Any) -> None:
        """Loop thread."""
        if event.phase == "seed" and not event.excluded and self.__nan_seeds >= 0:
            if math.isfinite(event.value):
                self.__nan_seeds = -1  # a usable value: the scalarizer works here
            else:
                self.__nan_seeds += 1
                if self.__nan_seeds >= NAN_SEEDS_TO_STOP and self.experiment is not None:
                    self.__seed_problem = (f"scalarizer gave no usable value at the first {self.__nan_seeds} points"
                                           f"{': ' + self.__log_tail.last if self.__log_tail.last else ''}")
                    self.__signal_stop(self.experiment, self.instrument)
        live_items = self.live_items
        if live_items is not None and not self.__closed:
            live_items.post(event)

    def __run(self, experiment: typing.Any, instrument: swift_instrument.SwiftInstrument,
              live_items: live_items_module.LiveItems) -> None:
        result, error = None, None
        engine_logger = logging.getLogger("dkl4dstem.experiment")
        self.__log_tail.last = ""
        engine_logger.addHandler(self.__log_tail)
        try:
            result = experiment.run()
            error = getattr(result, "error", None)
        except Exception as e:  # nothing escapes into Swift; the panel shows the message
            _logger.exception("DKL experiment failed")
            error = f"{type(e).__name__}: {e}" if not isinstance(e, InputError) else str(e)
        finally:
            engine_logger.removeHandler(self.__log_tail)
            instrument.close()
        self.__queue_ui("run finished", lambda: self.__finished(experiment, live_items, result, error))

    # UI thread

    def __finished(self, experiment: typing.Any, live_items: live_items_module.LiveItems, result: typing.Any, error: str | None) -> None:
        if experiment is not self.experiment:
            return
        live_items.finish()
        self.__release_instrument()
        if self.instrument is not None:
            # next tick: Swift's probe graphic has caught up with the release by then; until then a stale echo of a
            # measured position is undone (probe_control.ProbeGuard)
            self.__queue_ui("probe guard end", self.instrument.dispose)
        self.result = result
        n = len(result.visited) if result is not None else self.status.step
        if error:
            message = f"Failed after {n} measurements: {error}. Camera stopped, probe released."
        elif self.__seed_problem:
            message = f"Stopped after {n} measurements: {self.__seed_problem}. Camera stopped, probe released."
        elif result is not None and result.stopped:
            message = f"Stopped after {n} measurements. Camera stopped, probe {self.__probe_words()}."
        else:
            message = f"Finished: {n} measurements. Camera stopped, probe {self.__probe_words()}."
        if result is not None:
            self.__set_status(state="idle", message=message, step=n, best_value=result.best_value,
                              best_position=result.best_position)
        else:
            self.__set_status(state="idle", message=message)
        self.thread = None

    def __probe_words(self) -> str:
        return "parked" if self.settings is not None and self.settings.after_run == "park" else "released"

    def __handle_event_applied(self, event: typing.Any) -> None:
        if self.status.state not in ("running", "paused", "stopping"):
            return
        phase = "seed point" if event.phase == "seed" else "step"
        message = self.status.message if self.status.state != "running" else f"Running: {phase} {event.n_measured} of {event.n_total}"
        # training runs in the background: a step reports its time only when it swaps a new model in
        training_ms = 1000 * event.training_seconds if event.training_seconds > 0 else self.status.training_ms
        self.__set_status(step=int(event.n_measured), n_total=int(event.n_total), phase=event.phase,
                          last_value=float(event.value), best_value=float(event.best_value),
                          best_position=event.best_position, units=event.units, message=message,
                          decision_ms=1000 * event.decision_seconds, training_ms=training_ms,
                          instrument_ms=1000 * event.instrument_seconds, step_ms=1000 * event.step_seconds)

    def __set_status(self, **kwargs: typing.Any) -> None:
        self.status = dataclasses.replace(self.status, **kwargs)
        if self.__on_status:
            self.__on_status(self.status)

    def __queue_ui(self, kind: str, fn: typing.Callable[[], None]) -> None:
        with self.__lock:
            if self.__closed:
                return
            ui_tasks.queue(self.__document_controller, kind, fn)

    def __claim_instrument(self, stem_controller: typing.Any) -> None:
        with run_state.active_lock:
            if id(stem_controller) in run_state.active_instruments:
                raise InputError("another DKL run or acquisition is using this microscope (in another window)")
            run_state.active_instruments.add(id(stem_controller))
            self.__stem_key = id(stem_controller)

    def __release_instrument(self) -> None:
        with run_state.active_lock:
            if self.__stem_key is not None:
                run_state.active_instruments.discard(self.__stem_key)
                self.__stem_key = None

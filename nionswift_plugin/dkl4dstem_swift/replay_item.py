"""Replay on a 4D data item already open in Swift: the method verified inside Swift, as the paper did.

The selected item (a 2D collection of 2D diffraction patterns, e.g. from a 4D-STEM acquisition or an imported
py4DSTEM / HyperSpy file) becomes a replay instrument with its own calibrations (scan nm/px, camera mrad/px,
convergence semi-angle from the metadata); a virtual ADF image computed from it is the survey (a new data item,
named so). The loop runs on a worker thread and fills the same live maps and point graphics as a live run.
"""
from __future__ import annotations

import dataclasses
import gettext
import logging
import threading
import typing

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataItem
from nion.ui import Window

from dkl4dstem.errors import InputError

from . import live_items as live_items_module
from . import ui_gate
from . import ui_tasks

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.instruments.replay import ReplayInstrument
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

_ = gettext.gettext
_logger = logging.getLogger(__name__)

REPLAY_ACTION_ID = "dkl4dstem.replay_on_selected_4d"
JOIN_TIMEOUT_S = 30.0
_runs: dict[int, ReplayRun] = dict()  # one replay per document window


def instrument_from_data_item(data_item: DataItem.DataItem) -> ReplayInstrument:
    """A replay instrument over the item's 4D data and calibrations (InputError when it is not 4D-STEM data)."""
    from dkl4dstem.data import readers
    from dkl4dstem.data.readers import nion
    from dkl4dstem.instruments.replay import ReplayInstrument
    xdata = data_item.xdata
    title = data_item.title or "untitled"
    if xdata is None:
        raise InputError(_("Select a 4D data item (it has no data)."))
    properties = {"is_sequence": xdata.is_sequence, "collection_dimension_count": xdata.collection_dimension_count,
                  "datum_dimension_count": xdata.datum_dimension_count, "metadata": dict(xdata.metadata),
                  "dimensional_calibrations": [{"offset": c.offset, "scale": c.scale, "units": c.units}
                                               for c in xdata.dimensional_calibrations]}
    opened = nion.from_properties(xdata.data, properties, f"'{title}'", "Swift data item", None)
    readers.complete(opened, {}, None)
    return ReplayInstrument(opened.data, mrad_per_px=opened.mrad_per_px, nm_per_px=opened.nm_per_px,
                            semiangle_mrad=opened.semiangle_mrad, source=f"Swift data item '{title}'",
                            calibration_sources=opened.sources, file_format=opened.format)


class ReplayRun:
    """One replay: survey item, live maps, the experiment on a worker thread. Construct and close on the UI thread."""

    def __init__(self, document_controller: DocumentController.DocumentController, data_item: DataItem.DataItem,
                 config: ExperimentConfig, *, session_path: str | None = None,
                 on_finished: typing.Callable[[ReplayRun], None] | None = None) -> None:
        from dkl4dstem.experiment import Experiment
        from dkl4dstem.scalarizers import get_scalarizer
        self.__document_controller = document_controller
        self.__on_finished = on_finished
        self.__lock = threading.Lock()
        self.__closed = False
        self.result: typing.Any = None
        self.error: str | None = None
        self.instrument = instrument_from_data_item(data_item)
        try:
            config.validate(self.instrument.scan_shape)
            units = get_scalarizer(config.scalarizer, **config.scalarizer_params).units_for(
                self.instrument.calibration())  # refuses an uncalibrated *_mrad run before anything is created
            survey = self.instrument.survey()
            self.survey_display_item = self.__create_survey_item(data_item, survey.image)
            survey_xdata = typing.cast(DataAndMetadata.DataAndMetadata, self.survey_display_item.data_item.xdata
                                       if self.survey_display_item.data_item else None)
            metadata = {"source_uuid": str(data_item.uuid), "source_title": data_item.title, "units": units,
                        "calibration_sources": self.instrument.calibration_sources, **config.to_dict()}
            run = live_items_module.next_run_number(document_controller.document_model)
            self.live_items = live_items_module.LiveItems(document_controller, self.survey_display_item, survey_xdata,
                                                          metadata, units, config.seeds + config.steps, run=run)
            self.experiment = Experiment(self.instrument, config, session_path=session_path,
                                         on_event=self.__on_event)
        except BaseException:
            self.instrument.close()
            raise
        self.thread = threading.Thread(target=self.__run, name="dkl-replay", daemon=True)
        # the run's items are created on thumbnail-idle UI ticks (ui_gate: no deadlock with Swift's thumbnail
        # threads), then the loop starts; a Stop before that ends the replay without a measurement
        self.live_items.prepare(self.thread.start)

    def __create_survey_item(self, source: DataItem.DataItem, image: typing.Any) -> DisplayItem.DisplayItem:
        scan_calibrations = list(source.xdata.dimensional_calibrations[:2]) if source.xdata else []
        xdata = DataAndMetadata.new_data_and_metadata(
            image, intensity_calibration=Calibration.Calibration(units="counts"),
            dimensional_calibrations=scan_calibrations or None,
            metadata={"dkl4dstem": {"survey": self.instrument.survey_name, "source_uuid": str(source.uuid)}})
        data_item = DataItem.new_data_item(xdata)
        data_item.title = f"DKL survey: virtual ADF of '{source.title}'"
        document_model = self.__document_controller.document_model
        with ui_gate.thumbnails_held():
            document_model.append_data_item(data_item)
        display_item = document_model.get_display_item_for_data_item(data_item)
        assert display_item is not None
        return display_item

    @property
    def is_running(self) -> bool:
        """Preparing its items or measuring."""
        if self.thread.ident is None:
            return not self.__closed and not self.experiment.stopped
        return self.thread.is_alive()

    def stop(self) -> None:
        self.experiment.stop()

    @property
    def window_open(self) -> bool:
        return getattr(self.__document_controller, "document_model", None) is not None

    def __on_event(self, event: typing.Any) -> None:
        if not self.window_open:  # the window closed under the run: stop within one step, nothing to show
            self.experiment.stop()
            return
        self.live_items.post(event)

    def __run(self) -> None:
        try:
            self.result = self.experiment.run()
            self.error = getattr(self.result, "error", None)
        except Exception as e:  # nothing escapes into Swift
            _logger.exception("DKL replay failed")
            self.error = str(e) if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
        finally:
            self.instrument.close()
        with self.__lock:
            if not self.__closed and self.window_open:
                ui_tasks.queue(self.__document_controller, "replay finished", self.__finished)

    def __finished(self) -> None:
        self.live_items.finish()
        if self.__on_finished is not None:
            self.__on_finished(self)

    def close(self) -> None:
        """Stop within one step, wait for the thread, end the live state. Idempotent."""
        with self.__lock:
            if self.__closed:
                return
            self.__closed = True
        self.experiment.stop()
        if self.thread.ident is not None:  # started once its items existed
            self.thread.join(JOIN_TIMEOUT_S)
        self.instrument.close()
        if self.window_open:  # a closed window has closed its document's items already
            self.live_items.finish()
        _runs.pop(id(self.__document_controller), None)


def close_all() -> None:
    for run in list(_runs.values()):
        run.close()


def _config_and_panel(window: typing.Any) -> tuple[ExperimentConfig, typing.Any]:
    """The panel's settings when the DKL panel is in this window (replay waits for training: no dose is at stake)."""
    from dkl4dstem.config import ExperimentConfig
    from . import extension
    panel = extension.find_panel(window)
    if panel is None:
        return ExperimentConfig(), None
    settings = panel.handler.collect_settings()
    return dataclasses.replace(settings.config, wait_for_training=True), panel.handler


class ReplayOnSelected4DAction(Window.Action):
    action_id = REPLAY_ACTION_ID
    action_name = _("Replay DKL on selected 4D data item")

    def execute(self, context: Window.ActionContext) -> Window.ActionResult:
        window = typing.cast("DocumentController.DocumentController", context.window)
        data_item = getattr(context, "data_item", None) or window.selected_data_item
        handler = None
        try:
            if data_item is None:
                raise InputError(_("Select a 4D data item (a 2D collection of diffraction patterns) first."))
            previous = _runs.get(id(window))
            if previous is not None and previous.is_running:
                raise InputError(_("A DKL replay is already running in this window."))
            config, handler = _config_and_panel(window)

            def finished(run: ReplayRun) -> None:
                n = len(run.result.visited) if run.result is not None else 0
                text = f"Replay finished: {n} measurements" + (f" ({run.error})" if run.error else "")
                if handler is not None:
                    handler.message.value = text

            _runs[id(window)] = ReplayRun(window, data_item, config, on_finished=finished)
            if handler is not None:
                handler.message.value = f"Replaying on '{data_item.title}' (virtual ADF survey) ..."
        except InputError as e:
            if handler is not None:
                handler.message.value = f"⚠ {e}"
            self.report(Window.ReportType.WARNING, str(e))
        return Window.ActionResult(Window.ActionStatus.FINISHED)


if REPLAY_ACTION_ID not in Window.actions:  # actions are global: register once per process
    Window.register_action(ReplayOnSelected4DAction())

"""The two recordings outside a run, each on its own thread: a survey (a new data item "DKL survey (HAADF)") and a
vacuum reference (one pattern at a marked survey position, a data item "DKL vacuum reference", kept for the next
runs). The items are made on the UI thread; the owner (run_controller.RunController) says whether it is busy, shares
its microscope claim, and shows the status."""
from __future__ import annotations

import dataclasses
import threading
import typing

import numpy

from nion.data import DataAndMetadata
from nion.swift.model import DataItem
from nion.utils import Geometry

from dkl4dstem.errors import InputError

from . import run_items
from . import run_start
from . import run_state
from . import settings as settings_module
from . import swift_instrument
from . import ui_gate

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

SURVEY_TITLE = "DKL survey"
REFERENCE_TITLE = "DKL vacuum reference"
JOIN_TIMEOUT_S = 10.0        # window close: bounds a hung camera driver

QueueUI = typing.Callable[[str, typing.Callable[[], None]], None]
SetStatus = typing.Callable[..., None]


class Captures:
    """One window's survey and vacuum reference recordings, and the reference it keeps for the next runs. The owner
    checks that nothing else runs, reports through set_status and queues UI tasks through queue_ui."""

    def __init__(self, document_controller: DocumentController.DocumentController, claim: run_state.InstrumentClaim,
                 set_status: SetStatus, queue_ui: QueueUI) -> None:
        self.__document_controller = document_controller
        self.__claim = claim
        self.__set_status = set_status
        self.__queue_ui = queue_ui
        self.reference: numpy.ndarray | None = None
        self.reference_binning: int | None = None
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        """Wait for a recording in flight (bounded)."""
        if self.thread is not None:
            self.thread.join(JOIN_TIMEOUT_S)
        self.thread = None

    def acquire_survey(self, busy: bool, settings: settings_module.RunSettings,
                       on_item: typing.Callable[[DisplayItem.DisplayItem], None],
                       on_done: typing.Callable[[DisplayItem.DisplayItem], None] | None = None) -> None:
        """Record a survey on a thread; on the UI thread, make its item (while no thumbnail is being computed, see
        ui_gate), call on_item(display item), show it, report, and call on_done(display item). busy: the owner
        runs something (refused)."""
        if busy:
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
                display_item = create_survey_item(self.__document_controller.document_model, xdata, settings)
                on_item(display_item)
                self.__document_controller.show_display_item(display_item, request_focus=False)
                self.__set_status(state="idle", message=f"Survey acquired ({xdata.data_shape[0]}x{xdata.data_shape[1]}, "
                                                        f"{settings.survey.fov_nm:g} nm).")
                if on_done:
                    on_done(display_item)

            # a new item in the data panel: only while no thumbnail is being computed (see ui_gate)
            self.__queue_ui("survey item", lambda: ui_gate.when_idle(self.__document_controller, [create], kind="survey item"))

        self.thread = threading.Thread(target=acquire, name="dkl-survey", daemon=True)
        self.thread.start()

    def acquire_reference(self, busy: bool, survey_display_item: DisplayItem.DisplayItem,
                          position: Geometry.FloatPoint, settings: settings_module.RunSettings) -> None:
        """Record one pattern at a normalized survey position (vacuum) on a thread; keep it as the reference."""
        if busy:
            raise InputError("a run or acquisition is in progress")
        scan, camera = run_start.devices_for(survey_display_item, settings)
        data_item = survey_display_item.data_item
        assert data_item is not None and data_item.xdata is not None  # devices_for checked the survey
        survey = swift_instrument.survey_from_xdata(data_item.xdata)
        instrument = swift_instrument.SwiftInstrument(scan.stem_controller, scan, camera, survey=survey,
                                                      camera_settings=settings.camera)
        self.__claim.claim(scan.stem_controller)
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
            self.__queue_ui("reference done", lambda: done(pattern, error))

        def done(pattern: numpy.ndarray | None, error: str | None) -> None:
            self.__claim.release()
            self.__queue_ui("probe guard end", instrument.dispose)  # next tick: after Swift's probe graphic caught up (ProbeGuard)
            if pattern is None:
                self.__set_status(state="idle", message=f"Vacuum reference failed: {error}")
                return
            self.reference = pattern
            self.reference_binning = settings.camera.binning
            create_reference_item(self.__document_controller.document_model, pattern, position, settings)
            self.__set_status(state="idle", message=f"Vacuum reference recorded ({pattern.shape[0]}x{pattern.shape[1]}) "
                                                    f"at ({position.y:.2f}, {position.x:.2f}).")

        self.thread = threading.Thread(target=acquire, name="dkl-reference", daemon=True)
        self.thread.start()


def create_survey_item(document_model: typing.Any, xdata: DataAndMetadata.DataAndMetadata,
                       settings: settings_module.RunSettings) -> DisplayItem.DisplayItem:
    metadata = dict(xdata.metadata)
    metadata[run_items.METADATA_KEY] = {"title": SURVEY_TITLE, "survey_settings": dataclasses.asdict(settings.survey)}
    xdata = DataAndMetadata.new_data_and_metadata(xdata.data, intensity_calibration=xdata.intensity_calibration,
                                                  dimensional_calibrations=xdata.dimensional_calibrations,
                                                  metadata=metadata, timestamp=xdata.timestamp)
    data_item = DataItem.new_data_item(xdata)
    data_item.title = f"{SURVEY_TITLE} ({settings.survey.channel})"
    with ui_gate.thumbnails_held():
        document_model.append_data_item(data_item)
    display_item = document_model.get_display_item_for_data_item(data_item)
    assert display_item is not None
    return display_item


def create_reference_item(document_model: typing.Any, pattern: numpy.ndarray, position: Geometry.FloatPoint,
                          settings: settings_module.RunSettings) -> None:
    metadata = {run_items.METADATA_KEY: {"title": REFERENCE_TITLE, "probe_position": [position.y, position.x],
                                         "camera_settings": dataclasses.asdict(settings.camera)}}
    data_item = DataItem.new_data_item(DataAndMetadata.new_data_and_metadata(pattern, metadata=metadata))
    data_item.title = REFERENCE_TITLE
    with ui_gate.thumbnails_held():
        document_model.append_data_item(data_item)

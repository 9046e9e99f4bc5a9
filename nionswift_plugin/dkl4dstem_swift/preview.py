"""Preview: one pattern at a chosen survey pixel and its scalar value, before any run (is the scalarizer right?).

The pattern is grabbed on a worker thread (the probe moves, one frame, camera stopped, probe released); the value and
a "DKL preview pattern" data item appear on the UI thread. Nothing else is measured.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import typing

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataItem

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError

from . import live_items as live_items_module
from . import region as region_module
from . import run_controller
from . import run_state
from . import swift_instrument
from . import ui_gate
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from . import settings as settings_module

_logger = logging.getLogger(__name__)

PREVIEW_TITLE = "DKL preview pattern"


@dataclasses.dataclass(frozen=True)
class PreviewResult:
    pixel: tuple[int, int]
    position_nm: tuple[float, float] | None
    value: float
    units: str
    scalarizer: str
    pattern: numpy.ndarray | None
    error: str | None = None

    @property
    def text(self) -> str:
        where = f"({self.pixel[0]}, {self.pixel[1]}){region_module.format_nm(self.position_nm)}"
        if self.error:
            return f"Preview at {where} failed: {self.error}"
        value = f"{self.value:.4g} {self.units}".strip() if math.isfinite(self.value) else "no usable value (NaN)"
        return f"Preview {self.scalarizer} at {where}: {value}"


class Preview:
    """One preview at a time per panel. start() on the UI thread; on_done(result) is called on the UI thread."""

    def __init__(self, document_controller: DocumentController.DocumentController) -> None:
        self.__document_controller = document_controller
        self.__thread: threading.Thread | None = None
        self.__data_item: DataItem.DataItem | None = None
        self.__closed = False
        self.result: PreviewResult | None = None

    @property
    def is_busy(self) -> bool:
        return self.__thread is not None and self.__thread.is_alive()

    def close(self) -> None:
        self.__closed = True
        if self.__thread is not None:
            self.__thread.join(10.0)  # at most one frame
        self.__thread = None

    def start(self, controller: run_controller.RunController, survey_display_item: DisplayItem.DisplayItem,
              pixel: tuple[int, int], settings: settings_module.RunSettings,
              on_done: typing.Callable[[PreviewResult], None]) -> None:
        """Check everything (InputError), then grab one pattern at the survey pixel on a worker thread."""
        if self.is_busy or controller.is_busy:
            raise InputError("a run or acquisition is in progress")
        problem = controller.survey_problem(survey_display_item, settings)
        if problem:
            raise InputError(problem)
        from dkl4dstem.scalarizers import get_scalarizer
        config = settings.config
        scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
        scalarizer.check_calibration(DetectorCalibration(reference=controller.reference))  # before any dose
        scan = swift_instrument.find_hardware_source(settings.scan_id)
        camera = swift_instrument.find_hardware_source(settings.camera_id)
        if camera is None:
            raise InputError("choose a camera (none is available)")
        data_item = survey_display_item.data_item
        xdata = data_item.xdata if data_item is not None else None
        if scan is None or xdata is None:
            raise InputError("no survey or scan device: acquire a survey first")
        survey = swift_instrument.survey_from_xdata(xdata)
        instrument = swift_instrument.SwiftInstrument(scan.stem_controller, scan, camera, survey=survey,
                                                      camera_settings=settings.camera, reference=controller.reference)
        key = _claim(scan.stem_controller)
        nm = region_module.position_nm(pixel, xdata.dimensional_calibrations)

        def measure() -> None:
            try:
                pattern = instrument.grab_reference(float(pixel[0]), float(pixel[1]))
                calibration = instrument.calibration()
                units = scalarizer.units_for(calibration)
                value = float(scalarizer(pattern, calibration))
                result = PreviewResult(pixel, nm, value, units, scalarizer.name, pattern)
            except Exception as e:  # the panel shows it; nothing escapes into Swift
                result = PreviewResult(pixel, nm, math.nan, "", scalarizer.name, None, error=str(e) or type(e).__name__)
            finally:
                instrument.close()
                _release(key)
            if not self.__closed:
                dc = self.__document_controller
                ui_tasks.queue(dc, "preview done", lambda: self.__done(result, on_done))
                # a tick later: stop guarding the released probe against Swift's stale echoes (ProbeGuard)
                ui_tasks.queue(dc, "probe guard end", lambda: ui_tasks.queue(dc, "probe guard end", instrument.dispose))

        self.__thread = threading.Thread(target=measure, name="dkl-preview", daemon=True)
        self.__thread.start()

    def __done(self, result: PreviewResult, on_done: typing.Callable[[PreviewResult], None]) -> None:
        if self.__closed:
            return
        self.result = result
        if result.pattern is not None:
            try:
                self.__show(result)
            except Exception as e:
                _logger.warning("DKL preview item failed: %s", e)
        on_done(result)

    def __show(self, result: PreviewResult) -> None:
        assert result.pattern is not None
        metadata = {live_items_module.METADATA_KEY: {
            "title": PREVIEW_TITLE, "position": list(result.pixel), "position_nm": result.position_nm,
            "scalarizer": result.scalarizer, "value": result.value if math.isfinite(result.value) else None,
            "units": result.units}}
        xdata = DataAndMetadata.new_data_and_metadata(result.pattern, metadata=metadata,
                                                      intensity_calibration=Calibration.Calibration(units="counts"))
        data_item = self.__data_item
        with ui_gate.thumbnails_held():  # a new item, or a changed one moving to the top of the data panel
            if data_item is None or data_item._closed or data_item.container is None:
                data_item = DataItem.new_data_item(xdata)
                self.__document_controller.document_model.append_data_item(data_item)
                self.__data_item = data_item
            else:
                data_item.set_xdata(xdata)
        data_item.title = f"{PREVIEW_TITLE} ({result.pixel[0]}, {result.pixel[1]})"

    @property
    def data_item(self) -> DataItem.DataItem | None:
        return self.__data_item


def _claim(stem_controller: typing.Any) -> int:
    """The microscope is used by one DKL acquisition at a time (run_state's registry)."""
    with run_state.active_lock:
        if id(stem_controller) in run_state.active_instruments:
            raise InputError("another DKL run or acquisition is using this microscope")
        run_state.active_instruments.add(id(stem_controller))
    return id(stem_controller)


def _release(key: int) -> None:
    with run_state.active_lock:
        run_state.active_instruments.discard(key)

"""Live data items and survey marks for one run.

The loop thread only calls post() (store the newest event, append the measured point, queue at most one UI task).
The queued UI task applies the newest state: maps, measured values, point graphics, raw patterns. So the UI never
slows the loop, and a burst of events becomes one update. Updates are also rate limited: a task that comes too soon
re-queues itself (a cheap check per UI tick) instead of redrawing, because every data item change costs Swift
display, histogram and thumbnail work (about 10 ms of UI-thread CPU per map here) that competes with the loop for
the CPU and the GIL. The interval adapts (MIN_INTERVAL_S .. MAX_INTERVAL_S) so that live updates use about
MAX_UI_FRACTION of the UI thread. The status line still follows every event (a few label texts).
"""
from __future__ import annotations

import logging
import threading
import time
import typing

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataItem
from nion.swift.model import Graphics
from nion.utils import Geometry

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from . import swift_instrument

_logger = logging.getLogger(__name__)

PREDICTION_TITLE = "DKL prediction"
UNCERTAINTY_TITLE = "DKL uncertainty"
ACQUISITION_TITLE = "DKL acquisition"
MEASURED_TITLE = "DKL measured"
PATTERNS_TITLE = "DKL measured patterns"
MAP_TITLES = (PREDICTION_TITLE, UNCERTAINTY_TITLE, ACQUISITION_TITLE, MEASURED_TITLE)
METADATA_KEY = "dkl4dstem"

POINT_COLOR = "#FF0"      # visited points
NEWEST_COLOR = "#F00"     # the newest point
POINT_LABEL_PREFIX = ""   # point labels are the step number
MIN_INTERVAL_S = 1.0      # at most one live update per second ...
MAX_UI_FRACTION = 0.03    # ... and at most 3 % of the UI thread spent applying them (Swift works as much again on threads)
MAX_INTERVAL_S = 3.0      # ... but never slower than one update every 3 s (each point graphic costs ~5 ms anyway)


class LiveItems:
    """Owns the run's data items. Construct, apply and finish on the UI thread; post() from any thread."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 survey_display_item: DisplayItem.DisplayItem | None,
                 survey_xdata: DataAndMetadata.DataAndMetadata,
                 run_metadata: typing.Mapping[str, typing.Any],
                 units: str,
                 n_total: int,
                 instrument: swift_instrument.SwiftInstrument | None = None,
                 on_applied: typing.Callable[[typing.Any], None] | None = None,
                 min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.__on_applied = on_applied
        self.__min_interval_s = float(min_interval_s)
        self.__interval_s = float(min_interval_s)
        self.__last_apply = 0.0
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
        self.__run_metadata = dict(run_metadata)
        self.__lock = threading.RLock()
        self.__closed = False
        self.__task_queued = False
        self.__latest_maps: typing.Any = None
        self.__pending: list[tuple[int, tuple[int, int], float]] = list()
        self.__measured = numpy.full(self.__shape, numpy.nan, dtype=numpy.float32)
        self.__positions: list[list[int]] = list()
        self.__values: list[float] = list()
        self.__steps: list[int] = list()
        self.__excluded: list[list[int]] = list()
        self.__graphics: list[Graphics.PointGraphic] = list()
        self.__patterns_applied = 0
        self.__pattern_positions: list[list[int]] = list()
        self.__pattern_probe_positions: list[list[float]] = list()
        self.__pattern_timestamps: list[float] = list()
        self.__patterns_item: DataItem.DataItem | None = None
        self.__camera_metadata: dict[str, typing.Any] = dict()
        self.__patterns_shape: tuple[int, ...] | None = None
        self.__transactions: list[typing.Any] = list()
        self.__live_items: list[DataItem.DataItem] = list()
        self.apply_count = 0
        self.apply_cpu_s = 0.0
        self.items: dict[str, DataItem.DataItem] = dict()
        empty = numpy.full(self.__shape, numpy.nan, dtype=numpy.float32)
        for title, item_units in ((PREDICTION_TITLE, units), (UNCERTAINTY_TITLE, units), (ACQUISITION_TITLE, ""),
                                  (MEASURED_TITLE, units)):
            data_item = DataItem.new_data_item(self.__map_xdata(empty, item_units, title))
            data_item.title = title
            self.__document_model.append_data_item(data_item)
            self.__begin_live(data_item)
            self.items[title] = data_item
        self.__set_color_map(PREDICTION_TITLE, "viridis")
        self.__set_color_map(UNCERTAINTY_TITLE, "magma")
        self.__set_color_map(ACQUISITION_TITLE, "plasma")
        self.__set_color_map(MEASURED_TITLE, "viridis")

    # any thread

    def post(self, event: typing.Any) -> None:
        """Called on the loop thread: remember the newest state and queue one UI update if none is queued."""
        queue = False
        with self.__lock:
            if self.__closed:
                return
            self.__latest_event = event
            if getattr(event, "prediction", None) is not None:
                self.__latest_maps = event
            position = getattr(event, "position", None)
            if position is not None and getattr(event, "excluded", False):
                self.__excluded.append([int(position[0]), int(position[1])])  # all frames failed: not measured
            elif position is not None:
                self.__pending.append((int(event.step), (int(position[0]), int(position[1])), float(event.value)))
            if not self.__task_queued:
                self.__task_queued = True
                queue = True
        if queue:
            self.__document_controller.queue_task(self.apply)

    # UI thread

    @property
    def graphics(self) -> list[Graphics.PointGraphic]:
        return list(self.__graphics)

    @property
    def patterns_item(self) -> DataItem.DataItem | None:
        return self.__patterns_item

    @property
    def display_items(self) -> list[DisplayItem.DisplayItem]:
        result = list()
        for data_item in list(self.items.values()) + ([self.__patterns_item] if self.__patterns_item else []):
            display_item = self.__document_model.get_display_item_for_data_item(data_item)
            if display_item:
                result.append(display_item)
        return result

    def apply(self, force: bool = False) -> None:
        """UI thread: the status follows every event; data items and graphics at most every interval."""
        with self.__lock:
            if self.__closed:
                return
            latest_event = self.__latest_event
        if latest_event is not None and latest_event is not self.__status_event and self.__on_applied:
            self.__status_event = latest_event
            self.__on_applied(latest_event)  # a few label texts: cheap
        if not force and time.perf_counter() - self.__last_apply < self.__interval_s:
            self.__document_controller.queue_task(self.apply)  # too soon: look again on the next UI tick
            return
        self.__last_apply = time.perf_counter()
        with self.__lock:
            self.__task_queued = False
            maps_event = self.__latest_maps
            self.__latest_maps = None
            pending = self.__pending
            self.__pending = list()
        cpu_start = time.thread_time()
        try:
            self.__apply(maps_event, pending)
        except Exception as e:  # a user may delete an item mid-run; never let that escape into Swift
            _logger.warning("DKL live update failed: %s", e)
        cpu_s = time.thread_time() - cpu_start
        self.apply_cpu_s += cpu_s
        self.__interval_s = min(max(self.__min_interval_s, cpu_s / MAX_UI_FRACTION), max(self.__min_interval_s, MAX_INTERVAL_S))

    def finish(self, *, window_closing: bool = False) -> None:
        """Apply what is left, trim the pattern sequence to what was measured, and end the live state.

        window_closing: the document window is being closed (its panels are closing). The data is still written
        (the transactions end now); ending the live state, which makes Swift re-sort the data panels, is left to the
        document model's next call-soon round, run by a window that stays open (none: the document closes anyway).
        """
        self.apply(force=True)
        with self.__lock:
            if self.__closed:
                return
            self.__closed = True
        try:
            self.__trim_patterns()
            self.__set_map(MEASURED_TITLE, self.__measured, self.__units, n_measured=len(self.__values),
                           positions=list(self.__positions), values=list(self.__values), steps=list(self.__steps),
                           excluded=list(self.__excluded))
        except Exception as e:
            _logger.warning("DKL final update failed: %s", e)
        for transaction in self.__transactions:
            transaction.close()
        self.__transactions = list()
        live_items, self.__live_items = self.__live_items, list()
        document_model = self.__document_model

        def end_live() -> None:
            for data_item in live_items:
                if not data_item._closed:
                    document_model.end_data_item_live(data_item)

        call_soon = getattr(document_model, "_call_soon", None)
        if window_closing and callable(call_soon):
            call_soon(end_live)
        else:
            end_live()

    def close(self) -> None:
        self.finish()

    # internals

    def __begin_live(self, data_item: DataItem.DataItem) -> None:
        self.__document_model.begin_data_item_live(data_item)
        self.__live_items.append(data_item)
        self.__transactions.append(self.__document_model.item_transaction(data_item))

    def __metadata(self, title: str, **extra: typing.Any) -> dict[str, typing.Any]:
        d = {"title": title, "settings": self.__run_metadata.get("settings", dict())}
        d.update({k: v for k, v in self.__run_metadata.items() if k != "settings"})
        d.update(extra)
        return {METADATA_KEY: d}

    def __map_xdata(self, data: numpy.ndarray, units: str, title: str, **extra: typing.Any) -> DataAndMetadata.DataAndMetadata:
        return DataAndMetadata.new_data_and_metadata(numpy.asarray(data, dtype=numpy.float32),
                                                     intensity_calibration=Calibration.Calibration(units=units),
                                                     dimensional_calibrations=self.__calibrations,
                                                     metadata=self.__metadata(title, **extra))

    def __set_color_map(self, title: str, color_map_id: str) -> None:
        display_item = self.__document_model.get_display_item_for_data_item(self.items[title])
        if display_item and display_item.display_data_channel:
            display_item.display_data_channel.color_map_id = color_map_id

    def __set_map(self, title: str, data: numpy.ndarray | None, units: str, **extra: typing.Any) -> None:
        data_item = self.items.get(title)
        if data is None or data_item is None or data_item._closed:
            return
        data = numpy.asarray(data, dtype=numpy.float32)
        if data.shape != self.__shape:
            raise ValueError(f"{title}: map shape {data.shape} differs from the survey {self.__shape}")
        data_item.set_xdata(self.__map_xdata(data, units, title, **extra))

    def __apply(self, maps_event: typing.Any, pending: list[tuple[int, tuple[int, int], float]]) -> None:
        self.apply_count += 1
        if maps_event is not None:
            extra = {"step": int(maps_event.step), "n_measured": int(maps_event.n_measured)}
            self.__set_map(PREDICTION_TITLE, maps_event.prediction, self.__units, **extra)
            # the engine's calibrated sigma: the standard deviation of a measurement there, in the scalar's units
            self.__set_map(UNCERTAINTY_TITLE, maps_event.uncertainty, self.__units, **extra,
                           quantity="1 sigma of a measurement (recalibrated)")
            self.__set_map(ACQUISITION_TITLE, maps_event.acquisition, "", **extra)
        if pending:
            for step, (y, x), value in pending:
                self.__measured[y, x] = value
                self.__positions.append([y, x])
                self.__values.append(value)
                self.__steps.append(step)
            self.__set_map(MEASURED_TITLE, self.__measured, self.__units, n_measured=len(self.__values))
            self.__add_graphics(pending)
        self.__apply_patterns()

    def __add_graphics(self, pending: list[tuple[int, tuple[int, int], float]]) -> None:
        display_item = self.__survey_display_item
        if display_item is None or display_item._closed:
            return
        height, width = self.__shape
        with display_item.display_item_changes():  # one notification for the batch, not one per point
            if self.__graphics and self.__graphics[-1].container is display_item:
                self.__graphics[-1].stroke_color = POINT_COLOR
            for index, (step, (y, x), value) in enumerate(pending):
                graphic = Graphics.PointGraphic()
                graphic.position = Geometry.FloatPoint(y=(y + 0.5) / height, x=(x + 0.5) / width)
                graphic.label = f"{POINT_LABEL_PREFIX}{step}"
                graphic.stroke_color = NEWEST_COLOR if index == len(pending) - 1 else POINT_COLOR
                graphic.is_bounds_constrained = True
                display_item.add_graphic(graphic)
                self.__graphics.append(graphic)

    def __apply_patterns(self) -> None:
        instrument = self.__instrument
        if instrument is None:
            return
        new = instrument.recorded_since(self.__patterns_applied)
        if not new:
            return
        if self.__patterns_item is None:
            self.__create_patterns_item(new[0])
        data_item = self.__patterns_item
        assert data_item is not None
        new = [r for r in new if r.pattern.shape == self.__patterns_shape]  # a camera change mid-run is not stacked
        start = self.__patterns_applied
        stop = min(start + len(new), self.__n_total)
        count = stop - start
        if count <= 0:
            return
        for record in new[:count]:
            self.__pattern_positions.append(list(record.position))
            self.__pattern_probe_positions.append(list(record.probe_position))
            self.__pattern_timestamps.append(float(record.metadata.get("timestamp", 0.0)))
        block = numpy.stack([r.pattern for r in new[:count]])
        xdata = DataAndMetadata.new_data_and_metadata(block)
        data_metadata = self.__patterns_data_metadata(data_item, stop)
        data_item.set_data_and_metadata_partial(data_metadata, xdata, [slice(0, count)] + [slice(None)] * 2,
                                                [slice(start, stop)] + [slice(None)] * 2, update_metadata=True)
        self.__patterns_applied = stop

    def __patterns_metadata(self, n: int) -> dict[str, typing.Any]:
        return self.__metadata(PATTERNS_TITLE, n_measured=n, positions=list(self.__pattern_positions),
                               probe_positions=list(self.__pattern_probe_positions),
                               timestamps=list(self.__pattern_timestamps), camera=dict(self.__camera_metadata))

    def __patterns_data_metadata(self, data_item: DataItem.DataItem, n: int) -> DataAndMetadata.DataMetadata:
        xdata = data_item.xdata
        assert xdata is not None
        return DataAndMetadata.DataMetadata(data_shape_and_dtype=(xdata.data_shape, xdata.data_dtype),
                                            intensity_calibration=xdata.intensity_calibration,
                                            dimensional_calibrations=xdata.dimensional_calibrations,
                                            metadata=self.__patterns_metadata(n),
                                            data_descriptor=xdata.data_descriptor)

    def __create_patterns_item(self, first: swift_instrument.RecordedPattern) -> None:
        self.__patterns_shape = tuple(first.pattern.shape)
        self.__camera_metadata = {k: v for k, v in first.metadata.items() if k in ("exposure_ms", "binning", "camera")}
        calibrations = [Calibration.Calibration()] + self.__camera_calibrations(first.pattern.shape)
        data = numpy.zeros((self.__n_total,) + tuple(first.pattern.shape), dtype=numpy.float32)
        xdata = DataAndMetadata.new_data_and_metadata(
            data, intensity_calibration=Calibration.Calibration(units="counts"), dimensional_calibrations=calibrations,
            data_descriptor=DataAndMetadata.DataDescriptor(True, 0, 2), metadata=self.__patterns_metadata(0))
        data_item = DataItem.new_data_item(xdata)
        data_item.title = PATTERNS_TITLE
        self.__document_model.append_data_item(data_item)
        self.__begin_live(data_item)
        self.__patterns_item = data_item

    def __camera_calibrations(self, shape: tuple[int, ...]) -> list[Calibration.Calibration]:
        camera = getattr(self.__instrument, "camera", None)
        try:
            calibrations = list(camera.get_camera_calibrations(camera.get_current_frame_parameters())) if camera else []
        except Exception:
            calibrations = []
        if len(calibrations) != len(shape):
            calibrations = [Calibration.Calibration() for _ in shape]
        return calibrations

    def __trim_patterns(self) -> None:
        data_item = self.__patterns_item
        if data_item is None or data_item._closed:
            return
        n = self.__patterns_applied
        xdata = data_item.xdata
        if xdata is None or n == xdata.data_shape[0]:
            return
        data_item.set_xdata(DataAndMetadata.new_data_and_metadata(
            numpy.array(xdata.data[:n]), intensity_calibration=xdata.intensity_calibration,
            dimensional_calibrations=xdata.dimensional_calibrations, data_descriptor=xdata.data_descriptor,
            metadata=self.__patterns_metadata(n)))

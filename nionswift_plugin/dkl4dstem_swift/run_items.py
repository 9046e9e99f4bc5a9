"""The data items of one run: a data group "DKL run 3" with the prediction, uncertainty, acquisition and measured
maps (and the raw patterns, via pattern_sequence), each titled with the run number ("DKL prediction #3"), live from
the start (one insertion into the data panel, no reorder later), written inside item transactions until the end.

RunItems makes them (one piece per call, on the UI thread, see live_items.LiveItems.prepare), writes the maps, and
ends the live state at the end of the run.
"""
from __future__ import annotations

import threading
import typing

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataGroup
from nion.swift.model import DataItem

from . import colour_scale
from . import pattern_sequence
from . import ui_gate

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

PREDICTION_TITLE = "DKL prediction"
UNCERTAINTY_TITLE = "DKL uncertainty"
ACQUISITION_TITLE = "DKL acquisition"
MEASURED_TITLE = "DKL measured"
PATTERNS_TITLE = pattern_sequence.PATTERNS_TITLE
MAP_TITLES = (PREDICTION_TITLE, UNCERTAINTY_TITLE, ACQUISITION_TITLE, MEASURED_TITLE)
COLOR_MAPS = {PREDICTION_TITLE: "viridis", UNCERTAINTY_TITLE: "magma", ACQUISITION_TITLE: "plasma",
              MEASURED_TITLE: "viridis"}
METADATA_KEY = "dkl4dstem"


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


def display_items_for(document_model: typing.Any, items: typing.Mapping[str, DataItem.DataItem],
                      titles: typing.Sequence[str]) -> list[DisplayItem.DisplayItem]:
    """The display items of those of `items` with these titles that still exist."""
    result = list()
    for title in titles:
        data_item = items.get(title)
        display_item = document_model.get_display_item_for_data_item(data_item) if data_item else None
        if display_item is not None:
            result.append(display_item)
    return result


class RunItems:
    """The run's group, map items, colour scales and transactions. UI thread, except add_run_metadata (any)."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 survey_display_item: DisplayItem.DisplayItem | None,
                 survey_xdata: DataAndMetadata.DataAndMetadata,
                 run_metadata: typing.Mapping[str, typing.Any], units: str, run: int) -> None:
        self.__document_controller = document_controller
        self.__document_model = document_controller.document_model
        self.__survey_display_item = survey_display_item
        self.shape = (int(survey_xdata.data_shape[0]), int(survey_xdata.data_shape[1]))
        self.__calibrations = list(survey_xdata.dimensional_calibrations)
        self.units = units
        self.run = int(run)
        self.__lock = threading.Lock()
        self.__run_metadata = dict(run_metadata) | {"run": self.run}
        self.__transactions: list[typing.Any] = list()
        self.__live_items: list[DataItem.DataItem] = list()
        self.__scales: dict[str, colour_scale.ColourScale] = dict()
        self.data_group: DataGroup.DataGroup | None = None
        self.items: dict[str, DataItem.DataItem] = dict()

    def display_items(self, extra: typing.Sequence[DataItem.DataItem] = ()) -> list[DisplayItem.DisplayItem]:
        """The display items of the maps (and of `extra`, e.g. the patterns) that exist."""
        result = list()
        for data_item in list(self.items.values()) + list(extra):
            display_item = self.__document_model.get_display_item_for_data_item(data_item)
            if display_item:
                result.append(display_item)
        return result

    # creating the items (one per UI tick)

    def create_group(self) -> None:
        data_group = DataGroup.DataGroup()
        data_group.title = f"DKL run {self.run}"
        self.__document_model.append_data_group(data_group)
        self.data_group = data_group

    def append(self, data_item: DataItem.DataItem) -> None:
        """Append an item that is live from the start (one insertion into the data panel, no reorder later)."""
        self.__document_model.begin_data_item_live(data_item)
        self.__live_items.append(data_item)
        self.__document_model.append_data_item(data_item)
        self.__transactions.append(self.__document_model.item_transaction(data_item))
        display_item = self.__document_model.get_display_item_for_data_item(data_item)
        if self.data_group is not None and display_item is not None:
            self.data_group.append_display_item(display_item)

    def create_map(self, title: str) -> None:
        units = "" if title == ACQUISITION_TITLE else self.units
        empty = numpy.full(self.shape, numpy.nan, dtype=numpy.float32)
        data_item = DataItem.new_data_item(self.__map_xdata(empty, units, title))
        data_item.title = run_title(title, self.run)
        self.append(data_item)
        self.items[title] = data_item
        display_item = self.__document_model.get_display_item_for_data_item(data_item)
        if display_item is not None and display_item.display_data_channel:
            display_item.display_data_channel.color_map_id = COLOR_MAPS[title]
            self.__scales[title] = colour_scale.ColourScale(display_item, COLOR_MAPS[title], units)

    def build_scale(self, title: str, budget_s: float) -> bool:
        scale = self.__scales.get(title)
        return scale.build(budget_s) if scale is not None else True

    def begin_survey_transaction(self) -> None:
        survey = self.__survey_display_item
        if survey is not None and not survey._closed:
            self.__transactions.append(self.__document_model.begin_display_item_transaction(survey))

    # writing

    def add_run_metadata(self, **values: typing.Any) -> None:
        """What is known only at the end (e.g. the forced points): in the metadata of every item written from now on
        (the end of a run is written in pieces over several UI ticks, so setting it on an item once would be lost)."""
        with self.__lock:
            self.__run_metadata.update(values)

    def metadata(self, title: str, **extra: typing.Any) -> dict[str, typing.Any]:
        with self.__lock:
            run_metadata = dict(self.__run_metadata)
        d = {"title": title, "kind": title, "settings": run_metadata.get("settings", dict())}
        d.update({k: v for k, v in run_metadata.items() if k != "settings"})
        d.update(extra)
        return {METADATA_KEY: d}

    def __map_xdata(self, data: numpy.ndarray, units: str, title: str, **extra: typing.Any) -> DataAndMetadata.DataAndMetadata:
        return DataAndMetadata.new_data_and_metadata(numpy.asarray(data, dtype=numpy.float32),
                                                     intensity_calibration=Calibration.Calibration(units=units),
                                                     dimensional_calibrations=self.__calibrations,
                                                     metadata=self.metadata(title, **extra))

    def set_map(self, title: str, data: numpy.ndarray | None, units: str, **extra: typing.Any) -> None:
        data_item = self.items.get(title)
        if data is None or data_item is None or data_item._closed:
            return
        data = numpy.asarray(data, dtype=numpy.float32)
        if data.shape != self.shape:
            raise ValueError(f"{title}: map shape {data.shape} differs from the survey {self.shape}")
        data_item.set_xdata(self.__map_xdata(data, units, title, **extra))
        scale = self.__scales.get(title)
        if scale is not None:
            scale.update(data)

    def finalize_scales(self) -> None:
        """Exact labels for the final range."""
        for scale in self.__scales.values():
            scale.finalize()

    # the end

    def close_one_transaction(self) -> tuple[bool, str]:
        """Close one transaction (each writes its item); True while more are left, and the item's title."""
        title = ""
        if self.__transactions:
            transaction = self.__transactions.pop(0)
            item = getattr(transaction, "item", None)
            title = str(getattr(item, "title", "") or type(item).__name__)
            transaction.close()
        return bool(self.__transactions), title

    def end(self, window_closing: bool = False) -> None:
        """Close the transactions and end the live state: on later UI ticks with no thumbnail being computed (ending it
        reorders the data panel), or, when the window is closing, on the document model's next call-soon round."""
        for transaction in self.__transactions:
            transaction.close()
        self.__transactions = list()
        live_items, self.__live_items = self.__live_items, list()
        document_model = self.__document_model

        def end_live(data_item: DataItem.DataItem) -> None:
            if not data_item._closed:
                document_model.end_data_item_live(data_item)

        def end_all() -> None:
            for data_item in live_items:
                end_live(data_item)

        call_soon = getattr(document_model, "_call_soon", None)
        if window_closing and callable(call_soon):
            call_soon(end_all)
        else:
            ui_gate.when_idle(self.__document_controller, [lambda d=d: end_live(d) for d in live_items],  # type: ignore[misc]
                              kind="live state end")

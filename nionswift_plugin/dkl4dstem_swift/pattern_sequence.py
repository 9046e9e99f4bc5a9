"""The run's raw patterns as one sequence data item (measurement order), filled in blocks from what the instrument
recorded, with positions, probe positions and timestamps in its metadata. UI thread only.

The item is large-format with its data reserved (Swift's way for acquisitions: in the app an HDF5 file that each
block is written into, so neither Start nor the end of a run writes the whole stack), and during the run its metadata
holds only the count: the per-point lists (positions, probe positions, timestamps) grow with the run and Swift
deep-copies an item's metadata several times per update, so they are written once, when the run ends (finalize).
The engine's session file has them from the first point on."""
from __future__ import annotations

import time
import typing

import numpy

from nion.data import Calibration
from nion.data import DataAndMetadata
from nion.swift.model import DataItem

if typing.TYPE_CHECKING:
    from . import swift_instrument

PATTERNS_TITLE = "DKL measured patterns"
CHUNK = 4  # patterns per Swift update of the stack


class PatternSequence:

    def __init__(self, instrument: swift_instrument.SwiftInstrument | None, n_total: int, title: str,
                 metadata: typing.Callable[..., dict[str, typing.Any]],
                 append: typing.Callable[[DataItem.DataItem], None]) -> None:
        self.__instrument = instrument
        self.__n_total = n_total
        self.__title = title
        self.__metadata = metadata
        self.__append = append
        self.item: DataItem.DataItem | None = None
        self.n_applied = 0
        self.__shape: tuple[int, ...] | None = None
        self.__calibrations: list[Calibration.Calibration] = list()
        self.__unreserved: DataItem.DataItem | None = None  # appended, its data not yet reserved (create_piece)
        self.__positions: list[list[int]] = list()
        self.__probe_positions: list[list[float]] = list()
        self.__timestamps: list[float] = list()
        self.__camera_metadata: dict[str, typing.Any] = dict()

    def apply(self, budget_s: float = float("inf")) -> bool:
        """Stack the newly recorded patterns, CHUNK per Swift update, until budget_s is spent (at least one chunk);
        True when all are in (the number per update is bounded: a fast camera does not make a long UI task)."""
        start_time = time.perf_counter()
        while True:
            chunk_start = time.perf_counter()
            more = self.__apply_chunk()
            if not more:
                return True
            now = time.perf_counter()
            if now - start_time + (now - chunk_start) > budget_s:  # the next chunk would not fit
                return False

    def __apply_chunk(self) -> bool:
        """One block of at most CHUNK patterns; True when more are waiting."""
        instrument = self.__instrument
        if instrument is None:
            return False
        new = instrument.recorded_since(self.n_applied)
        if not new:
            return False
        if self.item is None:
            self.create(tuple(new[0].pattern.shape))  # the detector shape was not known at Start
        data_item = self.item
        assert data_item is not None
        if not self.__camera_metadata:
            self.__camera_metadata = {k: v for k, v in new[0].metadata.items() if k in ("exposure_ms", "binning", "camera")}
        waiting = len(new)
        new = [r for r in new[:CHUNK] if r.pattern.shape == self.__shape]  # a camera change mid-run is not stacked
        start = self.n_applied
        stop = min(start + len(new), self.__n_total)
        count = stop - start
        if count <= 0:
            return False
        for record in new[:count]:
            self.__positions.append(list(record.position))
            self.__probe_positions.append(list(record.probe_position))
            self.__timestamps.append(float(record.metadata.get("timestamp", 0.0)))
        block = numpy.stack([r.pattern for r in new[:count]])
        xdata = DataAndMetadata.new_data_and_metadata(block)
        data_metadata = self.__data_metadata(self.__metadata(PATTERNS_TITLE, n_measured=stop,
                                                             camera=dict(self.__camera_metadata)))
        data_item.set_data_and_metadata_partial(data_metadata, xdata, [slice(0, count)] + [slice(None)] * 2,
                                                [slice(start, stop)] + [slice(None)] * 2, update_metadata=True)
        self.n_applied = stop
        return waiting > count and stop < self.__n_total

    def __metadata_for(self, n: int) -> dict[str, typing.Any]:
        return self.__metadata(PATTERNS_TITLE, n_measured=n, positions=list(self.__positions),
                               probe_positions=list(self.__probe_positions),
                               timestamps=list(self.__timestamps), camera=dict(self.__camera_metadata))

    def __data_metadata(self, metadata: dict[str, typing.Any]) -> DataAndMetadata.DataMetadata:
        assert self.__shape is not None
        return DataAndMetadata.DataMetadata(data_shape_and_dtype=((self.__n_total,) + self.__shape, numpy.dtype(numpy.float32)),
                                            intensity_calibration=Calibration.Calibration(units="counts"),
                                            dimensional_calibrations=self.__calibrations, metadata=metadata,
                                            data_descriptor=DataAndMetadata.DataDescriptor(True, 0, 2))

    def create(self, shape: tuple[int, ...]) -> None:
        """The empty stack for n_total patterns: reserved, not written (see the module docstring)."""
        while not self.create_piece(shape):
            pass

    def create_piece(self, shape: tuple[int, ...]) -> bool:
        """create() in two UI tasks (in the app each makes a file: the item's, then its HDF5 data); True when done."""
        if self.__unreserved is None:
            self.__shape = tuple(int(n) for n in shape)
            self.__calibrations = [Calibration.Calibration()] + self.__camera_calibrations(self.__shape)
            self.__unreserved = DataItem.DataItem(large_format=True)
            self.__unreserved.title = self.__title
            self.__append(self.__unreserved)
            return False
        data_item, self.__unreserved = self.__unreserved, None
        frame_shape = self.__shape or tuple(shape)
        data_item.reserve_data(data_shape=(self.__n_total,) + frame_shape, data_dtype=numpy.dtype(numpy.float32),
                               data_descriptor=DataAndMetadata.DataDescriptor(True, 0, 2))
        empty = DataAndMetadata.new_data_and_metadata(numpy.zeros((0,) + frame_shape, dtype=numpy.float32))
        data_item.set_data_and_metadata_partial(self.__data_metadata(self.__metadata_for(0)), empty,
                                                [slice(0, 0)] + [slice(None)] * 2, [slice(0, 0)] + [slice(None)] * 2,
                                                update_metadata=True)
        self.item = data_item
        return True

    def __camera_calibrations(self, shape: tuple[int, ...]) -> list[Calibration.Calibration]:
        camera = getattr(self.__instrument, "camera", None)
        try:
            calibrations = list(camera.get_camera_calibrations(camera.get_current_frame_parameters())) if camera else []
        except Exception:
            calibrations = []
        if len(calibrations) != len(shape):
            calibrations = [Calibration.Calibration() for _ in shape]
        return calibrations

    def trim(self) -> None:
        """The end of the run: the per-point metadata, and the stack cut to what was measured."""
        data_item = self.item
        if data_item is None or data_item._closed:
            return
        n = self.n_applied
        xdata = data_item.xdata
        if xdata is None or n == xdata.data_shape[0] or n == 0:
            # (a run stopped before its first pattern keeps the empty block; its metadata says 0 measured)
            data_item.metadata = self.__metadata_for(n)
            return
        data_item.set_xdata(DataAndMetadata.new_data_and_metadata(
            numpy.array(xdata.data[:n]), intensity_calibration=xdata.intensity_calibration,
            dimensional_calibrations=xdata.dimensional_calibrations, data_descriptor=xdata.data_descriptor,
            metadata=self.__metadata_for(n)))

"""The measured points of one run: the loop thread adds them (add / exclude), the UI thread takes what is new into
the measured map and the survey marks (take), and the end of the run writes them all into the measured item's
metadata (as_metadata)."""
from __future__ import annotations

import threading
import typing

import numpy


class MeasuredPoints:
    """add/exclude from any thread; take/as_metadata on the UI thread."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.__lock = threading.Lock()
        self.__pending: list[tuple[int, tuple[int, int], float]] = list()
        self.measured = numpy.full(shape, numpy.nan, dtype=numpy.float32)
        self.__positions: list[list[int]] = list()
        self.__values: list[float] = list()
        self.__steps: list[int] = list()
        self.__excluded: list[list[int]] = list()

    @property
    def count(self) -> int:
        return len(self.__values)

    def add(self, step: int, position: typing.Sequence[int], value: float) -> None:
        with self.__lock:
            self.__pending.append((int(step), (int(position[0]), int(position[1])), float(value)))

    def exclude(self, position: typing.Sequence[int]) -> None:
        """All frames failed at this point: not measured."""
        with self.__lock:
            self.__excluded.append([int(position[0]), int(position[1])])

    def take(self) -> list[tuple[int, tuple[int, int]]]:
        """Write the new points into the measured map; returns their (step, position), oldest first."""
        with self.__lock:
            pending, self.__pending = self.__pending, list()
        for step, (y, x), value in pending:
            self.measured[y, x] = value
            self.__positions.append([y, x])
            self.__values.append(value)
            self.__steps.append(step)
        return [(step, position) for step, position, _ in pending]

    def as_metadata(self) -> dict[str, typing.Any]:
        with self.__lock:
            excluded = list(self.__excluded)
        return dict(n_measured=len(self.__values), positions=list(self.__positions), values=list(self.__values),
                    steps=list(self.__steps), excluded=excluded)

"""The run's measured points in measurement order, and which candidates are taken (measured or excluded)."""
from __future__ import annotations

import math

import numpy

from dkl4dstem.data.patches import position_of


class Points:
    def __init__(self, blocked: numpy.ndarray, width: int) -> None:
        self.blocked = blocked  # (N,) bool: measured, excluded by the user's mask, or excluded after failed frames
        self.width = width
        self.indices: list[int] = []
        self.values: list[float] = []  # NaN where the scalarizer gave no usable value
        self.phases: list[str] = []
        self.excluded: list[int] = []  # positions whose frames all failed
        self._excluded_set: set[int] = set()

    def __len__(self) -> int:
        return len(self.indices)

    def record(self, index: int, value: float, phase: str) -> None:
        self.blocked[index] = True
        self.indices.append(index)
        self.values.append(value)
        self.phases.append(phase)

    def exclude(self, index: int) -> None:
        self.blocked[index] = True
        self.excluded.append(index)
        self._excluded_set.add(index)

    def is_excluded(self, index: int) -> bool:
        return index in self._excluded_set

    def is_free(self, y: int, x: int, height: int) -> bool:
        return 0 <= y < height and 0 <= x < self.width and not self.blocked[y * self.width + x]

    def training_values(self) -> numpy.ndarray:
        """The usable values, in measurement order."""
        values = numpy.asarray(self.values, dtype=numpy.float64)
        return values[numpy.isfinite(values)]

    def best(self, maximize: bool) -> tuple[float, tuple[int, int] | None]:
        values = numpy.asarray(self.values, dtype=numpy.float64)
        finite = numpy.isfinite(values)
        if not finite.any():
            return math.nan, None
        masked = numpy.where(finite, values, -numpy.inf if maximize else numpy.inf)
        k = int(numpy.argmax(masked) if maximize else numpy.argmin(masked))
        return float(values[k]), position_of(self.indices[k], self.width)

    def positions(self, indices: list[int]) -> list[tuple[int, int]]:
        return [position_of(i, self.width) for i in indices]

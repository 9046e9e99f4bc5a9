"""A colour scale on a map: Swift 16 draws none, so a short row of filled, locked rectangle graphics in the map's
colour map along its bottom edge, labelled with the lowest and highest value and the units.

A fixed number of graphics per map, built right after the map is created, before it is shown (Swift's Inspector
rebuilds its sections whenever a graphic is added to the shown item); a data update changes two labels at most, and
only when an end moved by more than RELABEL_FRACTION of the range (each label write costs Swift a display update);
the end of a run labels the exact range (finalize).
"""
from __future__ import annotations

import functools
import math
import time
import typing

import numpy

from nion.swift.model import ColorMaps
from nion.swift.model import Graphics
from nion.utils import Geometry

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

GRAPHIC_ID = "dkl4dstem.colour_scale"
N_STEPS = 8
LEFT, RIGHT = 0.40, 0.85      # normalized image coordinates of the bar (room for the end labels)
TOP, HEIGHT = 0.93, 0.04
RELABEL_FRACTION = 0.02


@functools.lru_cache(maxsize=16)
def _lookup(color_map_id: str) -> numpy.ndarray:
    return ColorMaps.generate_lookup_array(color_map_id)  # (256, 3) B, G, R; slow to generate: once per map kind


def _hex(color_map_id: str, fraction: float) -> str:
    lookup = _lookup(color_map_id)
    b, g, r = (int(v) for v in lookup[min(int(fraction * 255), 255)][:3])
    return f"#{r:02X}{g:02X}{b:02X}"


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4g}"


class ColourScale:
    """Colour bar graphics on one map display item, built a few graphics per UI tick (build). UI thread only."""

    def __init__(self, display_item: DisplayItem.DisplayItem, color_map_id: str, units: str) -> None:
        self.__display_item = display_item
        self.__color_map_id = color_map_id
        self.__units = units
        self.__range: tuple[float, float] | None = None
        self.__labelled: tuple[float, float] | None = None
        self.__graphics: list[Graphics.RectangleGraphic] = list()

    @property
    def is_built(self) -> bool:
        return len(self.__graphics) == N_STEPS

    @property
    def labels(self) -> tuple[str | None, str | None]:
        return self.__graphics[0].label, self.__graphics[-1].label

    def build(self, budget_s: float) -> bool:
        """Add bar graphics until budget_s is spent (at least one; all with an infinite budget); True when complete."""
        display_item = self.__display_item
        if display_item._closed:
            return True
        width = (RIGHT - LEFT) / N_STEPS
        start = time.perf_counter()
        with display_item.display_item_changes():
            while not self.is_built and (not self.__graphics or time.perf_counter() - start < budget_s):
                k = len(self.__graphics)
                graphic = Graphics.RectangleGraphic()
                graphic.graphic_id = GRAPHIC_ID
                graphic.bounds = Geometry.FloatRect.from_tlhw(TOP, LEFT + k * width, HEIGHT, width)
                color = _hex(self.__color_map_id, (k + 0.5) / N_STEPS)
                graphic.fill_color = color
                graphic.stroke_color = color
                graphic.is_position_locked = True
                graphic.is_shape_locked = True
                graphic.is_bounds_constrained = True
                display_item.add_graphic(graphic)
                self.__graphics.append(graphic)
                if time.perf_counter() - start >= budget_s:
                    break
        self.__label()
        return self.is_built

    def update(self, data: numpy.ndarray) -> None:
        """Label the ends with the data range (Swift's automatic display limits), when it moved noticeably."""
        finite = numpy.asarray(data)[numpy.isfinite(data)]
        self.__range = (float(finite.min()), float(finite.max())) if finite.size else None
        self.__label()

    def finalize(self) -> None:
        """Label the exact range (the end of a run)."""
        self.__label(exact=True)

    def __moved(self) -> bool:
        if self.__range is None or self.__labelled is None:
            return self.__range != self.__labelled
        (low, high), (old_low, old_high) = self.__range, self.__labelled
        tolerance = RELABEL_FRACTION * max(abs(high - low), abs(old_high - old_low))
        return abs(low - old_low) > tolerance or abs(high - old_high) > tolerance or tolerance == 0.0

    def __label(self, exact: bool = False) -> None:
        if not self.is_built or self.__range is None or self.__range == self.__labelled or self.__display_item._closed:
            return
        if not exact and not self.__moved():
            return
        self.__labelled = low, high = self.__range
        units = f" {self.__units}" if self.__units else ""
        with self.__display_item.display_item_changes():
            for graphic, text in ((self.__graphics[0], _fmt(low)), (self.__graphics[-1], f"{_fmt(high)}{units}")):
                if graphic.label != text:
                    graphic.label = text

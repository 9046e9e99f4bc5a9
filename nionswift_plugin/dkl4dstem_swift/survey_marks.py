"""The newest measured points as labelled point graphics on the survey: a fixed ring of at most MAX_MARKS graphics.

Every graphic is a project write, a widget and an Inspector section in Swift, and adding or removing one rebuilds the
Inspector: cost that grows with the number of graphics (a 160-point run once froze Swift for half a minute). So the
survey never holds more than MAX_MARKS point graphics of ours: they are created once per survey, at Start before the
first dose (prepare), then moved and relabelled (never removed) for the newest points, across runs. All visited points
are in the run's "measured" map. Every property written on a graphic makes Swift recompute the survey's display
calibrations (several ms), so a point costs two writes (position, label) and the colours change once per update.
"""
from __future__ import annotations

import time
import typing

from nion.swift.model import Graphics
from nion.utils import Geometry

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

MAX_MARKS = 20
GRAPHIC_ID = "dkl4dstem.point"
POINT_COLOR = "#FF0"      # recent points
NEWEST_COLOR = "#F00"     # the newest point
HIDDEN_COLOR = "transparent"  # a mark not (yet) used by this run


def marks_on(display_item: DisplayItem.DisplayItem | None) -> list[Graphics.Graphic]:
    if display_item is None or display_item._closed:
        return list()
    return [g for g in display_item.graphics if g.graphic_id == GRAPHIC_ID]


class SurveyMarks:
    """Ring of point graphics on one survey display item. UI thread only."""

    def __init__(self, display_item: DisplayItem.DisplayItem | None, shape: tuple[int, int]) -> None:
        self.__display_item = display_item
        self.__shape = shape
        self.__points: list[tuple[int, tuple[int, int]]] = list()  # (step, (y, x)) of the newest points
        self.__applied: dict[int, tuple[typing.Any, ...]] = dict()  # ring index -> (step, y, x, colour) shown

    def prepare(self, budget_s: float = 0.01) -> bool:
        """A new run, before its first point: create the missing graphics (hidden) and hide the previous run's marks
        (no removal), until budget_s is spent (at least one graphic); True when done."""
        display_item = self.__display_item
        if display_item is None or display_item._closed:
            return True
        graphics = marks_on(display_item)
        start = time.perf_counter()
        with display_item.display_item_changes():
            for graphic in graphics:
                if graphic.stroke_color != HIDDEN_COLOR or graphic.label is not None:
                    graphic.stroke_color = HIDDEN_COLOR
                    graphic.label = None
                    if time.perf_counter() - start > budget_s:
                        return False
            while len(graphics) < MAX_MARKS:
                graphics.append(self.__new_graphic(display_item))
                if time.perf_counter() - start > budget_s:
                    return len(graphics) >= MAX_MARKS
        return True

    @staticmethod
    def __new_graphic(display_item: DisplayItem.DisplayItem) -> Graphics.PointGraphic:
        graphic = Graphics.PointGraphic()
        graphic.graphic_id = GRAPHIC_ID
        graphic.is_bounds_constrained = True
        graphic.is_position_locked = True
        graphic.stroke_color = HIDDEN_COLOR
        display_item.add_graphic(graphic)
        return graphic

    def add(self, points: typing.Sequence[tuple[int, tuple[int, int]]]) -> None:
        self.__points = (self.__points + list(points))[-MAX_MARKS:]

    def __wanted(self) -> dict[int, tuple[typing.Any, ...]]:
        newest = self.__points[-1][0] if self.__points else None
        return {step % MAX_MARKS: (step, y, x, NEWEST_COLOR if step == newest else POINT_COLOR)
                for step, (y, x) in self.__points}

    def apply(self, budget_s: float = 0.02) -> bool:
        """Show the newest points in step order until budget_s is spent (at least one graphic); True when done.

        Step k goes on graphic k mod MAX_MARKS, so a new point moves one graphic (the graphics are made by prepare;
        one missing then, e.g. deleted by the user, is made here)."""
        display_item = self.__display_item
        if display_item is None or display_item._closed:
            return True
        wanted = self.__wanted()
        todo = sorted((index for index, mark in wanted.items() if self.__applied.get(index) != mark),
                      key=lambda index: wanted[index][0])  # in step order: graphics are created one at a time
        if not todo:
            return True
        graphics = marks_on(display_item)
        height, width = self.__shape
        start = time.perf_counter()
        with display_item.display_item_changes():  # one notification for the batch
            for index in todo:
                step, y, x, color = wanted[index]
                while len(graphics) <= index:
                    graphics.append(self.__new_graphic(display_item))
                graphic = typing.cast(Graphics.PointGraphic, graphics[index])
                position = Geometry.FloatPoint(y=(y + 0.5) / height, x=(x + 0.5) / width)
                if graphic.position != position:
                    graphic.position = position
                if graphic.label != str(step):
                    graphic.label = str(step)
                if graphic.stroke_color != color:
                    graphic.stroke_color = color
                self.__applied[index] = wanted[index]
                if time.perf_counter() - start > budget_s:
                    break
        return all(self.__applied.get(index) == mark for index, mark in wanted.items())

"""The pieces of the live updates of one run, each small enough for one UI tick: the measured map and the survey
marks, each of the three model maps, the raw patterns, and the end-of-run pieces (final metadata, exact colour-scale
labels, the trim of the pattern sequence, one item transaction per piece).

live_items.LiveItems decides when a round of pieces runs; LivePieces holds the newest data and applies one piece.
"""
from __future__ import annotations

import typing

from nion.data import DataAndMetadata

from . import measured_points
from . import pattern_sequence
from . import run_items
from . import survey_marks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from . import swift_instrument

# one round while the run goes on, and what a finishing run adds (the "end" piece is the owner's)
ROUND = ["measured", "marks", run_items.PREDICTION_TITLE, run_items.UNCERTAINTY_TITLE, run_items.ACQUISITION_TITLE,
         "patterns"]
END_OF_RUN = ["final", "scales", "trim", "close", "end"]


class LivePieces:
    """post() on the loop thread (under the owner's lock); everything else on the UI thread."""

    def __init__(self, document_controller: DocumentController.DocumentController,
                 survey_display_item: DisplayItem.DisplayItem | None,
                 survey_xdata: DataAndMetadata.DataAndMetadata,
                 run_metadata: typing.Mapping[str, typing.Any], units: str, n_total: int,
                 instrument: swift_instrument.SwiftInstrument | None, run: int) -> None:
        self.items = run_items.RunItems(document_controller, survey_display_item, survey_xdata, run_metadata, units, run)
        self.__points = measured_points.MeasuredPoints(self.items.shape)
        self.__marks = survey_marks.SurveyMarks(survey_display_item, self.items.shape)
        self.patterns = pattern_sequence.PatternSequence(instrument, max(1, int(n_total)),
                                                         run_items.run_title(run_items.PATTERNS_TITLE, self.items.run),
                                                         self.items.metadata, self.items.append)
        self.__latest_maps: typing.Any = None
        self.__maps_shown: dict[str, typing.Any] = dict()

    def creation_steps(self, patterns_shape: tuple[int, int] | None,
                       budget_s: float) -> list[tuple[str, typing.Callable[[], bool | None]]]:
        """The run's items, one named step per UI tick: the group, each map and its colour bar, the patterns, the
        survey's transaction, and all the marks (so they exist before the first point)."""
        items = self.items
        steps: list[tuple[str, typing.Callable[[], bool | None]]] = [("group", items.create_group)]
        for title in run_items.MAP_TITLES:
            steps.append((f"map {title}", lambda title=title: items.create_map(title)))  # type: ignore[misc]
            steps.append((f"colour bar {title}", lambda title=title: items.build_scale(title, budget_s)))  # type: ignore[misc]
        if patterns_shape is not None:
            steps.append(("patterns", lambda: self.patterns.create_piece(tuple(patterns_shape))))
        steps.append(("survey transaction", items.begin_survey_transaction))
        steps.append(("marks", lambda: self.__marks.prepare(budget_s)))
        return steps

    def add_earlier_points(self, positions: typing.Sequence[typing.Sequence[int]], values: typing.Sequence[float]) -> None:
        """A continued run: the session's points, as its first steps, into the measured map and the marks."""
        for step, (position, value) in enumerate(zip(positions, values)):
            self.__points.add(step, position, float(value))

    def post(self, event: typing.Any) -> None:
        """Remember the newest maps and the measured (or excluded) point of a step event."""
        if getattr(event, "prediction", None) is not None:
            self.__latest_maps = event
        position = getattr(event, "position", None)
        if position is not None and getattr(event, "excluded", False):
            self.__points.exclude(position)  # all frames failed: not measured
        elif position is not None:
            self.__points.add(event.step, position, event.value)

    def apply(self, piece: str, stages: list[str], budget_s: float) -> str | None:
        """Apply one piece; a piece with more to do puts itself back into `stages`. Returns what it worked on when
        the piece's name does not say (the item a "close" wrote)."""
        if piece == "measured":
            self.__apply_measured()
        elif piece == "marks":
            if not self.__marks.apply(budget_s):
                self.__again_later(stages, "marks")  # after the maps (and before the end of a finishing run)
        elif piece == "patterns":
            if not self.patterns.apply(budget_s):
                self.__again_later(stages, "patterns")  # the rest on the next UI tick
        elif piece == "final":
            self.final_measured()
        elif piece == "scales":
            self.items.finalize_scales()
        elif piece == "trim":
            self.patterns.trim()
        elif piece == "close":  # one transaction per UI tick: each writes its item
            more, title = self.items.close_one_transaction()
            if more:
                stages.insert(0, "close")
            return title
        else:
            self.__apply_map(piece)
        return None

    def finish_now(self) -> None:
        """All the end-of-run pieces at once (the window is closing)."""
        self.patterns.trim()
        self.final_measured()
        self.items.finalize_scales()

    def final_measured(self) -> None:
        """The measured map with every point's position, value and step in its metadata."""
        self.items.set_map(run_items.MEASURED_TITLE, self.__points.measured, self.items.units,
                           **self.__points.as_metadata())

    @staticmethod
    def __again_later(stages: list[str], piece: str) -> None:
        at = stages.index("final") if "final" in stages else len(stages)
        stages.insert(at, piece)

    def __apply_map(self, title: str) -> None:
        maps_event = self.__latest_maps  # the newest maps when this piece runs
        if maps_event is None or self.__maps_shown.get(title) is maps_event:
            return
        self.__maps_shown[title] = maps_event
        data = {run_items.PREDICTION_TITLE: maps_event.prediction, run_items.UNCERTAINTY_TITLE: maps_event.uncertainty,
                run_items.ACQUISITION_TITLE: maps_event.acquisition}[title]
        # the uncertainty map is the engine's calibrated sigma: 1 sigma of a measurement, in the scalar's units
        extra = {"quantity": "1 sigma of a measurement (recalibrated)"} if title == run_items.UNCERTAINTY_TITLE else {}
        units = "" if title == run_items.ACQUISITION_TITLE else self.items.units
        self.items.set_map(title, data, units, step=int(maps_event.step), n_measured=int(maps_event.n_measured),
                           **extra)

    def __apply_measured(self) -> None:
        new_points = self.__points.take()
        if not new_points:
            return
        self.__marks.add(new_points)
        self.items.set_map(run_items.MEASURED_TITLE, self.__points.measured, self.items.units,
                           n_measured=self.__points.count)

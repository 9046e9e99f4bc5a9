"""The survey the panel works on (acquired, or chosen) and the marks placed on it: vacuum and park points."""
from __future__ import annotations

import gettext
import typing

from nion.swift.model import Graphics
from nion.utils import Geometry

from . import panel_base

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

_ = gettext.gettext

VACUUM_LABEL = "vacuum"
PARK_LABEL = "park"


class SurveyMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: the survey and its marks (the declarative UI calls the *_clicked by name)."""

    @property
    def survey_display_item(self) -> DisplayItem.DisplayItem | None:
        display_item = self.controller.survey_display_item
        if display_item is not None and (display_item._closed or display_item.container is None):
            self.controller.survey_display_item = None
            return None
        return display_item

    def set_survey(self, display_item: DisplayItem.DisplayItem) -> None:
        if display_item is not self.controller.survey_display_item:
            self.pending_forced = list()  # points forced on another survey
        self.controller.survey_display_item = display_item
        shape = display_item.data_item.data_shape if display_item.data_item else None
        self.survey_text.value = f"{display_item.displayed_title} {shape[0]}x{shape[1]}" if shape else _("Survey: none")
        self.watch_survey(display_item)
        self.__show_survey(display_item)

    def __show_survey(self, display_item: DisplayItem.DisplayItem) -> None:
        """The survey the panel uses is on screen (regions and points are drawn on it), in the selected display
        panel when no panel shows it (Swift shows new items only in a 'result' panel)."""
        workspace_controller = self.document_controller.workspace_controller
        display_panels = list(workspace_controller.display_panels) if workspace_controller else []
        if not display_panels or any(p.display_item is display_item for p in display_panels):
            return
        display_panel = self.document_controller.selected_display_panel or display_panels[0]
        display_panel.set_display_panel_display_item(display_item)

    def acquire_survey(self, on_done: typing.Callable[[DisplayItem.DisplayItem], None] | None = None) -> bool:
        def done(display_item: DisplayItem.DisplayItem) -> None:
            self.set_survey(display_item)
            if on_done:
                on_done(display_item)
        return self.try_action(lambda: self.controller.acquire_survey(self.collect_settings(), done))

    def acquire_survey_clicked(self, widget: typing.Any = None) -> None:
        self.acquire_survey()

    def mark(self, label: str, color: str) -> Graphics.PointGraphic | None:
        return self.__mark(label, color)

    def __mark(self, label: str, color: str) -> Graphics.PointGraphic | None:
        display_item = self.survey_display_item
        if display_item is None:
            self.message.value = _("⚠ Acquire a survey first; the mark goes on the survey image.")
            return None
        graphic = self.find_mark(label)
        if graphic is None:
            graphic = Graphics.PointGraphic()
            graphic.position = Geometry.FloatPoint(y=0.5, x=0.5)
            graphic.label = label
            graphic.stroke_color = color
            display_item.add_graphic(graphic)
        self.message.value = _("Drag the '{label}' point on the survey to where you want it.").format(label=label)
        return graphic

    def find_mark(self, label: str) -> Graphics.PointGraphic | None:
        display_item = self.survey_display_item
        if display_item is None:
            return None
        for graphic in display_item.graphics:
            if isinstance(graphic, Graphics.PointGraphic) and graphic.label == label:
                return graphic
        return None

    def mark_vacuum_clicked(self, widget: typing.Any = None) -> None:
        self.__mark(VACUUM_LABEL, "#0FF")

    def mark_park_clicked(self, widget: typing.Any = None) -> None:
        self.__mark(PARK_LABEL, "#F0F")

    def acquire_reference_clicked(self, widget: typing.Any = None) -> None:
        graphic = self.find_mark(VACUUM_LABEL)
        if graphic is None:
            if self.__mark(VACUUM_LABEL, "#0FF") is not None:
                self.message.value = _("Drag the 'vacuum' point onto vacuum, "
                                       "then click 'Acquire vacuum reference' again.")
            return
        display_item = self.survey_display_item
        assert display_item is not None
        position = graphic.position

        def start() -> None:
            self.controller.acquire_reference(display_item, position, self.collect_settings())
        if self.try_action(start):
            self.reference_text.value = _("Reference: acquiring ...")

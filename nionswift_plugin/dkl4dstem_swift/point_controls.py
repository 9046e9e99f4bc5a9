"""A point picked on the survey: one pattern there as a preview (no run), or measured next (forced)."""
from __future__ import annotations

import gettext
import typing

from nion.swift.model import Graphics
from nion.utils import Model

from dkl4dstem.errors import InputError

from . import panel_base
from . import preview as preview_module
from . import region as region_module

_ = gettext.gettext

PICK_LABEL = "pick"
PICK_COLOR = "#FA0"


class PointMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: Pick point, Preview, Force next (the declarative UI calls these by name)."""

    def init_points(self) -> None:
        self.preview_text = Model.PropertyModel[str](_("Preview: pick a point, then 'Preview' (one pattern)"))
        self.pending_forced: list[tuple[int, int]] = list()
        self.preview = preview_module.Preview(self.document_controller)

    def close_points(self) -> None:
        self.preview.close()

    def chosen_pixel(self) -> tuple[int, int] | None:
        """The selected point graphic on the survey, else the 'pick' mark (placed, with a hint, when missing)."""
        display_item = self.survey_display_item
        if display_item is None:
            self.message.value = _("⚠ Acquire a survey first; the point is picked on the survey image.")
            return None
        selected = [g for g in display_item.selected_graphics if isinstance(g, Graphics.PointGraphic)]
        graphic = selected[0] if selected else self.find_mark(PICK_LABEL)
        if graphic is None:
            self.mark(PICK_LABEL, PICK_COLOR)
            self.message.value = _("Drag the orange 'pick' point on the survey to the position, then click again.")
            return None
        return region_module.pixel_of(graphic.position, self.survey_shape())

    def pick_clicked(self, widget: typing.Any = None) -> None:
        self.mark(PICK_LABEL, PICK_COLOR)

    def force_next_clicked(self, widget: typing.Any = None) -> None:
        pixel = self.chosen_pixel()
        if pixel is not None:
            self.try_action(lambda: self.force_next(pixel))

    def force_next(self, pixel: tuple[int, int]) -> None:
        experiment = self.controller.experiment
        where = f"({pixel[0]}, {pixel[1]}){region_module.format_nm(self.pixel_nm(pixel))}"
        if experiment is not None and self.controller.status.state in ("running", "paused"):
            experiment.force_next(*pixel)
            self.message.value = _("{where} will be measured next.").format(where=where)
        elif self.controller.is_busy:
            raise InputError("the run is stopping; force the point in the next run")
        else:
            if pixel not in self.pending_forced:
                self.pending_forced.append(pixel)
            self.message.value = _("{where} will be measured first when you Start ({n} forced).").format(
                where=where, n=len(self.pending_forced))

    def preview_clicked(self, widget: typing.Any = None) -> None:
        pixel = self.chosen_pixel()
        if pixel is not None:
            self.try_action(lambda: self.start_preview(pixel))

    def start_preview(self, pixel: tuple[int, int]) -> None:
        display_item = self.survey_display_item
        assert display_item is not None
        self.preview.start(self.controller, display_item, pixel, self.collect_settings(check_session=False),
                           self.__preview_done)
        self.idle.value = False  # no Start, survey or reference while the probe is out for the preview
        self.preview_text.value = _("Preview: measuring one pattern at ({y}, {x}) ...").format(y=pixel[0], x=pixel[1])

    def __preview_done(self, result: preview_module.PreviewResult) -> None:
        self.idle.value = not self.controller.is_busy
        self.preview_text.value = result.text
        self.message.value = result.text + (_(" Camera stopped, probe released.") if not result.error else "")

    def pixel_nm(self, pixel: typing.Sequence[float] | None) -> tuple[float, float] | None:
        display_item = self.survey_display_item
        xdata = display_item.data_item.xdata if display_item is not None and display_item.data_item else None
        if pixel is None or xdata is None:
            return None
        return region_module.position_nm(pixel, xdata.dimensional_calibrations)

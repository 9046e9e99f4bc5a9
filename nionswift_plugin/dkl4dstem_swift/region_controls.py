"""The region and the excluded areas drawn on the survey, and the checked RunOptions they give a run."""
from __future__ import annotations

import gettext
import typing

from dkl4dstem.errors import InputError

from . import panel_base
from . import region as region_module
from . import settings as settings_module

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

_ = gettext.gettext


class RegionMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: Add region, Exclude area, Clear (the declarative UI calls these by name)."""

    def add_region_clicked(self, widget: typing.Any = None) -> None:
        self.__add_shape("region")

    def exclude_area_clicked(self, widget: typing.Any = None) -> None:
        self.__add_shape("exclude")

    def __add_shape(self, role: str) -> None:
        """The selected rectangles / ellipses on the survey get this role; with none selected, a new rectangle."""
        display_item = self.survey_display_item
        if display_item is None:
            self.message.value = _("⚠ Acquire a survey first; the region is drawn on the survey image.")
            return
        selected = [g for g in display_item.selected_graphics if g.type in ("rect-graphic", "ellipse-graphic")]
        for graphic in selected:
            region_module.set_role(graphic, role)
        if not selected:
            region_module.add_shape(display_item, role)
        what = (_("{n} selected shape(s) marked as region").format(n=len(selected)) if selected else
                _("Move and resize the green 'region' rectangle")) if role == "region" else \
            (_("{n} selected shape(s) marked 'exclude'").format(n=len(selected)) if selected else
             _("Move and resize the red 'exclude' rectangle over the area never to measure"))
        self.message.value = what + _(" (rectangles drawn with Swift's tool are regions; select one and click "
                                      "'Exclude area' to exclude it instead)")
        self.update_estimate()

    def clear_region_clicked(self, widget: typing.Any = None) -> None:
        display_item = self.survey_display_item
        if display_item is None:
            return
        for graphic in [g for g in display_item.graphics if g.type in ("rect-graphic", "ellipse-graphic")]:
            display_item.remove_graphic(graphic).close()
        self.pending_forced = list()
        self.message.value = _("Region cleared: the run may use the whole survey.")
        self.update_estimate()

    def collect_options(self, display_item: DisplayItem.DisplayItem) -> settings_module.RunOptions:
        """The region and exclusions drawn on the survey and the points forced before Start, checked."""
        data_shape = display_item.data_item.data_shape if display_item.data_item else None
        shape = (int(data_shape[0]), int(data_shape[1])) if data_shape and len(data_shape) == 2 else self.survey_shape()
        shapes = region_module.shapes_on(display_item)
        mask = region_module.exclude_mask(shapes, shape)
        if mask is not None and bool(mask.all()):
            raise InputError("the region leaves no position to measure (is an 'exclude' rectangle covering it?)")
        for y, x in self.pending_forced:
            if mask is not None and mask[y, x]:
                raise InputError(f"the forced point ({y}, {x}) is outside the region; move it or clear it")
        return settings_module.RunOptions(shapes=shapes, exclude_mask=mask, forced=list(self.pending_forced))

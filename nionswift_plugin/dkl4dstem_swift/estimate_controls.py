"""The estimate before Start (points, survey fraction, beam-on and run time) and the region summary, kept up to date
while the user edits the fields or draws on the survey."""
from __future__ import annotations

import gettext
import typing

import numpy

from nion.utils import Model

from dkl4dstem.errors import InputError

from . import estimate as estimate_module
from . import panel_base
from . import region as region_module
from . import settings as settings_module
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

_ = gettext.gettext

ESTIMATE_FIELDS = ("seeds", "steps", "exposure_ms", "survey_size")


class EstimateMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: the estimate and region texts; listens to the fields and the survey's graphics."""

    def init_estimate(self) -> None:
        self.region_text = Model.PropertyModel[str](region_module.describe([], None))
        self.estimate_text = Model.PropertyModel[str](_("Estimate: –"))
        self.__estimate_queued = False
        self.__controls_closed = False
        self.__graphics_listener: typing.Any = None
        self.__field_listeners = [getattr(self, name).property_changed_event.listen(
            lambda *args: self.request_estimate()) for name in ESTIMATE_FIELDS]

    def close_estimate(self) -> None:
        self.__controls_closed = True
        for listener in self.__field_listeners:
            listener.close()
        self.__field_listeners = list()
        self.watch_survey(None)

    # survey watching: the estimate follows the region while the user draws

    def watch_survey(self, display_item: DisplayItem.DisplayItem | None) -> None:
        if self.__graphics_listener is not None:
            self.__graphics_listener.close()
            self.__graphics_listener = None
        if display_item is not None:
            self.__graphics_listener = display_item.graphics_changed_event.listen(lambda *args: self.request_estimate())
        self.request_estimate()

    def request_estimate(self) -> None:
        """Coalesced: at most one estimate per UI tick; none while a run adds its marks."""
        if self.__estimate_queued or self.__controls_closed or self.controller.is_busy:
            return
        self.__estimate_queued = True

        def update() -> None:
            self.__estimate_queued = False
            if not self.__controls_closed:
                self.update_estimate()
        ui_tasks.queue(self.document_controller, "estimate", update)

    def survey_shape(self) -> tuple[int, int]:
        display_item = self.survey_display_item
        shape = display_item.data_item.data_shape if display_item is not None and display_item.data_item else None
        if shape is not None and len(shape) == 2:
            return int(shape[0]), int(shape[1])
        size = settings_module.parse_int(self.survey_size.value or "", "Survey size", 8, 4096)
        return size, size

    def update_estimate(self) -> None:
        try:
            p = settings_module
            n_points = p.parse_int(self.seeds.value or "", "Seed points", 1) + p.parse_int(self.steps.value or "", "Steps", 0)
            exposure_ms = p.parse_float(self.exposure_ms.value or "", "Exposure", 0.0, exclusive_minimum=True)
            shape = self.survey_shape()
        except InputError as e:
            self.estimate_text.value = _("Estimate: –  ({e})").format(e=e)
            return
        shapes = region_module.shapes_on(self.survey_display_item)
        mask = region_module.exclude_mask(shapes, shape)
        n_survey = shape[0] * shape[1]
        n_open = n_survey - int(mask.sum()) if mask is not None else n_survey
        result = self.controller.result  # the last run's median step, when there was one
        step_seconds = list(getattr(result, "step_seconds", None) or [])
        per_point_ms = 1000.0 * float(numpy.median(step_seconds)) if step_seconds else None
        self.region_text.value = region_module.describe(shapes, mask)
        self.estimate_text.value = estimate_module.estimate_text(n_points, n_open, n_survey, exposure_ms, per_point_ms)

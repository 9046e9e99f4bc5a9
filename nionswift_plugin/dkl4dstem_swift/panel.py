"""The "DKL 4D-STEM" dock panel (DKLPanel) and its declarative handler (PanelHandler): Start, Pause, Stop, Show maps
and the run's live status. The fields, the survey and the other features are the handler's mixins (see panel_base);
the look is panel_ui.

Every entry is text that is checked when it is used; a bad entry becomes a message in the panel, never an exception.
"""
from __future__ import annotations

import gettext
import math
import typing

from nion.instrumentation import HardwareSource
from nion.swift import Panel
from nion.ui import Declarative
from nion.utils import Model

from dkl4dstem.errors import InputError

from . import continue_controls
from . import estimate_controls
from . import panel_devices
from . import panel_fields
from . import panel_survey
from . import panel_ui
from . import point_controls
from . import region as region_module
from . import region_controls
from . import run_controller
from . import run_end
from . import settings as settings_module
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

_ = gettext.gettext

PANEL_ID = "dkl4dstem-panel"
PANEL_NAME = _("DKL 4D-STEM")


def _fmt(value: float, units: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g} {units}".strip()


class PanelHandler(panel_survey.SurveyMixin, panel_devices.DevicesMixin, panel_fields.FieldsMixin,
                   estimate_controls.EstimateMixin, region_controls.RegionMixin, point_controls.PointMixin,
                   continue_controls.ContinueMixin, run_end.RunEndMixin, Declarative.Handler):
    """Declarative handler: the run and its live status; the fields, the survey and the other features are in the
    mixins (one module each, see panel_base)."""

    def __init__(self, document_controller: DocumentController.DocumentController) -> None:
        super().__init__()
        self.document_controller = document_controller
        self.controller = run_controller.RunController(document_controller, self.__status_changed)
        self.init_devices()
        self.init_fields()
        self.reference_text = Model.PropertyModel[str](_("Reference: none"))
        self.survey_text = Model.PropertyModel[str](_("Survey: none"))
        self.message = Model.PropertyModel[str](_("Acquire a survey, then Start."))
        self.step_text = Model.PropertyModel[str](_("Step – of –"))
        self.value_text = Model.PropertyModel[str](_("Last value –"))
        self.best_text = Model.PropertyModel[str](_("Best –"))
        self.timing_text = Model.PropertyModel[str](_("Decision – / training – / instrument – ms per step"))
        self.progress = Model.PropertyModel[int](0)
        self.pause_text = Model.PropertyModel[str](_("Pause"))
        self.idle = Model.PropertyModel[bool](True)
        self.running = Model.PropertyModel[bool](False)
        manager = HardwareSource.HardwareSourceManager()
        self.__hs_added_listener = manager.hardware_source_added_event.listen(self.__hardware_sources_changed)
        self.__hs_removed_listener = manager.hardware_source_removed_event.listen(self.__hardware_sources_changed)
        self.__closed = False
        self.init_estimate()
        self.init_points()
        self.init_run_end()
        self.load_preferences()  # the fields as the user left them (Swift's preferences)
        self.refresh_devices()
        self.update_estimate()
        self.ui_view = panel_ui.build_ui()

    def close(self) -> None:
        self.__closed = True
        self.close_run_end()
        self.save_preferences()
        self.close_points()
        self.close_estimate()
        self.controller.close()
        self.__hs_added_listener.close()
        self.__hs_added_listener = typing.cast(typing.Any, None)
        self.__hs_removed_listener.close()
        self.__hs_removed_listener = typing.cast(typing.Any, None)
        super().close()

    def __hardware_sources_changed(self, *args: typing.Any) -> None:
        def refresh() -> None:
            if not self.__closed:
                self.refresh_devices()
        ui_tasks.queue(self.document_controller, "devices", refresh)

    # run

    def start(self, display_item: DisplayItem.DisplayItem | None = None) -> bool:
        display_item = display_item or self.survey_display_item
        if run_controller.ENGINE_LOADING.is_set():
            # the engine is still being imported in the background: start when it is ready, never block the UI
            self.message.value = _("Loading the DKL engine (torch) ... the run starts when it is ready.")

            def retry() -> None:
                if self.__closed:
                    return
                if run_controller.ENGINE_LOADING.is_set():
                    ui_tasks.queue(self.document_controller, "start wait", retry)
                else:
                    self.start(display_item)

            ui_tasks.queue(self.document_controller, "start wait", retry)
            return True
        if display_item is None:
            # no survey yet: refuse with the reason (nothing is acquired, no dose)
            self.message.value = _("⚠ No survey: click 'Acquire Survey' (or select a HAADF image and use "
                                   "DKL > Run on selected), then Start.")
            return False

        def start() -> None:
            settings = self.collect_settings()
            self.start_with(display_item, settings, self.collect_options(display_item))
            self.set_survey(display_item)
        return self.try_action(start)

    def start_with(self, display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings,
                   options: settings_module.RunOptions) -> None:
        park = self.find_mark(panel_survey.PARK_LABEL) if settings.after_run == "park" else None
        self.controller.start(display_item, settings, park_position=park.position if park else None, options=options)
        self.run_options = options
        self.pending_forced = list()
        self.save_preferences()

    def start_clicked(self, widget: typing.Any = None) -> None:
        with ui_tasks.timing("Start click"):
            self.start()

    def pause_clicked(self, widget: typing.Any = None) -> None:
        if self.controller.status.state == "paused":
            self.controller.resume()
        else:
            self.controller.pause()

    def stop_clicked(self, widget: typing.Any = None) -> None:
        with ui_tasks.timing("Stop click"):
            self.controller.stop()

    def show_maps_clicked(self, widget: typing.Any = None) -> None:
        self.try_action(self.show_maps)

    def show_maps(self) -> None:
        """Survey (with the visited points), prediction, uncertainty and acquisition side by side (2x2)."""
        candidates = [self.survey_display_item] + self.controller.map_display_items()
        items = [item for item in candidates if item is not None][:4]
        if not items:
            raise InputError(_("nothing to show yet: acquire a survey and start a run"))
        workspace_controller = self.document_controller.workspace_controller
        if workspace_controller is None:
            return
        display_panels = list(workspace_controller.display_panels)
        if len(display_panels) < len(items):
            primary = self.document_controller.selected_display_panel or display_panels[0]
            workspace_controller.apply_layouts(primary, [primary], 2, 2)
            display_panels = list(workspace_controller.display_panels)
        for display_panel, display_item in zip(display_panels, items):
            display_panel.set_display_panel_display_item(display_item)

    def __status_changed(self, status: run_controller.RunStatus) -> None:
        if self.__closed:
            return
        self.idle.value = status.state == "idle"
        self.running.value = status.state in ("running", "paused")
        self.pause_text.value = _("Resume") if status.state == "paused" else _("Pause")
        if status.message:
            self.message.value = status.message
        if status.n_total:
            self.progress.value = status.progress
            kind = _("seed point") if status.phase == "seed" else _("step")
            self.step_text.value = _("Step {k} of {n}").format(k=status.step, n=status.n_total) + f" ({kind})"
            self.value_text.value = _("Last value {v}").format(v=_fmt(status.last_value, status.units))
            where = (f" at (y={status.best_position[0]}, x={status.best_position[1]})"
                     + region_module.format_nm(self.pixel_nm(status.best_position))) if status.best_position else ""
            self.best_text.value = _("Best {v}").format(v=_fmt(status.best_value, status.units)) + where
            self.timing_text.value = (f"Decision {_fmt(status.decision_ms)} / training {_fmt(status.training_ms)} / "
                                      f"instrument {_fmt(status.instrument_ms)} ms per step")
        if status.state == "idle":
            self.run_ended()
            self.request_estimate()
        reference = self.controller.reference
        if reference is not None:
            height, width = reference.shape[:2]
            self.reference_text.value = _("Reference: {h}x{w} pattern").format(h=height, w=width)
        elif status.state == "idle" and self.reference_text.value == _("Reference: acquiring ..."):
            self.reference_text.value = _("Reference: none")


class DKLPanel(Panel.Panel):
    def __init__(self, document_controller: DocumentController.DocumentController, panel_id: str,
                 properties: typing.Mapping[str, typing.Any]) -> None:
        super().__init__(document_controller, panel_id, PANEL_NAME)
        self.handler = PanelHandler(document_controller)
        column = self.ui.create_column_widget()
        scroll_area = self.ui.create_scroll_area_widget()
        scroll_area.set_scrollbar_policies("off", "needed")
        scroll_area.content = Declarative.DeclarativeWidget(document_controller.ui, document_controller.event_loop,
                                                            self.handler)
        column.add(scroll_area)
        self.widget = column
        # a closing window stops a run at once (on_close comes first; Swift closes this panel only later)
        self.__previous_on_close = document_controller.on_close
        document_controller.on_close = self.__window_closing

    def __window_closing(self) -> None:
        self.handler.controller.window_closing()
        if callable(self.__previous_on_close):
            self.__previous_on_close()

    def create_dock_widget(self, title: str, positions: typing.Sequence[str], position: str) -> None:
        super().create_dock_widget(title, positions, position)
        # the close button only hides a dock panel: a run must not go on unseen
        self.dock_widget.on_will_close = self.handler.controller.panel_closed

    def close(self) -> None:
        # Swift closes panels when their document window closes: stop a run (within one step) and release the
        # probe before the widgets go away
        if self.document_controller.on_close == self.__window_closing:
            self.document_controller.on_close = self.__previous_on_close
        self.__previous_on_close = None
        self.handler.controller.close(window_closing=True)
        super().close()

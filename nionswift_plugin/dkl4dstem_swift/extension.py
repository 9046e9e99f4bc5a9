"""The extension Swift's plug-in manager loads: registers the panel, the "DKL" menu and its actions."""
from __future__ import annotations

import gettext
import typing

from nion.swift import Workspace
from nion.ui import Window

from . import panel as panel_module
from . import replay_item
from . import run_controller

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController

_ = gettext.gettext

RUN_ACTION_ID = "dkl4dstem.run_on_selected"
ACQUIRE_ACTION_ID = "dkl4dstem.acquire_survey"
SHOW_PANEL_ACTION_ID = "dkl4dstem.show_panel"
MENU_ID = "dkl_menu"


def find_panel(window: typing.Any) -> panel_module.DKLPanel | None:
    find = getattr(window, "find_dock_panel", None)
    panel = find(panel_module.PANEL_ID) if callable(find) else None
    return panel if isinstance(panel, panel_module.DKLPanel) else None


def _panel_or_report(action: Window.Action, context: Window.ActionContext) -> panel_module.DKLPanel | None:
    panel = find_panel(context.window)
    if panel is None:
        action.report(Window.ReportType.WARNING, _("The DKL 4D-STEM panel is not available in this window."))
        return None
    panel.show()
    return panel


class RunOnSelectedAction(Window.Action):
    action_id = RUN_ACTION_ID
    action_name = _("Run DKL experiment on selected HAADF image")

    def execute(self, context: Window.ActionContext) -> Window.ActionResult:
        window = typing.cast("DocumentController.DocumentController", context.window)
        panel = _panel_or_report(self, context)
        if panel is None:
            return Window.ActionResult(Window.ActionStatus.FINISHED)
        handler = panel.handler
        display_item = getattr(context, "display_item", None) or window.selected_display_item
        message = refusal(display_item, handler)
        if message:
            handler.message.value = f"⚠ {message}"
            self.report(Window.ReportType.WARNING, message)
            return Window.ActionResult(Window.ActionStatus.FINISHED)
        assert display_item is not None
        if not handler.start(display_item):
            self.report(Window.ReportType.WARNING, str(handler.message.value or "").lstrip("⚠ "))
        return Window.ActionResult(Window.ActionStatus.FINISHED)


def refusal(display_item: typing.Any, handler: panel_module.PanelHandler) -> str | None:
    """Why the selection cannot be the survey (None when it can)."""
    if display_item is None or display_item.data_item is None:
        return _("Select a 2D HAADF image first.")
    if handler.controller.is_busy:
        return _("A DKL run or acquisition is already in progress.")
    try:
        settings = handler.collect_settings()
    except Exception as e:
        return str(e)
    return handler.controller.survey_problem(display_item, settings)


class AcquireSurveyAction(Window.Action):
    action_id = ACQUIRE_ACTION_ID
    action_name = _("Acquire HAADF survey")

    def execute(self, context: Window.ActionContext) -> Window.ActionResult:
        panel = _panel_or_report(self, context)
        if panel is not None and not panel.handler.acquire_survey():
            self.report(Window.ReportType.WARNING, str(panel.handler.message.value or "").lstrip("⚠ "))
        return Window.ActionResult(Window.ActionStatus.FINISHED)


class ShowPanelAction(Window.Action):
    action_id = SHOW_PANEL_ACTION_ID
    action_name = _("Show DKL 4D-STEM panel")

    def execute(self, context: Window.ActionContext) -> Window.ActionResult:
        _panel_or_report(self, context)
        return Window.ActionResult(Window.ActionStatus.FINISHED)


# actions are global; register once per process (a second registration of the same id raises)
for _action in (RunOnSelectedAction(), AcquireSurveyAction(), ShowPanelAction()):
    if _action.action_id not in Window.actions:
        Window.register_action(_action)


def build_menu(document_controller: DocumentController.DocumentController) -> typing.Any:
    """Menu handler: the "DKL" menu (before "Window") in every document window."""
    menu = document_controller.get_or_create_menu(MENU_ID, _("DKL"), "window_menu")
    document_controller.build_menu(menu, [{"type": "item", "action_id": RUN_ACTION_ID},
                                          {"type": "item", "action_id": ACQUIRE_ACTION_ID},
                                          {"type": "item", "action_id": replay_item.REPLAY_ACTION_ID},
                                          {"type": "separator"},
                                          {"type": "item", "action_id": SHOW_PANEL_ACTION_ID}])
    return menu


class DKLExtension:
    """Loaded by Swift's plug-in manager (class name ends in 'Extension' and has extension_id)."""

    extension_id = "com.github.dkl4dstem.swift"

    def __init__(self, api_broker: typing.Any = None) -> None:
        Workspace.WorkspaceManager().register_panel(panel_module.DKLPanel, panel_module.PANEL_ID, panel_module.PANEL_NAME,
                                                    ["left", "right"], "right", {"min-width": 340})
        self.__app: typing.Any = None
        run_controller.load_engine_in_background()
        from nion.swift import Application
        app = getattr(Application, "app", None)
        if app is not None and build_menu not in app.menu_handlers:
            app.register_menu_handler(build_menu)  # also builds the menu in already-open windows
            self.__app = app

    def close(self) -> None:
        replay_item.close_all()
        if self.__app is not None:
            try:
                self.__app.unregister_menu_handler(build_menu)
            except ValueError:
                pass
            self.__app = None
        Workspace.WorkspaceManager().unregister_panel(panel_module.PANEL_ID)

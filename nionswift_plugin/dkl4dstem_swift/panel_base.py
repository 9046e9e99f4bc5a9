"""What the panel's parts share: panel.PanelHandler is built from small mixins (one feature each: devices, fields,
survey, estimate, region, points, continue, run end), which the declarative UI and the tests call by name on the one
handler. PanelBase declares, once, what each part may use of the others (for type checking), and try_action."""
from __future__ import annotations

import logging
import typing

from nion.utils import Model

from dkl4dstem.errors import InputError

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from nion.swift.model import Graphics
    from . import preview as preview_module
    from . import run_controller
    from . import settings as settings_module

_logger = logging.getLogger(__name__)


class PanelBase:
    """Declarations only (the part that sets each is named), plus try_action."""

    document_controller: DocumentController.DocumentController  # panel
    controller: run_controller.RunController  # panel
    message: Model.PropertyModel[str]  # panel
    idle: Model.PropertyModel[bool]  # panel
    survey_text: Model.PropertyModel[str]  # panel
    reference_text: Model.PropertyModel[str]  # panel
    channel_names: Model.PropertyModel[list[str]]  # panel_devices
    channel_index: Model.PropertyModel[int]  # panel_devices
    preferred_device_ids: tuple[str | None, str | None]  # panel_devices
    survey_size: Model.PropertyModel[str]  # panel_fields
    seeds: Model.PropertyModel[str]  # panel_fields
    steps: Model.PropertyModel[str]  # panel_fields
    exposure_ms: Model.PropertyModel[str]  # panel_fields
    session_path: Model.PropertyModel[str]  # panel_fields
    scalarizer_names: Model.PropertyModel[list[str]]  # panel_fields
    region_text: Model.PropertyModel[str]  # estimate_controls
    estimate_text: Model.PropertyModel[str]  # estimate_controls
    preview_text: Model.PropertyModel[str]  # point_controls
    pending_forced: list[tuple[int, int]]  # point_controls
    preview: preview_module.Preview  # point_controls
    run_options: settings_module.RunOptions  # run_end
    saved_files: list[str]  # run_end

    if typing.TYPE_CHECKING:
        @property
        def survey_display_item(self) -> DisplayItem.DisplayItem | None: ...  # panel_survey
        @property
        def scalarizer_name(self) -> str: ...  # panel_fields
        @property
        def scan_id(self) -> str | None: ...  # panel_devices
        @property
        def camera_id(self) -> str | None: ...  # panel_devices
        def collect_settings(self, check_session: bool = True) -> settings_module.RunSettings: ...  # panel_fields
        def set_scalarizer(self, name: str) -> None: ...  # panel_fields
        def save_preferences(self) -> None: ...  # panel_fields
        def set_survey(self, display_item: DisplayItem.DisplayItem) -> None: ...  # panel_survey
        def find_mark(self, label: str) -> Graphics.PointGraphic | None: ...  # panel_survey
        def mark(self, label: str, color: str) -> Graphics.PointGraphic | None: ...  # panel_survey
        def watch_survey(self, display_item: DisplayItem.DisplayItem | None) -> None: ...  # estimate_controls
        def request_estimate(self) -> None: ...  # estimate_controls
        def update_estimate(self) -> None: ...  # estimate_controls
        def survey_shape(self) -> tuple[int, int]: ...  # estimate_controls
        def pixel_nm(self, pixel: typing.Sequence[float] | None) -> tuple[float, float] | None: ...  # point_controls
        def start_with(self, display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings,
                       options: settings_module.RunOptions) -> None: ...  # panel

    def try_action(self, fn: typing.Callable[[], None]) -> bool:
        try:
            fn()
            return True
        except InputError as e:
            self.message.value = f"⚠ {e}"
        except Exception as e:  # never an exception dialog: the panel says what happened
            _logger.exception("DKL panel action failed")
            self.message.value = f"⚠ {type(e).__name__}: {e}"
        return False

"""The panel's user features besides the run itself: region and exclusions, a picked point to preview or to force
next, continuing a run from its session file, the estimate before Start, the summary and maps saved when a run ends,
and the settings remembered across restarts. A mixin of panel.PanelHandler (the declarative UI calls these by name).
"""
from __future__ import annotations

import dataclasses
import gettext
import logging
import math
import threading
import typing

import numpy

from nion.swift.model import Graphics
from nion.utils import Model

from dkl4dstem.errors import InputError

from . import estimate as estimate_module
from . import export as export_module
from . import live_items as live_items_module
from . import preferences as preferences_module
from . import preview as preview_module
from . import region as region_module
from . import settings as settings_module
from . import swift_instrument
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem
    from . import run_controller

_ = gettext.gettext
_logger = logging.getLogger(__name__)

PICK_LABEL = "pick"
PICK_COLOR = "#FA0"
TEXT_FIELDS = ("survey_size", "fov_nm", "pixel_time_us", "exposure_ms", "binning", "scalarizer_params", "window",
               "seeds", "steps", "xi", "beta")
INDEX_FIELDS = ("acquisition_index", "goal_index", "after_run_index")
ESTIMATE_FIELDS = ("seeds", "steps", "exposure_ms", "survey_size")


class ControlsMixin:
    """Needs from the handler: document_controller, controller, message, the field models, survey_display_item,
    collect_settings(), find_mark(), mark(), set_scalarizer(), scalarizer_names, start()."""

    document_controller: DocumentController.DocumentController
    controller: run_controller.RunController
    message: Model.PropertyModel[str]
    idle: Model.PropertyModel[bool]
    session_path: Model.PropertyModel[str]
    survey_size: Model.PropertyModel[str]
    seeds: Model.PropertyModel[str]
    steps: Model.PropertyModel[str]
    exposure_ms: Model.PropertyModel[str]
    scalarizer_names: Model.PropertyModel[list[str]]

    if typing.TYPE_CHECKING:  # provided by panel.PanelHandler
        @property
        def survey_display_item(self) -> DisplayItem.DisplayItem | None: ...
        @property
        def scalarizer_name(self) -> str: ...
        @property
        def scan_id(self) -> str | None: ...
        @property
        def camera_id(self) -> str | None: ...
        def collect_settings(self, check_session: bool = True) -> settings_module.RunSettings: ...
        def set_survey(self, display_item: DisplayItem.DisplayItem) -> None: ...
        def set_scalarizer(self, name: str) -> None: ...
        def find_mark(self, label: str) -> Graphics.PointGraphic | None: ...
        def mark(self, label: str, color: str) -> Graphics.PointGraphic | None: ...
        def start_with(self, display_item: DisplayItem.DisplayItem, settings: settings_module.RunSettings,
                       options: settings_module.RunOptions) -> None: ...

    def init_controls(self) -> None:
        self.region_text = Model.PropertyModel[str](region_module.describe([], None))
        self.preview_text = Model.PropertyModel[str](_("Preview: pick a point, then 'Preview' (one pattern)"))
        self.estimate_text = Model.PropertyModel[str](_("Estimate: –"))
        self.pending_forced: list[tuple[int, int]] = list()
        self.preview = preview_module.Preview(self.document_controller)
        self.run_options = settings_module.RunOptions()
        self.saved_files: list[str] = list()
        self.__ended_result: typing.Any = None
        self.__estimate_queued = False
        self.__controls_closed = False
        self.__graphics_listener: typing.Any = None
        self.__field_listeners = [getattr(self, name).property_changed_event.listen(
            lambda *args: self.request_estimate()) for name in ESTIMATE_FIELDS]

    def close_controls(self) -> None:
        self.__controls_closed = True
        self.save_preferences()
        self.preview.close()
        for listener in self.__field_listeners:
            listener.close()
        self.__field_listeners = list()
        self.watch_survey(None)

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

    # preferences

    def preference_values(self) -> dict[str, typing.Any]:
        values: dict[str, typing.Any] = {name: str(getattr(self, name).value or "") for name in TEXT_FIELDS}
        values.update({name: int(getattr(self, name).value or 0) for name in INDEX_FIELDS})
        values.update(scalarizer=self.scalarizer_name, scan_id=self.scan_id, camera_id=self.camera_id)
        return values

    def apply_preferences(self, values: typing.Mapping[str, typing.Any]) -> None:
        """Fields from a saved dictionary; anything unknown or of the wrong type is left at its default."""
        if values.get("scalarizer") in (self.scalarizer_names.value or []):
            self.set_scalarizer(values["scalarizer"])
        for name in TEXT_FIELDS:
            if isinstance(values.get(name), str):
                getattr(self, name).value = values[name]
        for name in INDEX_FIELDS:
            if isinstance(values.get(name), int) and values[name] >= 0:
                getattr(self, name).value = values[name]
        self.preferred_device_ids = (values.get("scan_id"), values.get("camera_id"))

    def load_preferences(self) -> None:
        self.apply_preferences(preferences_module.load(self.document_controller.ui))

    def save_preferences(self) -> None:
        preferences_module.save(self.document_controller.ui, self.preference_values())

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

    # region

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

    # picked point: preview and force next

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

    # continue a run from its session file

    def continue_clicked(self, widget: typing.Any = None) -> None:
        self.try_action(self.continue_run)

    def continue_run(self) -> None:
        path = settings_module.parse_resume_path(self.session_path.value or "")
        from dkl4dstem.session import read_session
        session = read_session(path)
        display_item = self.__session_survey(session)
        stored = session.settings
        done = len(session.positions)
        panel_settings = self.collect_settings(check_session=False)
        config = settings_module.config_from_session(stored, steps=panel_settings.config.steps, wait_for_training=False)
        if config.seeds + config.steps <= done:
            raise InputError(f"the session already has {done} measurements ({config.seeds} seeds + "
                             f"{max(done - config.seeds, 0)} steps); set Steps above {max(done - config.seeds, 0)} "
                             "to continue it")
        camera = panel_settings.camera
        stored_camera = stored.get("plugin", {}).get("camera")
        if isinstance(stored_camera, dict):
            camera = swift_instrument.CameraSettings(**stored_camera)
        settings = dataclasses.replace(panel_settings, config=config, camera=camera, session_path=path)
        shapes = list(stored.get("region") or [])
        survey_shape = tuple(session.survey.shape)
        options = settings_module.RunOptions(
            shapes=shapes, exclude_mask=region_module.exclude_mask(shapes, survey_shape),
            forced=list(self.pending_forced), resume=session, reference=session.reference,
            forced_earlier=[(int(y), int(x)) for y, x in stored.get("forced") or []])
        self.set_survey(display_item)
        self.start_with(display_item, settings, options)
        self.message.value = _("Continuing {path}: {done} measured, {n} to go.").format(
            path=path, done=done, n=config.seeds + config.steps - done)

    def __session_survey(self, session: typing.Any) -> DisplayItem.DisplayItem:
        """The survey data item the session was recorded on (by uuid, else by identical data)."""
        document_model = self.document_controller.document_model
        uuid = str(session.settings.get("survey_uuid", ""))
        candidates = [self.survey_display_item] + [document_model.get_display_item_for_data_item(d)
                                                   for d in document_model.data_items if str(d.uuid) == uuid]
        candidates += [document_model.get_display_item_for_data_item(d) for d in document_model.data_items
                       if d.data_shape == tuple(session.survey.shape)]
        for display_item in candidates:
            data = display_item.data_item.data if display_item is not None and display_item.data_item else None
            if (display_item is not None and data is not None and data.shape == session.survey.shape
                    and numpy.allclose(data, session.survey, rtol=1e-5, atol=0)):
                return display_item
        raise InputError("the survey this session was recorded on is not in this Swift library; the run continues "
                         "only on the same survey and scan (same FOV and position)")

    # the end of a run

    def run_ended(self) -> None:
        """UI thread, once per run: forced points into the run metadata; summary and maps beside the session."""
        result = self.controller.result
        if result is None or result is self.__ended_result:
            return
        self.__ended_result = result
        settings = self.controller.settings
        experiment = self.controller.experiment
        forced = list(self.run_options.forced_earlier) + list(getattr(experiment, "forced_measured", []))
        live = self.controller.live_items
        if live is not None:
            live.add_run_metadata(forced=[list(p) for p in forced])
        measured_item = live.items.get(live_items_module.MEASURED_TITLE) if live is not None else None
        if measured_item is not None and not measured_item._closed:  # at once too: the end may be written already
            metadata = dict(measured_item.metadata)
            metadata.setdefault(live_items_module.METADATA_KEY, dict())["forced"] = [list(p) for p in forced]
            measured_item.metadata = metadata
        if settings is None or not settings.session_path:
            return
        display_item = self.controller.survey_display_item
        if display_item is None or display_item.data_item is None or display_item.data_item.xdata is None:
            return
        xdata = display_item.data_item.xdata
        fields = export_module.plugin_fields(result, xdata.dimensional_calibrations, shapes=self.run_options.shapes,
                                             forced=forced, extra={"survey_uuid": str(display_item.data_item.uuid),
                                                                   "survey_title": display_item.data_item.title,
                                                                   "plugin": settings.as_metadata()})
        survey = numpy.array(xdata.data)
        config = settings.config
        session_path = settings.session_path

        def save() -> None:
            try:
                files = export_module.save_run(session_path, config, result, survey, fields)
                text = _("Summary and maps saved: {files}").format(files=", ".join(files))
            except Exception as e:
                files, text = [], _("⚠ Saving the summary failed: {e}").format(e=e)
            if not self.__controls_closed:
                ui_tasks.queue(self.document_controller, "summary saved", lambda: self.__saved(files, text))

        threading.Thread(target=save, name="dkl-save", daemon=True).start()

    def __saved(self, files: list[str], text: str) -> None:
        self.saved_files = files
        if not self.controller.is_busy:
            self.message.value = f"{self.message.value} {text}".strip()

"""The "DKL 4D-STEM" dock panel: settings, buttons and live status, as a declarative UI.

Every entry is text that is checked when it is used; a bad entry becomes a message in the panel, never an exception.
"""
from __future__ import annotations

import gettext
import math
import typing

from nion.instrumentation import HardwareSource
from nion.swift import Panel
from nion.swift.model import Graphics
from nion.ui import Declarative
from nion.utils import Geometry
from nion.utils import Model

from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError

from . import controls
from . import region as region_module
from . import run_controller
from . import settings as settings_module
from . import swift_instrument
from . import ui_tasks

if typing.TYPE_CHECKING:
    from nion.swift import DocumentController
    from nion.swift.model import DisplayItem

_ = gettext.gettext

PANEL_ID = "dkl4dstem-panel"
PANEL_NAME = _("DKL 4D-STEM")
VACUUM_LABEL = "vacuum"
PARK_LABEL = "park"
LABEL_WIDTH = 86
FIELD_WIDTH = 64


def _fmt(value: float, units: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4g} {units}".strip()


class PanelHandler(controls.ControlsMixin, Declarative.Handler):
    """Declarative handler: property models for every field, callbacks for every button (the region, preview,
    force-next, continue and estimate features are in controls.ControlsMixin)."""

    def __init__(self, document_controller: DocumentController.DocumentController) -> None:
        super().__init__()
        self.document_controller = document_controller
        self.controller = run_controller.RunController(document_controller, self.__status_changed)
        self.__scan_ids: list[str] = list()
        self.__camera_ids: list[str] = list()
        self.scan_names = Model.PropertyModel[list[str]](list())
        self.scan_index = Model.PropertyModel[int](0)
        self.camera_names = Model.PropertyModel[list[str]](list())
        self.camera_index = Model.PropertyModel[int](0)
        self.channel_names = Model.PropertyModel[list[str]](["HAADF"])
        self.channel_index = Model.PropertyModel[int](0)
        self.survey_size = Model.PropertyModel[str]("64")
        self.fov_nm = Model.PropertyModel[str]("16")
        self.pixel_time_us = Model.PropertyModel[str]("2")
        self.exposure_ms = Model.PropertyModel[str]("5")
        self.binning = Model.PropertyModel[str]("8")
        self.scalarizer_names = Model.PropertyModel[list[str]](self.__available_scalarizers())
        names = self.scalarizer_names.value or []
        self.scalarizer_index = Model.PropertyModel[int](names.index("vbf") if "vbf" in names else 0)
        self.scalarizer_params = Model.PropertyModel[str]("")
        self.scalarizer_hint = Model.PropertyModel[str]("")
        self.reference_text = Model.PropertyModel[str](_("Reference: none"))
        self.window = Model.PropertyModel[str]("12")
        self.seeds = Model.PropertyModel[str]("10")
        self.steps = Model.PropertyModel[str]("50")
        self.acquisition_index = Model.PropertyModel[int](0)
        self.xi = Model.PropertyModel[str]("0.01")
        self.beta = Model.PropertyModel[str]("4")
        self.goal_index = Model.PropertyModel[int](0)
        self.after_run_index = Model.PropertyModel[int](0)
        self.session_path = Model.PropertyModel[str]("")
        self.init_from = Model.PropertyModel[str]("")  # start from an earlier session's model (transfer.py)
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
        self.extra_config: dict[str, typing.Any] = dict()  # e.g. fewer training iterations (tests, benchmarks)
        manager = HardwareSource.HardwareSourceManager()
        self.__hs_added_listener = manager.hardware_source_added_event.listen(self.__hardware_sources_changed)
        self.__hs_removed_listener = manager.hardware_source_removed_event.listen(self.__hardware_sources_changed)
        self.__closed = False
        self.preferred_device_ids: tuple[str | None, str | None] = (None, None)
        self.init_controls()
        self.load_preferences()  # the fields as the user left them (Swift's preferences)
        self.refresh_devices()
        self.__update_hint()
        self.update_estimate()
        self.ui_view = self.__build_ui()

    def close(self) -> None:
        self.__closed = True
        self.close_controls()
        self.controller.close()
        self.__hs_added_listener.close()
        self.__hs_added_listener = typing.cast(typing.Any, None)
        self.__hs_removed_listener.close()
        self.__hs_removed_listener = typing.cast(typing.Any, None)
        super().close()

    # ui

    def __build_ui(self) -> typing.Any:
        u = Declarative.DeclarativeUI()

        def field(label: str, model: str, tool_tip: str = "") -> typing.Any:
            edit = u.create_line_edit(text=f"@binding({model}.value)", width=FIELD_WIDTH, tool_tip=tool_tip or None)
            return u.create_row(u.create_label(text=label, width=LABEL_WIDTH), edit, u.create_stretch(), spacing=4)

        def combo(label: str, items: str | list[str], index: str, on_changed: str | None = None) -> typing.Any:
            kwargs: dict[str, typing.Any] = ({"items_ref": f"@binding({items}.value)"} if isinstance(items, str)
                                             else {"items": items})
            box = u.create_combo_box(current_index=f"@binding({index}.value)", on_current_index_changed=on_changed,
                                     **kwargs)
            return u.create_row(u.create_label(text=label, width=LABEL_WIDTH), box, u.create_stretch(), spacing=4)

        def button(text: str, on_clicked: str, enabled: str = "idle") -> typing.Any:
            return u.create_push_button(text=text, on_clicked=on_clicked, enabled=f"@binding({enabled}.value)")

        instrument = u.create_column(
            combo(_("Scan device"), "scan_names", "scan_index", "scan_changed"),
            combo(_("Camera"), "camera_names", "camera_index"),
            combo(_("Channel"), "channel_names", "channel_index"),
            u.create_row(field(_("Survey (px)"), "survey_size"), field(_("FOV (nm)"), "fov_nm"), spacing=8),
            u.create_row(field(_("Pixel time (µs)"), "pixel_time_us"), u.create_stretch(), spacing=8),
            u.create_row(field(_("Exposure (ms)"), "exposure_ms"), field(_("Binning"), "binning"), spacing=8),
            u.create_row(button(_("Acquire Survey"), "acquire_survey_clicked"),
                         u.create_label(text="@binding(survey_text.value)"), u.create_stretch(), spacing=8),
            spacing=4)
        scalarizer = u.create_column(
            combo(_("Scalarizer"), "scalarizer_names", "scalarizer_index", "scalarizer_changed"),
            u.create_row(u.create_label(text=_("Parameters"), width=LABEL_WIDTH),
                         u.create_line_edit(text="@binding(scalarizer_params.value)",
                                            placeholder_text=_("name=value, ... (blank = defaults)")),
                         spacing=4),
            u.create_label(text="@binding(scalarizer_hint.value)", word_wrap=True),
            u.create_row(button(_("Mark vacuum"), "mark_vacuum_clicked"),
                         button(_("Acquire vacuum reference"), "acquire_reference_clicked"), u.create_stretch(), spacing=4),
            u.create_label(text="@binding(reference_text.value)"),
            spacing=4)
        experiment = u.create_column(
            u.create_row(field(_("Window (px)"), "window"), field(_("Seed points"), "seeds"), spacing=8),
            u.create_row(field(_("Steps"), "steps"), u.create_stretch(), spacing=8),
            combo(_("Acquisition"), list(settings_module.ACQUISITION_LABELS), "acquisition_index"),
            u.create_row(field(_("xi"), "xi"), field(_("beta"), "beta"), spacing=8),
            combo(_("Goal"), [_("Maximize"), _("Minimize")], "goal_index"),
            u.create_row(u.create_label(text=_("After run"), width=LABEL_WIDTH),
                         u.create_combo_box(items=list(settings_module.AFTER_RUN_LABELS),
                                            current_index="@binding(after_run_index.value)"),
                         button(_("Mark park"), "mark_park_clicked"), u.create_stretch(), spacing=4),
            u.create_row(u.create_label(text=_("Session file"), width=LABEL_WIDTH),
                         u.create_line_edit(text="@binding(session_path.value)",
                                            placeholder_text=_("optional .h5 (every pattern, flushed)")),
                         spacing=4),
            u.create_row(u.create_label(text="", width=LABEL_WIDTH),
                         button(_("Continue run"), "continue_clicked"),
                         u.create_label(text=_("from that session file")), u.create_stretch(), spacing=4),
            u.create_row(u.create_label(text=_("Start from"), width=LABEL_WIDTH),
                         u.create_line_edit(text="@binding(init_from.value)",
                                            placeholder_text=_("an earlier session .h5 (blank: a fresh model)")),
                         spacing=4),
            spacing=4)
        control = u.create_column(
            u.create_row(button(_("Add region"), "add_region_clicked"), button(_("Exclude area"), "exclude_area_clicked"),
                         button(_("Clear"), "clear_region_clicked"), u.create_stretch(), spacing=4),
            u.create_label(text="@binding(region_text.value)", word_wrap=True),
            u.create_row(button(_("Pick point"), "pick_clicked"), button(_("Preview"), "preview_clicked"),
                         u.create_push_button(text=_("Force next"), on_clicked="force_next_clicked"),
                         u.create_stretch(), spacing=4),
            u.create_label(text="@binding(preview_text.value)", word_wrap=True),
            spacing=4)
        run = u.create_column(
            u.create_row(button(_("Start"), "start_clicked"),
                         button("@binding(pause_text.value)", "pause_clicked", "running"),
                         button(_("Stop"), "stop_clicked", "running"),
                         u.create_push_button(text=_("Show maps"), on_clicked="show_maps_clicked"),
                         u.create_stretch(), spacing=4),
            u.create_label(text="@binding(estimate_text.value)", word_wrap=True),
            u.create_progress_bar(value="@binding(progress.value)", minimum=0, maximum=100),
            u.create_label(text="@binding(step_text.value)"),
            u.create_label(text="@binding(value_text.value)"),
            u.create_label(text="@binding(best_text.value)"),
            u.create_label(text="@binding(timing_text.value)"),
            u.create_label(text="@binding(message.value)", word_wrap=True),
            spacing=4)
        return u.create_column(
            u.create_section(instrument, title=_("Instrument")),
            u.create_section(scalarizer, title=_("Scalarizer")),
            u.create_section(experiment, title=_("Experiment")),
            u.create_section(control, title=_("Region and points")),
            u.create_section(run, title=_("Run")),
            u.create_stretch(), spacing=4, margin=6)

    # devices

    def refresh_devices(self) -> None:
        scans = swift_instrument.scan_devices()
        cams = swift_instrument.cameras()
        old_scan = self.scan_id if self.__scan_ids else self.preferred_device_ids[0]  # else the remembered one
        old_camera = self.camera_id if self.__camera_ids else self.preferred_device_ids[1]
        scan_id: str | None
        camera_id: str | None
        self.__scan_ids = [hs.hardware_source_id for hs in scans]
        self.__camera_ids = [hs.hardware_source_id for hs in cams]
        self.scan_names.value = [hs.display_name for hs in scans] or [_("(no scan device)")]
        self.camera_names.value = [hs.display_name for hs in cams] or [_("(no camera)")]
        default_scan = swift_instrument.default_scan_device()
        default_camera = swift_instrument.default_camera()
        if old_scan in self.__scan_ids:
            scan_id = old_scan
        else:
            scan_id = default_scan.hardware_source_id if default_scan else None
        if old_camera in self.__camera_ids:
            camera_id = old_camera
        else:
            camera_id = default_camera.hardware_source_id if default_camera else None
        self.scan_index.value = self.__scan_ids.index(scan_id) if scan_id in self.__scan_ids else 0
        self.camera_index.value = self.__camera_ids.index(camera_id) if camera_id in self.__camera_ids else 0
        self.scan_changed()

    @property
    def scan_id(self) -> str | None:
        index = self.scan_index.value or 0
        return self.__scan_ids[index] if 0 <= index < len(self.__scan_ids) else None

    @property
    def camera_id(self) -> str | None:
        index = self.camera_index.value or 0
        return self.__camera_ids[index] if 0 <= index < len(self.__camera_ids) else None

    def scan_changed(self, widget: typing.Any = None, current_index: int | None = None) -> None:
        scan = swift_instrument.find_hardware_source(self.scan_id)
        names = swift_instrument.channel_names(scan) if scan else ["HAADF"]
        old = (self.channel_names.value or [""])[self.channel_index.value or 0] if self.channel_names.value else "HAADF"
        self.channel_names.value = names
        upper = [n.upper() for n in names]
        for wanted in (old.upper(), "HAADF"):
            if wanted in upper:
                self.channel_index.value = upper.index(wanted)
                break
        else:
            self.channel_index.value = 0

    def __hardware_sources_changed(self, *args: typing.Any) -> None:
        def refresh() -> None:
            if not self.__closed:
                self.refresh_devices()
        ui_tasks.queue(self.document_controller, "devices", refresh)

    @staticmethod
    def __available_scalarizers() -> list[str]:
        from dkl4dstem.scalarizers import available_scalarizers
        return list(available_scalarizers())

    def scalarizer_changed(self, widget: typing.Any = None, current_index: int | None = None) -> None:
        self.scalarizer_params.value = ""
        self.__update_hint()

    def __update_hint(self) -> None:
        self.scalarizer_hint.value = settings_module.params_hint(self.scalarizer_name)

    @property
    def scalarizer_name(self) -> str:
        names = self.scalarizer_names.value or []
        index = self.scalarizer_index.value or 0
        return names[index] if 0 <= index < len(names) else "vbf"

    def set_scalarizer(self, name: str) -> None:
        self.scalarizer_index.value = (self.scalarizer_names.value or []).index(name)
        self.scalarizer_changed()

    # settings

    def collect_settings(self, check_session: bool = True) -> settings_module.RunSettings:
        """All fields, parsed and checked; raises InputError with a message for the panel.

        check_session=False: the session file field is not checked (a preview or a continued run)."""
        p = settings_module
        name, params, _defaults = p.validate_scalarizer(self.scalarizer_name, self.scalarizer_params.value or "")
        channel_names = self.channel_names.value or ["HAADF"]
        survey = swift_instrument.SurveySettings(
            size_px=p.parse_int(self.survey_size.value or "", "Survey size", 8, 4096),
            fov_nm=p.parse_float(self.fov_nm.value or "", "FOV", 0.0, exclusive_minimum=True),
            pixel_time_us=p.parse_float(self.pixel_time_us.value or "", "Pixel time", 0.0, exclusive_minimum=True),
            channel=channel_names[min(self.channel_index.value or 0, len(channel_names) - 1)])
        camera = swift_instrument.CameraSettings(
            exposure_ms=p.parse_float(self.exposure_ms.value or "", "Exposure", 0.0, exclusive_minimum=True),
            binning=p.parse_int(self.binning.value or "", "Binning", 1, 64))
        acquisition_index = min(max(self.acquisition_index.value or 0, 0), len(p.ACQUISITION_FUNCTIONS) - 1)
        engine_settings: dict[str, typing.Any] = dict(
            scalarizer=name, scalarizer_params=params,
            window=p.parse_int(self.window.value or "", "Window", 1),
            seeds=p.parse_int(self.seeds.value or "", "Seed points", 0 if (self.init_from.value or "").strip() else 1),
            steps=p.parse_int(self.steps.value or "", "Steps", 0),
            acquisition=p.ACQUISITION_FUNCTIONS[acquisition_index],
            xi=p.parse_float(self.xi.value or "", "xi", 0.0), beta=p.parse_float(self.beta.value or "", "beta", 0.0),
            maximize=(self.goal_index.value or 0) == 0,
            wait_for_training=False)  # live: the microscope never waits for the network
        config = ExperimentConfig(**(engine_settings | self.extra_config))
        config.init_from = p.parse_init_from(self.init_from.value or "", config) or None
        return p.RunSettings(
            scan_id=self.scan_id, camera_id=self.camera_id, survey=survey, camera=camera, config=config,
            after_run=p.AFTER_RUN_CHOICES[min(self.after_run_index.value or 0, 1)],
            session_path=p.parse_session_path(self.session_path.value or "") if check_session else "")


    # survey and marks

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
        park = self.find_mark(PARK_LABEL) if settings.after_run == "park" else None
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
        items = [self.survey_display_item] + self.controller.map_display_items()
        items = [item for item in items if item is not None][:4]
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

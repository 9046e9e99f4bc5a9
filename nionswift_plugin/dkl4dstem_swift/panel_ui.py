"""The panel's look: the declarative UI description (sections, rows, bindings to the handler's models by name)."""
from __future__ import annotations

import gettext
import typing

from nion.ui import Declarative

from . import settings as settings_module

_ = gettext.gettext

LABEL_WIDTH = 86
FIELD_WIDTH = 64


def build_ui() -> typing.Any:
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

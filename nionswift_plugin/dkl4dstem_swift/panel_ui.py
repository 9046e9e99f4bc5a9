"""The panel's look: the declarative UI description (sections, rows, bindings to the handler's models by name).

One builder per section; each names the handler's models ("@binding(name.value)") and callbacks ("name_clicked")."""
from __future__ import annotations

import gettext
import typing

from nion.ui import Declarative

from . import settings as settings_module

_ = gettext.gettext

LABEL_WIDTH = 86
FIELD_WIDTH = 64

Description = Declarative.UIDescriptionResult


def field(u: Declarative.DeclarativeUI, label: str, model: str, tool_tip: str = "") -> Description:
    edit = u.create_line_edit(text=f"@binding({model}.value)", width=FIELD_WIDTH, tool_tip=tool_tip or None)
    return u.create_row(u.create_label(text=label, width=LABEL_WIDTH), edit, u.create_stretch(), spacing=4)


def combo(u: Declarative.DeclarativeUI, label: str, items: str | list[str], index: str,
          on_changed: str | None = None) -> Description:
    kwargs: dict[str, typing.Any] = ({"items_ref": f"@binding({items}.value)"} if isinstance(items, str)
                                     else {"items": items})
    box = u.create_combo_box(current_index=f"@binding({index}.value)", on_current_index_changed=on_changed,
                             **kwargs)
    return u.create_row(u.create_label(text=label, width=LABEL_WIDTH), box, u.create_stretch(), spacing=4)


def button(u: Declarative.DeclarativeUI, text: str, on_clicked: str, enabled: str = "idle") -> Description:
    return u.create_push_button(text=text, on_clicked=on_clicked, enabled=f"@binding({enabled}.value)")


def path_field(u: Declarative.DeclarativeUI, label: str, model: str, placeholder_text: str) -> Description:
    """A labelled line edit as wide as the panel (parameters, file paths)."""
    return u.create_row(u.create_label(text=label, width=LABEL_WIDTH),
                        u.create_line_edit(text=f"@binding({model}.value)", placeholder_text=placeholder_text),
                        spacing=4)


def instrument_section(u: Declarative.DeclarativeUI) -> Description:
    return u.create_column(
        combo(u, _("Scan device"), "scan_names", "scan_index", "scan_changed"),
        combo(u, _("Camera"), "camera_names", "camera_index"),
        combo(u, _("Channel"), "channel_names", "channel_index"),
        u.create_row(field(u, _("Survey (px)"), "survey_size"), field(u, _("FOV (nm)"), "fov_nm"), spacing=8),
        u.create_row(field(u, _("Pixel time (µs)"), "pixel_time_us"), u.create_stretch(), spacing=8),
        u.create_row(field(u, _("Exposure (ms)"), "exposure_ms"), field(u, _("Binning"), "binning"), spacing=8),
        u.create_row(button(u, _("Acquire Survey"), "acquire_survey_clicked"),
                     u.create_label(text="@binding(survey_text.value)"), u.create_stretch(), spacing=8),
        spacing=4)


def scalarizer_section(u: Declarative.DeclarativeUI) -> Description:
    return u.create_column(
        combo(u, _("Scalarizer"), "scalarizer_names", "scalarizer_index", "scalarizer_changed"),
        path_field(u, _("Parameters"), "scalarizer_params", _("name=value, ... (blank = defaults)")),
        u.create_label(text="@binding(scalarizer_hint.value)", word_wrap=True),
        u.create_row(button(u, _("Mark vacuum"), "mark_vacuum_clicked"),
                     button(u, _("Acquire vacuum reference"), "acquire_reference_clicked"), u.create_stretch(),
                     spacing=4),
        u.create_label(text="@binding(reference_text.value)"),
        spacing=4)


def experiment_section(u: Declarative.DeclarativeUI) -> Description:
    return u.create_column(
        u.create_row(field(u, _("Window (px)"), "window"), field(u, _("Seed points"), "seeds"), spacing=8),
        u.create_row(field(u, _("Steps"), "steps"), u.create_stretch(), spacing=8),
        combo(u, _("Acquisition"), list(settings_module.ACQUISITION_LABELS), "acquisition_index"),
        u.create_row(field(u, _("xi"), "xi"), field(u, _("beta"), "beta"), spacing=8),
        combo(u, _("Goal"), [_("Maximize"), _("Minimize")], "goal_index"),
        u.create_row(u.create_label(text=_("After run"), width=LABEL_WIDTH),
                     u.create_combo_box(items=list(settings_module.AFTER_RUN_LABELS),
                                        current_index="@binding(after_run_index.value)"),
                     button(u, _("Mark park"), "mark_park_clicked"), u.create_stretch(), spacing=4),
        path_field(u, _("Session file"), "session_path", _("optional .h5 (every pattern, flushed)")),
        u.create_row(u.create_label(text="", width=LABEL_WIDTH),
                     button(u, _("Continue run"), "continue_clicked"),
                     u.create_label(text=_("from that session file")), u.create_stretch(), spacing=4),
        path_field(u, _("Start from"), "init_from", _("an earlier session .h5 (blank: a fresh model)")),
        spacing=4)


def points_section(u: Declarative.DeclarativeUI) -> Description:
    return u.create_column(
        u.create_row(button(u, _("Add region"), "add_region_clicked"),
                     button(u, _("Exclude area"), "exclude_area_clicked"),
                     button(u, _("Clear"), "clear_region_clicked"), u.create_stretch(), spacing=4),
        u.create_label(text="@binding(region_text.value)", word_wrap=True),
        u.create_row(button(u, _("Pick point"), "pick_clicked"), button(u, _("Preview"), "preview_clicked"),
                     u.create_push_button(text=_("Force next"), on_clicked="force_next_clicked"),
                     u.create_stretch(), spacing=4),
        u.create_label(text="@binding(preview_text.value)", word_wrap=True),
        spacing=4)


def run_section(u: Declarative.DeclarativeUI) -> Description:
    return u.create_column(
        u.create_row(button(u, _("Start"), "start_clicked"),
                     button(u, "@binding(pause_text.value)", "pause_clicked", "running"),
                     button(u, _("Stop"), "stop_clicked", "running"),
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


def build_ui() -> Description:
    u = Declarative.DeclarativeUI()
    return u.create_column(
        u.create_section(instrument_section(u), title=_("Instrument")),
        u.create_section(scalarizer_section(u), title=_("Scalarizer")),
        u.create_section(experiment_section(u), title=_("Experiment")),
        u.create_section(points_section(u), title=_("Region and points")),
        u.create_section(run_section(u), title=_("Run")),
        u.create_stretch(), spacing=4, margin=6)

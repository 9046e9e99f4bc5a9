"""The end of a run, once per run on the UI thread: the forced points into the run metadata, and the summary and maps
saved beside the session file (on a thread, never blocking the UI)."""
from __future__ import annotations

import gettext
import threading
import typing

import numpy

from . import export as export_module
from . import live_items as live_items_module
from . import panel_base
from . import settings as settings_module
from . import ui_tasks

_ = gettext.gettext


class RunEndMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: run_ended() is called when the run's status becomes idle."""

    def init_run_end(self) -> None:
        self.run_options = settings_module.RunOptions()
        self.saved_files: list[str] = list()
        self.__ended_result: typing.Any = None
        self.__controls_closed = False

    def close_run_end(self) -> None:
        self.__controls_closed = True

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

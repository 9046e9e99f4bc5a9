"""Continue a run from its session file: the same survey, settings, region and forced points, more steps."""
from __future__ import annotations

import dataclasses
import gettext
import typing

import numpy

from dkl4dstem.errors import InputError

from . import panel_base
from . import region as region_module
from . import settings as settings_module
from . import swift_instrument

if typing.TYPE_CHECKING:
    from nion.swift.model import DisplayItem

_ = gettext.gettext


class ContinueMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: Continue run (the declarative UI calls continue_clicked by name)."""

    # continue a run from its session file

    def continue_clicked(self, widget: typing.Any = None) -> None:
        self.try_action(self.continue_run)

    def continue_run(self) -> None:
        path = settings_module.parse_resume_path(self.session_path.value or "")
        from dkl4dstem.session.store import read_session
        session = read_session(path)
        display_item = self.__session_survey(session)
        stored = session.settings
        done = len(session.positions)
        panel_settings = self.collect_settings(check_session=False)
        config = settings_module.config_from_session(stored, steps=panel_settings.config.steps,
                                                     wait_for_training=settings_module.PANEL_WAIT_FOR_TRAINING)
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

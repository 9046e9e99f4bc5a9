"""The panel's settings fields: their models, the scalarizer choice, parsing them into RunSettings, and keeping them
in Swift's preferences across restarts. Every entry is text that is checked when it is used."""
from __future__ import annotations

import gettext
import typing

from nion.utils import Model

from dkl4dstem.config import ExperimentConfig

from . import panel_base
from . import preferences as preferences_module
from . import settings as settings_module
from . import swift_instrument

_ = gettext.gettext

TEXT_FIELDS = ("survey_size", "fov_nm", "pixel_time_us", "exposure_ms", "binning", "scalarizer_params", "window",
               "seeds", "steps", "xi", "beta")
INDEX_FIELDS = ("acquisition_index", "goal_index", "after_run_index")


class FieldsMixin(panel_base.PanelBase):
    """A mixin of panel.PanelHandler: the field models the declarative UI binds by name."""

    def init_fields(self) -> None:
        self.survey_size = Model.PropertyModel[str]("64")
        self.fov_nm = Model.PropertyModel[str]("16")
        self.pixel_time_us = Model.PropertyModel[str]("2")
        self.exposure_ms = Model.PropertyModel[str]("5")
        self.binning = Model.PropertyModel[str]("8")
        self.scalarizer_names = Model.PropertyModel[list[str]](self.__available_scalarizers())
        names = self.scalarizer_names.value or []
        default_scalarizer = settings_module.PANEL_SCALARIZER
        self.scalarizer_index = Model.PropertyModel[int](names.index(default_scalarizer) if default_scalarizer in names
                                                         else 0)
        self.scalarizer_params = Model.PropertyModel[str]("")
        self.scalarizer_hint = Model.PropertyModel[str]("")
        self.window = Model.PropertyModel[str](settings_module.default_text("window"))
        self.seeds = Model.PropertyModel[str](settings_module.default_text("seeds"))
        self.steps = Model.PropertyModel[str](settings_module.default_text("steps"))
        self.acquisition_index = Model.PropertyModel[int](
            settings_module.ACQUISITION_FUNCTIONS.index(settings_module.config_module.DEFAULTS.acquisition))
        self.xi = Model.PropertyModel[str](settings_module.default_text("xi"))
        self.beta = Model.PropertyModel[str](settings_module.default_text("beta"))
        self.goal_index = Model.PropertyModel[int](0 if settings_module.config_module.DEFAULTS.maximize else 1)
        self.after_run_index = Model.PropertyModel[int](0)
        self.session_path = Model.PropertyModel[str]("")
        self.init_from = Model.PropertyModel[str]("")  # start from an earlier session's model (transfer.py)
        self.extra_config: dict[str, typing.Any] = dict()  # e.g. fewer training iterations (tests, benchmarks)
        self.__update_hint()

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
        return names[index] if 0 <= index < len(names) else settings_module.PANEL_SCALARIZER

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
            window=p.parse_field(self.window.value or "", "Window", "window"),
            seeds=p.parse_field(self.seeds.value or "", "Seed points", "seeds",
                                0 if (self.init_from.value or "").strip() else 1),  # 0: a model to start from
            steps=p.parse_field(self.steps.value or "", "Steps", "steps"),
            acquisition=p.ACQUISITION_FUNCTIONS[acquisition_index],
            xi=p.parse_field(self.xi.value or "", "xi", "xi"),
            beta=p.parse_field(self.beta.value or "", "beta", "beta"),
            maximize=(self.goal_index.value or 0) == 0,
            wait_for_training=p.PANEL_WAIT_FOR_TRAINING)
        config = ExperimentConfig(**(engine_settings | self.extra_config))
        config.init_from = p.parse_init_from(self.init_from.value or "", config) or None
        return p.RunSettings(
            scan_id=self.scan_id, camera_id=self.camera_id, survey=survey, camera=camera, config=config,
            after_run=p.AFTER_RUN_CHOICES[min(self.after_run_index.value or 0, 1)],
            session_path=p.parse_session_path(self.session_path.value or "") if check_session else "")

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

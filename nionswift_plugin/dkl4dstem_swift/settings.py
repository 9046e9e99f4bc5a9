"""Run settings: parse what the user typed in the panel into checked values, with messages instead of exceptions."""
from __future__ import annotations

import dataclasses
import math
import pathlib
import typing

from dkl4dstem import config as config_module  # torch-free: instant validation in the panel
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError

from . import swift_instrument

ACQUISITION_FUNCTIONS = config_module.ACQUISITIONS  # the engine's choices, in the engine's order
_LABELS = {"ei": "Expected improvement (xi)", "ucb": "Upper confidence bound (beta)", "uncertainty": "Max uncertainty",
           "map": "Best map (integrated variance)"}
ACQUISITION_LABELS = tuple(_LABELS.get(name, name) for name in ACQUISITION_FUNCTIONS)

# The panel's fields start from the engine's defaults (ExperimentConfig), except where a live session differs:
PANEL_SCALARIZER = "vbf"  # needs no vacuum reference (the CoM's origin does) and, on usim and thin samples, the
                          # central disc dims where the sample scatters while the CoM barely moves (docs/SWIFT.md)
PANEL_STEPS = 50          # every step is dose and beam time on a live sample: a first run is short; Continue adds more
PANEL_WAIT_FOR_TRAINING = False  # the microscope never waits for the network (a replay waits: reproducible)
AFTER_RUN_CHOICES = ("release", "park")
AFTER_RUN_LABELS = ("Release probe (scan resumes)", "Park probe at 'park' mark")


def parse_int(text: str, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value_f = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name}: '{text}' is not a number") from None
    if not math.isfinite(value_f) or value_f != int(value_f):
        raise InputError(f"{name}: '{text}' is not a whole number")
    value = int(value_f)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value}")
    return value


def parse_float(text: str, name: str, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{name}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {text}")
    if minimum is not None and (value < minimum or (exclusive_minimum and value == minimum)):
        raise InputError(f"{name} must be {'greater than' if exclusive_minimum else 'at least'} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum:g}, got {value:g}")
    return value


def default_text(name: str) -> str:
    """A panel field's initial text: the engine's default of that setting (PANEL_STEPS for steps)."""
    value = PANEL_STEPS if name == "steps" else getattr(config_module.DEFAULTS, name)
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_field(text: str, label: str, name: str, minimum: float | None = None) -> typing.Any:
    """A number typed in the panel for the engine setting `name`, in that setting's range (ExperimentConfig's rule);
    the message names the panel's label. `minimum` overrides the rule's lower bound."""
    rule = config_module.RULES[name]
    lower = rule.minimum if minimum is None else minimum
    if rule.kind == "int":
        return parse_int(text, label, None if lower is None else int(lower))
    return parse_float(text, label, lower, exclusive_minimum=rule.strict and minimum is None)


def format_params(params: typing.Mapping[str, typing.Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in params.items())


def parse_params(text: str, defaults: typing.Mapping[str, typing.Any], scalarizer: str) -> dict[str, float]:
    """'inner_mrad=0, outer_mrad=10' -> dict; only the scalarizer's own parameter names are accepted.

    A value of 'default' (or 'nan') keeps the scalarizer's default for that parameter."""
    params: dict[str, float] = dict()
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"scalarizer parameters: expected name=value, got '{part}'")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in defaults:
            known = ", ".join(defaults) if defaults else "none"
            raise InputError(f"scalarizer '{scalarizer}' has no parameter '{key}' (parameters: {known})")
        if value.lower() in ("default", "nan", ""):
            continue
        params[key] = parse_float(value, f"parameter {key}")
    return params


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the panel collected: the devices and acquisition settings (plug-in side) and the engine's config."""
    scan_id: str | None
    camera_id: str | None
    survey: swift_instrument.SurveySettings
    camera: swift_instrument.CameraSettings
    config: ExperimentConfig
    after_run: str = "release"
    session_path: str = ""          # optional HDF5 session file written by the engine (every pattern, flushed)

    @property
    def n_total(self) -> int:
        return self.config.seeds + self.config.steps

    def as_metadata(self) -> dict[str, typing.Any]:
        """Flat, JSON-friendly: the engine's settings under their own names beside the plug-in's."""
        return {"scan_id": self.scan_id, "camera_id": self.camera_id, "survey": dataclasses.asdict(self.survey),
                "camera": dataclasses.asdict(self.camera), **self.config.to_dict(), "after_run": self.after_run,
                "session_path": self.session_path, "n_total": self.n_total}


def parse_session_path(text: str) -> str:
    """'' (no session file) or an absolute path to a new .h5 file in an existing folder."""
    text = str(text or "").strip()
    if not text:
        return ""
    path = pathlib.Path(text).expanduser()
    if not path.is_absolute():
        path = pathlib.Path.home() / path
    if path.suffix.lower() not in (".h5", ".hdf5"):
        path = path.with_suffix(path.suffix + ".h5") if path.suffix else path.with_suffix(".h5")
    if not path.parent.is_dir():
        raise InputError(f"session file: folder {path.parent} does not exist")
    if path.exists():
        raise InputError(f"session file {path} exists; choose a new name (it would be overwritten)")
    return str(path)


def validate_scalarizer(name: str, params_text: str) -> tuple[str, dict[str, float], dict[str, float]]:
    """Return (name, params, defaults) or raise InputError with the available names."""
    from dkl4dstem.scalarizers import available_scalarizers, get_scalarizer
    name = str(name).strip()
    try:
        scalarizer = get_scalarizer(name)
    except InputError:
        raise
    except Exception:
        raise InputError(f"unknown scalarizer '{name}' (available: {', '.join(available_scalarizers())})") from None
    defaults = dict(getattr(scalarizer, "params", dict()) or dict())
    params = parse_params(params_text, defaults, name)
    get_scalarizer(name, **params)  # the engine's own checks (e.g. inner < outer)
    return name, params, defaults


def params_hint(name: str) -> str:
    """One line that tells the user which parameters a scalarizer takes."""
    from dkl4dstem.scalarizers import get_scalarizer
    try:
        scalarizer = get_scalarizer(name)
    except Exception:
        return ""
    if not scalarizer.params:
        return f"{name}: no parameters"
    names = ", ".join(f"{k}={'default' if isinstance(v, float) and math.isnan(v) else format(v, 'g')}"
                      for k, v in scalarizer.params.items())
    return f"{name}: {names}" + ("  (needs a vacuum reference)" if scalarizer.requires_reference else "")


@dataclasses.dataclass
class RunOptions:
    """What the user drew or chose besides the fields: region mask, forced points, a session to continue."""
    shapes: list[dict[str, typing.Any]] = dataclasses.field(default_factory=list)  # region.shapes_on(...)
    exclude_mask: typing.Any = None            # (H, W) bool numpy array or None: True = never measured
    forced: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # measured first, in order
    resume: typing.Any = None                  # dkl4dstem.session.store.SessionData to continue
    reference: typing.Any = None               # the resumed session's vacuum reference (replaces the panel's)
    forced_earlier: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # resumed: forced before

    @property
    def n_excluded(self) -> int:
        return int(self.exclude_mask.sum()) if self.exclude_mask is not None else 0

    def as_metadata(self) -> dict[str, typing.Any]:
        """Stored in the run metadata and the session file's settings."""
        return {"region": list(self.shapes), "forced_requested": [list(p) for p in self.forced],
                "resumed": self.resume is not None}


def config_from_session(stored: typing.Mapping[str, typing.Any], **overrides: typing.Any) -> ExperimentConfig:
    """The engine settings a session file was recorded with (as `dkl4dstem run --resume`), some overridden."""
    return ExperimentConfig.from_settings(stored, **overrides)


def parse_resume_path(text: str) -> str:
    """An existing session file to continue."""
    text = str(text or "").strip()
    if not text:
        raise InputError("enter the session file (.h5) of the run to continue in 'Session file'")
    path = pathlib.Path(text).expanduser()
    if not path.is_absolute():
        path = pathlib.Path.home() / path
    if not path.is_file():
        raise InputError(f"session file {path} does not exist")
    return str(path)


def parse_init_from(text: str, config: ExperimentConfig) -> str:
    """'' (a fresh model) or an earlier session (.h5, or a run's folder) to start from, checked against these
    settings without torch; the model itself is checked again when the run starts, before any dose."""
    from dkl4dstem.models import transfer
    text = str(text or "").strip()
    if not text:
        return ""
    path = transfer.session_path(pathlib.Path(text).expanduser())
    transfer.check_compatible(transfer.read_settings(path), config, path)
    return path

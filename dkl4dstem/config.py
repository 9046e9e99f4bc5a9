"""Settings of one automated experiment, validated before any dose is spent.

ExperimentConfig is the one place where a run setting, its default and its valid range are defined: the CLI
(`--set NAME=VALUE`), the Swift panel and the Python API all build one and call `validate`. Kept free of torch
(and of numpy until a config is checked) so the CLI and the Swift panel can check input instantly.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import re
import typing

from dkl4dstem.errors import InputError

ACQUISITIONS = ("ei", "ucb", "uncertainty", "map")
MAP_MODELS = ("survey", "dkl")  # the maps: a GP on fixed survey features (models/survey_map.py) or the DKL's fit
STEERS = ("auto", "dkl")  # who steers the acquisition: prequential hand-over map model -> DKL (steering.py), or the DKL
MAX_SEED = 2 ** 64 - 1  # torch.manual_seed's range (numpy's default_rng takes any non-negative integer)
DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps|xpu|meta)(:\d+)?")  # torch.device strings


@dataclasses.dataclass
class ExperimentConfig:
    scalarizer: str = "com_magnitude"
    scalarizer_params: dict[str, float] = dataclasses.field(default_factory=dict)
    window: int = 12
    seeds: int = 10
    steps: int = 100
    acquisition: str = "ei"
    xi: float = 0.01
    beta: float = 4.0
    observation_noise: bool = True  # acquisition on the next measurement (latent + noise variance): RESULTS.md
    maximize: bool = True
    seed: int = 0
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 0.01
    initial_iterations: int = 200   # full fit after the seed points
    update_iterations: int = 10     # warm-start Adam steps per new point (30 found no better: RESULTS.md)
    refit_every: int = 25           # every this many points a fuller refit ...
    refit_iterations: int = 200     # ... of this many steps ...
    refit_from_initial: bool = True  # ... from the initial weights: no overfitting accumulated over rounds (RESULTS.md)
    refit_growth: float = 0.2       # past refit_every / refit_growth points, refit when the data grew by this fraction
    wait_for_training: bool = True  # replay: reproducible; live microscope: False
    latent_grid: bool = True        # large surveys: posterior on a latent-space grid, interpolated (latentgrid.py)
    max_retries: int = 2            # re-tries of a failed camera frame before the point is excluded
    max_consecutive_failures: int = 5
    device: str | None = None
    checkpoint_every: int = 25
    measure_timeout_s: float | None = None  # None: the instrument's `measure_timeout_s` (None there: no limit)
    pretrain: bool = True           # self-supervised pre-training of the network on the survey (pretrain.py)
    init_from: str | None = None    # start from an earlier run's model and points (transfer.py); seeds may be 0
    map_model: str = "survey"       # the maps: "survey" (GP on fixed survey features, survey_map.py) or "dkl"
    steer: str = "auto"             # with pretrain and the survey map model: it steers until the DKL predicts better

    def validate(self, survey_shape: tuple[int, int], n_excluded: int = 0) -> None:
        """Refuse settings that cannot work, before any dose is spent."""
        self.validate_fields()
        height, width = survey_shape
        if self.window >= min(height, width):
            raise InputError(f"window {self.window} must be smaller than the survey {height}x{width}")
        available = height * width - n_excluded
        if self.seeds + self.steps > available:
            raise InputError(f"seeds + steps = {self.seeds + self.steps} is more than the {available} candidate "
                             f"positions of the {height}x{width} survey")

    def validate_fields(self) -> None:
        """Every field on its own (type, range, choice), without the survey: one InputError naming the field."""
        for field in dataclasses.fields(self):
            RULES[field.name].check(field.name, getattr(self, field.name))
        if self.seeds == 0 and not self.init_from:
            raise InputError("seeds must be a positive integer, got 0 (0 seed points need a model to start from: "
                             "--init-from)")
        from dkl4dstem.scalarizers.registry import get_scalarizer  # numpy: only once a config is checked

        get_scalarizer(self.scalarizer)  # an unknown name is its own message ("unknown scalarizer ...")
        if self.scalarizer_params:
            try:
                get_scalarizer(self.scalarizer, **self.scalarizer_params)
            except InputError as exc:
                raise InputError(f"scalarizer_params: {exc}") from None

    def to_dict(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_settings(cls, stored: typing.Mapping[str, typing.Any], **overrides: typing.Any) -> ExperimentConfig:
        """The config recorded in a session file or summary (other keys ignored; JSON lists back to tuples)."""
        values = {k: v for k, v in stored.items() if k in FIELD_NAMES}
        if isinstance(values.get("hidden"), list):
            values["hidden"] = tuple(values["hidden"])
        return cls(**{**values, **overrides})


# ------------------------------------------------------------------------------------------------ field rules

@dataclasses.dataclass(frozen=True)
class Rule:
    """What one field accepts: its kind, an optional lower bound (strict or not), None allowed or not, choices."""
    kind: str                       # "int" | "float" | "bool" | "str" | "ints" (tuple of int) | "params"
    minimum: float | None = None
    strict: bool = False            # minimum excluded
    optional: bool = False          # None allowed
    choices: tuple[str, ...] = ()
    maximum: float | None = None

    def check(self, name: str, value: typing.Any) -> None:
        if value is None and self.optional:
            return
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InputError(f"{name} must be true or false, got {value!r}")
        elif self.kind in ("int", "float"):
            self._check_number(name, value)
        elif self.kind == "ints":
            if (not isinstance(value, (tuple, list)) or not value
                    or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1
                               for v in value)):
                raise InputError(f"{name} must be one or more positive layer widths (e.g. 64,64), got {value!r}")
        elif self.kind == "params":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise InputError(f"{name} must be a mapping of parameter names to numbers, got {value!r}")
        elif not isinstance(value, str) or not value.strip():
            raise InputError(f"{name} must be a non-empty text, got {value!r}")
        elif self.choices and value not in self.choices:
            raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(self.choices)}")
        elif name == "device" and not DEVICE_PATTERN.fullmatch(value):
            raise InputError(f"device must be a torch device such as cpu, cuda or cuda:1, got {value!r}")

    def _check_number(self, name: str, value: typing.Any) -> None:
        integral = self.kind == "int"
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or integral and not isinstance(value, numbers.Integral)):
            raise InputError(f"{name} must be {'an integer' if integral else 'a number'}, got {value!r}")
        number = int(value) if isinstance(value, numbers.Integral) else float(value)  # int: exact for large seeds
        if not math.isfinite(number):
            raise InputError(f"{name} must be a finite number, got {value!r}")
        if self.minimum is not None and (number < self.minimum or (self.strict and number == self.minimum)):
            what = "integer" if integral else "number"
            lower = "a positive" if self.strict or self.minimum == 1 else "zero or a positive"
            raise InputError(f"{name} must be {lower} {what}, got {value!r}")
        if self.maximum is not None and number > self.maximum:
            raise InputError(f"{name} must be at most {self.maximum}, got {value!r}")


RULES: dict[str, Rule] = {
    "scalarizer": Rule("str"), "scalarizer_params": Rule("params"),
    "window": Rule("int", 1), "seeds": Rule("int", 0), "steps": Rule("int", 0),
    "acquisition": Rule("str", choices=ACQUISITIONS),
    "xi": Rule("float", 0), "beta": Rule("float", 0),
    "observation_noise": Rule("bool"), "maximize": Rule("bool"),
    "seed": Rule("int", 0, maximum=MAX_SEED), "latent_dim": Rule("int", 1), "hidden": Rule("ints"),
    "learning_rate": Rule("float", 0, strict=True),
    "initial_iterations": Rule("int", 1), "update_iterations": Rule("int", 0),
    "refit_every": Rule("int", 1), "refit_iterations": Rule("int", 0), "refit_from_initial": Rule("bool"),
    "refit_growth": Rule("float", 0),
    "wait_for_training": Rule("bool"), "latent_grid": Rule("bool"),
    "max_retries": Rule("int", 0), "max_consecutive_failures": Rule("int", 1),
    "device": Rule("str", optional=True), "checkpoint_every": Rule("int", 1),
    "measure_timeout_s": Rule("float", 0, strict=True, optional=True),
    "pretrain": Rule("bool"), "init_from": Rule("str", optional=True),
    "map_model": Rule("str", choices=MAP_MODELS), "steer": Rule("str", choices=STEERS),
}
FIELD_NAMES = tuple(field.name for field in dataclasses.fields(ExperimentConfig))
DEFAULTS = ExperimentConfig()  # the defaults, for the panel and the help texts


# ------------------------------------------------------------------------------------- text -> field (--set)

TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
NONE_WORDS = ("none", "null", "")


def parse_setting(item: str) -> tuple[str, typing.Any]:
    """'name=value' -> (name, value) parsed by the field's kind: int, float, bool (true/false, yes/no, on/off,
    1/0), tuples of int (hidden=64,64), none for optional fields, name=value pairs for scalarizer_params.
    The value is checked with the field's rule (one InputError naming the field)."""
    name, sep, text = item.partition("=")
    name, text = name.strip(), text.strip()
    if not sep or not name:
        raise InputError(f"--set expects NAME=VALUE, got {item!r}")
    if name not in RULES:
        nearest = difflib.get_close_matches(name, FIELD_NAMES, n=3, cutoff=0.0)
        raise InputError(f"--set: unknown setting {name!r}; nearest: {', '.join(nearest)} "
                         "(`dkl4dstem run --help` lists them all)")
    value = _parse_value(name, RULES[name], text)
    RULES[name].check(name, value)
    return name, value


def _parse_value(name: str, rule: Rule, text: str) -> typing.Any:
    if rule.optional and text.lower() in NONE_WORDS:
        return None
    try:
        if rule.kind == "int":
            return int(text)
        if rule.kind == "float":
            return float(text)
        if rule.kind == "ints":
            return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        kind = "an integer" if rule.kind == "int" else "a number" if rule.kind == "float" else "integers"
        raise InputError(f"{name} must be {kind}, got {text!r}") from None
    if rule.kind == "bool":
        if text.lower() not in TRUE_WORDS + FALSE_WORDS:
            raise InputError(f"{name} must be true or false, got {text!r}")
        return text.lower() in TRUE_WORDS
    if rule.kind == "params":
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        if any(not sep or not key.strip() for key, sep, _ in pairs):
            raise InputError(f"{name} must be NAME=VALUE pairs separated by commas, got {text!r}")
        return {key.strip(): value.strip() for key, _, value in pairs}
    return text


def settings_help() -> str:
    """Every field with its default, for `run --help`."""
    def shown(value: typing.Any) -> str:
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return ", ".join(f"{name}={shown(getattr(DEFAULTS, name))}" for name in FIELD_NAMES
                     if name != "scalarizer_params")

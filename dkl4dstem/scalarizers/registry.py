"""Scalarizers: one diffraction pattern (+ its calibration) -> one float that the experiment optimises.

Why a registry: the user names the physics on the command line (`--scalarizer com_magnitude`), plugs in their own
function (`mypkg.mymod:func`) or installs one under the entry point group ``dkl4dstem.scalarizers``. The builtins'
physics is in physics.py (CoM, virtual detectors) and bragg.py; their origin in reference.py.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import math
import numbers
from typing import Any, Callable

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers import bragg, physics
from dkl4dstem.scalarizers.physics import com_angle, com_magnitude, com_x, com_y, vabf, vadf, vbf

ENTRY_POINT_GROUP = "dkl4dstem.scalarizers"
_ANGULAR_UNITS = ("mrad",)  # calibrated units that fall back to "px" without mrad_per_px


@dataclasses.dataclass(frozen=True)
class Scalarizer:
    """A named pattern -> float function with its default parameters and units."""

    name: str
    func: Callable[..., float]  # func(pattern, calibration, **params) -> float
    units: str  # units when calibrated; see units_for
    params: dict[str, float]
    description: str = ""
    requires_reference: bool = False

    def __call__(self, pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
        """The value as a float. A result that is not a real number (a string "3.5", a complex, an array) is a
        TypeError: never converted silently, so a broken user function shows up as NaN points with a warning."""
        result = self.func(pattern, calibration, **self.params)
        if isinstance(result, numpy.ndarray) and result.ndim == 0:
            result = result[()]
        if not isinstance(result, numbers.Real) or isinstance(result, bool):
            raise TypeError(f"scalarizer {self.name!r} returned {type(result).__name__} {_short(result)}, "
                            "not a real number")
        return float(result)

    def check_calibration(self, calibration: DetectorCalibration) -> None:
        """Fail before any dose is spent when the calibration cannot support this scalarizer."""
        if self.requires_reference and calibration.reference is None:
            raise InputError(f"scalarizer {self.name!r} needs a vacuum reference pattern (the probe without a "
                             "sample) in the calibration; record one or choose another scalarizer")

    def units_for(self, calibration: DetectorCalibration) -> str:
        """Units of the values for this calibration ("mrad" becomes "px" when mrad_per_px is unknown).

        Also validates the calibration (InputError), since the experiment asks for units before measuring."""
        self.check_calibration(calibration)
        if self.units in _ANGULAR_UNITS and calibration.mrad_per_px is None:
            return "px"
        return self.units

    def with_params(self, **params: Any) -> Scalarizer:
        """Copy with some parameters overridden; unknown names or non-numeric values -> InputError."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise InputError(f"unknown parameter(s) {', '.join(unknown)} for scalarizer {self.name!r}; "
                             f"valid: {valid}")
        merged = dict(self.params)
        for key, value in params.items():
            try:
                merged[key] = float(value)
            except (TypeError, ValueError):
                raise InputError(f"parameter {key}={value!r} of scalarizer {self.name!r} must be a number") from None
        builtin = _BUILTINS.get(self.name)
        validator = _VALIDATORS.get(self.name) if builtin is not None and builtin.func is self.func else None
        if validator is not None:
            validator(merged)
        return dataclasses.replace(self, params=merged)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."



# ------------------------------------------------------------------------------------------------ registry

_RADII = {"inner_mrad": math.nan, "outer_mrad": math.nan}
_RADII_NOTE = (" Radii in mrad (NaN = default from the convergence semi-angle); a run refuses explicit radii on an "
               "uncalibrated detector (no mrad_per_px). Returns the summed intensity.")

_BUILTINS: dict[str, Scalarizer] = {
    s.name: s for s in [
        Scalarizer("com_x", com_x, "mrad", {}, com_x.__doc__ or ""),
        Scalarizer("com_y", com_y, "mrad", {}, com_y.__doc__ or ""),
        Scalarizer("com_angle", com_angle, "rad", {}, com_angle.__doc__ or ""),
        Scalarizer("com_magnitude", com_magnitude, "mrad", {}, com_magnitude.__doc__ or ""),
        Scalarizer("vbf", vbf, "a.u.", dict(_RADII), (vbf.__doc__ or "") + _RADII_NOTE),
        Scalarizer("vabf", vabf, "a.u.", dict(_RADII), (vabf.__doc__ or "") + _RADII_NOTE),
        Scalarizer("vadf", vadf, "a.u.", dict(_RADII), (vadf.__doc__ or "") + _RADII_NOTE),
        Scalarizer("bragg_distance", bragg.bragg_distance, "mrad", dict(bragg.DEFAULTS),
                   "Mean distance of the first-order Bragg discs from the central disc (template matching "
                   "against the vacuum reference); NaN when no discs are found. Needs a reference.",
                   requires_reference=True),
    ]
}
_VALIDATORS: dict[str, Callable[[dict[str, float]], None]] = {
    "vbf": physics.validate_radii, "vabf": physics.validate_radii, "vadf": physics.validate_radii, "bragg_distance": bragg.validate_params,
}


def builtin_scalarizer(scalarizer: Scalarizer) -> str | None:
    """The builtin's name when `scalarizer` is one (possibly with other parameters), else None."""
    builtin = _BUILTINS.get(scalarizer.name)
    return scalarizer.name if builtin is not None and builtin.func is scalarizer.func else None


def runs_user_code(spec: str) -> bool:
    """True for a 'package.module:function' spec: importing it runs arbitrary code, so such a spec read from a
    session file is not trusted on its own (cli: name it again, or --trust-session-scalarizer)."""
    return isinstance(spec, str) and spec.strip() not in _BUILTINS and ":" in spec


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_scalarizers() -> list[str]:
    """Builtin names plus installed entry points (group ``dkl4dstem.scalarizers``)."""
    return sorted(set(_BUILTINS) | set(_entry_points()))


def from_function(name: str, func: Callable[..., Any]) -> Scalarizer:
    """Wrap a user function: func(pattern, calibration, **params) or func(pattern).

    Its parameters after (pattern, calibration) that have numeric defaults become the overridable params;
    optional attributes `func.units` and `func.requires_reference` are honoured."""
    if isinstance(func, Scalarizer):
        return func
    if not callable(func):
        raise InputError(f"scalarizer {name!r} is not callable")
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        signature = None
    params: dict[str, float] = {}
    wrapped: Callable[..., float] = func
    if signature is not None:
        positional = [p for p in signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_calibration = len(positional) >= 2 or any(
            p.kind == p.VAR_POSITIONAL for p in signature.parameters.values())
        for p in list(signature.parameters.values())[2 if takes_calibration else 1:]:
            if p.default is not p.empty and isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
                params[p.name] = float(p.default)
        if not takes_calibration:
            def wrapped(pattern: numpy.ndarray, calibration: DetectorCalibration, **kw: float) -> float:
                return func(pattern, **kw)
    doc = (inspect.getdoc(func) or "").strip().split("\n")[0]
    return Scalarizer(name=name, func=wrapped, units=str(getattr(func, "units", "a.u.")), params=params,
                      description=doc or f"user scalarizer {name}",
                      requires_reference=bool(getattr(func, "requires_reference", False)))


def _import_spec(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"scalarizer {spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"scalarizer {spec!r}: cannot import module {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"scalarizer {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def get_scalarizer(spec: str, **params: Any) -> Scalarizer:
    """Resolve a builtin name, a 'package.module:function' spec or an installed entry point; apply params."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"scalarizer must be a non-empty name, got {spec!r}")
    spec = spec.strip()
    if spec in _BUILTINS:
        base = _BUILTINS[spec]
    elif ":" in spec:
        base = from_function(spec, _import_spec(spec))
    else:
        entry = _entry_points().get(spec)
        if entry is None:
            raise InputError(f"unknown scalarizer {spec!r}; available: {', '.join(available_scalarizers())} "
                             "(or 'package.module:function')")
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plug-in is the user's input problem, not a crash
            raise InputError(f"scalarizer entry point {spec!r} failed to load: {exc}") from None
        base = loaded if isinstance(loaded, Scalarizer) else from_function(spec, loaded)
    return base.with_params(**params) if params else base

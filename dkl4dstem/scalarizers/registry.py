"""Scalarizers: one diffraction pattern (+ its calibration) -> one float that the experiment optimises.

Why a registry: the user names the physics on the command line (`--scalarizer com_magnitude`), plugs in their own
function (`mypkg.mymod:func`) or installs one under the entry point group ``dkl4dstem.scalarizers.registry``.

Conventions (all builtins):
* Pattern axes are (det_y, det_x); det_x is the column axis. x/y below are detector column/row directions.
* Origin: the centre of mass (CoM) of the vacuum reference when there is one, otherwise the pattern centre
  ((n - 1) / 2 along each axis). CoM values are therefore beam *deflections* relative to the undisturbed probe.
* Units: mrad when ``calibration.mrad_per_px`` is known, otherwise detector pixels; angles in radians.
* Virtual detectors return the *sum* of the intensity in the region (abTEM's AnnularDetector normalisation),
  with the mask ``inner <= r < outer`` evaluated at pixel centres.

These run once per probe position on the microscope, so the hot paths use cached coordinate vectors and masks
(tens of microseconds for a 64 x 64 pattern).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import math
import numbers
import weakref
from typing import Any, Callable

import numpy

from dkl4dstem.scalarizers import bragg
from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError

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


# --------------------------------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=16)
def _coordinates(shape: tuple[int, int]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Pixel-centre coordinate vectors (y, x) for a detector shape, cached because shapes never change."""
    ys, xs = numpy.arange(shape[0], dtype=numpy.float64), numpy.arange(shape[1], dtype=numpy.float64)
    ys.flags.writeable = xs.flags.writeable = False  # shared through the cache
    return ys, xs


def _as_pattern(pattern: numpy.ndarray) -> numpy.ndarray:
    array = numpy.asarray(pattern)
    if array.ndim != 2:
        raise InputError(f"a diffraction pattern must be 2-D (det_y, det_x), got shape {array.shape}")
    return array.astype(numpy.float64, copy=False)


def _com_px(array: numpy.ndarray) -> tuple[float, float]:
    """Centre of mass (y, x) in pixel coordinates via the two marginals (2 passes, no 2-D temporaries)."""
    ys, xs = _coordinates(array.shape)
    total = array.sum()
    if not total > 0:
        return math.nan, math.nan
    return float(array.sum(axis=1) @ ys) / total, float(array.sum(axis=0) @ xs) / total


_REFERENCE_CACHE: dict[int, tuple[weakref.ref, tuple[float, float], float]] = {}


def reference_center_px(calibration: DetectorCalibration, shape: tuple[int, int]) -> tuple[float, float]:
    """Origin (y, x) in px: CoM of the vacuum reference, else the pattern centre ((n - 1) / 2)."""
    ref = calibration.reference
    if ref is None:
        return (shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0
    if tuple(ref.shape) != tuple(shape):
        raise InputError(f"pattern shape {tuple(shape)} differs from the vacuum reference shape {tuple(ref.shape)}")
    return _reference_stats(ref)[0]


def reference_disc_radius_px(reference: numpy.ndarray) -> float:
    """Radius (px) of the vacuum probe's disc: sqrt(total / plateau intensity / pi), plateau = mean above half max."""
    return _reference_stats(reference)[1]


def _reference_stats(ref: numpy.ndarray) -> tuple[tuple[float, float], float]:
    """(CoM (y, x), disc radius) of the reference, cached: the reference is treated as immutable."""
    entry = _REFERENCE_CACHE.get(id(ref))
    if entry is not None and entry[0]() is ref:
        return entry[1], entry[2]
    array = _as_pattern(ref)
    center = _com_px(array)
    if math.isnan(center[0]):
        raise InputError("the vacuum reference pattern has no positive intensity")
    plateau = array[array > 0.5 * array.max()].mean()
    radius = math.sqrt(array.sum() / plateau / math.pi)  # equivalent-area radius: robust to a soft edge
    try:
        if len(_REFERENCE_CACHE) > 32:  # references rarely change; drop stale entries wholesale
            _REFERENCE_CACHE.clear()
        _REFERENCE_CACHE[id(ref)] = (weakref.ref(ref), center, radius)
    except TypeError:  # not weak-referenceable (e.g. a memmap subclass in some versions): just don't cache
        pass
    return center, radius


def _scale(calibration: DetectorCalibration) -> float:
    return 1.0 if calibration.mrad_per_px is None else float(calibration.mrad_per_px)


# ------------------------------------------------------------------------------------------ centre of mass

def _com_offset(pattern: numpy.ndarray, calibration: DetectorCalibration) -> tuple[float, float]:
    """CoM shift (x, y) relative to the origin, in mrad (or px when uncalibrated)."""
    array = _as_pattern(pattern)
    cy, cx = _com_px(array)
    oy, ox = reference_center_px(calibration, array.shape)
    s = _scale(calibration)
    return (cx - ox) * s, (cy - oy) * s


def com_x(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM shift along det_x (columns) relative to the vacuum reference's CoM; mrad, or px uncalibrated."""
    return _com_offset(pattern, calibration)[0]


def com_y(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """CoM shift along det_y (rows, pointing down the array) relative to the reference's CoM; mrad or px."""
    return _com_offset(pattern, calibration)[1]


def com_magnitude(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """|CoM shift| = hypot(com_x, com_y): the beam deflection, largest next to heavy atoms."""
    return math.hypot(*_com_offset(pattern, calibration))


def com_angle(pattern: numpy.ndarray, calibration: DetectorCalibration) -> float:
    """Direction of the CoM shift, atan2(com_y, com_x) in radians in the detector frame (y down)."""
    x, y = _com_offset(pattern, calibration)
    return math.atan2(y, x)


# -------------------------------------------------------------------------------------- virtual detectors

def _alpha_px(calibration: DetectorCalibration) -> float:
    """Convergence semi-angle in detector pixels: from the calibration, else the reference disc radius."""
    if calibration.semiangle_mrad is not None and calibration.mrad_per_px is not None:
        return float(calibration.semiangle_mrad) / float(calibration.mrad_per_px)
    if calibration.reference is not None:
        return reference_disc_radius_px(calibration.reference)
    raise InputError("virtual detector radii default to the convergence semi-angle: give semiangle_mrad and "
                     "mrad_per_px (or a vacuum reference), or set inner_mrad/outer_mrad explicitly")


@functools.lru_cache(maxsize=64)
def _annulus(shape: tuple[int, int], cy: float, cx: float, inner_px: float, outer_px: float) -> numpy.ndarray:
    """Flat float mask inner <= r < outer (pixel centres, as abTEM's AnnularDetector); cached per geometry."""
    ys, xs = _coordinates(shape)
    r2 = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2
    mask = (r2 >= inner_px ** 2) & (r2 < outer_px ** 2)
    flat = mask.ravel().astype(numpy.float64)
    flat.flags.writeable = False  # shared through the cache
    return flat


def _virtual(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float, outer_mrad: float,
             default: Callable[[float, float], tuple[float, float]]) -> float:
    """Sum of intensity in inner <= r < outer around the reference CoM. NaN radii -> `default(alpha, edge)` (px).

    Radii are mrad when mrad_per_px is known; without it the same parameters are read as pixels."""
    array = _as_pattern(pattern)
    cy, cx = reference_center_px(calibration, array.shape)
    s = _scale(calibration)
    inner, outer = inner_mrad / s, outer_mrad / s
    if math.isnan(inner) or math.isnan(outer):
        # edge: largest circle that stays on the detector (to the outer edge of the border pixels)
        edge = min(cy, cx, array.shape[0] - 1 - cy, array.shape[1] - 1 - cx) + 0.5
        d_inner, d_outer = default(_alpha_px(calibration), edge)
        inner = d_inner if math.isnan(inner) else inner
        outer = d_outer if math.isnan(outer) else outer
    if not 0 <= inner < outer:
        raise InputError(f"virtual detector needs 0 <= inner < outer, got {inner * s:g} and {outer * s:g} "
                         f"({'mrad' if calibration.mrad_per_px else 'px'}); the defaults follow the convergence "
                         "semi-angle and the detector edge: set inner_mrad/outer_mrad explicitly")
    mask = _annulus(array.shape, round(cy, 6), round(cx, 6), round(inner, 9), round(outer, 9))
    return float(array.ravel() @ mask)


def vbf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
        outer_mrad: float = math.nan) -> float:
    """Virtual bright field: summed intensity in the disc; default 0 .. alpha (the whole central disc)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (0.0, min(a, edge)))


def vabf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
         outer_mrad: float = math.nan) -> float:
    """Virtual annular bright field: default alpha/2 .. alpha (outer half of the disc, sees light atoms)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (a / 2, min(a, edge)))


def vadf(pattern: numpy.ndarray, calibration: DetectorCalibration, inner_mrad: float = math.nan,
         outer_mrad: float = math.nan) -> float:
    """Virtual annular dark field: default alpha .. min(3 alpha, detector edge) (scattering out of the disc)."""
    return _virtual(pattern, calibration, inner_mrad, outer_mrad, lambda a, edge: (a, min(3 * a, edge)))


def _validate_radii(params: dict[str, float]) -> None:
    inner, outer = params["inner_mrad"], params["outer_mrad"]
    if (not math.isnan(inner) and inner < 0) or (not math.isnan(outer) and outer <= 0):
        raise InputError(f"virtual detector radii must be positive, got inner={inner:g}, outer={outer:g}")
    if not math.isnan(inner) and not math.isnan(outer) and inner >= outer:
        raise InputError(f"virtual detector needs inner_mrad < outer_mrad, got {inner:g} >= {outer:g}")


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
    "vbf": _validate_radii, "vabf": _validate_radii, "vadf": _validate_radii, "bragg_distance": bragg.validate_params,
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
    """Builtin names plus installed entry points (group ``dkl4dstem.scalarizers.registry``)."""
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

"""Template-matching Bragg disc finder behind the `bragg_distance` scalarizer (strain / lattice mapping).

Why this design: with a convergent probe every Bragg reflection is a copy of the vacuum probe disc, so the
normalized cross-correlation (NCC) of the pattern with the vacuum probe peaks at disc centres whatever their
intensity. NCC is scale invariant, which matters because Bragg discs of thin samples are 10^3-10^4 times
weaker than the central disc. For the same reason the central disc is found first and then blanked before
the second pass: otherwise its bright edge dominates every correlation window next to it.
"""
from __future__ import annotations

import math
import warnings
import weakref

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers.reference import reference_center_px, reference_disc_radius_px

DEFAULTS: dict[str, float] = {
    "min_score": 0.5,  # NCC threshold for a disc (1 = identical to the probe)
    "min_separation_radii": 1.5,  # discs nearer the central disc than this (in disc radii) are ignored
    "shell_tolerance": 0.15,  # first-order shell: distances within (1 + tol) of the nearest disc
    "min_discs": 2.0,  # fewer first-order discs than this -> NaN (reflections come in +g/-g pairs)
    "min_relative_intensity": 1e-5,  # disc window mean / central disc window mean; rejects numerical dust
}
_CENTRAL_MASK_RADII = 1.2  # central disc blanked out to this many radii before the Bragg pass
_TEMPLATE_RADII = 1.0  # template half-width in disc radii (rounded up): the disc plus a thin dark rim


class NoBraggDiscsWarning(RuntimeWarning):
    """No usable Bragg discs: the value is NaN and the experiment leaves the point out of training."""


def validate_params(params: dict[str, float]) -> None:
    """InputError for values that cannot work, before the experiment starts."""
    if not 0 < params["min_score"] < 1:
        raise InputError(f"bragg_distance min_score must be in (0, 1), got {params['min_score']:g}")
    if params["min_separation_radii"] < 0 or params["shell_tolerance"] < 0:
        raise InputError("bragg_distance min_separation_radii and shell_tolerance must be >= 0")
    if params["min_discs"] < 1:
        raise InputError(f"bragg_distance min_discs must be >= 1, got {params['min_discs']:g}")
    if not 0 <= params["min_relative_intensity"] < 1:
        raise InputError("bragg_distance min_relative_intensity must be in [0, 1), got "
                         f"{params['min_relative_intensity']:g}")


_TEMPLATE_CACHE: dict[int, tuple[weakref.ref, tuple[numpy.ndarray, float, tuple[float, float]]]] = {}


def _template(reference: numpy.ndarray) -> tuple[numpy.ndarray, float, tuple[float, float]]:
    """Odd-sized crop of the vacuum probe around its CoM, its disc radius (px) and CoM (y, x); cached per
    reference array because the reference does not change during an experiment."""
    entry = _TEMPLATE_CACHE.get(id(reference))
    if entry is not None and entry[0]() is reference:
        return entry[1]
    result = _make_template(reference)
    try:
        if len(_TEMPLATE_CACHE) > 32:  # references rarely change; drop stale entries wholesale
            _TEMPLATE_CACHE.clear()
        _TEMPLATE_CACHE[id(reference)] = (weakref.ref(reference), result)
    except TypeError:  # not weak-referenceable: recompute next time
        pass
    return result


def _make_template(reference: numpy.ndarray) -> tuple[numpy.ndarray, float, tuple[float, float]]:
    ref = numpy.asarray(reference, dtype=numpy.float64)
    center = reference_center_px(DetectorCalibration(reference=reference), ref.shape)
    radius = reference_disc_radius_px(reference)
    h = max(1, math.ceil(_TEMPLATE_RADII * radius))
    iy, ix = int(round(center[0])), int(round(center[1]))
    padded = numpy.pad(ref, h)  # the crop stays (2h+1)^2 even for a disc near the detector edge
    return padded[iy:iy + 2 * h + 1, ix:ix + 2 * h + 1], radius, center


def normalized_cross_correlation(image: numpy.ndarray,
                                 template: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Zero-normalized cross-correlation and the window mean intensity, both image-shaped (template centred,
    odd template sizes). Windows without intensity variation score 0; outside the detector counts as 0."""
    import scipy.ndimage  # lazy: keeps `dkl4dstem --help` fast
    t = template - template.mean()
    # Direct sums (small template): exact, no FFT round-off next to the 10^4 times brighter central disc.
    numerator = scipy.ndimage.correlate(image, t, mode="constant", cval=0.0)
    size = template.shape
    mean = scipy.ndimage.uniform_filter(image, size, mode="constant", cval=0.0)
    mean_sq = scipy.ndimage.uniform_filter(image * image, size, mode="constant", cval=0.0)
    variance = numpy.maximum(mean_sq - mean * mean, 0.0) * t.size
    # Round-off of the running sums is ~1e-16 of the brightest window; Bragg discs sit ~1e-8 of it.
    peak_variance = variance.max()
    usable = variance > 1e-12 * peak_variance if peak_variance > 0 else numpy.zeros(variance.shape, bool)
    denominator = numpy.sqrt(variance * float((t * t).sum()))
    return numpy.where(usable, numerator / numpy.where(usable, denominator, 1.0), 0.0), mean


def _refine(score: numpy.ndarray, peaks: numpy.ndarray) -> numpy.ndarray:
    """Sub-pixel peak positions (n, 2): a parabola through each peak and its two neighbours along each axis."""
    peaks = numpy.asarray(peaks, dtype=numpy.intp).reshape(-1, 2)
    out = peaks.astype(numpy.float64)
    for axis in (0, 1):
        inside = (peaks[:, axis] > 0) & (peaks[:, axis] < score.shape[axis] - 1)
        p = peaks[inside]
        step = numpy.zeros(2, dtype=numpy.intp)
        step[axis] = 1
        lo, mid, hi = score[tuple((p - step).T)], score[tuple(p.T)], score[tuple((p + step).T)]
        curvature = lo - 2 * mid + hi
        shift = numpy.where(curvature < 0, 0.5 * (lo - hi) / numpy.where(curvature < 0, curvature, -1.0), 0.0)
        out[inside, axis] += shift
    return out


def _candidates(image: numpy.ndarray, template: numpy.ndarray, radius: float,
                min_score: float) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Integer NCC maxima (n, 2) >= min_score whose centre is at least one radius inside the detector (discs
    cut by the edge give biased centres), their window mean intensities, and the NCC map."""
    import scipy.ndimage  # lazy: keeps `dkl4dstem --help` fast
    score, window_mean = normalized_cross_correlation(image, template)
    local_max = scipy.ndimage.maximum_filter(score, size=max(3, int(round(radius))), mode="constant")
    peaks = numpy.argwhere((score == local_max) & (score >= min_score))
    keep = ((peaks[:, 0] >= radius) & (peaks[:, 1] >= radius) & (peaks[:, 0] <= image.shape[0] - 1 - radius)
            & (peaks[:, 1] <= image.shape[1] - 1 - radius))
    peaks = peaks[keep]
    return peaks, window_mean[tuple(peaks.T)], score


def find_discs(image: numpy.ndarray, template: numpy.ndarray, radius: float, min_score: float,
               min_mean: float = 0.0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Sub-pixel disc centres (n, 2) as (y, x) and window mean intensities, for discs with NCC >= min_score
    and window mean >= min_mean."""
    peaks, means, score = _candidates(image, template, radius, min_score)
    bright = means >= min_mean
    peaks, means = peaks[bright], means[bright]
    return _refine(score, peaks), means


def first_order_discs(pattern: numpy.ndarray, reference: numpy.ndarray, min_score: float = 0.5,
                      min_separation_radii: float = 1.5, shell_tolerance: float = 0.15,
                      min_relative_intensity: float = 1e-5) -> tuple[numpy.ndarray | None, numpy.ndarray]:
    """(central disc centre or None, first-order disc centres (n, 2)) in px, (y, x)."""
    image = numpy.asarray(pattern, dtype=numpy.float64)
    if image.shape != numpy.shape(reference):
        raise InputError(f"pattern shape {image.shape} differs from the reference shape {numpy.shape(reference)}")
    template, radius, ref_center = _template(reference)
    peaks, means, score = _candidates(image, template, radius, min_score)
    if len(peaks) == 0:
        return None, numpy.zeros((0, 2))
    offsets = numpy.hypot(peaks[:, 0] - ref_center[0], peaks[:, 1] - ref_center[1])
    nearest = int(numpy.argmin(offsets))
    if offsets[nearest] > radius:  # the central disc can tilt with the sample, but not off its own disc
        return None, numpy.zeros((0, 2))
    central = _refine(score, peaks[nearest])[0]
    ys, xs = numpy.indices(image.shape)
    outside = numpy.hypot(ys - central[0], xs - central[1]) > _CENTRAL_MASK_RADII * radius
    bragg, _ = find_discs(numpy.where(outside, image, 0.0), template, radius, min_score,
                          min_mean=min_relative_intensity * means[nearest])
    distances = numpy.hypot(bragg[:, 0] - central[0], bragg[:, 1] - central[1])
    far = distances > min_separation_radii * radius
    bragg, distances = bragg[far], distances[far]
    if len(bragg) == 0:
        return central, numpy.zeros((0, 2))
    shell = distances <= distances.min() * (1.0 + shell_tolerance)
    return central, bragg[shell]


def bragg_distance(pattern: numpy.ndarray, calibration: DetectorCalibration, min_score: float = 0.5,
                   min_separation_radii: float = 1.5, shell_tolerance: float = 0.15,
                   min_discs: float = 2.0, min_relative_intensity: float = 1e-5) -> float:
    """Mean distance of the first-order Bragg discs from the central disc; mrad, or px when uncalibrated.

    NaN (with a NoBraggDiscsWarning) when the central disc or fewer than `min_discs` first-order discs are
    found. Requires the vacuum reference as the disc template."""
    if calibration.reference is None:
        raise InputError("bragg_distance needs a vacuum reference pattern (the probe without a sample) as its "
                         "disc template")
    array = numpy.asarray(pattern)
    if array.ndim != 2:
        raise InputError(f"a diffraction pattern must be 2-D (det_y, det_x), got shape {array.shape}")
    central, discs = first_order_discs(array, calibration.reference, min_score, min_separation_radii,
                                       shell_tolerance, min_relative_intensity)
    if central is None or len(discs) < min_discs:
        found = "no central disc" if central is None else f"{len(discs)} first-order disc(s)"
        warnings.warn(f"bragg_distance: {found} found (need the central disc and >= {min_discs:g}); value is NaN",
                      NoBraggDiscsWarning, stacklevel=2)
        return math.nan
    distance = float(numpy.mean(numpy.hypot(discs[:, 0] - central[0], discs[:, 1] - central[1])))
    return distance * (1.0 if calibration.mrad_per_px is None else float(calibration.mrad_per_px))

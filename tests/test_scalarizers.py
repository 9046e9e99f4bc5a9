"""Scalarizers against independent references that abTEM computed when the fixtures were made.

The fixtures (resources/*.npz, see resources/README.md) hold abTEM multislice 4D-STEM data plus abTEM's own
center_of_mass and AnnularDetector (integrate_radial) results on exactly the saved pixels, so these tests need
no abTEM and do not share code with the implementation under test.
"""
from __future__ import annotations

import importlib.metadata
import math
import pathlib
import textwrap

import numpy
import pytest
import scipy.ndimage

from dkl4dstem.scalarizers.bragg import NoBraggDiscsWarning
from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers import physics, reference as reference_module
from dkl4dstem.scalarizers import ENTRY_POINT_GROUP, Scalarizer, available_scalarizers, get_scalarizer

RESOURCES = pathlib.Path(__file__).resolve().parent.parent / "resources"
FILES = ["graphene_si.npz", "graphene_10mrad.npz"]


@pytest.fixture(scope="module", params=FILES)
def dataset(request: pytest.FixtureRequest) -> dict:
    with numpy.load(RESOURCES / request.param) as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def demo() -> dict:
    with numpy.load(RESOURCES / "graphene_si.npz") as npz:
        return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def bragg_data() -> dict:
    with numpy.load(RESOURCES / "graphene_10mrad.npz") as npz:
        return {key: npz[key] for key in npz.files}


def calibration(d: dict, *, reference: bool = True, calibrated: bool = True) -> DetectorCalibration:
    return DetectorCalibration(reference=d["reference"] if reference else None,
                               mrad_per_px=float(d["mrad_per_px"]) if calibrated else None,
                               semiangle_mrad=float(d["semiangle_mrad"]))


def scan_map(name: str, d: dict, cal: DetectorCalibration, **params: float) -> numpy.ndarray:
    s = get_scalarizer(name, **params)
    return numpy.array([[s(p, cal) for p in row] for row in d["data"]])


# ------------------------------------------------------------------------------------------- fixture layout

def test_fixture_layout(dataset: dict) -> None:
    data = dataset["data"]
    assert data.dtype == numpy.float32 and data.ndim == 4
    assert dataset["survey"].shape == data.shape[:2]
    assert dataset["reference"].shape == data.shape[2:]
    assert dataset["abtem_com_mrad"].shape == data.shape[:2] + (2,)
    # odd detector: abTEM's zero-angle pixel is the geometric centre (n - 1) / 2, our no-reference origin
    assert all(n % 2 == 1 for n in data.shape[2:])
    for key in ("mrad_per_px", "nm_per_px", "semiangle_mrad"):
        assert dataset[key].shape == () and float(dataset[key]) > 0


# --------------------------------------------------------------------------------------------- CoM vs abTEM

def test_com_matches_abtem_center_of_mass(dataset: dict) -> None:
    # abTEM's CoM is measured from the zero-angle pixel; ours from the vacuum reference's CoM. The reference's
    # own CoM (abTEM's value for the vacuum probe, stored at generation) is therefore subtracted, not assumed 0.
    expected = dataset["abtem_com_mrad"] - dataset["abtem_reference_com_mrad"]
    scale = numpy.abs(expected).max()
    assert scale > 0.05  # the beam really is deflected (60 kV graphene + Si: ~1 mrad at 30, ~0.08 at 10 mrad)
    cal = calibration(dataset)
    numpy.testing.assert_allclose(scan_map("com_x", dataset, cal), expected[..., 0], rtol=0, atol=1e-3 * scale)
    numpy.testing.assert_allclose(scan_map("com_y", dataset, cal), expected[..., 1], rtol=0, atol=1e-3 * scale)


def test_com_without_reference_is_relative_to_pattern_centre(demo: dict) -> None:
    # no reference -> origin (n - 1) / 2, which is abTEM's zero-angle pixel: abTEM's raw CoM, no correction
    cal = calibration(demo, reference=False)
    expected = demo["abtem_com_mrad"]
    scale = numpy.abs(expected).max()
    numpy.testing.assert_allclose(scan_map("com_x", demo, cal), expected[..., 0], rtol=0, atol=1e-3 * scale)
    numpy.testing.assert_allclose(scan_map("com_y", demo, cal), expected[..., 1], rtol=0, atol=1e-3 * scale)


def test_com_magnitude_and_angle_consistent(demo: dict) -> None:
    cal = calibration(demo)
    x, y = scan_map("com_x", demo, cal), scan_map("com_y", demo, cal)
    magnitude, angle = scan_map("com_magnitude", demo, cal), scan_map("com_angle", demo, cal)
    numpy.testing.assert_allclose(magnitude, numpy.hypot(x, y), rtol=1e-12, atol=1e-15)
    numpy.testing.assert_allclose(angle, numpy.arctan2(y, x), rtol=1e-12, atol=1e-15)
    # and against abTEM's vector where the deflection is well above its error
    expected = demo["abtem_com_mrad"] - demo["abtem_reference_com_mrad"]
    strong = numpy.hypot(expected[..., 0], expected[..., 1]) > 0.2
    assert strong.sum() > 20
    difference = numpy.angle(numpy.exp(1j * (angle - numpy.arctan2(expected[..., 1], expected[..., 0]))))
    assert numpy.abs(difference[strong]).max() < 1e-2
    assert numpy.ptp(angle[strong]) > numpy.pi  # deflections point all around Si atoms


def test_uncalibrated_com_is_in_pixels(demo: dict) -> None:
    mrad_per_px = float(demo["mrad_per_px"])
    for name in ("com_x", "com_y", "com_magnitude"):
        s = get_scalarizer(name)
        assert s.units_for(calibration(demo)) == "mrad"
        assert s.units_for(calibration(demo, calibrated=False)) == "px"
        for pattern in demo["data"][::7, ::5].reshape(-1, *demo["data"].shape[2:]):
            mrad = s(pattern, calibration(demo))
            px = s(pattern, calibration(demo, calibrated=False))
            assert px == pytest.approx(mrad / mrad_per_px, rel=1e-9, abs=1e-12)
    angle = get_scalarizer("com_angle")
    assert angle.units_for(calibration(demo, calibrated=False)) == "rad"
    pattern = demo["data"][3, 4]
    assert angle(pattern, calibration(demo, calibrated=False)) == pytest.approx(angle(pattern, calibration(demo)))


@pytest.mark.parametrize("dtype", [numpy.uint16, numpy.float16, numpy.float32])
def test_com_accepts_camera_dtypes(demo: dict, dtype: type) -> None:
    pattern = demo["data"][10, 12]
    if dtype is numpy.uint16:  # counts near the top of the range: sums must not overflow
        pattern = numpy.round(pattern / pattern.max() * 65000)
    cast = pattern.astype(dtype)
    cal = calibration(demo)
    for name in ("com_x", "com_y", "vbf"):
        s = get_scalarizer(name)
        assert s(cast, cal) == pytest.approx(s(cast.astype(numpy.float64), cal), rel=1e-12, abs=1e-12)
    if dtype is numpy.uint16:
        assert get_scalarizer("vbf")(cast, cal) > 65535  # would have wrapped in 16-bit arithmetic


# --------------------------------------------------------------------------------- virtual detectors vs abTEM

def _annular_keys(d: dict) -> list[str]:
    return [k for k in d if k.startswith("abtem_") and k.endswith("mrad") and d[k].ndim == 2]


@pytest.mark.parametrize("name", ["vbf", "vabf", "vadf"])
def test_virtual_detectors_match_abtem_annular_detector(dataset: dict, name: str) -> None:
    keys = _annular_keys(dataset)
    assert len(keys) >= 2
    cal = calibration(dataset)
    for key in keys:  # the detector type only picks default radii: explicit radii must give abTEM's value
        inner, outer = float(dataset[f"{key}_inner_mrad"]), float(dataset[f"{key}_outer_mrad"])
        ours = scan_map(name, dataset, cal, inner_mrad=inner, outer_mrad=outer)
        numpy.testing.assert_allclose(ours, dataset[key], rtol=1e-2, err_msg=key)
        assert numpy.ptp(dataset[key]) > 0  # a contrast image, not a constant


def test_virtual_detector_defaults_follow_semiangle(demo: dict) -> None:
    cal = calibration(demo)
    alpha = float(demo["semiangle_mrad"])
    pattern = demo["data"][5, 6]
    n = demo["data"].shape[-1]
    edge = ((n - 1) / 2 + 0.5) * float(demo["mrad_per_px"])  # reference is centred: edge = half the detector
    assert get_scalarizer("vbf")(pattern, cal) == get_scalarizer("vbf", inner_mrad=0, outer_mrad=alpha)(pattern, cal)
    assert (get_scalarizer("vabf")(pattern, cal)
            == get_scalarizer("vabf", inner_mrad=alpha / 2, outer_mrad=alpha)(pattern, cal))
    assert (get_scalarizer("vadf")(pattern, cal)
            == pytest.approx(get_scalarizer("vadf", inner_mrad=alpha, outer_mrad=edge)(pattern, cal)))
    # physics: the BF disc carries almost all of the beam, the ADF ring only what the sample scattered out
    assert get_scalarizer("vbf")(pattern, cal) > 0.9 * pattern.sum()
    assert 0 < get_scalarizer("vadf")(pattern, cal) < 0.05 * pattern.sum()


def test_uncalibrated_virtual_detector_radii_are_pixels(demo: dict) -> None:
    mrad_per_px = float(demo["mrad_per_px"])
    pattern = demo["data"][20, 9]
    calibrated = get_scalarizer("vabf", inner_mrad=15.0, outer_mrad=25.0)(pattern, calibration(demo))
    in_px = get_scalarizer("vabf", inner_mrad=15.0 / mrad_per_px, outer_mrad=25.0 / mrad_per_px)
    assert in_px(pattern, calibration(demo, calibrated=False)) == pytest.approx(calibrated, rel=1e-12)
    assert get_scalarizer("vabf").units_for(calibration(demo, calibrated=False)) == "a.u."


# --------------------------------------------------------------------------------------------- Bragg discs

def test_bragg_distance_matches_lattice(bragg_data: dict) -> None:
    truth = float(bragg_data["bragg_distance_mrad"])
    values = scan_map("bragg_distance", bragg_data, calibration(bragg_data))
    assert numpy.isfinite(values).all()
    error = values / truth - 1
    assert abs(numpy.median(error)) < 0.01
    assert numpy.mean(numpy.abs(error) < 0.02) > 0.9  # discs near Si / the vacancy carry diffuse structure
    assert numpy.abs(error).max() < 0.15


def test_bragg_distance_tracks_strain_and_tilt(bragg_data: dict) -> None:
    cal = calibration(bragg_data)
    s = get_scalarizer("bragg_distance")
    pattern = bragg_data["data"][2, 3].astype(numpy.float64)
    base = s(pattern, cal)
    centre = (numpy.array(pattern.shape) - 1) / 2
    # Synthetic lattice strain: scale everything outside the central disc about the centre (a strained
    # lattice moves the Bragg discs, not the unscattered beam). The central disc (edge at 5.4 px) is kept.
    central = numpy.hypot(*(numpy.indices(pattern.shape) - centre[:, None, None])) <= 5.7
    for strain in (0.95, 1.05):
        discs = scipy.ndimage.affine_transform(numpy.where(central, 0.0, pattern), numpy.eye(2) / strain,
                                               offset=centre - centre / strain, order=1)
        strained = numpy.where(central, pattern, 0.0) + discs
        assert s(strained, cal) == pytest.approx(base * strain, rel=0.01)
    tilted = numpy.roll(pattern, (1, -2), axis=(0, 1))  # the whole pattern moves: the distance does not
    assert s(tilted, cal) == pytest.approx(base, rel=0.01)
    in_px = s(pattern, calibration(bragg_data, calibrated=False))
    assert in_px == pytest.approx(base / float(bragg_data["mrad_per_px"]), rel=1e-9)


def test_bragg_distance_nan_and_warning_without_discs(bragg_data: dict) -> None:
    cal = calibration(bragg_data)
    s = get_scalarizer("bragg_distance")
    noise = numpy.random.default_rng(0).random(bragg_data["reference"].shape)
    for pattern in (bragg_data["reference"], noise):
        with pytest.warns(NoBraggDiscsWarning):
            assert math.isnan(s(pattern, cal))


def test_bragg_distance_requires_reference(bragg_data: dict) -> None:
    s = get_scalarizer("bragg_distance")
    with pytest.raises(InputError, match="reference"):
        s.units_for(calibration(bragg_data, reference=False))
    with pytest.raises(InputError, match="reference"):
        s(bragg_data["data"][0, 0], calibration(bragg_data, reference=False))


# ---------------------------------------------------------------------------------------------- registry

def test_unknown_name_lists_available() -> None:
    with pytest.raises(InputError) as info:
        get_scalarizer("com_magnitud")
    for name in ("com_magnitude", "com_x", "vbf", "vadf", "bragg_distance"):
        assert name in str(info.value)
    assert {"com_x", "com_y", "com_angle", "com_magnitude", "vbf", "vabf", "vadf",
            "bragg_distance"} <= set(available_scalarizers())


def test_bad_params_rejected() -> None:
    with pytest.raises(InputError, match="inner_mrad"):  # the message lists the valid names
        get_scalarizer("vbf", radius=3)
    with pytest.raises(InputError, match="number"):
        get_scalarizer("vbf", outer_mrad="wide")
    with pytest.raises(InputError):
        get_scalarizer("vadf", inner_mrad=40, outer_mrad=20)
    with pytest.raises(InputError):
        get_scalarizer("bragg_distance", min_score=1.5)
    with pytest.raises(InputError, match="valid: none"):
        get_scalarizer("com_x").with_params(scale=2)
    assert get_scalarizer("vbf", outer_mrad=12).with_params(inner_mrad=3).params == {"inner_mrad": 3.0,
                                                                                   "outer_mrad": 12.0}


USER_MODULE = """
    import numpy
    def brightest(pattern):
        '''Largest pixel value.'''
        return float(numpy.max(pattern))
    def scaled_sum(pattern, calibration, scale=2.0):
        return scale * float(numpy.sum(pattern)) * (calibration.mrad_per_px or 1.0)
    scaled_sum.units = "counts"
"""


@pytest.fixture()
def user_module(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "dkl_user_scalarizers.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "dkl_user_scalarizers"


def test_module_function_specs(user_module: str, demo: dict) -> None:
    pattern, cal = demo["data"][0, 0], calibration(demo)
    one_arg = get_scalarizer(f"{user_module}:brightest")
    assert isinstance(one_arg, Scalarizer) and one_arg.params == {}
    assert one_arg(pattern, cal) == pytest.approx(float(pattern.max()))
    assert one_arg.description == "Largest pixel value."
    two_arg = get_scalarizer(f"{user_module}:scaled_sum", scale=3)
    assert two_arg.params == {"scale": 3.0} and two_arg.units_for(cal) == "counts"
    assert two_arg(pattern, cal) == pytest.approx(3 * float(pattern.sum()) * float(demo["mrad_per_px"]))
    with pytest.raises(InputError, match="scale"):
        get_scalarizer(f"{user_module}:scaled_sum", offset=1)
    for bad in (f"{user_module}:missing", "no_such_module_xyz:func", f"{user_module}:"):
        with pytest.raises(InputError):
            get_scalarizer(bad)


def test_entry_point_scalarizer(user_module: str, monkeypatch: pytest.MonkeyPatch, demo: dict) -> None:
    entry = importlib.metadata.EntryPoint(name="max_pixel", value=f"{user_module}:brightest",
                                          group=ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [entry] if kw.get("group") == ENTRY_POINT_GROUP else real(**kw))
    assert "max_pixel" in available_scalarizers()
    pattern = demo["data"][1, 1]
    assert get_scalarizer("max_pixel")(pattern, calibration(demo)) == pytest.approx(float(pattern.max()))


# ------------------------------------------------------------------------------------------ demo + speed

def test_demo_com_maxima_sit_at_si_atoms(demo: dict) -> None:
    magnitude = scan_map("com_magnitude", demo, calibration(demo))
    top = numpy.argwhere(magnitude >= numpy.quantile(magnitude, 0.99))
    si = demo["si_positions_px"]  # (row, col) in scan pixels
    distance_px = numpy.linalg.norm(top[:, None, :] - si[None], axis=-1).min(axis=1)
    assert (distance_px * float(demo["nm_per_px"]) * 10 < 1.0).all()  # within 1 Å of a Si atom


def _clear_caches() -> None:
    for module in (physics, reference_module):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):  # the functools caches (coordinates, masks, disc radii)
                value.cache_clear()
    reference_module._REFERENCE_CACHE.clear()


def test_warm_caches_give_the_cold_value() -> None:
    """The caches that make a call cheap (coordinates, masks, reference statistics; timed in
    benchmarks/scalarizer_speed.py) change nothing: after calls on other patterns and another calibration, every
    scalarizer gives what it gave with all caches empty."""
    seed = 1
    print("seed", seed)
    rng = numpy.random.default_rng(seed)
    ys, xs = numpy.indices((64, 64))
    reference = numpy.exp(-((ys - 31.5) ** 2 + (xs - 31.5) ** 2) / 50.0).astype(numpy.float32)
    cal = DetectorCalibration(reference=reference, mrad_per_px=1.0, semiangle_mrad=10.0)
    other = DetectorCalibration(reference=numpy.roll(reference, 3, axis=1), mrad_per_px=0.5, semiangle_mrad=10.0)
    first, second = ((reference * rng.uniform(0.5, 1.5, reference.shape)).astype(numpy.float32) for _ in range(2))
    names = ("com_x", "com_magnitude", "vbf", "vabf", "vadf")
    cold = {}
    for name in names:
        for calibration_ in (cal, other):
            _clear_caches()
            cold[name, id(calibration_)] = get_scalarizer(name)(second, calibration_)
    assert cold["com_x", id(cal)] != cold["com_x", id(other)]  # the two calibrations differ where it shows
    for name in names:
        scalarizer = get_scalarizer(name)
        for calibration_ in (cal, other, cal):
            scalarizer(first, calibration_)
            assert scalarizer(second, calibration_) == cold[name, id(calibration_)], name

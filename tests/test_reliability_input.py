"""Reliability, round two: odd data types, checks before any dose, the scalarizer trust model and results,
and the engine's time limit on `measure()`. See docs/RELIABILITY.md."""
from __future__ import annotations

import json
import math
import os
import threading
import typing

import h5py
import numpy
import pytest

from tests.test_reliability import (FIXTURE, _cli_error, _existing_session, arrays, config,  # noqa: F401
                                    file_digest, replay, run_guarded)

from dkl4dstem import cli
from dkl4dstem.errors import InputError, InstrumentError  # noqa: E402
from dkl4dstem.experiment import Experiment  # noqa: E402
from dkl4dstem.evaluation.groundtruth import ground_truth_map  # noqa: E402
from dkl4dstem.instruments.replay import ReplayInstrument, open_replay, virtual_adf  # noqa: E402
from dkl4dstem.scalarizers import get_scalarizer  # noqa: E402
from dkl4dstem.session.store import read_session  # noqa: E402
from dkl4dstem.instruments.watchdog import TimedMeasure  # noqa: E402
from tests import faults  # noqa: E402
from tests.faults import FaultyInstrument  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# --- 5. data types ---------------------------------------------------------------------------------------------------
def _as_type(data: numpy.ndarray, dtype: str) -> numpy.ndarray:
    """The fixture scaled into the type's range (large values: the sums overflow in the type itself)."""
    top = {"int16": 30000, "uint8": 250, "uint16": 60000, "int32": 2e9, "float16": 60000}[dtype]
    return numpy.round(data / data.max() * top).astype(dtype) if dtype != "float16" else \
        (data / data.max() * top).astype(numpy.float16)


@pytest.mark.parametrize("dtype", ["int16", "uint8", "uint16", "int32", "float16"])
def test_integer_and_float16_data_are_summed_exactly(dtype: str, arrays: dict[str, numpy.ndarray],
                                                     tmp_path: typing.Any) -> None:
    data = _as_type(arrays["data"], dtype)
    path = str(tmp_path / f"{dtype}.npy")
    numpy.save(path, data)
    exact = data.astype(numpy.float64)
    instrument = open_replay(path)
    try:
        survey = instrument.survey().image
        numpy.testing.assert_array_equal(survey, virtual_adf(exact))  # float64 sums, whatever the stored type
        com = get_scalarizer("com_magnitude")
        truth = ground_truth_map(instrument.data, com, instrument.calibration())
        numpy.testing.assert_allclose(truth, ground_truth_map(exact, com, instrument.calibration()), rtol=1e-5)
        assert numpy.isfinite(truth).all() and numpy.isfinite(survey).all()
    finally:
        instrument.close()


@pytest.mark.parametrize("case, message", [
    ("complex64", "complex data (complex64) is not supported"),
    ("npz-named-npy", "is an .npz archive (zip) named .npy; rename it to .npz"),
    ("all-zero", "data holds only zeros"),
])
def test_odd_data_is_refused_before_any_dose(case: str, message: str, arrays: dict[str, numpy.ndarray],
                                             tmp_path: typing.Any, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[tuple[int, int]] = []
    monkeypatch.setattr(ReplayInstrument, "measure", lambda self, y, x: measured.append((y, x)))
    path = str(tmp_path / "data.npy")
    if case == "complex64":
        numpy.save(path, arrays["data"].astype(numpy.complex64))
    elif case == "npz-named-npy":
        with open(path, "wb") as file:
            numpy.savez(file, data=arrays["data"])
    else:
        path = str(tmp_path / "zeros.npz")
        numpy.savez(path, data=numpy.zeros_like(arrays["data"]), survey=arrays["survey"])
    out = str(tmp_path / "out")
    session, digest = _existing_session(out)
    line = _cli_error(["run", path, "--out", out, "--overwrite", "--no-truth"], capsys)
    assert message in line and measured == [] and file_digest(session) == digest


# --- 6. checks before any dose ---------------------------------------------------------------------------------------
def _uncalibrated(arrays: dict[str, numpy.ndarray], folder: str) -> str:
    path = os.path.join(folder, "raw.npy")  # a bare 4D array: no reference, no mrad_per_px
    numpy.save(path, arrays["data"])
    return path


def _with(key: str, value: typing.Any) -> typing.Callable[[dict[str, numpy.ndarray], str], str]:
    def make(arrays: dict[str, numpy.ndarray], folder: str) -> str:
        with numpy.load(FIXTURE) as npz:
            content = {name: npz[name] for name in npz.files}
        content[key] = value(content[key]) if callable(value) else value
        path = os.path.join(folder, "changed.npz")
        numpy.savez(path, **content)
        return path
    return make


def _fixture(arrays: dict[str, numpy.ndarray], folder: str) -> str:
    return FIXTURE


PREFLIGHT = [
    ("vbf-uncalibrated", _uncalibrated, ["--scalarizer", "vbf"], "radii default to the convergence semi-angle"),
    ("vabf-uncalibrated", _uncalibrated, ["--scalarizer", "vabf"], "radii default to the convergence semi-angle"),
    ("mrad-read-as-px", _uncalibrated, ["--scalarizer", "vadf", "--param", "inner_mrad=3", "--param",
                                        "outer_mrad=9"], "inner_mrad=3 is an angle, but the detector has no angular"),
    ("bragg-without-reference", _uncalibrated, ["--scalarizer", "bragg_distance"], "needs a vacuum reference"),
    ("inner-beyond-default-outer", _fixture, ["--scalarizer", "vadf", "--param", "inner_mrad=45"],
     "virtual detector needs 0 <= inner < outer, got 45"),
    ("annulus-beyond-detector", _fixture, ["--scalarizer", "vadf", "--param", "inner_mrad=60", "--param",
                                           "outer_mrad=90"], "holds no detector pixel; the detector reaches"),
    ("inner-1e400", _fixture, ["--scalarizer", "vadf", "--param", "inner_mrad=1e400"],
     "inner_mrad=inf of scalarizer 'vadf' must be a finite number"),
    ("zero-reference", _with("reference", numpy.zeros_like), [], "reference pattern has no positive intensity"),
]


@pytest.mark.parametrize("name, make, extra, message", PREFLIGHT, ids=[case[0] for case in PREFLIGHT])
def test_what_the_scalarizer_needs_is_checked_before_any_dose(
        name: str, make: typing.Callable[..., str], extra: list[str], message: str,
        arrays: dict[str, numpy.ndarray], tmp_path: typing.Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[tuple[int, int]] = []
    monkeypatch.setattr(ReplayInstrument, "measure", lambda self, y, x: measured.append((y, x)))
    out = str(tmp_path / "out")
    session, digest = _existing_session(out)
    line = _cli_error(["run", make(arrays, str(tmp_path)), "--out", out, "--overwrite", "--no-truth", *extra],
                      capsys)
    assert message in line, line
    assert measured == [] and file_digest(session) == digest and sorted(os.listdir(out)) == ["session.h5"]


def test_experiment_api_runs_the_same_checks_before_measuring(arrays: dict[str, numpy.ndarray]) -> None:
    """The engine (and so the Swift plug-in) refuses before the first measure() and closes the instrument."""
    uncalibrated = ReplayInstrument(arrays["data"], survey=arrays["survey"])
    for inner, make, message in [(45.0, lambda: replay(arrays), "inner < outer"),
                                 (3.0, lambda: uncalibrated, "no angular calibration")]:
        instrument = FaultyInstrument(make())
        with pytest.raises(InputError, match=message):
            Experiment(instrument, config(scalarizer="vadf", scalarizer_params={"inner_mrad": inner})).run()
        assert instrument.calls == [] and instrument.close_calls == 1


# --- 7. scalarizer trust and results ---------------------------------------------------------------------------------
def _session_naming(spec: str, tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> str:
    """A finished session whose stored scalarizer is `spec` (a session file crafted by someone else)."""
    out = str(tmp_path / "run")
    assert cli.main(["run", FIXTURE, "--out", out, "--seeds", "3", "--steps", "0", "--no-truth"]) == 0
    capsys.readouterr()
    with h5py.File(os.path.join(out, "session.h5"), "r+") as file:
        settings = json.loads(file.attrs["settings"])
        settings["scalarizer"] = spec
        file.attrs["settings"] = json.dumps(settings)
    return out


@pytest.mark.parametrize("how", ["stored-only", "named-again", "trust-flag"])
def test_session_scalarizer_code_runs_only_when_the_user_asks(how: str, tmp_path: typing.Any,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "tests.faults:marker_scalarizer"
    out = _session_naming(spec, tmp_path, capsys)
    marker = str(tmp_path / "marker")
    monkeypatch.setenv(faults.MARKER_ENV, marker)
    argv = ["run", "--resume", out, "--steps", "1", "--no-truth"]
    if how == "stored-only":
        line = _cli_error(argv, capsys)
        assert f"the session names the scalarizer '{spec}', which would import and run that code" in line
        assert not os.path.exists(marker), "the session's code was run"
        return
    extra = ["--scalarizer", spec] if how == "named-again" else ["--trust-session-scalarizer"]
    assert cli.main([*argv, *extra]) == 0, capsys.readouterr().err
    assert os.path.exists(marker)


def test_crafted_session_cannot_run_pickle_loads(tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = _session_naming("pickle:loads", tmp_path, capsys)
    line = _cli_error(["run", "--resume", out, "--no-truth"], capsys)
    assert "'pickle:loads', which would import and run that code" in line


@pytest.mark.parametrize("spec", ["tests.faults:string_number_scalarizer", "tests.faults:complex_scalarizer"])
def test_a_result_that_is_not_a_real_number_is_never_used(spec: str, arrays: dict[str, numpy.ndarray],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    result = run_guarded(Experiment(FaultyInstrument(replay(arrays)), config(scalarizer=spec)))
    assert all(math.isnan(v) for v in result.values) and len(result.values) == 4
    assert "no seed point gave a usable value" in str(result.error)
    assert any("not a real number" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("spec, raised", [("tests.faults:exiting_scalarizer", "SystemExit(3)"),
                                          ("tests.faults:interrupting_scalarizer", "KeyboardInterrupt()")])
def test_scalarizer_raising_systemexit_or_keyboardinterrupt_stops_cleanly(
        spec: str, raised: str, tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "run")
    capsys.readouterr()
    assert cli.main(["run", FIXTURE, "--out", out, "--seeds", "6", "--steps", "2", "--scalarizer", spec,
                     "--no-truth"]) == 1
    err = capsys.readouterr().err
    assert f"run stopped early: scalarizer {spec} raised {raised} at (" in err and "Traceback" not in err
    data = read_session(os.path.join(out, "session.h5"))
    assert len(data.values) >= 1 and math.isnan(data.values[-1])  # the point that raised is kept
    with open(os.path.join(out, "summary.json")) as file:
        assert json.load(file)["n_measured"] == len(data.values)


# --- 8. measure() time limit -----------------------------------------------------------------------------------------
class SlowFrame(FaultyInstrument):
    """A camera whose frame at one position never arrives (until close), without any driver timeout."""

    def __init__(self, inner: typing.Any, at: tuple[int, int], timeout_s: float | None) -> None:
        super().__init__(inner, at_positions={at: "hang"}, timeout=3600.0)
        if timeout_s is not None:
            self.measure_timeout_s = timeout_s


@pytest.mark.parametrize("source", ["instrument", "config"])
def test_a_hanging_measure_is_timed_out_and_the_run_stops_cleanly(source: str, arrays: dict[str, numpy.ndarray],
                                                                   tmp_path: typing.Any) -> None:
    order = numpy.random.default_rng(0).permutation(32 * 32)  # the seed sequence of seed 0
    hang_at = divmod(int(order[2]), 32)
    instrument = SlowFrame(replay(arrays), hang_at, 0.2 if source == "instrument" else None)
    # random seed points (no pre-training): the hang is set at the third point of seed 0's permutation
    settings = config(pretrain=False) if source == "instrument" else config(pretrain=False, measure_timeout_s=0.2)
    session = str(tmp_path / "session.h5")
    result = run_guarded(Experiment(instrument, settings, session_path=session), timeout=60)
    assert "does not respond" in str(result.error) and str(hang_at) in str(result.error)
    assert len(result.visited) == 2 and _positions(session) == result.visited
    assert instrument.close_calls == 1 and instrument.max_active_measures == 1  # no overlapping measure()
    instrument.release()


def _positions(path: str) -> list[tuple[int, int]]:
    return [(int(y), int(x)) for y, x in read_session(path).positions]


def test_a_late_frame_is_dropped_and_the_position_measured_again() -> None:
    release = threading.Event()
    calls: list[int] = []

    def measure(y: int, x: int) -> typing.Any:
        calls.append(len(calls))
        if len(calls) == 1:
            release.wait(60)
            return "late"
        return "fresh"

    timed = TimedMeasure(measure, 0.05)
    with pytest.raises(InstrumentError, match="timed out after 0.05 s"):
        timed(1, 2)
    release.set()  # the frame arrives after the limit: the next call waits for it, drops it, measures again
    assert timed(1, 2) == "fresh" and len(calls) == 2


def test_measure_timeout_must_be_positive(arrays: dict[str, numpy.ndarray]) -> None:
    with pytest.raises(InputError, match="measure_timeout_s must be a positive number"):
        Experiment(FaultyInstrument(replay(arrays)), config(measure_timeout_s=0.0)).run()

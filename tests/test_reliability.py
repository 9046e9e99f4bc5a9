"""Reliability: the session file survives a kill, faults never hang or escape the loop, bad input never costs data.

Every Experiment here runs on a worker thread joined with a timeout (`run_guarded`): a hang fails the test
instead of hanging the suite, and any exception escaping `Experiment.run()` is reported as such.
Fault injection lives in tests/faults.py. See docs/RELIABILITY.md for the table these tests back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing

import h5py
import numpy
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `tests.faults:...` scalarizer specs need the repository root importable
    sys.path.insert(0, ROOT)

import linear_operator  # noqa: E402

from dkl4dstem import cli

from dkl4dstem.models import dkl as model_module

from dkl4dstem.posterior import cache as posterior_module
from dkl4dstem.errors import InputError  # noqa: E402
from dkl4dstem.experiment import Experiment, ExperimentConfig, ExperimentResult, StepEvent  # noqa: E402
from dkl4dstem.instruments.replay import ReplayInstrument  # noqa: E402
from dkl4dstem.session.store import SessionWriter, read_session  # noqa: E402
from tests import faults, seeding  # noqa: E402
from tests.faults import FaultyInstrument  # noqa: E402

FIXTURE = os.path.join(ROOT, "resources", "graphene_si.npz")
SMALL = {"seeds": 4, "steps": 4, "initial_iterations": 20, "update_iterations": 5, "refit_iterations": 20}
ENGINE_LOGGER = "dkl4dstem.experiment"

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # exclusions / rollbacks warn by design


# --- helpers ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arrays() -> dict[str, numpy.ndarray]:
    with numpy.load(FIXTURE) as npz:
        return {name: npz[name] for name in ("data", "survey", "reference", "mrad_per_px", "nm_per_px")}


def replay(arrays: dict[str, numpy.ndarray], reference: bool = True) -> ReplayInstrument:
    return ReplayInstrument(arrays["data"], survey=arrays["survey"],
                            reference=arrays["reference"] if reference else None,
                            mrad_per_px=float(arrays["mrad_per_px"]), nm_per_px=float(arrays["nm_per_px"]))


def config(**overrides: typing.Any) -> ExperimentConfig:
    return ExperimentConfig(**{**SMALL, **overrides})


def run_guarded(experiment: Experiment, timeout: float = 90.0) -> ExperimentResult:
    """Experiment.run() on a worker thread (as in Swift); fails on a hang or on any exception escaping run()."""
    box: dict[str, typing.Any] = {}

    def target() -> None:
        try:
            box["result"] = experiment.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc

    thread = threading.Thread(target=target, name="experiment-under-test", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"Experiment.run() still running after {timeout} s (hang)"
    assert "error" not in box, f"exception escaped Experiment.run(): {box['error']!r}"
    return typing.cast(ExperimentResult, box["result"])


def assert_closed_cleanly(instrument: FaultyInstrument) -> None:
    assert instrument.close_calls >= 1, "instrument.close() was not called"
    assert not instrument.camera_running and instrument.probe_parked
    assert instrument.measure_after_close == 0, "the probe was moved after close()"
    assert instrument.max_active_measures == 1, "two measurements overlapped"


def warnings_logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith(ENGINE_LOGGER) and r.levelno >= logging.WARNING and text in r.getMessage()]


def file_digest(path: str) -> str:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


# --- 1. session file ---------------------------------------------------------------------------------------------
def test_every_point_is_on_disk_before_the_probe_moves(arrays: dict[str, numpy.ndarray], tmp_path: typing.Any) -> None:
    """At every measure() call, a byte copy of session.h5 (what a kill at that instant would leave) is readable
    and holds every point measured so far: position, raw pattern, value, timestamp, phase."""
    session_path = str(tmp_path / "session.h5")
    measured: list[tuple[int, int]] = []
    snapshots: list[int] = []

    class Checking(FaultyInstrument):
        def measure(self, y: int, x: int) -> typing.Any:
            if os.path.exists(session_path):
                copy = str(tmp_path / "copy.h5")
                shutil.copyfile(session_path, copy)
                data = read_session(copy)
                assert [tuple(p) for p in data.positions] == measured
                for row, (py, px) in enumerate(measured):
                    numpy.testing.assert_array_equal(data.patterns[row], arrays["data"][py, px])
                assert numpy.all(numpy.diff(data.timestamps) >= 0) and numpy.all(data.timestamps > 1e9)
                snapshots.append(len(measured))
            measurement = super().measure(y, x)
            measured.append((int(y), int(x)))
            return measurement

    instrument = Checking(replay(arrays))
    experiment = Experiment(instrument, config(steps=7, checkpoint_every=5), session_path=session_path,
                            session_settings={"data": "fixture"})
    result = run_guarded(experiment)
    assert result.error is None and len(result.visited) == 11
    assert snapshots == list(range(11)), "session.h5 was not checked before every move"

    data = read_session(session_path)
    assert [tuple(p) for p in data.positions] == result.visited == measured
    numpy.testing.assert_array_equal(data.values, result.values)
    assert list(data.phases) == [0] * 4 + [1] * 7
    numpy.testing.assert_array_equal(data.survey, arrays["survey"])
    numpy.testing.assert_array_equal(data.reference, arrays["reference"])
    assert data.settings["seeds"] == 4 and data.settings["steps"] == 7 and data.settings["data"] == "fixture"
    assert data.settings["units"] == "mrad"
    with h5py.File(session_path, "r") as file:
        checkpoints = sorted(file["model"].keys())
    assert checkpoints == ["000005", "000010", "000011"]  # every 5 points, and at the end
    # the checkpointed model state loads into a fresh model of the same configuration
    settings = data.settings
    fresh = model_module.DKLModel(settings["window"] ** 2, latent_dim=settings["latent_dim"],
                                  hidden=tuple(settings["hidden"]))
    assert data.model_state is not None
    fresh.load_state(data.model_state)


def test_unreadable_model_checkpoint_does_not_lose_the_session(tmp_path: typing.Any) -> None:
    """A checkpoint cut short (kill during checkpoint) is skipped; the points and an older checkpoint remain."""
    path = str(tmp_path / "session.h5")
    writer = SessionWriter(path, {"seeds": 1}, numpy.random.default_rng(0).random((8, 8)), (5, 5))
    for k in range(3):
        writer.append(k, 0, numpy.full((5, 5), k, dtype=numpy.float32), float(k), "seed")
    writer.checkpoint(2, {"w": torch.arange(4.0)})
    buffer = io.BytesIO()
    torch.save({"w": torch.arange(8.0)}, buffer)
    writer.file.create_dataset("model/000003", data=numpy.frombuffer(buffer.getvalue()[:-40], dtype=numpy.uint8))
    writer.close()
    with pytest.warns(RuntimeWarning, match="000003 is unreadable"):
        data = read_session(path)
    assert len(data.values) == 3 and list(data.values) == [0.0, 1.0, 2.0]
    assert data.model_state is not None and torch.equal(data.model_state["w"], torch.arange(4.0))


def _write_rows_forever(path: str, ready: typing.Any) -> None:  # pragma: no cover - runs in a killed child
    writer = SessionWriter(path, {"seeds": 1}, numpy.random.default_rng(0).random((16, 16)), (24, 24))
    rng = numpy.random.default_rng(1)
    k = 0
    while True:
        writer.append(k % 16, k // 16 % 16, rng.random((24, 24), dtype=numpy.float32), float(k), "step")
        if k % 10 == 0:
            writer.checkpoint(k, {"w": torch.full((64, 64), float(k))})
        ready.send(k)  # reported as measured only after append() returned
        k += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.slow
def test_session_writer_killed_at_random_instants_leaves_a_readable_file(tmp_path: typing.Any) -> None:
    """SIGKILL at random instants (also mid-append, mid-checkpoint): the file reads and holds every reported row."""
    context = multiprocessing.get_context("fork")
    rng = seeding.seeded_rng("kill instants")
    for trial in range(6):
        path = str(tmp_path / f"killed{trial}.h5")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_write_rows_forever, args=(path, send), daemon=True)
        child.start()
        reported = -1
        delay = 0.05 + rng.random() * 0.4
        print(f"trial {trial}: SIGKILL {delay:.3f} s after the start (not before the first reported row)")
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline or reported < 0:
            if receive.poll(0.005):
                reported = receive.recv()
            if time.monotonic() > deadline + 30:
                break
        os.kill(typing.cast(int, child.pid), signal.SIGKILL)
        child.join(10)
        while receive.poll(0):
            reported = receive.recv()
        data = read_session(path)
        n = reported + 1
        assert len(data.values) >= n, f"trial {trial}: {n} rows reported, file holds {len(data.values)}"
        numpy.testing.assert_array_equal(data.values[:n], numpy.arange(n, dtype=float))
        assert len(data.values) <= n + 1  # at most the row being written when the kill came


def _reader(stream: typing.IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.slow
def test_sigkill_cli_then_resume_counts_each_point_once(tmp_path: typing.Any, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    seeds, steps = 4, 12
    total = seeds + steps
    kill_after = seeding.seeded("DKL4DSTEM_KILL_AFTER", 2, total - 2)
    out = str(tmp_path / "run")
    env = {**os.environ, "DKL4DSTEM_FAULTS_FAST": "1", "DKL4DSTEM_THREADS": "1",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.faults", "run", FIXTURE, "--out", out, "--seeds", str(seeds), "--steps",
         str(steps), "--no-truth"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
    reported: list[tuple[int, int, float]] = []
    try:
        while len(reported) < kill_after:
            line = lines.get(timeout=120)
            assert line is not None, f"the CLI ended before point {kill_after} (rc {process.wait()})"
            if line.startswith("MEASURED "):
                _, _, y, x, value = line.split()
                reported.append((int(y), int(x), float(value)))
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    assert process.returncode == -signal.SIGKILL
    message = f"(killed after point {kill_after}; rerun with DKL4DSTEM_KILL_AFTER={kill_after})"

    before = read_session(os.path.join(out, "session.h5"))
    on_disk = [tuple(int(v) for v in p) for p in before.positions]
    assert on_disk[:len(reported)] == [(y, x) for y, x, _ in reported], message
    numpy.testing.assert_allclose(before.values[:len(reported)], [v for _, _, v in reported], rtol=1e-12)
    assert len(set(on_disk)) == len(on_disk) <= total

    measured_again: list[tuple[int, int]] = []
    original = ReplayInstrument.measure

    def counting(self: ReplayInstrument, y: int, x: int) -> typing.Any:
        measured_again.append((int(y), int(x)))
        return original(self, y, x)

    monkeypatch.setattr(ReplayInstrument, "measure", counting)
    assert cli.main(["run", "--resume", out, "--no-truth"]) == 0, capsys.readouterr().err
    with open(os.path.join(out, "summary.json")) as file:
        summary = json.load(file)
    visited = [tuple(p) for p in summary["visited"]]
    assert len(visited) == total == summary["n_measured"], message
    assert len(set(visited)) == total, f"a point was counted twice {message}"
    assert visited[:len(on_disk)] == on_disk, message
    assert summary["values"][:len(on_disk)] == pytest.approx(list(before.values), rel=1e-12)
    assert not set(measured_again) & set(on_disk), f"re-measured after resume {message}"
    assert len(measured_again) == total - len(on_disk)
    assert summary["phases"] == ["seed"] * seeds + ["step"] * steps
    after = read_session(os.path.join(out, "session.h5"))
    assert [tuple(int(v) for v in p) for p in after.positions] == visited
    assert after.settings["initial_iterations"] == faults.FAST_TRAINING["initial_iterations"]


def test_resume_of_a_stopped_run_continues_without_remeasuring(arrays: dict[str, numpy.ndarray],
                                                               tmp_path: typing.Any) -> None:
    path = str(tmp_path / "session.h5")
    first = Experiment(FaultyInstrument(replay(arrays)), config(steps=6, checkpoint_every=6), session_path=path)
    first_events: list[StepEvent] = []

    def stop_after_seven(event: StepEvent) -> None:
        first_events.append(event)
        if event.n_measured == 7:
            first.stop()

    first.on_event = stop_after_seven
    stopped = run_guarded(first)
    assert stopped.stopped and len(stopped.visited) == 7 and stopped.error is None

    session = read_session(path)
    assert session.model_state is not None  # a checkpoint at 6 points and the final one at the stop
    instrument = FaultyInstrument(replay(arrays))
    loaded: list[bool] = []
    original_load = model_module.DKLModel.load_state

    def recording_load(self: model_module.DKLModel, state: dict[str, typing.Any]) -> None:
        loaded.append(True)
        original_load(self, state)

    model_module.DKLModel.load_state = recording_load  # type: ignore[method-assign]
    try:  # resumed with two more steps than first planned
        resumed = run_guarded(Experiment(instrument, config(steps=8), session_path=path, resume=session))
    finally:
        model_module.DKLModel.load_state = original_load  # type: ignore[method-assign]
    assert loaded, "the checkpointed model state was not used"
    assert resumed.error is None and len(resumed.visited) == 12
    assert resumed.visited[:7] == stopped.visited and resumed.values[:7] == stopped.values
    assert not set(instrument.calls) & set(stopped.visited) and len(instrument.calls) == 5
    after = read_session(path)
    assert [tuple(p) for p in after.positions] == resumed.visited
    assert after.settings["steps"] == 8  # a later resume continues with the settings it was last run with


# --- 3. camera faults ----------------------------------------------------------------------------------------------
TRANSIENT = ["raise", "error", "timeout", "hang", "nan", "inf", "empty", "wrong_shape", "not_2d", "none"]
EXPECTED_PROBLEM = {"raise": "camera error", "error": "OSError", "timeout": "timed out", "hang": "timed out",
                    "nan": "NaN/Inf", "inf": "NaN/Inf", "empty": "empty frame", "wrong_shape": "differs from",
                    "not_2d": "not 2D", "none": "AttributeError"}


# the fast tier keeps one raised, one hung and one bad frame; the rest of the matrix runs in the full suite
@pytest.mark.parametrize("fault", [f if f in ("raise", "hang", "nan") else pytest.param(f, marks=pytest.mark.slow)
                                   for f in TRANSIENT])
def test_transient_camera_fault_is_retried(fault: str, arrays: dict[str, numpy.ndarray], tmp_path: typing.Any,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """One bad frame during seeding and one during the steps: both retried at the same position, nothing lost."""
    caplog.set_level(logging.WARNING, logger=ENGINE_LOGGER)
    instrument = FaultyInstrument(replay(arrays), on_calls={1: fault, 6: fault}, timeout=0.2)
    path = str(tmp_path / "session.h5")
    result = run_guarded(Experiment(instrument, config(), session_path=path))
    assert result.error is None and result.excluded == []
    assert len(result.visited) == 8 and len(instrument.calls) == 10
    assert instrument.calls[1] == instrument.calls[2] and instrument.calls[6] == instrument.calls[7]  # retried
    assert all(math.isfinite(v) for v in result.values)
    logged = warnings_logged(caplog, "attempt 1 failed")
    assert len(logged) == 2 and all(EXPECTED_PROBLEM[fault] in m for m in logged), logged
    session = read_session(path)
    assert [tuple(p) for p in session.positions] == result.visited and numpy.isfinite(session.patterns).all()
    assert_closed_cleanly(instrument)
    instrument.release()


@pytest.mark.parametrize("fault", ["raise", *(pytest.param(f, marks=pytest.mark.slow) for f in ("hang", "nan", "wrong_shape"))])
def test_persistent_camera_fault_excludes_the_position(fault: str, arrays: dict[str, numpy.ndarray],
                                                       tmp_path: typing.Any) -> None:
    """Every attempt at one position fails: after max_retries it is excluded (warning) and the run goes on."""
    probe = Experiment(FaultyInstrument(replay(arrays)), config(steps=0))
    seed_positions = run_guarded(probe).visited
    bad = seed_positions[1]
    instrument = FaultyInstrument(replay(arrays), at_positions={bad: fault}, timeout=0.2)
    path = str(tmp_path / "session.h5")
    events: list[StepEvent] = []
    with pytest.warns(RuntimeWarning, match=rf"position \({bad[0]}, {bad[1]}\) excluded"):
        result = run_guarded(Experiment(instrument, config(max_retries=2), session_path=path, on_event=events.append))
    assert result.error is None and result.excluded == [bad]
    flagged = [e for e in events if e.excluded]
    assert [e.position for e in flagged] == [bad] and math.isnan(flagged[0].value) and flagged[0].n_measured == 1
    assert [e.n_measured for e in events if not e.excluded] == list(range(1, 9))
    assert instrument.calls.count(bad) == 3  # 1 + max_retries attempts, then never again
    assert bad not in result.visited and len(result.visited) == 8
    assert bad not in [tuple(p) for p in read_session(path).positions]
    assert_closed_cleanly(instrument)
    instrument.release()


def test_dead_camera_stops_cleanly(arrays: dict[str, numpy.ndarray], tmp_path: typing.Any) -> None:
    instrument = FaultyInstrument(replay(arrays), always="timeout", fault_sleep=0.01)
    path = str(tmp_path / "session.h5")
    result = run_guarded(Experiment(instrument, config(max_consecutive_failures=3, max_retries=1), session_path=path))
    assert result.error is not None and "3 positions in a row failed" in result.error
    assert len(instrument.calls) == 6 and len(result.excluded) == 3 and result.visited == []
    assert len(read_session(path).values) == 0  # the file is still a valid, empty session
    assert_closed_cleanly(instrument)


def test_frames_are_shape_checked_without_reference_or_session(arrays: dict[str, numpy.ndarray]) -> None:
    """No session file and no vacuum reference: a frame of another shape is still refused (and retried)."""

    class NoDetectorShape(FaultyInstrument):
        detector_shape = None  # type: ignore[assignment]

    instrument = NoDetectorShape(replay(arrays, reference=False), on_calls={2: "wrong_shape", 6: "wrong_shape"})
    result = run_guarded(Experiment(instrument, config(scalarizer="com_magnitude")))
    assert result.error is None and len(result.visited) == 8
    assert len(instrument.calls) == 10 and instrument.calls[2] == instrument.calls[3]


# --- 3. scalarizer faults -------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, logged", [("tests.faults:flaky_scalarizer", ["failed at"]),
                                          ("tests.faults:nan_scalarizer", ["gave nan", "gave inf"])])
def test_scalarizer_failure_keeps_the_point_but_not_for_training(spec: str, logged: list[str],
                                                                 arrays: dict[str, numpy.ndarray],
                                                                 tmp_path: typing.Any,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=ENGINE_LOGGER)
    path = str(tmp_path / "session.h5")
    instrument = FaultyInstrument(replay(arrays))
    result = run_guarded(Experiment(instrument, config(scalarizer=spec, seeds=6, steps=6), session_path=path))
    values = numpy.asarray(result.values)
    assert result.error is None and len(values) == 12 and len(instrument.calls) == 12  # no retries for these
    bad = ~numpy.isfinite(values)
    assert 0 < bad.sum() < 12, "the fault did not trigger; change the fixture's hash rule"
    assert sum(len(warnings_logged(caplog, text)) for text in logged) == int(bad.sum())
    session = read_session(path)
    numpy.testing.assert_array_equal(numpy.isnan(session.values), bad)  # kept (as NaN) with its raw pattern
    assert numpy.isfinite(session.patterns).all()
    assert result.prediction is not None and numpy.isfinite(result.prediction).all()
    assert numpy.isfinite(result.uncertainty).all() and math.isfinite(result.best_value)
    assert_closed_cleanly(instrument)


@pytest.mark.parametrize("spec", ["tests.faults:always_nan_scalarizer", "tests.faults:always_raising_scalarizer",
                                  "tests.faults:not_a_number_scalarizer"])
def test_scalarizer_that_never_works_stops_cleanly(spec: str, arrays: dict[str, numpy.ndarray]) -> None:
    instrument = FaultyInstrument(replay(arrays))
    result = run_guarded(Experiment(instrument, config(scalarizer=spec)))
    assert result.error is not None and "no seed point gave a usable value" in result.error
    assert len(result.visited) == 4 and len(instrument.calls) == 4  # only the seeds were spent
    assert_closed_cleanly(instrument)


def test_extreme_but_finite_values_do_not_break_the_loop(arrays: dict[str, numpy.ndarray]) -> None:
    instrument = FaultyInstrument(replay(arrays))
    result = run_guarded(Experiment(instrument, config(scalarizer="tests.faults:huge_scalarizer", seeds=6, steps=6)))
    assert result.error is None and len(result.visited) == 12
    assert 1e300 in result.values, "the fault did not trigger"
    assert_closed_cleanly(instrument)


# --- 3. model training faults ------------------------------------------------------------------------------------
def _nan_loss(self: typing.Any, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.tensor(math.nan, dtype=torch.float64, requires_grad=True)


def _not_psd(self: typing.Any, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    raise linear_operator.utils.errors.NotPSDError("Matrix not positive definite after repeatedly adding jitter")


@pytest.mark.parametrize("loss", [_nan_loss, _not_psd], ids=["nan-loss", "not-psd"])
def test_failing_training_is_rolled_back_and_the_loop_continues(loss: typing.Any, arrays: dict[str, numpy.ndarray],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module.DKLModel, "negative_mll", loss)
    instrument = FaultyInstrument(replay(arrays))
    with pytest.warns(RuntimeWarning, match="rolled back"):
        result = run_guarded(Experiment(instrument, config()))
    assert result.error is None and len(result.visited) == 8
    assert result.prediction is not None and numpy.isfinite(result.prediction).all()
    assert_closed_cleanly(instrument)


def test_singular_kernel_on_the_seed_points_stops_cleanly(arrays: dict[str, numpy.ndarray],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: typing.Any) -> None:
    def singular(self: posterior_module.PosteriorCache, indices: list[int], values: typing.Any) -> None:
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")

    monkeypatch.setattr(posterior_module.PosteriorCache, "add_many", singular)
    instrument = FaultyInstrument(replay(arrays))
    path = str(tmp_path / "session.h5")
    result = run_guarded(Experiment(instrument, config(), session_path=path))
    assert result.error is not None and "could not be fitted" in result.error
    assert len(result.visited) == 4 and len(read_session(path).values) == 4  # the seeds are kept
    assert_closed_cleanly(instrument)


def test_singular_kernel_later_keeps_the_previous_model(arrays: dict[str, numpy.ndarray],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    original = posterior_module.PosteriorCache.add_many
    calls = [0]

    def singular_after_first(self: posterior_module.PosteriorCache, indices: list[int], values: typing.Any) -> None:
        calls[0] += 1
        if calls[0] > 1:
            raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")
        original(self, indices, values)

    monkeypatch.setattr(posterior_module.PosteriorCache, "add_many", singular_after_first)
    instrument = FaultyInstrument(replay(arrays))
    result = run_guarded(Experiment(instrument, config()))
    assert calls[0] > 1 and result.error is None and len(result.visited) == 8
    assert result.prediction is not None and numpy.isfinite(result.prediction).all()
    assert_closed_cleanly(instrument)


def test_unexpected_training_error_stops_cleanly(arrays: dict[str, numpy.ndarray], monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: typing.Any) -> None:
    def broken(self: model_module.DKLModel, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        raise ValueError("expected a 2D tensor")

    monkeypatch.setattr(model_module.DKLModel, "fit", broken)
    instrument = FaultyInstrument(replay(arrays))
    path = str(tmp_path / "session.h5")
    result = run_guarded(Experiment(instrument, config(), session_path=path))
    assert result.error is not None and "ValueError: expected a 2D tensor" in result.error
    assert len(read_session(path).values) == 4
    assert_closed_cleanly(instrument)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_unexpected_error_in_background_training_keeps_the_previous_model(arrays: dict[str, numpy.ndarray],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    original = model_module.DKLModel.fit
    calls = [0]

    def broken_after_first(self: model_module.DKLModel, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        calls[0] += 1
        if calls[0] > 1:  # every background training dies with an unforeseen error
            raise ValueError("expected a 2D tensor")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(model_module.DKLModel, "fit", broken_after_first)
    instrument = FaultyInstrument(replay(arrays))
    versions: list[int] = []
    result = run_guarded(Experiment(instrument, config(), on_event=lambda e: versions.append(e.model_version)))
    assert calls[0] > 1 and result.error is None and len(result.visited) == 8
    assert set(versions[4:]) == {1}  # the seed model throughout
    assert result.prediction is not None and numpy.isfinite(result.prediction).all()
    assert_closed_cleanly(instrument)


def test_broken_event_listener_does_not_stop_the_microscope(arrays: dict[str, numpy.ndarray]) -> None:
    def listener(event: StepEvent) -> None:
        raise RuntimeError("the UI fell over")

    instrument = FaultyInstrument(replay(arrays))
    result = run_guarded(Experiment(instrument, config(), on_event=listener))
    assert result.error is None and len(result.visited) == 8


# --- 5. stop ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("when", ["seeding", "stepping", "long-refit", "initial-fit", "paused"])
def test_stop_from_another_thread_ends_within_one_step(when: str, arrays: dict[str, numpy.ndarray],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """At most the point in flight follows a stop(); a long (re)fit running at the stop is cancelled, not waited
    for. No timing is asserted (the stop latency is a benchmark figure); the run is guarded against a hang."""
    delay = 0.15  # a slow camera: every frame takes this long
    long_iterations = 20000
    overrides: dict[str, typing.Any] = {"steps": 40}
    if when == "long-refit":  # a refit of thousands of iterations is running when stop() comes
        overrides.update(refit_every=7, refit_iterations=long_iterations)
    if when == "initial-fit":
        overrides.update(initial_iterations=long_iterations)
    instrument = FaultyInstrument(replay(arrays), delay=delay)
    experiment = Experiment(instrument, config(**overrides))
    stop_at = {"seeding": 2, "stepping": 6, "long-refit": 7, "initial-fit": 4, "paused": 5}[when]
    calls_at_stop: list[int] = []
    long_fits = _count_long_fit_iterations(monkeypatch, long_iterations)

    def stop_soon() -> None:
        if when in ("long-refit", "initial-fit"):  # well inside the long training
            assert long_fits.wait_for_iterations(20, timeout=60), "the long training did not start"
        calls_at_stop.append(len(instrument.calls))
        experiment.stop()

    def on_event(event: StepEvent) -> None:
        if event.n_measured == stop_at and not calls_at_stop:
            if when == "paused":
                experiment.pause()  # on the loop's thread: the loop pauses before its next measurement
            threading.Thread(target=stop_soon, daemon=True).start()

    experiment.on_event = on_event
    result = run_guarded(experiment, timeout=60)
    assert result.stopped and result.error is None
    assert len(instrument.calls) <= calls_at_stop[0] + 1, "more than one point measured after stop()"
    if when == "paused":
        assert len(instrument.calls) == calls_at_stop[0], "measured while paused"
    assert len(result.visited) < 44
    if when in ("long-refit", "initial-fit"):
        print("long fits (iterations done of", long_iterations, "):", long_fits.done)
        assert long_fits.done and all(0 < n < long_iterations for n in long_fits.done), "the long fit was not cancelled"
    assert_closed_cleanly(instrument)


class _LongFits:
    """Counts the Adam iterations of each fit of at least `long_iterations` (through the fit's should_stop hook)."""

    def __init__(self, long_iterations: int) -> None:
        self.long_iterations = long_iterations
        self.done: list[int] = []
        self._changed = threading.Condition()

    def wait_for_iterations(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: bool(self.done) and self.done[-1] >= n, timeout)

    def count(self, should_stop: typing.Callable[[], bool] | None) -> typing.Callable[[], bool]:
        with self._changed:
            self.done.append(0)
            index = len(self.done) - 1

        def counting() -> bool:
            if should_stop is not None and should_stop():
                return True
            with self._changed:
                self.done[index] += 1
                self._changed.notify_all()
            return False
        return counting


def _count_long_fit_iterations(monkeypatch: pytest.MonkeyPatch, long_iterations: int) -> _LongFits:
    long_fits = _LongFits(long_iterations)
    original = model_module.DKLModel.fit

    def fit(self: model_module.DKLModel, patches: typing.Any, targets: typing.Any, iterations: int,
            *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        if iterations >= long_iterations:
            assert "should_stop" in kwargs, "a long fit without a stop hook cannot be cancelled"
            kwargs["should_stop"] = long_fits.count(kwargs["should_stop"])
        return original(self, patches, targets, iterations, *args, **kwargs)

    monkeypatch.setattr(model_module.DKLModel, "fit", fit)
    return long_fits


def test_stop_during_a_hung_acquisition(arrays: dict[str, numpy.ndarray]) -> None:
    """A frame that never comes: the wrapper's acquisition timeout ends it; stop() then ends the run without a
    retry. No timing is asserted (benchmarks measure the latency); the run is guarded against a hang."""
    instrument = FaultyInstrument(replay(arrays), at_positions={}, on_calls={5: "hang", 6: "hang", 7: "hang"},
                                  timeout=2.0)  # long enough for the stopping thread to wake even on a busy machine
    experiment = Experiment(instrument, config(steps=20, max_retries=2))
    stopped_during: list[int] = []

    def stop_while_hung() -> None:
        hung = faults.wait_for(lambda: instrument.hanging, timeout=60)  # the sixth frame is hanging now
        stopped_during.append(len(instrument.calls) if hung else -1)
        experiment.stop()

    def on_event(event: StepEvent) -> None:
        if event.n_measured == 5:
            threading.Thread(target=stop_while_hung, daemon=True).start()

    experiment.on_event = on_event
    result = run_guarded(experiment, timeout=60)
    assert stopped_during == [6], "stop() did not come while the sixth frame hung"
    assert result.stopped and len(result.visited) == 5
    assert len(instrument.calls) == 6, "a stopped run must not retry the hung frame"
    assert_closed_cleanly(instrument)
    instrument.release()


# --- 4. bad input ------------------------------------------------------------------------------------------------
def _valid(arrays: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    return {"data": arrays["data"][:16, :16], "survey": arrays["survey"][:16, :16], "reference": arrays["reference"],
            "mrad_per_px": arrays["mrad_per_px"]}


def _bad_npz(change: typing.Callable[[dict[str, numpy.ndarray]], None]) -> typing.Callable[..., str]:
    def make(arrays: dict[str, numpy.ndarray], folder: str) -> str:
        content = {k: numpy.array(v) for k, v in _valid(arrays).items()}
        change(content)
        path = os.path.join(folder, "bad.npz")
        numpy.savez(path, **content)
        return path
    return make


def _set(key: str, value: typing.Any) -> typing.Callable[[dict[str, numpy.ndarray]], None]:
    def change(content: dict[str, numpy.ndarray]) -> None:
        content[key] = value(content[key]) if callable(value) else value
    return change


def _poison(value: float) -> typing.Callable[[numpy.ndarray], numpy.ndarray]:
    def change(data: numpy.ndarray) -> numpy.ndarray:
        data = data.copy()
        data[3, 5, 10, 10] = value
        return data
    return change


def _valid_npz(arrays: dict[str, numpy.ndarray], folder: str) -> str:
    return _bad_npz(lambda content: None)(arrays, folder)


def _npy(shape_from: typing.Callable[[numpy.ndarray], numpy.ndarray], truncate: int = 0) -> typing.Callable[..., str]:
    def make(arrays: dict[str, numpy.ndarray], folder: str) -> str:
        path = os.path.join(folder, "bad.npy")
        numpy.save(path, shape_from(arrays["data"][:16, :16]))
        if truncate:
            with open(path, "r+b") as file:
                file.truncate(os.path.getsize(path) - truncate)
        return path
    return make


def _truncated(suffix: str) -> typing.Callable[..., str]:
    def make(arrays: dict[str, numpy.ndarray], folder: str) -> str:
        source = _valid_npz(arrays, folder)
        if suffix == ".h5":
            source = os.path.join(folder, "full.h5")
            with h5py.File(source, "w") as file:
                file.create_dataset("data", data=arrays["data"][:16, :16])
        path = os.path.join(folder, "bad" + suffix)
        with open(source, "rb") as file:
            content = file.read()
        with open(path, "wb") as file:
            file.write(content[:len(content) // 3])
        return path
    return make


def _text_as(suffix: str) -> typing.Callable[..., str]:
    def make(arrays: dict[str, numpy.ndarray], folder: str) -> str:
        path = os.path.join(folder, "bad" + suffix)
        with open(path, "w") as file:
            file.write("this is not a 4D-STEM file\n")
        return path
    return make


def _h5_without_data(arrays: dict[str, numpy.ndarray], folder: str) -> str:
    """No 4D dataset (a single one would be found without --data-key): a flat frame stack and no --scan-shape."""
    path = os.path.join(folder, "bad.h5")
    with h5py.File(path, "w") as file:
        file.create_dataset("frames", data=arrays["data"][:16, :16].reshape(256, *arrays["data"].shape[2:]))
    return path


BAD_INPUTS: list[tuple[str, typing.Callable[..., str], list[str], str]] = [
    ("survey-3d", _bad_npz(_set("survey", lambda s: numpy.stack([s, s], -1))), [], "survey must be a 2D image"),
    ("survey-nan", _bad_npz(_set("survey", lambda s: numpy.where(s > s.mean(), numpy.nan, s))), [], "NaN/Inf pixels"),
    ("survey-constant", _bad_npz(_set("survey", lambda s: numpy.ones_like(s))), [], "survey is constant"),
    ("window-equals-survey", _valid_npz, ["--window", "16"], "window 16 must be smaller than the survey 16x16"),
    ("window-too-large", _valid_npz, ["--window", "40"], "must be smaller than the survey"),
    ("steps-exceed-candidates", _valid_npz, ["--steps", "250", "--seeds", "10"], "more than the 256 candidate"),
    ("survey-shape-mismatch", _bad_npz(_set("survey", lambda s: s[:12, :16])), [], "does not match the scan shape"),
    ("reference-shape-mismatch", _bad_npz(_set("reference", lambda r: r[:20])), [], "reference shape"),
    ("data-3d-npz", _bad_npz(_set("data", lambda d: d[:, :, 0])), [], "expected 4D data"),
    ("data-3d-npy", _npy(lambda d: d[:, :, :, 0]), [], "expected 4D data"),
    ("data-nan", _bad_npz(_set("data", _poison(numpy.nan))), [],
     "data contains NaN/Inf (first at scan position (3, 5))"),
    ("data-inf", _bad_npz(_set("data", _poison(numpy.inf))), [], "data contains NaN/Inf"),
    ("data-empty", _bad_npz(_set("data", numpy.zeros((0, 16, 4, 4), numpy.float32))), [], "empty 4D data"),
    ("unknown-scalarizer", _valid_npz, ["--scalarizer", "com_magnitud"], "unknown scalarizer 'com_magnitud'"),
    ("unimportable-scalarizer", _valid_npz, ["--scalarizer", "no_such_module:f"], "cannot import module"),
    ("missing-scalarizer-function", _valid_npz, ["--scalarizer", "tests.faults:nope"], "has no attribute"),
    ("unknown-scalarizer-param", _valid_npz, ["--param", "radius=3"], "unknown parameter(s) radius"),
    ("malformed-param", _valid_npz, ["--param", "radius"], "--param expects NAME=VALUE"),
    ("truncated-npz", _truncated(".npz"), [], "cannot read file"),
    ("truncated-npy", _npy(lambda d: d, truncate=1000), [], "cannot read file"),
    ("truncated-h5", _truncated(".h5"), [], "cannot read file"),
    ("garbage-h5", _text_as(".h5"), [], "cannot read file"),
    ("garbage-npz", _text_as(".npz"), [], "cannot read file"),
    ("wrong-suffix", _text_as(".txt"), [], "unsupported file type '.txt'"),
    ("h5-without-data", _h5_without_data, [], "no 4D dataset"),
    ("missing-file", lambda arrays, folder: os.path.join(folder, "nothing.npz"), [], "no such file"),
]
BAD_ARGUMENTS = [
    (["--window", "0"], "argument --window: 0 must be > 0"),
    (["--window", "-3"], "argument --window"),
    (["--window", "abc"], "'abc' is not a valid int"),
    (["--seeds", "-1"], "argument --seeds: -1 must be >= 0"),
    (["--seeds", "0"], "0 seed points need a model to start from: --init-from"),  # 0 is for --init-from
    (["--steps", "-1"], "argument --steps: -1 must be >= 0"),
    (["--xi", "-1"], "argument --xi: -1 must be >= 0.0"),
    (["--xi", "nan"], "argument --xi"),
    (["--beta", "-0.5"], "argument --beta"),
    (["--seed", "-2"], "argument --seed"),
    (["--threads", "0"], "argument --threads"),
    (["--acquisition", "greedy"], "invalid choice: 'greedy'"),
]


def _existing_session(folder: str) -> tuple[str, str]:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "session.h5")
    writer = SessionWriter(path, {"seeds": 1, "steps": 0}, numpy.eye(8), (4, 4))
    writer.append(1, 2, numpy.ones((4, 4), numpy.float32), 0.5, "seed")
    writer.close()
    return path, file_digest(path)


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, f"exit code {code}; stderr: {captured.err}"
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {captured.err!r}"
    assert "Traceback" not in captured.err and captured.out == ""
    assert lines[0].startswith("dkl4dstem")
    return lines[0]


@pytest.mark.parametrize("name, make, extra, message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(name: str, make: typing.Callable[..., str], extra: list[str],
                                                        message: str, arrays: dict[str, numpy.ndarray],
                                                        tmp_path: typing.Any, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[tuple[int, int]] = []
    monkeypatch.setattr(ReplayInstrument, "measure", lambda self, y, x: measured.append((y, x)))
    monkeypatch.chdir(ROOT)
    out = str(tmp_path / "out")
    session, digest = _existing_session(out)
    data = make(arrays, str(tmp_path))
    # --overwrite on purpose: even then, bad input must not clobber the existing session
    line = _cli_error(["run", data, "--out", out, "--seeds", "3", "--steps", "2", "--overwrite", *extra], capsys)
    assert message in line
    assert file_digest(session) == digest and sorted(os.listdir(out)) == ["session.h5"]
    assert measured == [], "dose was spent before the input was refused"


@pytest.mark.parametrize("extra, message", BAD_ARGUMENTS, ids=[" ".join(case[0]) for case in BAD_ARGUMENTS])
def test_bad_numeric_argument_is_one_line_exit_2(extra: list[str], message: str, arrays: dict[str, numpy.ndarray],
                                                 tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    session, digest = _existing_session(out)
    line = _cli_error(["run", _valid_npz(arrays, str(tmp_path)), "--out", out, "--overwrite", *extra], capsys)
    assert message in line
    assert file_digest(session) == digest


def test_existing_session_is_not_overwritten_without_overwrite(arrays: dict[str, numpy.ndarray], tmp_path: typing.Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    session, digest = _existing_session(out)
    line = _cli_error(["run", _valid_npz(arrays, str(tmp_path)), "--out", out], capsys)
    assert "exists" in line and "--resume" in line
    assert file_digest(session) == digest


@pytest.mark.parametrize("problem", ["no-session", "truncated-session", "other-data", "other-detector"])
def test_bad_resume_is_one_line_exit_2_and_keeps_the_session(problem: str, arrays: dict[str, numpy.ndarray],
                                                             tmp_path: typing.Any, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[tuple[int, int]] = []
    original = ReplayInstrument.measure
    out = str(tmp_path / "out")
    os.makedirs(out)
    data = _valid_npz(arrays, str(tmp_path))
    session = os.path.join(out, "session.h5")
    if problem != "no-session":
        writer = SessionWriter(session, {**dataclasses.asdict(config()), "data": data},
                               arrays["survey"][:16, :16], arrays["reference"].shape)
        writer.append(3, 4, arrays["data"][3, 4], 0.25, "seed")
        writer.close()
    if problem == "truncated-session":
        with open(session, "r+b") as file:
            file.truncate(os.path.getsize(session) // 2)
    if problem == "other-data":  # same shapes, other content
        other = {k: numpy.array(v) for k, v in _valid(arrays).items()}
        other["data"] = arrays["data"][16:, 16:]
        other["survey"] = arrays["survey"][16:, 16:]
        data = os.path.join(str(tmp_path), "other.npz")
        numpy.savez(data, **other)
    if problem == "other-detector":
        other = {k: numpy.array(v) for k, v in _valid(arrays).items()}
        other["data"] = numpy.ascontiguousarray(arrays["data"][:16, :16, :-1, :-1])
        other["reference"] = arrays["reference"][:-1, :-1]
        data = os.path.join(str(tmp_path), "other.npz")
        numpy.savez(data, **other)
    digest = file_digest(session) if os.path.exists(session) else None
    monkeypatch.setattr(ReplayInstrument, "measure",
                        lambda self, y, x: measured.append((y, x)) or original(self, y, x))
    line = _cli_error(["run", *([data] if problem.startswith("other") else []), "--resume", out, "--no-truth"],
                      capsys)
    expected = {"no-session": "cannot read session file", "truncated-session": "cannot read session file",
                "other-data": "different survey",
                "other-detector": f"session patterns are {arrays['reference'].shape}"}[problem]
    assert expected in line
    if digest is not None:
        assert file_digest(session) == digest
    assert not os.path.exists(os.path.join(out, "summary.json")) and measured == []


def test_experiment_api_refuses_bad_settings_before_measuring(arrays: dict[str, numpy.ndarray]) -> None:
    """The Python API raises InputError from run() before any dose is spent (and still closes the instrument)."""
    for overrides, message in [({"window": 0}, "window must be a positive integer"),
                               ({"seeds": 600, "steps": 600}, "more than the 1024 candidate"),
                               ({"xi": -1.0}, "xi must be zero or a positive number"),
                               ({"scalarizer": "nonexistent"}, "unknown scalarizer"),
                               ({"acquisition": "greedy"}, "unknown acquisition")]:
        instrument = FaultyInstrument(replay(arrays))
        with pytest.raises(InputError, match=message):
            Experiment(instrument, config(**overrides)).run()
        assert instrument.calls == [] and instrument.close_calls == 1

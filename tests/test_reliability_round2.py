"""Reliability, round two: concurrent runs, resumes that would mix data, full disks, torn and edited rows, signals.

Each test reproduces one case of docs/RELIABILITY.md ("Concurrency, resume and storage"). Random kill instants are
seeded (DKL4DSTEM_TEST_SEED, default 0) and printed (rerun one with the printed DKL4DSTEM_* variables). Subprocess
runs use the real CLI through `python -m tests.faults` (one `MEASURED n y x value` line per point reported as measured).
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import typing

import h5py
import numpy
import pytest

from tests.test_reliability import FIXTURE, ROOT, _reader, file_digest  # noqa: I100 - sets sys.path first
from tests import seeding  # noqa: E402

from dkl4dstem import cli
from dkl4dstem.errors import InputError  # noqa: E402
from dkl4dstem.instruments.replay import ReplayInstrument  # noqa: E402
from dkl4dstem.session.store import SessionLock, SessionWriter, read_session  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
ENV = {**os.environ, "DKL4DSTEM_FAULTS_FAST": "1", "DKL4DSTEM_THREADS": "1",
       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _seeded(name: str, low: int, high: int) -> int:
    """A random choice, seeded by DKL4DSTEM_TEST_SEED and printed, overridable by an environment variable."""
    return seeding.seeded(name, low, high)


class CliProcess:
    """The real CLI in a subprocess, with its MEASURED lines read on a thread."""

    def __init__(self, argv: list[str], preexec: typing.Callable[[], None] | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.faults", *argv], cwd=ROOT, env=ENV,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        preexec_fn=preexec)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: queue.Queue[str | None] = queue.Queue()
        self.measured: list[tuple[int, int]] = []
        self._done = False
        threading.Thread(target=_reader, args=(self.process.stdout, self.lines), daemon=True).start()
        threading.Thread(target=_reader, args=(self.process.stderr, self.errors), daemon=True).start()

    def _next(self, timeout: float) -> str | None:
        line = self.lines.get(timeout=timeout)
        if line is None:
            self._done = True
        elif line.startswith("MEASURED "):
            _, _, y, x, _ = line.split()
            self.measured.append((int(y), int(x)))
        return line

    def wait_measured(self, count: int) -> None:
        while len(self.measured) < count:
            assert self._next(120) is not None, f"the CLI ended before point {count}: {self.finish()[1]}"

    def finish(self, timeout: float = 180) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout)
        finally:
            self.process.kill()
        while not self._done:
            self._next(30)
        err = []
        while (line := self.errors.get(timeout=30)) is not None:
            err.append(line)
        return code, "".join(err)


def _rows(path: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in p) for p in read_session(path).positions]  # type: ignore[misc]


def _assert_rows_match_the_source(path: str) -> None:
    """Every stored pattern is byte-identical to the source pattern at its position: no zero, torn or mixed row."""
    data = read_session(path)
    with numpy.load(FIXTURE) as npz:
        source = npz["data"]
    for (y, x), pattern in zip(data.positions, data.patterns):
        numpy.testing.assert_array_equal(pattern, source[y, x])
    assert len({tuple(p) for p in data.positions}) == len(data.positions), "a position is stored twice"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished 4 + 3 point run (session, summary, figures) to copy."""
    out = str(tmp_path_factory.mktemp("finished") / "run")
    assert cli.main(["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "3", "--no-truth"]) == 0
    return out


def _copy(run: str, tmp_path: typing.Any, name: str = "run") -> str:
    target = str(tmp_path / name)
    shutil.copytree(run, target)
    return target


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    capsys.readouterr()
    got = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 1. a second run into a live run's folder -------------------------------------------------------------------
@pytest.mark.slow
def test_second_run_into_a_live_folder_is_refused_and_the_first_keeps_its_data(
        tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "c")
    first = CliProcess(["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "300", "--no-truth"])
    try:
        first.wait_measured(_seeded("DKL4DSTEM_LIVE_AFTER", 2, 8))
        for extra in (["--overwrite"], [], ["--resume", out]):
            argv = ["run", FIXTURE, "--out", out, "--steps", "10", "--no-truth", *extra]
            line = _one_line(argv if "--resume" not in extra else ["run", "--resume", out, "--no-truth"], capsys)
            assert "is in use by another run (pid" in line, line
        first.process.send_signal(signal.SIGINT)
        code, err = first.finish()
    finally:
        first.process.kill()
    assert code == 0, err
    with open(os.path.join(out, "summary.json")) as file:
        summary = json.load(file)
    rows = _rows(os.path.join(out, "session.h5"))
    assert rows == [tuple(p) for p in summary["visited"]] and rows[:len(first.measured)] == first.measured
    _assert_rows_match_the_source(os.path.join(out, "session.h5"))


@pytest.mark.slow
def test_two_runs_started_together_one_wins(tmp_path: typing.Any) -> None:
    out = str(tmp_path / "c")
    runs = [CliProcess(["run", FIXTURE, "--out", out, "--seeds", "3", "--steps", "3", "--no-truth"])
            for _ in range(2)]
    results = [run.finish() for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another run" in loser or "exists: continue it with --resume" in loser, loser
    winner = next(run for run, (code, _) in zip(runs, results) if code == 0)
    assert _rows(os.path.join(out, "session.h5")) == winner.measured
    assert not os.path.exists(os.path.join(out, "session.h5.lock"))  # released and removed at the end


def test_session_lock_is_exclusive_across_threads_and_reentrant_within_one(tmp_path: typing.Any) -> None:
    path = str(tmp_path / "session.h5")
    box: dict[str, BaseException] = {}
    with SessionLock(path):
        with SessionLock(path):  # the CLI locks, then the engine's writer locks again
            pass

        def other() -> None:
            try:
                SessionLock(path)
            except InputError as exc:
                box["error"] = exc
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert "in use by another run" in str(box["error"])
    SessionLock(path).release()  # free again once released


# --- 2. resume that would mix or duplicate -------------------------------------------------------------------------
def _other_data_same_survey(tmp_path: typing.Any) -> str:
    with numpy.load(FIXTURE) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["data"] = arrays["data"][:, ::-1].copy()  # other patterns, same survey, reference and calibration
    path = str(tmp_path / "other.npz")
    numpy.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case, message", [
    ("scalarizer", "scalarizer: session 'com_magnitude', now 'vadf'"),
    ("window", "window: session 12, now 8"),
    ("params", "scalarizer_params: session {}, now {'inner_mrad': 30.0}"),
    ("other-data", "the data (sampled patterns, shape or dtype)"),
    ("other-out", "--out names"),
    ("other-out-empty", "--out names"),
])
def test_resume_refuses_what_would_mix_rows(case: str, message: str, finished_run: str, tmp_path: typing.Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(finished_run, tmp_path)
    digest = file_digest(os.path.join(run, "session.h5"))
    other = str(tmp_path / "b")
    if case == "other-out":
        _copy(finished_run, tmp_path, "b")
    os.makedirs(other, exist_ok=True)
    before = {name: file_digest(os.path.join(other, name)) for name in os.listdir(other)}
    argv = {"scalarizer": ["--scalarizer", "vadf"], "window": ["--window", "8"],
            "params": ["--scalarizer", "tests.faults:scaled_scalarizer", "--param", "inner_mrad=30"],
            "other-data": [_other_data_same_survey(tmp_path)],
            "other-out": ["--out", other], "other-out-empty": ["--out", other]}[case]
    if case == "params":  # a session whose scalarizer takes a parameter, resumed with another value of it
        with h5py.File(os.path.join(run, "session.h5"), "r+") as file:
            settings = json.loads(file.attrs["settings"])
            settings.update(scalarizer="tests.faults:scaled_scalarizer", scalarizer_params={})
            file.attrs["settings"] = json.dumps(settings)
        digest = file_digest(os.path.join(run, "session.h5"))
    line = _one_line(["run", "--resume", run, "--no-truth", *argv], capsys)
    assert message in line, line
    assert file_digest(os.path.join(run, "session.h5")) == digest
    assert {name: file_digest(os.path.join(other, name)) for name in os.listdir(other)} == before


@pytest.mark.slow
def test_resume_with_the_same_settings_and_data_is_accepted(finished_run: str, tmp_path: typing.Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(finished_run, tmp_path)
    moved = str(tmp_path / "moved.npz")
    shutil.copyfile(FIXTURE, moved)  # the same data at another path: same fingerprint
    assert cli.main(["run", moved, "--resume", run, "--out", run, "--steps", "5", "--scalarizer", "com_magnitude",
                     "--window", "12", "--no-truth"]) == 0, capsys.readouterr().err
    assert len(_rows(os.path.join(run, "session.h5"))) == 9


# --- 3. write failures -----------------------------------------------------------------------------------------------
def _limit_file_size(limit: int) -> typing.Callable[[], None]:
    def apply() -> None:  # pragma: no cover - runs in the child
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_write_failure_stops_after_the_last_good_row_and_resume_completes(tmp_path: typing.Any,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A real failed write (file size limit: EFBIG, like a full disk) inside HDF5: the run stops cleanly with a
    one-line reason; every stored row is good; a resume elsewhere completes the run."""
    out = str(tmp_path / "full")
    limit = _seeded("DKL4DSTEM_FSIZE_KIB", 56, 110) << 10  # below about 52 KiB no row fits
    process = CliProcess(["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "30", "--no-truth"],
                         preexec=_limit_file_size(limit))
    code, err = process.finish()
    assert code == 1, err
    assert "Traceback" not in err and "run stopped early: cannot write" in err and "File too large" in err, err
    path = os.path.join(out, "session.h5")
    rows = _rows(path)
    assert 0 < len(rows) < 34 and rows == process.measured, (rows, process.measured)
    _assert_rows_match_the_source(path)
    assert cli.main(["run", "--resume", out, "--no-truth"]) == 0, capsys.readouterr().err
    assert len(_rows(path)) == 34 and _rows(path)[:len(rows)] == rows
    _assert_rows_match_the_source(path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs")
@pytest.mark.parametrize("options", ["size=160k", "ro"])
def test_full_or_read_only_disk(options: str, tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    mount = str(tmp_path / "mnt")
    os.makedirs(mount)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mount], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        out = os.path.join(mount, "o")
        if options == "ro":
            line = _one_line(["run", FIXTURE, "--out", out, "--steps", "3", "--no-truth"], capsys)
            assert "Read-only file system" in line, line
            return
        capsys.readouterr()
        assert cli.main(["run", FIXTURE, "--out", out, "--steps", "30", "--no-truth"]) == 1
        err = capsys.readouterr().err
        assert "run stopped early: the disk holding" in err and "is full" in err and "Traceback" not in err, err
        _assert_rows_match_the_source(os.path.join(out, "session.h5"))
    finally:
        subprocess.run(["umount", mount], check=False)


# --- 4. torn and edited rows ---------------------------------------------------------------------------------------
def _session(tmp_path: typing.Any, rows: int = 5) -> tuple[str, numpy.ndarray]:
    path = str(tmp_path / "session.h5")
    rng = numpy.random.default_rng(3)
    patterns = rng.random((rows + 1, 6, 6), dtype=numpy.float32)
    writer = SessionWriter(path, {"seeds": 1}, rng.random((8, 8)), (6, 6))
    for k in range(rows):
        writer.append(k, k, patterns[k], float(k), "seed")
    writer.close()
    return path, patterns


@pytest.mark.parametrize("field", ["position", "value", "timestamp", "phase", "pattern", "checksum", "committed"])
def test_interrupt_inside_append_leaves_no_phantom_row(field: str, tmp_path: typing.Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt after the resize, before `field` is written: the row is torn, never counted; a resume
    drops it and appends cleanly."""
    path, patterns = _session(tmp_path)
    writer = SessionWriter(path, {"seeds": 1}, None, (6, 6), resume=True)  # type: ignore[arg-type]
    if field == "committed":
        original = writer.file.flush
        calls = [0]

        def flush() -> None:
            calls[0] += 1
            if calls[0] == 1:
                original()
                raise KeyboardInterrupt
        monkeypatch.setattr(writer.file, "flush", flush)
    else:
        target = writer.datasets[field]

        class Interrupting:
            def __getattr__(self, name: str) -> typing.Any:
                return getattr(target, name)

            def __setitem__(self, key: typing.Any, value: typing.Any) -> None:
                raise KeyboardInterrupt
        writer.datasets[field] = Interrupting()  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        writer.append(7, 7, patterns[5], 5.0, "step")
    writer.file.close()
    writer.lock.release()
    with pytest.warns(RuntimeWarning, match="1 row"):
        data = read_session(path)
    assert len(data.values) == 5 and data.torn_rows == 1 and (7, 7) not in [tuple(p) for p in data.positions]
    resumed = SessionWriter(path, {"seeds": 1}, None, (6, 6), resume=True)  # type: ignore[arg-type]
    resumed.append(7, 7, patterns[5], 5.0, "step")
    resumed.close()
    data = read_session(path)
    assert [tuple(p) for p in data.positions] == [(k, k) for k in range(5)] + [(7, 7)] and data.torn_rows == 0
    numpy.testing.assert_array_equal(data.patterns, patterns)


def _chunk_offset(path: str, name: str, row: int) -> int:
    with h5py.File(path, "r") as file:
        dataset = file["points"][name]
        return int(dataset.id.get_chunk_info_by_coord((row, 0, 0) if dataset.ndim == 3 else (0,) * dataset.ndim)
                   .byte_offset)


def test_edited_bytes_are_detected_and_the_resume_refused(tmp_path: typing.Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _session(tmp_path)
    row = _seeded("DKL4DSTEM_EDIT_ROW", 0, 4)
    offset = _chunk_offset(path, "pattern", row) + 4 * _seeded("DKL4DSTEM_EDIT_PIXEL", 0, 35)
    with open(path, "r+b") as file:  # one float of one stored pattern changed in place
        file.seek(offset)
        file.write(numpy.float32(0.0).tobytes())
    with pytest.raises(InputError, match=rf"1 row\(s\) fail their checksum .* row {row} at \({row}, {row}\)"):
        read_session(path)
    with h5py.File(path, "r+") as file:  # an edit through HDF5 itself: a value
        file["points/value"][0] = 42.0
    with pytest.raises(InputError, match="fail their checksum"):
        read_session(path)
    line = _one_line(["run", FIXTURE, "--resume", str(tmp_path), "--no-truth"], capsys)
    assert "fail their checksum (edited or damaged)" in line


# --- 8. signals, overwrite, odd --out ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_sigterm_and_sighup_stop_like_ctrl_c(signum: int, tmp_path: typing.Any) -> None:
    out = str(tmp_path / "run")
    process = CliProcess(["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "300", "--no-truth"])
    process.wait_measured(_seeded("DKL4DSTEM_SIGNAL_AFTER", 1, 10))
    process.process.send_signal(signum)
    code, err = process.finish()
    assert code == 0, err
    assert "stopping after the current point" in err and "Traceback" not in err
    with open(os.path.join(out, "summary.json")) as file:
        summary = json.load(file)
    assert summary["stopped"] is True and summary["error"] is None
    assert [tuple(p) for p in summary["visited"]] == _rows(os.path.join(out, "session.h5")) == process.measured


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_ctrl_c_during_the_ground_truth_keeps_summary_json(signum: int, tmp_path: typing.Any) -> None:
    """The ground truth (every pattern through a slow scalarizer) is cut short: the run's summary.json stays."""
    out = str(tmp_path / "run")
    process = CliProcess(["run", FIXTURE, "--out", out, "--seeds", "3", "--steps", "2", "--scalarizer",
                          "tests.faults:slow_scalarizer"])
    summary_path = os.path.join(out, "summary.json")
    process.wait_measured(5)
    while not os.path.exists(summary_path):  # written before the ground truth starts
        assert process.process.poll() is None, process.finish()[1]
        threading.Event().wait(0.05)
    process.process.send_signal(signum)
    code, err = process.finish()
    assert code == 0, err
    assert "ground truth interrupted; summary.json has the run without it" in err
    with open(summary_path) as file:
        summary = json.load(file)
    assert summary["n_measured"] == 5 and "nrmse" not in summary


@pytest.mark.slow
def test_overwrite_killed_midway_leaves_no_old_outputs(finished_run: str, tmp_path: typing.Any) -> None:
    out = _copy(finished_run, tmp_path)
    assert {"summary.json", "overview.png", "steps.png"} <= set(os.listdir(out))
    process = CliProcess(["run", FIXTURE, "--out", out, "--seeds", "4", "--steps", "300", "--overwrite",
                          "--seed", "5", "--no-truth"])
    process.wait_measured(_seeded("DKL4DSTEM_OVERWRITE_KILL_AFTER", 1, 6))
    process.process.send_signal(signal.SIGKILL)
    process.finish()
    assert sorted(os.listdir(out)) == ["session.h5", "session.h5.lock"]  # a killed run leaves its (free) lock
    assert _rows(os.path.join(out, "session.h5"))[:len(process.measured)] == process.measured


def test_out_naming_a_file_is_refused(tmp_path: typing.Any, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    line = _one_line(["run", FIXTURE, "--out", str(target), "--no-truth"], capsys)
    assert "is a file; give a folder" in line and target.read_text() == "keep me"


def test_window_1_runs(tmp_path: typing.Any, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKL4DSTEM_THREADS", "1")
    assert cli.main(["run", FIXTURE, "--out", str(tmp_path / "w1"), "--window", "1", "--seeds", "3", "--steps", "2",
                     "--no-truth"]) == 0, capsys.readouterr().err
    assert len(_rows(str(tmp_path / "w1" / "session.h5"))) == 5
    assert ReplayInstrument.measure_timeout_s == 60.0  # replay's default limit for a stalled file read


def test_older_session_without_checksums_is_accepted_but_zero_rows_are_reported(tmp_path: typing.Any) -> None:
    """A session of the previous version (no checksums, no committed count) still resumes; an all-zero row in it
    (the old full-disk failure) is reported, and a resume adds the checksums."""
    path, patterns = _session(tmp_path, rows=3)
    with h5py.File(path, "r+") as file:
        del file.attrs["committed"]
        del file["points/checksum"]
        file["points/pattern"][1] = 0.0
    with pytest.warns(RuntimeWarning, match=r"holds 1 row\(s\) with an all-zero pattern, first row 1"):
        assert len(read_session(path).values) == 3
    SessionWriter(path, {"seeds": 1}, None, (6, 6), resume=True).close()  # type: ignore[arg-type]
    with h5py.File(path, "r") as file:
        assert file.attrs["committed"] == 3 and file["points/checksum"].shape == (3,)
    numpy.testing.assert_array_equal(read_session(path).patterns[0], patterns[0])

"""The CLI contract: `run`, `reconstruct`, `demo` outputs and their JSON keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy
import pytest

from dkl4dstem.cli import main

RUN_KEYS = {"scalarizer", "window", "n_candidates", "visited", "values", "best_value", "best_position",
            "decision_seconds", "step_seconds"}


def test_run_writes_summary_session_and_figures(graphene_path: str, tmp_path) -> None:
    out = tmp_path / "run"
    code = main(["run", graphene_path, "--out", str(out), "--seeds", "5", "--steps", "8", "--scalarizer",
                 "com_magnitude", "--window", "10", "--acquisition", "ei", "--xi", "0.02", "--seed", "3",
                 "--exact-posterior", "--noiseless-acquisition"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert RUN_KEYS <= set(summary)
    assert summary["scalarizer"] == "com_magnitude" and summary["window"] == 10
    assert summary["n_candidates"] == 32 * 32
    assert len(summary["visited"]) == len(summary["values"]) == 13
    assert len({tuple(p) for p in summary["visited"]}) == 13
    assert len(summary["decision_seconds"]) == len(summary["step_seconds"]) == 8
    assert summary["best_value"] == pytest.approx(max(summary["values"]))
    assert summary["visited"][summary["values"].index(summary["best_value"])] == summary["best_position"]
    with h5py.File(out / "session.h5", "r") as session:
        assert session["points/pattern"].shape == (13, 41, 41)
        numpy.testing.assert_array_equal(session["points/position"][()], summary["visited"])
        numpy.testing.assert_allclose(session["points/value"][()], summary["values"])
        settings = json.loads(session.attrs["settings"])  # what a --resume continues with
        assert settings["latent_grid"] is False and settings["xi"] == 0.02 and settings["observation_noise"] is False
    truth = numpy.hypot(*numpy.moveaxis(numpy.load(graphene_path)["abtem_com_mrad"], -1, 0))
    assert 0 <= summary["nrmse"] < 5 and summary["truth_best_value"] == pytest.approx(truth.max(), rel=0.05)
    # the uncertainty map scored against the truth at the unmeasured positions
    assert 0 <= summary["coverage_1sigma"] <= summary["coverage_2sigma"] <= 1
    assert numpy.isfinite(summary["nlpd"]) and numpy.isfinite(summary["nlpd_baseline"])
    for name in ("overview.png", "steps.png"):
        assert (out / name).stat().st_size > 10_000
    # a second run into the same folder must not silently replace the measured data
    assert main(["run", graphene_path, "--out", str(out), "--steps", "1"]) == 2


def test_reconstruct_reports_nrmse_per_fraction(graphene_path: str, tmp_path) -> None:
    out = tmp_path / "rec"
    assert main(["reconstruct", graphene_path, "--out", str(out), "--scalarizer", "vbf", "--fractions", "0.5,0.05",
                 "--iterations", "80"]) == 0
    payload = json.loads((out / "reconstruct.json").read_text())
    assert payload["fractions"] == [0.5, 0.05] and len(payload["nrmse"]) == 2
    assert payload["nrmse"][0] < 0.5  # half the points reconstruct the vBF map well
    assert payload["nrmse"][0] < payload["nrmse"][1]
    assert (out / "reconstruct.png").stat().st_size > 10_000


@pytest.mark.slow
def test_demo_runs_from_a_fresh_directory_as_the_console_script(tmp_path) -> None:
    env = {**os.environ, "DKL4DSTEM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dkl4dstem", "demo", "--steps", "6"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "best com_magnitude" in proc.stdout and "dose reduction" in proc.stdout
    assert "median decision" in proc.stdout
    assert (tmp_path / "dkl4dstem-demo" / "summary.json").exists()
    assert (tmp_path / "dkl4dstem-demo" / "overview.png").exists()


def test_bad_input_is_one_line_and_exit_code_2(tmp_path) -> None:
    bad = tmp_path / "three_d.npy"
    numpy.save(bad, numpy.zeros((4, 4, 4), numpy.float32))
    proc = subprocess.run([sys.executable, "-m", "dkl4dstem", "run", str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "4D" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_point_and_keeps_every_point(graphene_path: str, tmp_path) -> None:
    """Ctrl-C once the DKL steps are under way (the real CLI with default training, through `python -m tests.faults`,
    which prints one MEASURED line per recorded point): the run ends cleanly and keeps every point it recorded."""
    import queue
    import signal
    import threading

    from dkl4dstem.session.store import read_session

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out, log = tmp_path / "interrupted", open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults", "run", graphene_path, "--out", str(out),
                             "--steps", "500"], stdout=subprocess.PIPE, stderr=log, text=True, cwd=root,
                            env={**os.environ, "DKL4DSTEM_THREADS": "1",
                                 "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])})
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    measured: list[list[int]] = []
    try:
        while len(measured) < 13:  # 10 seed points, then the DKL steps: stop during the third
            line = lines.get(timeout=240)  # a hang guard, not a timing
            assert line is not None, f"the CLI ended early: {proc.wait()} {(tmp_path / 'stderr.txt').read_text()}"
            if line.startswith("MEASURED "):
                measured.append([int(v) for v in line.split()[2:4]])
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=240)
    finally:
        proc.kill()
        log.close()
    stderr = (tmp_path / "stderr.txt").read_text()
    while (line := lines.get(timeout=30)) is not None:
        if line.startswith("MEASURED "):
            measured.append([int(v) for v in line.split()[2:4]])
    assert proc.returncode == 0, stderr
    assert "stopping after the current point" in stderr and "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    recorded = read_session(str(out / "session.h5"))
    assert summary["stopped"] is True and 13 <= len(summary["visited"]) < 510
    assert summary["visited"] == measured  # every point reported as measured is kept, and only those
    assert summary["phases"][10:13] == ["step"] * 3
    numpy.testing.assert_array_equal(recorded.positions, summary["visited"])

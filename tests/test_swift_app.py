"""The real Nion Swift application (PySide6 under Xvfb) with usim and the DKL plug-in: open the panel, acquire a
survey, do five runs in one session (one stopped by a real click on Stop), save screenshots under the test's tmp_path
(never into tracked files; the path is printed). No retry: a failure is reported with the log and thread stacks.

Skipped, with the reason, when Xvfb or PySide6 are missing. Each run uses a throwaway HOME whose Swift profile is
created beforehand (no "Choose Project" dialog); the app runs in its own process group, killed on timeout.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SWIFT_APP = ROOT / "tests" / "swift_app"
TIMEOUT_S = int(os.environ.get("DKL4DSTEM_SWIFT_APP_TIMEOUT", "420"))


def _missing() -> str | None:
    if shutil.which("Xvfb") is None:
        return "Xvfb is not installed (apt-get install xvfb)"
    if importlib.util.find_spec("PySide6") is None:
        return "PySide6 is not installed (pip install 'PySide6-Essentials==6.11.3')"
    if importlib.util.find_spec("nionui_app.nionswift") is None:
        return "nionswift is not installed"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


def _free_display() -> int:
    for n in range(int(os.environ.get("DKL4DSTEM_DISPLAY_FROM", "57")), 400):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


@pytest.fixture
def xvfb(tmp_path: pathlib.Path):
    display = _free_display()
    log = open(tmp_path / "xvfb.log", "w")
    process = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1920x1400x24", "-nolisten", "tcp"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    socket = pathlib.Path(f"/tmp/.X11-unix/X{display}")
    start = time.time()
    while not socket.exists():
        if process.poll() is not None or time.time() - start > 20:
            _kill_group(process)
            log.close()
            pytest.fail(f"Xvfb :{display} did not start: {(tmp_path / 'xvfb.log').read_text()}")
        time.sleep(0.1)
    try:
        yield f":{display}"
    finally:
        _kill_group(process)
        log.close()


def test_real_swift_runs_a_short_experiment_and_saves_a_screenshot(xvfb: str, tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "out"
    out.mkdir()
    data_dir = home / ".local" / "share" / "Nion" / "Nion Swift"
    subprocess.run([sys.executable, str(SWIFT_APP / "make_profile.py"), str(data_dir), str(tmp_path / "project")],
                   check=True, capture_output=True, timeout=120)
    env = dict(os.environ)
    env.update({
        "HOME": str(home), "DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SWIFT_APP)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        "DKL4DSTEM_SWIFT_DRIVER": str(SWIFT_APP / "run_experiment.py"),
        "DKL4DSTEM_SWIFT_OUT": str(out),
    })
    env.pop("XDG_DATA_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    log_path = tmp_path / "swift.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "nionswift", "--ui", "qt", "--no-fallback"],
                                   cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            rc = -1
    log_text = log_path.read_text()
    print(f"screenshots and summary in {out}")
    assert rc == 0, f"Nion Swift exited with {rc}; log tail:\n{log_text[-6000:]}"
    assert "Plug-in 'nionswift_plugin.dkl4dstem_swift' loaded" in log_text, log_text[-4000:]
    assert "Plug-in 'nionswift_plugin.dkl4dstem_swift' NOT loaded" not in log_text, log_text[-4000:]
    # Swift's own rendering thread may log tracebacks (nionui vs. PySide versions); none may come from our code
    ours = [line for line in log_text.splitlines() if line.strip().startswith('File "') and "dkl4dstem" in line]
    assert not ours, log_text[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    print(json.dumps(summary["runs"], indent=1))
    runs = summary["runs"]
    assert len(runs) == 5, summary
    for run in runs:
        assert run["error"] is None, run
        if run["run"] == 3:
            assert "Stopped" in run["message"], run
            # a real click on Stop: once Qt hands the click to the panel, at most the frame in flight follows
            assert run["n_measured"] - run["at_stop_handled"] <= 1, run
            # from the press at the X server, Qt's latency in delivering the click (the UI thread's longest tasks,
            # mostly Swift's own display work) comes on top: reported, not asserted (timing)
            print(f"Stop: pressed at {run['at_click']} (press to release {run['xdotool_click_s']:.3f} s), handled "
                  f"{run['stop_handled_after_s']:.3f} s after the release at {run['at_stop_handled']}, "
                  f"stopped at {run['n_measured']}")
        else:
            assert "Finished" in run["message"], run
            assert run["n_measured"] == 8 + run["steps"], run
        # the plug-in's own UI tasks in the real app, by kind: [count, longest wall, CPU, waiting for a core, blocked] (ms)
        longest = sorted(run["plugin_tasks"].items(), key=lambda kv: -kv[1][1])[:4]
        print(f"run {run['run']}: the plug-in's longest UI tasks {longest}")
    kinds = ("DKL prediction", "DKL uncertainty", "DKL acquisition", "DKL measured", "DKL measured patterns")
    for run in range(1, 6):
        for kind in kinds:
            assert f"{kind} #{run}" in summary["titles"], summary["titles"]
    assert len([t for t in summary["titles"] if t.startswith("DKL") and "#" in t]) == 5 * len(kinds), summary
    assert [g for g in summary["groups"] if g.startswith("DKL")] == [f"DKL run {k}" for k in range(1, 6)], summary
    assert summary["marks"] <= 20 and summary["point_graphics"] <= 20, summary
    assert summary["live"] == [], summary
    # the sixth run, ended by closing the document window: at most the frame in flight after the close began
    closed = re.findall(r"DKL: closed during a run: (\d+) measurements when the close began, (\d+) at the end", log_text)
    at_request = json.loads((out / "close.json").read_text())["at_close_request"]
    print(f"window close: requested at {at_request}, {closed}")
    assert len(closed) == 1, log_text[-4000:]
    assert int(closed[0][1]) - int(closed[0][0]) <= 1, closed
    screenshot = out / "screenshot.png"
    assert screenshot.exists() and screenshot.stat().st_size > 50_000

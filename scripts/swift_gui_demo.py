"""Drive the real Nion Swift window like a user, with mouse clicks and typing (Xvfb + xdotool), and take screenshots:
open the DKL panel, acquire a usim survey, draw a region and an exclusion on it, preview one pattern at a picked
point, force that point, start a run with a session file, wait for its end, show the maps 2x2.
Writes OUT/NN-*.png (OUT/screenshot.png is the last one: the docs image) and OUT/swift.log.

    python scripts/swift_gui_demo.py --out /tmp/dkl-gui [--steps 40] [--continue-steps 60] [--keep] [--installed]

Needs Xvfb, xdotool, imagemagick (import) and PySide6-Essentials==6.11.3 (see docs/SWIFT.md). The clicks are at
fixed screen positions of a fresh profile's layout with the window at 1900 x 1380: after a change to the panel's
layout, check the screenshots (each step leaves one) and adjust the positions below.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCREEN = (1920, 1400)
WINDOW = (1900, 1380)
# the DKL panel's widgets (fresh profile, Histogram / Info / Inspector closed, window at WINDOW)
ACQUIRE_SURVEY = (1557, 310)
STEPS_FIELD = (1627, 529)
SESSION_FIELD = (1740, 662)
CONTINUE_RUN = (1641, 688)
EXCLUDE_AREA = (1634, 768)
PICK_POINT = (1545, 812)
PREVIEW = (1628, 812)
FORCE_NEXT = (1712, 812)
START = (1545, 884)
PAUSE = (1628, 884)  # 'Resume' while paused
SHOW_MAPS = (1798, 884)
# Swift's own: menu, toolbar, dock panel close buttons; the survey image fills x 330..1470, y 176..1316
DKL_MENU, SHOW_PANEL_ITEM = (381, 8), (470, 97)  # the menu: run, acquire, replay, -, show panel
POINTER_TOOL, POINT_TOOL, RECTANGLE_TOOL = (33, 51), (128, 51), (96, 74)
CLOSE_DOCKS = [(1889, 354), (1889, 272), (1889, 104)]  # Inspector, Info, Histogram (bottom first)
IMAGE_ORIGIN, IMAGE_SIZE_PX = (330.0, 176.0), 1140.0


class Gui:
    def __init__(self, display: str, out: pathlib.Path) -> None:
        self.env = dict(os.environ, DISPLAY=display)
        self.out = out
        self.count = 0

    def xdo(self, *args: str | int) -> None:
        subprocess.run(["xdotool", *map(str, args)], env=self.env, check=True, timeout=30)

    def click(self, xy: tuple[float, float], pause_s: float = 0.6) -> None:
        self.xdo("mousemove", int(xy[0]), int(xy[1]), "click", 1)
        time.sleep(pause_s)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
        self.xdo("mousemove", int(start[0]), int(start[1]), "mousedown", 1)
        for k in range(1, steps + 1):
            x = start[0] + (end[0] - start[0]) * k / steps
            y = start[1] + (end[1] - start[1]) * k / steps
            self.xdo("mousemove", int(x), int(y))
            time.sleep(0.03)
        self.xdo("mouseup", 1)
        time.sleep(0.5)

    def type_into(self, xy: tuple[float, float], text: str) -> None:
        self.click(xy, 0.2)
        self.xdo("key", "ctrl+a")
        self.xdo("type", "--delay", 20, text)
        self.xdo("key", "Return")
        time.sleep(0.4)

    def shot(self, name: str) -> pathlib.Path:
        self.count += 1
        path = self.out / f"{self.count:02d}-{name}.png"
        subprocess.run(["import", "-window", "root", "-crop", f"{WINDOW[0]}x{WINDOW[1]}+0+0", str(path)],
                       env=self.env, check=True, timeout=60)
        return path


def survey_xy(y_px: float, x_px: float, size_px: int = 64) -> tuple[float, float]:
    """Screen position of a survey pixel centre."""
    scale = IMAGE_SIZE_PX / size_px
    return IMAGE_ORIGIN[0] + (x_px + 0.5) * scale, IMAGE_ORIGIN[1] + (y_px + 0.5) * scale


def free_display() -> int:
    for n in range(71, 400):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


def wait_for(predicate: typing.Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while not predicate():
        if time.time() > end:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)


def place_window(gui: Gui) -> None:
    """The main window at the top left, WINDOW in size (no window manager: retried until it takes)."""
    def placed() -> bool:
        ids = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "Nion Swift 16"], env=gui.env,
                             capture_output=True, text=True, timeout=30).stdout.split()
        for window in ids:
            gui.xdo("windowmove", window, 0, 0)
            gui.xdo("windowsize", window, *WINDOW)
        time.sleep(1.0)
        geometry = [subprocess.run(["xdotool", "getwindowgeometry", window], env=gui.env, capture_output=True,
                                   text=True, timeout=30).stdout for window in ids]
        return any(f"{WINDOW[0]}x{WINDOW[1]}" in g for g in geometry)
    wait_for(placed, 60, "the main window to take its size")


def demo(gui: Gui, work: pathlib.Path, steps: int, continue_steps: int | None) -> None:
    for xy in CLOSE_DOCKS:
        gui.click(xy)
    gui.click(DKL_MENU)
    gui.click(SHOW_PANEL_ITEM, 1.5)
    gui.type_into(STEPS_FIELD, str(steps))
    gui.click(ACQUIRE_SURVEY, 5.0)
    gui.shot("survey")
    gui.click(RECTANGLE_TOOL)  # a region over the sample (usim: vacuum on the right)
    gui.drag(survey_xy(6, 4), survey_xy(58, 44))
    gui.click(RECTANGLE_TOOL)  # a second rectangle, then 'Exclude area' while it is selected
    gui.drag(survey_xy(26, 16), survey_xy(38, 28))
    gui.click(EXCLUDE_AREA)
    gui.shot("region")
    gui.click(POINTER_TOOL)
    gui.click(PICK_POINT)  # the 'pick' mark appears at the centre; drag it onto a pixel
    gui.drag(survey_xy(31.5, 31.5), survey_xy(12, 36))
    gui.click(PREVIEW, 4.0)
    gui.shot("preview")
    gui.click(FORCE_NEXT)
    session = work / "run1.h5"
    gui.type_into(SESSION_FIELD, str(session))
    gui.click(START, 8.0)
    gui.click(POINT_TOOL)  # during the run: a point drawn with Swift's point tool, then 'Force next'
    gui.click(survey_xy(50, 10))
    gui.click(FORCE_NEXT, 2.0)
    gui.shot("running")
    summary = work / "run1.summary.json"
    wait_for(summary.exists, 600, "the end of the run (run1.summary.json)")
    time.sleep(1.0)
    gui.click(SHOW_MAPS, 3.0)
    final = gui.shot("maps")
    shutil.copyfile(final, gui.out / "screenshot.png")
    if continue_steps:
        summary.unlink()
        gui.type_into(STEPS_FIELD, str(continue_steps))
        gui.click(CONTINUE_RUN, 3.0)
        gui.click(PAUSE, 3.0)  # paused: the camera stops (its item no longer live), the probe is parked
        gui.shot("paused")
        gui.click(PAUSE)  # resume
        wait_for(summary.exists, 600, "the end of the continued run")
        time.sleep(1.0)
        gui.shot("continued")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--continue-steps", type=int, default=None, help="then continue the run to this many steps")
    parser.add_argument("--keep", action="store_true", help="leave Swift and Xvfb running (prints the display)")
    parser.add_argument("--installed", action="store_true",
                        help="use the dkl4dstem installed in this Python (default: this checkout, on PYTHONPATH)")
    args = parser.parse_args()
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="dkl-gui-"))
    display = free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    swift: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: os.path.exists(f"/tmp/.X11-unix/X{display}"), 20, "Xvfb")
        home = work / "home"
        subprocess.run([sys.executable, str(ROOT / "tests" / "swift_app" / "make_profile.py"),
                        str(home / ".local" / "share" / "Nion" / "Nion Swift"), str(work / "project")],
                       check=True, capture_output=True, timeout=120)
        env = dict(os.environ, HOME=str(home), DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb")
        if not args.installed:
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        env.pop("XDG_DATA_HOME", None)
        env.pop("XDG_CONFIG_HOME", None)
        log = open(out / "swift.log", "w")
        swift = subprocess.Popen([sys.executable, "-m", "nionswift", "--ui", "qt"], cwd=work, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        gui = Gui(f":{display}", out)
        subprocess.run(["xdotool", "search", "--sync", "--name", "Nion Swift 16"], env=gui.env, check=True,
                       timeout=120, capture_output=True)
        wait_for(lambda: "dkl4dstem engine loaded" in (out / "swift.log").read_text(), 120, "the DKL engine")
        place_window(gui)
        time.sleep(2.0)
        demo(gui, work, args.steps, args.continue_steps)
        print(f"screenshots in {out}; session files in {work}")
        if args.keep:
            print(f"Swift is still running on DISPLAY=:{display} (pid {swift.pid}); Xvfb pid {xvfb.pid}")
            return 0
        gui.xdo("key", "ctrl+q")
        swift.wait(30)
        return 0
    finally:
        if not args.keep:
            for process in (swift, xvfb):
                if process is not None and process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())

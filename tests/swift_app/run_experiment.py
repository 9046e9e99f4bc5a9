"""Driver script for the real-application test: run by the dkl4dstem_test_driver plug-in inside Nion Swift.

Opens the DKL 4D-STEM panel, acquires a usim HAADF survey and does five runs in one session: short ones, and one
long run stopped mid-run by a real mouse click on the panel's Stop button (XTest, through the X server). Shows the
maps 2x2, saves screenshots and a JSON summary into $DKL4DSTEM_SWIFT_OUT, then quits Swift."""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import time
import typing

from nionswift_plugin.dkl4dstem_swift import extension
from nionswift_plugin.dkl4dstem_swift import panel as panel_module
from nionswift_plugin.dkl4dstem_swift import survey_marks
from nionswift_plugin.dkl4dstem_swift import ui_tasks

STOP_RUN = 3          # the run stopped by a click
RUNS = 5


def find_button(ctx: typing.Any, text: str) -> list[int]:
    """The button's centre on the screen, from Qt."""
    from PySide6 import QtWidgets

    def find() -> list[int]:
        for widget in QtWidgets.QApplication.allWidgets():
            if isinstance(widget, QtWidgets.QPushButton) and widget.text() == text and widget.isVisible():
                centre = widget.mapToGlobal(widget.rect().center())
                return [centre.x(), centre.y()]
        raise RuntimeError(f"no visible '{text}' button")

    return ctx.call(find)


def move_pointer(xy: list[int]) -> None:
    """Put the X pointer on the button (before the click, so that the click itself is only the press and release)."""
    if not (shutil.which("xdotool") and os.environ.get("DISPLAY")):
        raise RuntimeError("xdotool and DISPLAY are needed for the click")
    subprocess.run(["xdotool", "mousemove", str(xy[0]), str(xy[1])], check=True, timeout=20)


def click(on_press: typing.Callable[[], None]) -> None:
    """A real click where the pointer is, through the X server's XTest extension (as xdotool does, but from this
    process: the press is sent when on_press() has run, with no process start in between); xdotool if libXtst is
    missing."""
    try:
        x11 = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11") or "libX11.so.6")
        xtst = ctypes.cdll.LoadLibrary(ctypes.util.find_library("Xtst") or "libXtst.so.6")
    except OSError:
        on_press()
        subprocess.run(["xdotool", "click", "1"], check=True, timeout=20)
        return
    x11.XOpenDisplay.restype = ctypes.c_void_p
    display = ctypes.c_void_p(x11.XOpenDisplay(None))
    if not display.value:
        raise RuntimeError("cannot open the X display for the click")
    try:
        on_press()
        xtst.XTestFakeButtonEvent(display, 1, True, 0)
        x11.XFlush(display)
        time.sleep(0.01)
        xtst.XTestFakeButtonEvent(display, 1, False, 0)
        x11.XFlush(display)
    finally:
        x11.XCloseDisplay(display)


def task_summary(since: float) -> dict[str, list[float]]:
    """The plug-in's UI tasks since a time, by kind: [count, then the longest of: wall ms, CPU ms without GC, ms waiting
    for a core, ms blocked (GIL, locks, I/O)] (each column its own longest)."""
    table: dict[str, list[float]] = dict()
    for t in ui_tasks.LOG.since(since):
        row = table.setdefault(t.kind, [0, 0.0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] = max(row[1], round(1000 * t.wall_s, 1))
        row[2] = max(row[2], round(1000 * t.own_cpu_s, 1))
        row[3] = max(row[3], round(1000 * t.ready_s, 1))
        row[4] = max(row[4], round(1000 * t.blocked_s, 1))
    return table


def main(ctx: typing.Any) -> None:
    ctx.resize_main_window(1880, 1300)
    dc = ctx.document_controller
    assert getattr(dc, "_" + extension.MENU_ID, None) is not None, "the DKL menu is missing"
    panel = ctx.call(lambda: dc.find_dock_panel(panel_module.PANEL_ID))
    assert panel is not None, "the DKL 4D-STEM panel is not registered"

    def arrange() -> None:
        # room for the whole DKL panel on the right: hide the panels that share that dock
        for panel_id in ("histogram-panel", "info-panel", "inspector-panel", "session-panel", "activity-panel"):
            other = dc.find_dock_panel(panel_id)
            if other is not None:
                other.hide()
        panel.show()

    ctx.call(arrange)
    handler = panel.handler

    def configure() -> None:
        handler.survey_size.value = "48"
        handler.fov_nm.value = "16"
        handler.pixel_time_us.value = "2"
        handler.exposure_ms.value = "5"
        handler.binning.value = "8"
        handler.window.value = "8"
        handler.seeds.value = "8"
        handler.set_scalarizer("vbf")
        handler.extra_config = {"initial_iterations": 60, "update_iterations": 10, "hidden": (32, 16)}

    ctx.call(configure)
    ctx.call(lambda: dc.perform_action(extension.ACQUIRE_ACTION_ID))
    ctx.wait_until(lambda: handler.controller.survey_display_item is not None and handler.idle.value, 60, "survey")
    out = ctx.out_dir
    runs = list()
    for run in range(1, RUNS + 1):
        steps = {1: 12, STOP_RUN: 200}.get(run, 4)
        ctx.call(lambda: setattr(handler.steps, "value", str(steps)))
        t0 = time.time()
        t_tasks = time.perf_counter()
        ok = ctx.call(handler.start, timeout_s=120)
        assert ok, handler.message.value
        ctx.wait_until(lambda: handler.controller.thread is not None or handler.idle.value, 120, f"run {run} to start")
        if run == 1:
            ctx.call(handler.show_maps)
        record: dict[str, typing.Any] = {"run": run, "steps": steps}
        if run == STOP_RUN:
            ctx.wait_until(lambda: handler.controller.status.step >= 24, 240, "steps before the Stop click")
            instrument = handler.controller.instrument
            record["click_xy"] = xy = find_button(ctx, "Stop")
            move_pointer(xy)
            pressed: dict[str, float] = dict()

            def on_press() -> None:
                record["at_click"] = instrument.recorded_count  # the count when the button is pressed
                pressed["t"] = time.time()

            click(on_press)
            t_click = time.time()
            record["xdotool_click_s"] = t_click - pressed["t"]
            record["after_click"] = instrument.recorded_count
            while instrument.recorded_count - record["at_click"] <= 3 and not instrument.is_closed:
                time.sleep(0.01)
                if time.time() - t_click > 30:
                    break
            record["released_after_s"] = time.time() - t_click
            record["at_release"] = instrument.recorded_count
            requested = handler.controller.stop_requested
            record["stop_handled_after_s"] = requested[0] - t_click if requested else None
            record["at_stop_handled"] = requested[1] if requested else None
            subprocess.run(["import", "-window", "root", os.path.join(out, "after_stop_click.png")], timeout=60)
        ctx.wait_until(lambda: handler.controller.status.state == "idle", 300, f"run {run} to end")
        result = handler.controller.result
        time.sleep(1.0)  # the end of the run's pieces
        record["plugin_tasks"] = ctx.call(lambda: task_summary(t_tasks))
        record.update(seconds=time.time() - t0, message=handler.message.value,
                      n_measured=len(result.visited) if result else 0, error=getattr(result, "error", None),
                      timing_text=handler.timing_text.value)
        runs.append(record)
    time.sleep(2.0)  # let the displays and thumbnails repaint
    ctx.call(lambda: None)
    ctx.screenshot(os.path.join(out, "screenshot.png"))
    subprocess.run(["import", "-window", "root", os.path.join(out, "root.png")], timeout=60)

    def summary() -> dict[str, typing.Any]:
        survey = handler.controller.survey_display_item
        return {
            "runs": runs, "titles": sorted(d.title for d in dc.document_model.data_items),
            "groups": [g.title for g in dc.document_model.data_groups],
            "marks": len(survey_marks.marks_on(survey)),
            "point_graphics": sum(1 for g in survey.graphics if g.type == "point-graphic"),
            "live": [d.title for d in dc.document_model.data_items if d.is_live],
            "probe_position": str(handler.controller.instrument and None),
        }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(ctx.call(summary), f, indent=1)
    # a sixth run, ended by closing the document window as File > Close Window does; Swift then quits
    ctx.call(lambda: setattr(handler.steps, "value", "200"))
    assert ctx.call(handler.start, timeout_s=120), handler.message.value
    ctx.wait_until(lambda: handler.controller.status.step >= 14, 240, "steps before closing the window")
    instrument = handler.controller.instrument
    with open(os.path.join(out, "close.json"), "w") as f:
        json.dump({"at_close_request": instrument.recorded_count}, f)
    ctx.call(dc.queue_request_close)
    time.sleep(60)  # the app exits when its last window has closed
    ctx.quit()  # (only reached when it did not)

"""Driver script for the real-application test: run by the dkl4dstem_test_driver plug-in inside Nion Swift.

Opens the DKL 4D-STEM panel, acquires a usim HAADF survey, runs a short experiment (about 10 steps), shows the maps
2x2 and saves a screenshot plus a JSON summary into $DKL4DSTEM_SWIFT_OUT, then quits Swift."""
from __future__ import annotations

import json
import os
import time
import typing

from nionswift_plugin.dkl4dstem_swift import extension
from nionswift_plugin.dkl4dstem_swift import panel as panel_module


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
        handler.steps.value = os.environ.get("DKL4DSTEM_SWIFT_STEPS", "10")
        handler.set_scalarizer("vbf")
        handler.extra_config = {"initial_iterations": 60, "update_iterations": 10, "hidden": (32, 16)}

    ctx.call(configure)
    ctx.call(lambda: dc.perform_action(extension.ACQUIRE_ACTION_ID))
    ctx.wait_until(lambda: handler.controller.survey_display_item is not None and handler.idle.value, 60, "survey")
    t0 = time.time()
    ok = ctx.call(handler.start, timeout_s=120)
    assert ok, handler.message.value
    # (a Start that comes while the engine is still loading begins when it is ready)
    ctx.wait_until(lambda: handler.controller.status.state != "idle" or handler.controller.result is not None, 120,
                   "the run to start")
    ctx.call(handler.show_maps)
    ctx.wait_until(lambda: handler.controller.status.step >= 12, 240, "a few steps")
    ctx.call(handler.show_maps)
    ctx.wait_until(lambda: handler.controller.status.state == "idle", 240, "run end")
    run_s = time.time() - t0
    time.sleep(1.5)  # let the displays repaint
    ctx.call(lambda: None)
    out = ctx.out_dir
    ctx.screenshot(os.path.join(out, "screenshot.png"))

    def summary() -> dict[str, typing.Any]:
        result = handler.controller.result
        survey = handler.controller.survey_display_item
        return {
            "message": handler.message.value, "step_text": handler.step_text.value, "best_text": handler.best_text.value,
            "timing_text": handler.timing_text.value, "n_measured": len(result.visited) if result else 0,
            "error": getattr(result, "error", None), "run_seconds": run_s,
            "titles": sorted(d.title for d in dc.document_model.data_items),
            "points": sum(1 for g in survey.graphics if g.type == "point-graphic"),
            "probe_position": str(handler.controller.instrument and None),
        }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(ctx.call(summary), f, indent=1)
    ctx.quit()

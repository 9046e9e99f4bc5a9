"""What the Nion Swift plug-in adds per step over the bare engine loop, on the same usim instrument.

Both runs use the same usim microscope (headless Swift model, nion.ui TestUI), the same survey, the same
SwiftInstrument adapter and the same ExperimentConfig (live mode: wait_for_training=False, as in Swift):
  bare    Experiment(instrument, config).run() on a worker thread, no listener, nothing else running
  plug-in the panel's Start: RunController + LiveItems (events coalesced into UI tasks, maps, point graphics,
          pattern sequence, status) with the UI thread pumping document_controller.periodic() every 20 ms,
          as Swift's Qt timer does
Runs come in pairs, in alternating order (bare first, then plug-in first), with a few idle seconds before each. Per-step time is the engine's own step_seconds (measure,
decide, emit) over the model-driven steps, so both sides measure the same thing; the run's wall time per
measurement is reported too. Budget: the plug-in adds <= 10 ms per step. Also printed: the decision median (the
engine's, as the panel shows it per step), every UI tick's wall time (median, p99, max: Swift's own work included),
the plug-in's own UI tasks by kind (ui_tasks.LOG: wall, CPU time without garbage collections, the collections inside
a task), from the Start click to the end of the loop and for the end of the run apart, and Python's full garbage
collections (generation 2) during each run: their wall time holds every thread (the GIL), whichever triggered them.

    python benchmarks/plugin_overhead.py [--survey 32] [--seeds 10] [--steps 40] [--repeats 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import threading
import time
import typing
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGET_MS = 10.0


class _Leaks(unittest.TestCase):
    def runTest(self) -> None:  # only used for end_leaks' assertions
        pass


def _config_kwargs(args: argparse.Namespace) -> dict[str, typing.Any]:
    # live mode, as the plug-in runs on a microscope: training runs beside the loop and is swapped in when ready,
    # so a step is measure + decide + emit (waiting for training would add the CPU contention on training time)
    return {"initial_iterations": args.initial_iterations, "update_iterations": args.update_iterations,
            "refit_every": 1000, "hidden": (32, 16), "wait_for_training": False}


def _summarize(result: typing.Any, wall_s: float) -> dict[str, float]:
    steps = [s for s, phase in zip(result.step_seconds, result.phases) if phase == "step"]
    return {"n": len(result.visited), "n_steps": len(steps),
            "step_ms_mean": 1000 * statistics.fmean(steps), "step_ms_median": 1000 * statistics.median(steps),
            "decision_ms_mean": 1000 * statistics.fmean(d for d, p in zip(result.decision_seconds, result.phases) if p == "step"),
            "decision_ms_median": 1000 * statistics.median(d for d, p in zip(result.decision_seconds, result.phases) if p == "step"),
            "instrument_ms_mean": 1000 * statistics.fmean(result.instrument_seconds),
            "wall_ms_per_measurement": 1000 * wall_s / max(1, len(result.visited))}


def run_bare(tc: typing.Any, survey_display_item: typing.Any, settings: typing.Any) -> dict[str, float]:
    from dkl4dstem.experiment import Experiment
    from nionswift_plugin.dkl4dstem_swift import swift_instrument
    xdata = survey_display_item.data_item.xdata
    instrument = swift_instrument.SwiftInstrument(tc.instrument, tc.scan_hardware_source, tc.camera_hardware_source,
                                                  survey=swift_instrument.survey_from_xdata(xdata),
                                                  camera_settings=settings.camera)
    experiment = Experiment(instrument, settings.config)
    box: dict[str, typing.Any] = dict()
    start = time.perf_counter()
    cpu_start = time.process_time()
    thread = threading.Thread(target=lambda: box.setdefault("result", experiment.run()))
    thread.start()
    FULL_GCS.clear()
    ui_busy_s = _pump_while(tc.document_controller, thread.is_alive)
    thread.join()
    wall_s = time.perf_counter() - start
    result = box["result"]
    assert result.error is None, result.error
    summary = _summarize(result, wall_s)
    summary["ui_thread_ms_per_measurement"] = 1000 * ui_busy_s / max(1, len(result.visited))
    summary["process_cpu_ms_per_measurement"] = 1000 * (time.process_time() - cpu_start) / max(1, len(result.visited))
    summary.update(_ticks())
    summary.update(_gcs())
    return summary


PROFILE: typing.Any = None
TICKS: list[float] = list()  # wall duration of every UI tick (periodic) of the current run
FULL_GCS: list[float] = list()  # wall duration of every full garbage collection (any thread) of the current run
_gc_started: dict[int, float] = dict()


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _gc_started[threading.get_ident()] = time.perf_counter()
    elif threading.get_ident() in _gc_started:
        FULL_GCS.append(time.perf_counter() - _gc_started.pop(threading.get_ident()))


def _gcs() -> dict[str, float]:
    return {"full_gc_count": float(len(FULL_GCS)), "full_gc_ms_max": 1000 * max(FULL_GCS, default=0.0)}


def _pump_while(dc: typing.Any, condition: typing.Callable[[], bool]) -> float:
    """The UI thread as Swift runs it: periodic() every 20 ms (Swift itself updates the camera's live item)."""
    ui_busy_s = 0.0
    TICKS.clear()
    while condition():
        t = time.thread_time()  # CPU time of this (the UI) thread, not inflated by waiting for the GIL
        t_wall = time.perf_counter()
        if PROFILE is not None:
            PROFILE.enable()
        dc.periodic()
        if PROFILE is not None:
            PROFILE.disable()
        TICKS.append(time.perf_counter() - t_wall)
        ui_busy_s += time.thread_time() - t
        time.sleep(0.02)
    return ui_busy_s


def _ticks() -> dict[str, float]:
    """The longest UI task (a tick), as Swift's UI sees it: everything queued, Swift's own work included."""
    ticks = sorted(TICKS) or [math.nan]
    return {"ui_tick_ms_max": 1000 * ticks[-1], "ui_tick_ms_p99": 1000 * ticks[min(len(ticks) - 1, int(0.99 * len(ticks)))],
            "ui_tick_ms_median": 1000 * ticks[len(ticks) // 2]}


def run_plugin(tc: typing.Any, handler: typing.Any, survey_display_item: typing.Any) -> dict[str, typing.Any]:
    from nionswift_plugin.dkl4dstem_swift import ui_tasks
    dc = tc.document_controller
    start = time.perf_counter()
    cpu_start = time.process_time()
    FULL_GCS.clear()
    with ui_tasks.timing("Start click"):
        assert handler.start(survey_display_item), handler.message.value
    loop_end: list[float] = list()

    def running() -> bool:  # the loop thread, once it exists; then the end of the run
        thread = handler.controller.thread
        if not loop_end and thread is not None and not thread.is_alive():
            loop_end.append(time.perf_counter())
        return handler.controller.status.state != "idle"

    ui_busy_s = _pump_while(dc, running)
    t_loop_end = loop_end[0] if loop_end else time.perf_counter()
    wall_s = time.perf_counter() - start
    result = handler.controller.result
    assert result is not None and result.error is None, handler.message.value
    summary: dict[str, typing.Any] = dict(_summarize(result, wall_s))
    summary["ui_thread_ms_per_measurement"] = 1000 * ui_busy_s / max(1, len(result.visited))
    summary["process_cpu_ms_per_measurement"] = 1000 * (time.process_time() - cpu_start) / max(1, len(result.visited))
    live = handler.controller.live_items
    summary["ui_updates"] = float(live.apply_count if live else 0)
    summary["live_update_cpu_ms_per_measurement"] = 1000 * (live.apply_cpu_s if live else 0.0) / max(1, len(result.visited))
    summary.update(_ticks())
    summary.update(_gcs())
    _pump_while(tc.document_controller, lambda: any(d.is_live for d in live.items.values()) if live else False)
    tasks = ui_tasks.LOG.since(start)
    during = [t for t in tasks if t.at < t_loop_end]
    summary["plugin_tasks_run"] = _task_table(during)
    summary["plugin_tasks_end"] = _task_table([t for t in tasks if t.at >= t_loop_end])
    walls = sorted(t.wall_s for t in during) or [math.nan]
    summary["plugin_task_ms_max"] = 1000 * walls[-1]
    summary["plugin_task_ms_p99"] = 1000 * walls[min(len(walls) - 1, int(0.99 * len(walls)))]
    summary["plugin_task_own_cpu_ms_max"] = 1000 * max((t.own_cpu_s for t in during), default=math.nan)
    return summary


def _task_table(tasks: typing.Sequence[typing.Any]) -> dict[str, dict[str, float]]:
    """By kind: count, wall median / max, CPU without garbage collections median / max, collections inside, in ms."""
    table = dict()
    for kind in sorted({t.kind for t in tasks}):
        these = [t for t in tasks if t.kind == kind]
        walls = [1000 * t.wall_s for t in these]
        own = [1000 * t.own_cpu_s for t in these]
        table[kind] = {"n": float(len(these)), "wall_ms_median": statistics.median(walls), "wall_ms_max": max(walls),
                       "own_cpu_ms_median": statistics.median(own), "own_cpu_ms_max": max(own),
                       "gc_ms_max": 1000 * max(t.gc_s for t in these)}
    return table


def _print_tasks(title: str, runs: list[dict[str, typing.Any]], key: str) -> None:
    """The longest over the plug-in runs, by kind, longest wall first."""
    merged: dict[str, dict[str, float]] = dict()
    for run in runs:
        for kind, row in run[key].items():
            m = merged.setdefault(kind, {"n": 0.0, "wall_ms_median": 0.0, "wall_ms_max": 0.0, "own_cpu_ms_median": 0.0,
                                         "own_cpu_ms_max": 0.0, "gc_ms_max": 0.0})
            m["n"] += row["n"]
            for k in ("wall_ms_max", "own_cpu_ms_max", "gc_ms_max"):
                m[k] = max(m[k], row[k])
            for k in ("wall_ms_median", "own_cpu_ms_median"):
                m[k] = max(m[k], row[k])  # the larger of the runs' medians
    print(f"{title}  (ms; wall / CPU of the UI thread without garbage collections / CPU of the collections inside a task)")
    print(f"  {'kind':34s} {'n':>5s} {'wall med':>9s} {'wall max':>9s} {'CPU med':>8s} {'CPU max':>8s} {'GC max':>7s}")
    for kind, m in sorted(merged.items(), key=lambda kv: -kv[1]["wall_ms_max"]):
        print(f"  {kind:34s} {m['n']:5.0f} {m['wall_ms_median']:9.1f} {m['wall_ms_max']:9.1f} {m['own_cpu_ms_median']:8.1f} "
              f"{m['own_cpu_ms_max']:8.1f} {m['gc_ms_max']:7.1f}")


def _settle(dc: typing.Any, seconds: float = 3.0) -> None:
    """Pump the UI while nothing runs, so one run's leftover display work does not land in the next."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        dc.periodic()
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--survey", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--exposure-ms", type=float, default=2.0)
    parser.add_argument("--initial-iterations", type=int, default=40)
    parser.add_argument("--update-iterations", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "plugin_overhead.json"))
    args = parser.parse_args()

    from nion.instrumentation.test import AcquisitionTestContext
    from nion.swift.model import DisplayItem
    from nion.swift.test import TestContext
    from nion.usim_device import DeviceConfiguration
    from nionswift_plugin.dkl4dstem_swift import extension as extension_module
    from nionswift_plugin.dkl4dstem_swift import panel as panel_module

    gc.callbacks.append(_gc_callback)
    old_cwd = os.getcwd()
    tmp = tempfile.TemporaryDirectory()
    os.chdir(tmp.name)  # AcquisitionTestContext recreates ./test_data
    rows: list[tuple[str, dict[str, float]]] = list()
    try:
        AcquisitionTestContext.begin_leaks()
        test_setup = TestContext.TestSetup()
        extension = extension_module.DKLExtension(None)
        try:
            with AcquisitionTestContext.AcquisitionTestContext(DeviceConfiguration.AcquisitionContextConfiguration(), is_app=True) as tc:
                dc = tc.document_controller
                handler = dc.find_dock_panel(panel_module.PANEL_ID).handler
                for name, value in (("survey_size", args.survey), ("fov_nm", 16), ("pixel_time_us", 1),
                                    ("exposure_ms", args.exposure_ms), ("binning", 8), ("window", args.window),
                                    ("seeds", args.seeds), ("steps", args.steps)):
                    getattr(handler, name).value = str(value)
                handler.set_scalarizer("vbf")
                handler.extra_config = _config_kwargs(args)
                assert handler.acquire_survey(), handler.message.value
                while handler.controller.survey_display_item is None or not handler.idle.value:
                    dc.periodic()
                    time.sleep(0.01)
                survey = handler.controller.survey_display_item
                settings = handler.collect_settings()
                # the test context computes display data synchronously on the UI thread; the application does it
                # on worker threads: measure the application's way
                DisplayItem.DisplayDataChannel._force_sync -= 1
                try:
                    run_bare(tc, survey, settings)  # warm-up: imports, JIT, first camera frames
                    for k in range(args.repeats):
                        pair: dict[str, dict[str, float]] = dict()
                        # alternate the order, and let Swift finish the previous run's display work first
                        for kind in (("bare", "plug-in") if k % 2 == 0 else ("plug-in", "bare")):
                            _settle(dc)
                            pair[kind] = run_bare(tc, survey, settings) if kind == "bare" else run_plugin(tc, handler, survey)
                        rows.extend([("bare", pair["bare"]), ("plug-in", pair["plug-in"])])
                        print(f"repeat {k + 1}/{args.repeats}: bare {pair['bare']['step_ms_mean']:.1f} ms/step, "
                              f"plug-in {pair['plug-in']['step_ms_mean']:.1f} ms/step", flush=True)
                finally:
                    DisplayItem.DisplayDataChannel._force_sync += 1
        finally:
            extension.close()
        test_setup = typing.cast(typing.Any, None)
        AcquisitionTestContext.end_leaks(_Leaks())
    finally:
        os.chdir(old_cwd)
        tmp.cleanup()

    def mean_of(kind: str, key: str) -> float:
        return statistics.fmean(r[key] for k, r in rows if k == kind)

    keys = ("step_ms_mean", "step_ms_median", "decision_ms_mean", "decision_ms_median", "instrument_ms_mean",
            "wall_ms_per_measurement", "process_cpu_ms_per_measurement", "ui_tick_ms_median", "ui_tick_ms_p99",
            "ui_tick_ms_max")
    summary = {kind: {key: mean_of(kind, key) for key in keys} for kind in ("bare", "plug-in")}
    overhead_step_ms = summary["plug-in"]["step_ms_mean"] - summary["bare"]["step_ms_mean"]
    paired = [p["step_ms_mean"] - b["step_ms_mean"] for (_, b), (_, p) in zip(rows[0::2], rows[1::2])]
    stderr_ms = statistics.stdev(paired) / len(paired) ** 0.5 if len(paired) > 1 else math.nan
    overhead_wall_ms = summary["plug-in"]["wall_ms_per_measurement"] - summary["bare"]["wall_ms_per_measurement"]
    ui_ms = statistics.fmean(r["ui_thread_ms_per_measurement"] for k, r in rows if k == "plug-in")
    ui_bare_ms = statistics.fmean(r["ui_thread_ms_per_measurement"] for k, r in rows if k == "bare")
    live_ms = statistics.fmean(r["live_update_cpu_ms_per_measurement"] for k, r in rows if k == "plug-in")
    task_max_ms = max(r["plugin_task_ms_max"] for k, r in rows if k == "plug-in")
    task_p99_ms = statistics.fmean(r["plugin_task_ms_p99"] for k, r in rows if k == "plug-in")
    task_cpu_max_ms = max(r["plugin_task_own_cpu_ms_max"] for k, r in rows if k == "plug-in")

    print()
    overhead_cpu_ms = summary["plug-in"]["process_cpu_ms_per_measurement"] - summary["bare"]["process_cpu_ms_per_measurement"]
    print(f"{'':10s} {'step mean':>10s} {'step median':>12s} {'decision':>9s} {'instrument':>11s} {'wall/meas.':>11s} {'CPU/meas.':>10s}   (ms)")
    for kind in ("bare", "plug-in"):
        s = summary[kind]
        print(f"{kind:10s} {s['step_ms_mean']:10.1f} {s['step_ms_median']:12.1f} {s['decision_ms_mean']:9.1f} "
              f"{s['instrument_ms_mean']:11.1f} {s['wall_ms_per_measurement']:11.1f} {s['process_cpu_ms_per_measurement']:10.1f}")
    print(f"{'overhead':10s} {overhead_step_ms:10.1f} {'':12s} {'':9s} {'':11s} {overhead_wall_ms:11.1f} {overhead_cpu_ms:10.1f}")
    print(f"UI-thread CPU per measurement: bare {ui_bare_ms:.1f} ms (Swift's own camera view), plug-in {ui_ms:.1f} ms, "
          f"of which the plug-in's live updates {live_ms:.1f} ms")
    print(f"{'':10s} {'decision median':>16s} {'UI tick median':>15s} {'p99':>6s} {'max':>6s}   (ms)")
    for kind in ("bare", "plug-in"):
        s = summary[kind]
        print(f"{kind:10s} {s['decision_ms_median']:16.1f} {s['ui_tick_ms_median']:15.1f} {s['ui_tick_ms_p99']:6.1f} "
              f"{s['ui_tick_ms_max']:6.1f}")
    plugin_runs = [r for k, r in rows if k == "plug-in"]
    _print_tasks("the plug-in's UI tasks from the Start click to the end of the loop", plugin_runs, "plugin_tasks_run")
    _print_tasks("the plug-in's UI tasks after the loop (the end of the run)", plugin_runs, "plugin_tasks_end")
    print(f"the plug-in's own UI tasks during the run: longest {task_max_ms:.1f} ms wall (p99 {task_p99_ms:.1f}), "
          f"{task_cpu_max_ms:.1f} ms CPU without garbage collections (the rest of a long tick is Swift's own work)")
    for kind in ("bare", "plug-in"):
        these = [r for k, r in rows if k == kind]
        print(f"full garbage collections during the loop, {kind}: {sum(r['full_gc_count'] for r in these):.0f} in "
              f"{len(these)} runs, longest {max(r['full_gc_ms_max'] for r in these):.0f} ms"
              + (" (the plug-in freezes the objects that exist at Start: gc_pause)" if kind == "plug-in" else ""))
    print(f"overhead per step {overhead_step_ms:.1f} ± {stderr_ms:.1f} ms (mean ± standard error of {len(paired)} paired runs; "
          f"usim frame timing alone scatters a run's mean step by tens of ms)")
    print(f"budget {BUDGET_MS:g} ms per step: "
          f"{'PASS' if overhead_step_ms <= BUDGET_MS else 'FAIL'}")

    report = {"benchmark": "plugin_overhead", "budget_ms": BUDGET_MS, "overhead_step_ms": overhead_step_ms, "overhead_step_ms_stderr": stderr_ms,
              "paired_overhead_step_ms": paired,
              "overhead_wall_ms_per_measurement": overhead_wall_ms,
              "overhead_process_cpu_ms_per_measurement": overhead_cpu_ms, "ui_thread_cpu_ms_per_measurement": {"bare": ui_bare_ms, "plug-in": ui_ms},
              "live_update_cpu_ms_per_measurement": live_ms,
              "plugin_task_ms_max": task_max_ms, "plugin_task_ms_p99": task_p99_ms,
              "plugin_task_own_cpu_ms_max": task_cpu_max_ms,
              "pass": overhead_step_ms <= BUDGET_MS, "summary": summary, "runs": [{"kind": k, **r} for k, r in rows],
              "args": vars(args), "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                               "platform": platform.platform()},
              "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

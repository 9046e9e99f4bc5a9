"""How long `Experiment.stop()` takes to end a run, per situation (the latencies the tests no longer assert).

The fixture replayed through the tests' fault-injecting instrument (`tests/faults.py`: a slow camera, 0.15 s a
frame, or a hanging one guarded by a 0.5 s acquisition timeout) with short training, stopped from another thread
while it seeds or steps (mid-frame), runs a 20,000-iteration refit or initial fit, is paused, or waits on a hung frame. Prints,
per situation, the median and maximum seconds from stop() to run() returning, the longest step before the stop,
and the points measured after stop() (at most 1 by design).

    python benchmarks/stop_latency.py [--repeats 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
import typing
import warnings

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent  # noqa: E402
from dkl4dstem.instruments.replay import ReplayInstrument  # noqa: E402
from tests.faults import FaultyInstrument, wait_for  # noqa: E402

FIXTURE = os.path.join(ROOT, "resources", "graphene_si.npz")
SMALL = {"seeds": 4, "steps": 40, "initial_iterations": 20, "update_iterations": 5, "refit_iterations": 20}
SITUATIONS = ("seeding", "stepping", "long-refit", "initial-fit", "paused", "hung frame")


def _instrument(situation: str) -> FaultyInstrument:
    with numpy.load(FIXTURE) as npz:
        inner = ReplayInstrument(npz["data"], survey=npz["survey"], reference=npz["reference"],
                                 mrad_per_px=float(npz["mrad_per_px"]), nm_per_px=float(npz["nm_per_px"]))
    if situation == "hung frame":
        return FaultyInstrument(inner, on_calls={5: "hang", 6: "hang", 7: "hang"}, timeout=0.5)
    return FaultyInstrument(inner, delay=0.15)


def once(situation: str) -> dict[str, float]:
    overrides: dict[str, typing.Any] = {}
    if situation == "long-refit":
        overrides.update(refit_every=7, refit_iterations=20000)
    if situation == "initial-fit":
        overrides.update(initial_iterations=20000)
    if situation == "hung frame":
        overrides.update(steps=20, max_retries=2)
    instrument = _instrument(situation)
    experiment = Experiment(instrument, ExperimentConfig(**{**SMALL, **overrides}))
    stop_at = {"seeding": 2, "stepping": 6, "long-refit": 7, "initial-fit": 4, "paused": 5, "hung frame": 5}[situation]
    stopped: dict[str, float] = {}
    step_seconds: list[float] = []

    def stop_soon() -> None:
        if situation in ("seeding", "stepping"):
            time.sleep(0.075)  # mid-frame: the stop waits for the frame in flight
        elif situation == "paused":
            experiment.pause()
            time.sleep(0.45)
        elif situation in ("long-refit", "initial-fit"):
            time.sleep(1.0)  # well inside the long training
        elif situation == "hung frame":
            wait_for(lambda: instrument.hanging, timeout=30)
            time.sleep(0.2)
        stopped.update(calls=len(instrument.calls), t=time.perf_counter())
        experiment.stop()

    def on_event(event: StepEvent) -> None:
        step_seconds.append(event.step_seconds)
        if event.n_measured == stop_at and not stopped:
            threading.Thread(target=stop_soon, daemon=True).start()

    experiment.on_event = on_event
    experiment.run()
    latency = time.perf_counter() - stopped["t"]
    instrument.release()
    return {"latency_s": latency, "max_step_s": max(step_seconds), "after_stop": len(instrument.calls) - stopped["calls"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "out", "stop_latency.json"))
    args = parser.parse_args()
    logging.getLogger("dkl4dstem").setLevel(logging.ERROR)  # the injected faults' warnings are expected
    warnings.simplefilter("ignore", RuntimeWarning)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "cores": os.cpu_count(), "repeats": args.repeats}
    rows = []
    print(f"{meta['date']}  {meta['machine']}  {meta['cores']} cores  {args.repeats} runs per row")
    print(f"{'situation':>12} {'median s':>9} {'max s':>7} {'longest step s':>15} {'points after stop':>18}")
    for situation in SITUATIONS:
        runs = [once(situation) for _ in range(args.repeats)]
        row = {"situation": situation, "median_s": statistics.median(r["latency_s"] for r in runs),
               "max_s": max(r["latency_s"] for r in runs), "max_step_s": max(r["max_step_s"] for r in runs),
               "max_after_stop": max(r["after_stop"] for r in runs)}
        rows.append(row)
        print(f"{situation:>12} {row['median_s']:>9.3f} {row['max_s']:>7.3f} {row['max_step_s']:>15.3f} "
              f"{row['max_after_stop']:>18d}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()

"""Live-loop benchmark: the real `Experiment` loop as the microscope runs it, on full-size surveys.

On the microscope (`wait_for_training=False`, what the Swift plug-in does) the probe never waits for the network:
each step is measure -> condition the GP on the new point -> choose the next position, while a background thread
retrains on the data it had and is swapped in when ready (the points measured meanwhile are added by a block
Cholesky update). This script measures exactly that, on a synthetic 4D dataset held in memory (a defect lattice:
HAADF-like survey, 8 x 8 detector whose centre of mass follows the survey gradient), with a simulated detector
dwell per pattern. It starts from `--n` random seed points (the initial fit is not timed) and times `--steps`
steps. Reported: per-step wall time (what the microscope waits between patterns, dwell included), decision
latency, training rounds swapped in and their length (they overlap the steps), peak RSS.

    python benchmarks/live_loop.py [--size 512] [--n 500] [--steps 200] [--window 16] [--dwell-ms 10]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from latency import synthetic_survey  # noqa: E402  (benchmarks/ is not a package)


def synthetic_4d(size: int, detector: int = 8, seed: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(survey, data): a disc on the detector shifted along the survey's gradient (a CoM-like signal)."""
    survey = synthetic_survey(size, seed)
    gy, gx = numpy.gradient(survey)
    yy, xx = numpy.mgrid[0:detector, 0:detector].astype(numpy.float32) - (detector - 1) / 2
    data = numpy.empty((size, size, detector, detector), dtype=numpy.float32)
    for row in range(size):
        shift_y = 0.5 * gy[row].astype(numpy.float32)[:, None, None]
        shift_x = 0.5 * gx[row].astype(numpy.float32)[:, None, None]
        data[row] = numpy.exp(-((yy - shift_y) ** 2 + (xx - shift_x) ** 2) / 4.0)
    return survey, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--n", type=int, default=500, help="seed points measured before the timed steps")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--dwell-ms", type=float, default=10.0, help="simulated detector exposure per pattern")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent
    from dkl4dstem.instruments.replay import ReplayInstrument
    import torch

    from dkl4dstem.runtime import ensure_threads_configured

    ensure_threads_configured()
    threads = torch.get_num_threads()

    class DwellingReplay(ReplayInstrument):
        def measure(self, y: int, x: int):  # type: ignore[no-untyped-def]
            time.sleep(args.dwell_ms / 1e3)
            return super().measure(y, x)

    survey, data = synthetic_4d(args.size)
    instrument = DwellingReplay(data, survey=survey, source="synthetic")
    config = ExperimentConfig(scalarizer="com_magnitude", window=args.window, seeds=args.n, steps=args.steps,
                              wait_for_training=False, seed=0)
    # keep only scalars per step: holding the events (three 512 x 512 maps each) would inflate the RSS measured
    steps_seen: list[tuple[int, int, float]] = []  # (model version, n measured, training seconds)

    def on_event(event: StepEvent) -> None:
        if event.phase == "step":
            steps_seen.append((event.model_version, event.n_measured, event.training_seconds))

    start = time.perf_counter()
    result = Experiment(instrument, config, on_event=on_event).run()
    wall = time.perf_counter() - start
    if result.error:
        raise SystemExit(f"live_loop: the run failed: {result.error}")
    steps = numpy.asarray(result.step_seconds)
    decisions = numpy.asarray(result.decision_seconds)
    rounds = [seconds for _, _, seconds in steps_seen if seconds > 0]
    versions = [version for version, _, _ in steps_seen]
    row = {"size": args.size, "candidates": args.size ** 2, "window": args.window, "n_start": args.n,
           "steps": len(steps), "dwell_ms": args.dwell_ms,
           "step_ms_median": 1e3 * float(numpy.median(steps)), "step_ms_p95": 1e3 * float(numpy.percentile(steps, 95)),
           "step_ms_max": 1e3 * float(steps.max()), "decision_ms_median": 1e3 * float(numpy.median(decisions)),
           "training_rounds": len(rounds), "training_round_s_median": float(numpy.median(rounds)) if rounds else None,
           "model_versions": [min(versions), max(versions)],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "run_wall_s": wall,
           "torch_threads": threads,
           "per_step": {"step_s": [float(v) for v in steps], "decision_s": [float(v) for v in decisions],
                        "model_version": versions}}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_avg_1min": os.getloadavg()[0]}
    out = args.out or os.path.join(HERE, "out", f"live_loop_{args.size}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as file:
        json.dump({"meta": meta, "row": row}, file, indent=1)
    print(f"# live loop {meta['date']} on {meta['machine']}, {meta['cores']} cores, torch threads {threads}, "
          f"load {meta['load_avg_1min']:.1f}")
    print("| survey | window | n | dwell ms | step ms median / p95 / max | decision ms | training rounds (median s) "
          "| peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.size}² | {args.window} | {args.n}→{args.n + len(steps)} | {args.dwell_ms:g} "
          f"| {row['step_ms_median']:.0f} / {row['step_ms_p95']:.0f} / {row['step_ms_max']:.0f} "
          f"| {row['decision_ms_median']:.0f} | {len(rounds)} ({row['training_round_s_median'] or 0:.1f}) "
          f"| {row['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()

"""Soak test: one long replay run (default 2,000 steps), recording RSS and step time every 100 steps.

The replay is built from the shipped 32x32 fixture (resources/graphene_si.npz) tiled 2x2 -> 64x64 = 4,096
candidate positions, so 10 seeds + 2,000 steps fit. It runs in live-microscope mode by default
(`wait_for_training=False`: the loop never waits for the background trainer, as on the microscope), with light
per-step training; everything used is printed and stored. A session file is written as in a real run and checked
at the end (every point once, in order). Prints a table, writes JSON (default benchmarks/out/soak.json).

    python benchmarks/soak.py [--steps 2000] [--tile 2] [--wait-for-training] [--update-iterations 3] ...
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
import typing

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent  # noqa: E402
from dkl4dstem.instruments.replay import ReplayInstrument  # noqa: E402
from dkl4dstem.session.store import read_session  # noqa: E402


def rss_mib() -> float:
    """Current resident set size (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def tiled_replay(tile: int) -> ReplayInstrument:
    path = os.path.join(ROOT, "resources", "graphene_si.npz")
    with numpy.load(path) as npz:
        data = numpy.tile(npz["data"], (tile, tile, 1, 1))
        survey = numpy.tile(npz["survey"], (tile, tile))
        return ReplayInstrument(data, survey=survey, reference=npz["reference"],
                                mrad_per_px=float(npz["mrad_per_px"]), nm_per_px=float(npz["nm_per_px"]),
                                source=f"{os.path.basename(path)} tiled {tile}x{tile}")


class Recorder:
    def __init__(self, every: int, seeds: int, started: float) -> None:
        self.every = every
        self.seeds = seeds
        self.started = started
        self.rows: list[dict[str, typing.Any]] = []
        self.window: list[StepEvent] = []
        self.versions: set[int] = set()

    def __call__(self, event: StepEvent) -> None:
        if event.phase != "step":
            return
        self.window.append(event)
        self.versions.add(event.model_version)
        steps_done = event.n_measured - self.seeds
        if steps_done % self.every == 0 and self.window:
            steps = [e.step_seconds for e in self.window]
            decisions = [e.decision_seconds for e in self.window]
            trainings = [e.training_seconds for e in self.window if e.training_seconds > 0]
            self.rows.append({
                "step": steps_done, "n_measured": event.n_measured, "elapsed_s": time.perf_counter() - self.started,
                "rss_mib": rss_mib(), "peak_rss_mib": peak_rss_mib(), "threads": threading.active_count(),
                "step_median_ms": 1e3 * statistics.median(steps), "step_p95_ms": 1e3 * _quantile(steps, 0.95),
                "step_max_ms": 1e3 * max(steps), "decision_median_ms": 1e3 * statistics.median(decisions),
                "decision_max_ms": 1e3 * max(decisions), "trainings_swapped_in": len(trainings),
                "training_median_s": statistics.median(trainings) if trainings else None,
                "model_version": event.model_version, "best_value": event.best_value,
            })
            row = self.rows[-1]
            print(_format_row(row), flush=True)
            self.window = []


def _quantile(values: list[float], q: float) -> float:
    return float(numpy.quantile(numpy.asarray(values), q))


HEADER = (f"{'step':>5} {'n':>5} {'elapsed':>8} {'RSS MiB':>8} {'peak':>7} {'thr':>4} {'step med':>9} {'p95':>8} "
          f"{'max':>8} {'decide med':>10} {'trained':>7} {'train med':>9}")


def _format_row(row: dict[str, typing.Any]) -> str:
    train = "-" if row["training_median_s"] is None else f"{row['training_median_s']:.2f} s"
    return (f"{row['step']:>5} {row['n_measured']:>5} {row['elapsed_s']:>7.0f}s {row['rss_mib']:>8.1f} "
            f"{row['peak_rss_mib']:>7.1f} {row['threads']:>4} {row['step_median_ms']:>7.1f}ms "
            f"{row['step_p95_ms']:>6.1f}ms {row['step_max_ms']:>6.0f}ms {row['decision_median_ms']:>8.1f}ms "
            f"{row['trainings_swapped_in']:>7} {train:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tile", type=int, default=2, help="tile the 32x32 fixture tile x tile times (default 2)")
    parser.add_argument("--every", type=int, default=100, help="record every this many steps")
    parser.add_argument("--initial-iterations", type=int, default=100)
    parser.add_argument("--update-iterations", type=int, default=3)
    parser.add_argument("--refit-every", type=int, default=500)
    parser.add_argument("--refit-iterations", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--wait-for-training", action="store_true",
                        help="replay mode: the loop waits for each training (reproducible, much slower at large n)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's policy)")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "soak.json"))
    args = parser.parse_args(argv)

    if args.threads:
        os.environ["DKL4DSTEM_THREADS"] = str(args.threads)
    import torch

    from dkl4dstem.runtime import ensure_threads_configured
    ensure_threads_configured()

    instrument = tiled_replay(args.tile)
    survey_shape = instrument.scan_shape
    config = ExperimentConfig(seeds=args.seeds, steps=args.steps, initial_iterations=args.initial_iterations,
                              update_iterations=args.update_iterations, refit_every=args.refit_every,
                              refit_iterations=args.refit_iterations, checkpoint_every=args.checkpoint_every,
                              wait_for_training=args.wait_for_training)
    settings = {k: v for k, v in dataclasses.asdict(config).items()
                if k in ("seeds", "steps", "window", "initial_iterations", "update_iterations", "refit_every",
                         "refit_iterations", "wait_for_training", "checkpoint_every", "acquisition", "scalarizer")}
    print(f"soak: {instrument.source}, survey {survey_shape[0]}x{survey_shape[1]} "
          f"({survey_shape[0] * survey_shape[1]} candidates), detector {instrument.detector_shape}")
    print(f"soak: torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"config {json.dumps(settings)}")
    print(f"soak: RSS before the run {rss_mib():.1f} MiB", flush=True)
    print(HEADER, flush=True)

    with tempfile.TemporaryDirectory(prefix="dkl4dstem-soak-") as folder:
        session_path = os.path.join(folder, "session.h5")
        started = time.perf_counter()
        recorder = Recorder(args.every, args.seeds, started)
        experiment = Experiment(instrument, config, session_path=session_path, on_event=recorder)
        result = experiment.run()
        wall = time.perf_counter() - started
        session = read_session(session_path)
        session_mib = os.path.getsize(session_path) / 2**20
        positions = [tuple(int(v) for v in p) for p in session.positions]
        checks = {
            "error": result.error,
            "n_measured": len(result.visited),
            "expected": args.seeds + args.steps,
            "session_rows": len(positions),
            "session_matches_result": positions == list(result.visited)
            and bool(numpy.array_equal(session.values, numpy.asarray(result.values), equal_nan=True)),
            "unique_positions": len(set(positions)) == len(positions),
            "session_mib": session_mib,
            "model_checkpoint": session.model_state is not None,
        }

    rows = recorder.rows
    steps = result.step_seconds[args.seeds:]
    summary = {
        "wall_s": wall, "steps_per_s": len(steps) / sum(steps) if steps else None,
        "step_median_ms": 1e3 * statistics.median(steps) if steps else None,
        "step_p99_ms": 1e3 * _quantile(steps, 0.99) if steps else None,
        "step_max_ms": 1e3 * max(steps) if steps else None,
        "decision_median_ms": 1e3 * statistics.median(result.decision_seconds[args.seeds:]) if steps else None,
        "trainings_swapped_in": len(recorder.versions),
        "rss_first_row_mib": rows[0]["rss_mib"] if rows else None,
        "rss_last_row_mib": rows[-1]["rss_mib"] if rows else None,
        "peak_rss_mib": peak_rss_mib(),
        "rss_growth_second_half_mib":
            (rows[-1]["rss_mib"] - rows[len(rows) // 2]["rss_mib"]) if len(rows) > 2 else None,
        "threads_at_end": threading.active_count(),
    }
    print()
    print(f"soak: {checks['n_measured']} points (expected {checks['expected']}), error {checks['error']}, "
          f"session {checks['session_rows']} rows / {session_mib:.1f} MiB, matches result "
          f"{checks['session_matches_result']}, unique {checks['unique_positions']}")
    print(f"soak: wall {wall:.0f} s, step median {summary['step_median_ms']:.1f} ms, "
          f"p99 {summary['step_p99_ms']:.1f} ms, "
          f"max {summary['step_max_ms']:.0f} ms; decision median {summary['decision_median_ms']:.1f} ms; "
          f"{summary['trainings_swapped_in']} model versions used")
    print(f"soak: RSS {summary['rss_first_row_mib']:.1f} MiB at step {rows[0]['step'] if rows else '-'} -> "
          f"{summary['rss_last_row_mib']:.1f} MiB at the end (peak {summary['peak_rss_mib']:.1f} MiB; "
          f"second-half growth {summary['rss_growth_second_half_mib']} MiB)")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    payload = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "data": {"source": instrument.source, "survey_shape": list(survey_shape),
                 "detector_shape": list(instrument.detector_shape)},
        "config": dataclasses.asdict(config), "rows": rows, "summary": summary, "checks": checks,
    }
    with open(args.out, "w") as file:
        json.dump(payload, file, indent=1, default=lambda v: None if isinstance(v, float) else str(v))
    print(f"soak: wrote {args.out}")
    ok = checks["error"] is None and checks["n_measured"] == checks["expected"] and checks["session_matches_result"] \
        and checks["unique_positions"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

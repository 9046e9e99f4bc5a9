"""Latency benchmark: decision latency, background training per step, full step, peak RSS.

For each survey size and number of measured points n, the engine's own pieces are timed exactly as the loop
runs them (`experiment.deciding.Decider.decide`: condition the GP on one new point, its `Predictive` at every
candidate, acquisition, argmax; one `BackgroundTrainer` round on its own thread, waited for as in replay mode: warm-start Adam steps, re-embed all
candidates, factorize). A refit round (`refit_iterations` Adam steps from the initial weights, every
`refit_interval(n)` points: 25, or a fifth of n past n = 125) is timed once per row and shown amortized in "mean
step". Each survey size runs in its own subprocess so peak RSS is per size. Prints a table, writes JSON.
A first table times the self-supervised pre-training on the survey (`dkl4dstem/models/pretrain.py`, on the trainer's
thread, waited for) and spreading the seed points over its embedding, per survey size and window.

    python benchmarks/latency.py [--sizes 64,128,256,512] [--n 10,50,100,200,500] [--windows 12,16] [--exact]

Large surveys use the latent-grid posterior by default (`dkl4dstem/posterior/latentgrid.py`; the "posterior" column says
which path ran); --exact forces the exact posterior at every candidate, for comparison. While the map model steers
(experiment/steering.py, surveys up to 65,536 positions) the decision reads its posterior as well: timed as
`Decider.decide` in "decision ms, map model steering", the map model's own update after it in "its maps ms".
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import typing

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
MAP_MODEL_MAX = 1 << 16  # survey_map.MAX_POSITIONS: larger surveys have no map model, nothing else steers


def synthetic_survey(size: int, seed: int = 0) -> numpy.ndarray:
    """A lattice with point defects, like a HAADF image of a doped 2D material."""
    rng = numpy.random.default_rng(seed)
    yy, xx = numpy.mgrid[0:size, 0:size].astype(float)
    image = numpy.cos(2 * numpy.pi * xx / 6.0) * numpy.cos(2 * numpy.pi * yy / 6.0)
    for y, x in rng.integers(0, size, size=(max(2, size * size // 500), 2)):
        image += 3 * numpy.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)
    return image + 0.1 * rng.normal(size=image.shape)


def measure_size(size: int, ns: list[int], windows: list[int], repeats: int, latent_grid: bool = True
                 ) -> list[dict[str, typing.Any]]:
    from dkl4dstem.data.patches import extract_patches

    rows = []
    survey = synthetic_survey(size)
    target = (survey ** 2).reshape(-1)
    for window in windows:
        rows.append(measure_pretraining(extract_patches(survey, window), window, repeats, size))
        rows += measure_steps(extract_patches(survey, window), target, ns, window, repeats, size=size,
                              latent_grid=latent_grid, survey=survey)
    return rows


def measure_pretraining(patches: numpy.ndarray, window: int, repeats: int, size: int) -> dict[str, typing.Any]:
    """Pre-training on the survey (pretrain.py) as the run does it on the trainer thread, waited for, and the
    seed points spread over its embedding (embed every candidate + farthest-point order)."""
    import torch

    from dkl4dstem.models import pretrain
    from dkl4dstem.experiment import ExperimentConfig
    from dkl4dstem.models.trainer import BackgroundTrainer

    from dkl4dstem.models.dkl import DKLModel

    pretraining, spreading, cpu = [], [], []
    for seed in range(repeats):
        # CPU time of the same work on this thread (1 torch thread): what it needs of a free core, whatever the load
        start = time.thread_time()
        pretrain.pretrain(DKLModel(patches.shape[1], seed=seed), patches, seed=seed)
        cpu.append(time.thread_time() - start)
        config = ExperimentConfig(window=window, seed=seed)
        trainer = BackgroundTrainer(patches, config)
        start = time.perf_counter()
        trainer.start_pretraining()
        trainer.join()
        pretraining.append(time.perf_counter() - start)
        assert not trainer.failures, trainer.failures
        start = time.perf_counter()
        pretrain.spread_points(trainer.model.embed(patches), config.seeds, 0)
        spreading.append(time.perf_counter() - start)
    row = {"kind": "pretrain", "size": size, "candidates": len(patches), "window": window,
           "method": pretrain.DEFAULT_METHOD, "patches_used": min(len(patches), pretrain.MAX_PATCHES),
           "iterations": pretrain.ITERATIONS, "pretrain_ms": 1e3 * float(numpy.median(pretraining)),
           "spread_ms": 1e3 * float(numpy.median(spreading)), "pretrain_cpu_ms": 1e3 * float(numpy.median(cpu)),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "torch_threads": torch.get_num_threads(), "load_avg_1min": os.getloadavg()[0]}
    print(json.dumps(row), flush=True)
    return row


def steered_decisions(survey: numpy.ndarray, patches: numpy.ndarray, posterior: typing.Any, config: typing.Any,
                      order: list[int], target: numpy.ndarray, n: int, repeats: int) -> tuple[float, float]:
    """Median ms of one decision while the map model steers (`Decider.decide`: the DKL's posterior, then the map
    model conditioned on the new point with its hyperparameters kept, EI on its posterior), and of the map model's
    part after the decision (the maps: hyperparameters again when the data grew by a tenth)."""
    from dkl4dstem.experiment.deciding import Decider
    from dkl4dstem.experiment.points import Points
    from dkl4dstem.models.survey_map import SurveyMapModel

    survey_map = SurveyMapModel(survey, patches, seed=config.seed)
    decider = Decider(config, patches, len(target), None, survey_map)
    points = Points(numpy.zeros(len(target), dtype=bool), survey.shape[1])
    for index in order[:n]:
        points.record(index, float(target[index]), "seed")
    survey_map.fit(points.indices, points.values)  # as after the previous decision
    decisions, updates = [], []
    for r in range(repeats):
        points.record(order[n + r], float(target[order[n + r]]), "step")
        assert decider.steering.leader == "survey"
        start = time.perf_counter()
        decider.decide(posterior, points)
        decisions.append(time.perf_counter() - start)
        start = time.perf_counter()
        survey_map.maps(points.indices, points.values)
        updates.append(time.perf_counter() - start)
    return 1e3 * float(numpy.median(decisions)), 1e3 * float(numpy.median(updates))


def measure_steps(patches: numpy.ndarray, target: numpy.ndarray, ns: list[int], window: int, repeats: int,
                  size: int | None = None, latent_grid: bool = True, survey: numpy.ndarray | None = None
                  ) -> list[dict[str, typing.Any]]:
    """Time the loop's own pieces at each n: one decision, then what the background trainer does per step."""
    import torch

    from dkl4dstem.acquisition import functions as acquisition
    from dkl4dstem.experiment import ExperimentConfig
    from dkl4dstem.models.schedule import refit_interval
    from dkl4dstem.models.trainer import BackgroundTrainer

    rows = []
    n_candidates = len(target)
    for n in ns:
        if n + repeats + 1 > n_candidates:
            continue
        rng = numpy.random.default_rng(n)
        order = [int(i) for i in rng.choice(n_candidates, n + repeats + 1, replace=False)]
        indices, values = order[:n], [float(target[i]) for i in order[:n]]
        config = ExperimentConfig(window=window, seeds=n, steps=repeats + 2, latent_grid=latent_grid)
        trainer = BackgroundTrainer(patches, config)
        trainer.fit_now(indices, values, iterations=config.initial_iterations)
        posterior = trainer.take_result(wait=True)
        assert posterior is not None
        blocked = numpy.zeros(n_candidates, dtype=bool)
        blocked[indices] = True
        decisions, trainings = [], []
        for r in range(repeats):
            new = order[n + r]
            indices.append(new)
            values.append(float(target[new]))
            blocked[new] = True
            start = time.perf_counter()
            posterior.catch_up(indices, values)
            predictive = posterior.predict(numpy.asarray(values))
            scores = acquisition.acquisition_values(predictive, max(values), kind="ei", observation_noise=True)
            acquisition.choose_next(scores, blocked)
            decisions.append(time.perf_counter() - start)
            start = time.perf_counter()
            trainer.start(indices, values)  # what one step trains, on the trainer's thread, as replay waits for it
            posterior = trainer.take_result(wait=True) or posterior
            trainings.append(time.perf_counter() - start)
        steered = (steered_decisions(survey, patches, posterior, config, order, target, n, repeats)
                   if survey is not None and n_candidates <= MAP_MODEL_MAX else (float("nan"), float("nan")))
        # a refit round (every refit_every points, from the initial weights): a fresh trainer's first fit is one
        start = time.perf_counter()
        BackgroundTrainer(patches, config).fit_now(indices, values, iterations=config.refit_iterations)
        refit_seconds = time.perf_counter() - start
        step_seconds = float(numpy.median(numpy.add(decisions, trainings)))
        grid = posterior.cache.grid
        row = {"size": size or int(round(n_candidates ** 0.5)), "candidates": n_candidates, "window": window,
               "n": n, "decision_ms": 1e3 * float(numpy.median(decisions)),
               "steered_decision_ms": steered[0], "map_model_ms": steered[1],
               "training_ms": 1e3 * float(numpy.median(trainings)),
               "step_ms": 1e3 * step_seconds, "refit_ms": 1e3 * refit_seconds,
               # the mean step over the refit period at n: (period - 1) update rounds and one refit round
               "mean_step_ms": 1e3 * (step_seconds + (refit_seconds - float(numpy.median(trainings)))
                                      / refit_interval(n, config)),
               "refit_period": refit_interval(n, config),
               "update_iterations": config.update_iterations, "refit_iterations": config.refit_iterations,
               "posterior": f"grid {grid.size}" if grid is not None else "exact",
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "torch_threads": torch.get_num_threads(), "device": str(trainer.model.device),
               "load_avg_1min": os.getloadavg()[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--n", default="10,50,100,200,500")
    parser.add_argument("--windows", default="12,16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exact", action="store_true", help="exact posterior at every candidate (no latent grid)")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "latency.json"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ns = [int(v) for v in args.n.split(",")]
    windows = [int(v) for v in args.windows.split(",")]
    if args.child is not None:
        from dkl4dstem.runtime import ensure_threads_configured
        ensure_threads_configured()
        measure_size(args.child, ns, windows, args.repeats, latent_grid=not args.exact)
        return
    rows = []
    for size in (int(v) for v in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--child", str(size), "--n", args.n, "--windows",
                               args.windows, "--repeats", str(args.repeats)] + (["--exact"] if args.exact else []),
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": rows[0]["torch_threads"] if rows else None}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "rows": rows}, file, indent=1)
    print(f"# latency benchmark {meta['date']} on {meta['machine']}, {meta['cores']} cores, "
          f"torch threads {meta['torch_threads']}")
    print("| survey | window | pre-training ms (trainer thread, waited for) | its CPU ms | seed spread ms "
          "| patches used | load |")
    print("|---|---|---|---|---|---|---|")
    for row in (r for r in rows if r.get("kind") == "pretrain"):
        print(f"| {row['size']}² | {row['window']} | {row['pretrain_ms']:.0f} | {row['pretrain_cpu_ms']:.0f} "
              f"| {row['spread_ms']:.0f} | {row['patches_used']} | {row['load_avg_1min']:.1f} |")
    rows = [r for r in rows if r.get("kind") != "pretrain"]
    print("| survey | window | n | posterior | decision ms | decision ms, map model steering | its maps ms "
          "| training ms | full step ms | refit round ms | mean step ms (with refits) | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['size']}² | {row['window']} | {row['n']} | {row.get('posterior', 'exact')} "
              f"| {row['decision_ms']:.1f} | {row.get('steered_decision_ms', float('nan')):.1f} "
              f"| {row.get('map_model_ms', float('nan')):.0f} | {row['training_ms']:.0f} "
              f"| {row['step_ms']:.0f} | {row['refit_ms']:.0f} | {row['mean_step_ms']:.0f} "
              f"| {row['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()

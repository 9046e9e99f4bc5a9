"""Sample efficiency on physics-simulated (abTEM) data: ours vs random sampling vs AtomAI dklGPR vs gpax viDKL.

For each seed: measurements until a top-1% position of the target scalar is first measured, and the NRMSE of the
predicted map after 1% and 2.5% of the positions. All methods see the same candidates (HAADF patches, window 12)
and the same target (the scalarizer applied to every pattern: the ground truth). Peers run in their own venvs
(benchmarks/install_peers.sh) through benchmarks/peers.py; a peer whose venv is missing is reported as such.

    python benchmarks/sample_efficiency.py DATA.npz [--seeds 0,1,2,3,4] [--steps 48] [--peers atomai,gpax]

The peers are slow (minutes per seed), so they can run as separate processes, one per core, and be merged:

    python benchmarks/sample_efficiency.py DATA.npz --peers atomai --only-peers --out out/se_atomai.json &
    python benchmarks/sample_efficiency.py DATA.npz --peers gpax --only-peers --out out/se_gpax.json &
    python benchmarks/sample_efficiency.py DATA.npz --peers "" --out out/se_ours.json
    python benchmarks/sample_efficiency.py --merge out/se_ours.json out/se_atomai.json out/se_gpax.json

Every run rewrites its JSON after each seed, so a stopped peer run keeps the seeds it finished; `--merge ...
--common-seeds` then compares the methods on the seeds they all have. Below the table: ours minus each other
method with 95% bootstrap intervals.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import typing

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
FRACTIONS = (0.01, 0.025)


def first_hit(visited_indices: list[int], target: numpy.ndarray) -> int | None:
    threshold = numpy.quantile(target, 0.99)
    return next((k + 1 for k, i in enumerate(visited_indices) if target[i] >= threshold), None)


def run_ours(path: str, target: numpy.ndarray, n_seed_points: int, steps: int, seed: int, scalarizer: str,
             acquisition: str = "ei") -> dict[str, object]:
    from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent
    from dkl4dstem.evaluation.groundtruth import nrmse
    from dkl4dstem.instruments.replay import open_replay

    instrument = open_replay(path)
    height, width = instrument.scan_shape
    checkpoints = {max(n_seed_points + 1, int(round(f * height * width))): f for f in FRACTIONS}
    errors: dict[str, float] = {}

    def on_event(event: StepEvent) -> None:
        if event.n_measured in checkpoints and event.prediction is not None:
            errors[str(checkpoints[event.n_measured])] = nrmse(event.prediction, target.reshape(height, width))

    start = time.perf_counter()
    config = ExperimentConfig(scalarizer=scalarizer, seeds=n_seed_points, steps=steps, seed=seed,
                              acquisition=acquisition)
    result = Experiment(instrument, config, on_event=on_event).run()
    elapsed = time.perf_counter() - start
    visited = [y * width + x for y, x in result.visited]
    return {"first_top1": first_hit(visited, target), "nrmse_at": errors, "n_measured": len(visited),
            "median_step_seconds": float(numpy.median(result.step_seconds[n_seed_points:])), "seconds": elapsed}


def run_random(path: str, target: numpy.ndarray, seed: int, window: int) -> dict[str, object]:
    """Random order; NRMSE from a DKL fitted on the random subset (the paper's Fig. 3 protocol)."""
    from dkl4dstem.evaluation.reconstruct import reconstruct

    n = target.size
    order = numpy.random.default_rng(1000 + seed).permutation(n)
    data = numpy.load(path)
    survey = data["survey"]
    truth = target.reshape(survey.shape)
    results = reconstruct(survey, truth, FRACTIONS, window=window, seed=seed, iterations=200)
    return {"first_top1": first_hit([int(i) for i in order], target),
            "nrmse_at": {str(r.fraction): r.nrmse for r in results}}


def run_peer(peer: str, patches: str, target_path: str, n_seed_points: int, steps: int, seed: int, out_dir: str,
             threads: int = 1) -> dict[str, object]:
    python = os.path.join(HERE, ".venvs", peer, "bin", "python")
    if not os.path.exists(python):
        return {"error": f"venv {python} missing: run benchmarks/install_peers.sh"}
    out = os.path.join(out_dir, f"{peer}_{seed}.json")
    command = [python, os.path.join(HERE, "peers.py"), "--peer", peer, "--patches", patches, "--target", target_path,
               "--seeds", str(n_seed_points), "--steps", str(steps), "--seed", str(seed), "--out", out,
               "--nrmse-at", ",".join(str(f) for f in FRACTIONS), "--threads", str(threads)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr[-1500:]}
    with open(out) as file:
        payload = json.load(file)
    target = numpy.load(target_path).reshape(-1)
    return {"first_top1": first_hit([int(i) for i in payload["visited"]], target),
            "nrmse_at": {str(k): v for k, v in payload.get("nrmse_at", {}).items()},
            "median_step_seconds": float(numpy.median(payload["step_seconds"])) if payload.get("step_seconds") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?")
    parser.add_argument("--scalarizer", default="com_magnitude")
    parser.add_argument("--window", type=int, default=12)
    parser.add_argument("--seed-points", type=int, default=10)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--peers", default="atomai,gpax")
    parser.add_argument("--acquisition", default="ei", help="our loop's acquisition (ei, ucb, uncertainty, map)")
    parser.add_argument("--only-peers", action="store_true", help="skip ours and random sampling")
    parser.add_argument("--peer-threads", type=int, default=1, help="intra-op threads per peer process (two peer "
                        "runs side by side on a 2-core machine: 1 each)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="print one table from earlier runs' JSON files")
    parser.add_argument("--common-seeds", action="store_true", help="with --merge: keep only the seeds every method "
                        "has (e.g. ours on 10 seeds, a slow peer on 5) instead of refusing")
    parser.add_argument("--paired", action="store_true", help="with --merge: intervals from per-seed differences; only "
                        "for runs that started from the same seed points (peer runs since 2026-11-29 14:00)")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "sample_efficiency.json"))
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out, common_seeds=args.common_seeds, paired=args.paired)
        return
    if not args.data:
        parser.error("DATA is required unless --merge is given")

    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.instruments.replay import open_replay
    from dkl4dstem.runtime import ensure_threads_configured
    from dkl4dstem.scalarizers import get_scalarizer

    ensure_threads_configured()
    instrument = open_replay(args.data)
    target = ground_truth_map(instrument.data, get_scalarizer(args.scalarizer), instrument.calibration()).reshape(-1)
    work = tempfile.mkdtemp(prefix="dkl4dstem-se-")
    patches_path, target_path = os.path.join(work, "patches.npy"), os.path.join(work, "target.npy")
    numpy.save(patches_path, extract_patches(instrument.survey().image, args.window))
    numpy.save(target_path, target)
    seeds = [int(s) for s in args.seeds.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    methods = ([] if args.only_peers else ["ours", "random"]) + peers
    results: dict[str, list[dict[str, object]]] = {m: [] for m in methods}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "cores": os.cpu_count(), "data": os.path.basename(args.data), "scalarizer": args.scalarizer,
            "candidates": int(target.size), "seed_points": args.seed_points, "steps": args.steps, "seeds": [],
            "window": args.window, "acquisition": args.acquisition}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    numpy.save(os.path.splitext(args.out)[0] + "_target.npy", target)
    for seed in seeds:
        if not args.only_peers:
            results["ours"].append(run_ours(args.data, target, args.seed_points, args.steps, seed, args.scalarizer,
                                            args.acquisition))
            results["random"].append(run_random(args.data, target, seed, args.window))
        for peer in peers:
            results[peer].append(run_peer(peer, patches_path, target_path, args.seed_points, args.steps, seed, work,
                                          args.peer_threads))
        print(json.dumps({"seed": seed, **{k: v[-1] for k, v in results.items()}}), flush=True)
        meta["seeds"].append(seed)  # written after every seed: a peer run stopped after hours keeps what it finished
        with open(args.out, "w") as file:
            json.dump({"meta": meta, "results": results}, file, indent=1)
    print_table(meta, results, target, paired=True)  # one run: every method starts from the same seed points


def merge(paths: list[str], out: str, common_seeds: bool = False, paired: bool = False) -> None:
    """One table from several runs on the same data and budget (refuses to mix different settings).

    Runs of one method on different seeds (e.g. seeds 0-4 and 5-9 in two processes) are joined in seed order; every
    method must end up with the same seeds, or with `common_seeds` only the seeds they all have are kept.
    """
    runs = []
    for path in paths:
        with open(path) as file:
            runs.append(json.load(file))
    keys = ("data", "scalarizer", "candidates", "seed_points", "steps")
    reference = {k: runs[0]["meta"].get(k) for k in keys}
    for path, run in zip(paths, runs):
        differing = [k for k in keys if run["meta"].get(k) != reference[k]]
        if differing:
            raise SystemExit(f"sample_efficiency: {path} differs from {paths[0]} in {', '.join(differing)}")
    by_seed: dict[str, dict[int, dict[str, object]]] = {}
    for path, run in zip(paths, runs):
        for method, method_runs in run["results"].items():
            for seed, result in zip(run["meta"]["seeds"], method_runs):
                if seed in by_seed.setdefault(method, {}):
                    raise SystemExit(f"sample_efficiency: {method} seed {seed} is in more than one file ({path})")
                by_seed[method][seed] = result
    seeds = sorted(set.intersection(*(set(r) for r in by_seed.values())))
    if not common_seeds:
        for method, results_by_seed in by_seed.items():
            if sorted(results_by_seed) != seeds:
                raise SystemExit(f"sample_efficiency: {method} has seeds {sorted(results_by_seed)}, the others share "
                                 f"{seeds} (--common-seeds keeps only the shared ones)")
    if not seeds:
        raise SystemExit("sample_efficiency: the methods have no seed in common")
    results = {method: [r[seed] for seed in seeds] for method, r in by_seed.items()}
    meta = {**runs[0]["meta"], "seeds": seeds, "merged_from": [os.path.basename(p) for p in paths],
            "dates": [run["meta"]["date"] for run in runs]}
    target = numpy.load(os.path.splitext(paths[0])[0] + "_target.npy")
    with open(out, "w") as file:
        json.dump({"meta": meta, "results": results}, file, indent=1)
    print_table(meta, results, target, paired)


def print_table(meta: dict[str, object], results: dict[str, list[dict[str, object]]], target: numpy.ndarray,
                paired: bool = False) -> None:
    budget = int(meta["seed_points"]) + int(meta["steps"])
    print(f"# sample efficiency, {meta['data']} ({meta['candidates']} positions), {meta['scalarizer']}, "
          f"{meta['date']}")
    print("| method | first top-1% hit (per seed) | mean (miss = budget+1) | median | NRMSE @1% | NRMSE @2.5% |")
    print("|---|---|---|---|---|---|")
    for method, runs in results.items():
        valid = [r for r in runs if "error" not in r]
        if not valid:
            print(f"| {method} | error: {runs[0].get('error', '')[:80]!r} | | | |")
            continue
        hits = [r["first_top1"] for r in valid]
        counted = [h if h is not None else budget + 1 for h in hits] if method != "random" else hits
        cells = [numpy.mean([r["nrmse_at"].get(str(f), numpy.nan) for r in valid]) for f in FRACTIONS]
        print(f"| {method} | {hits} | {numpy.mean(counted):.1f} | {numpy.median(counted):.0f} | {cells[0]:.3f} "
              f"| {cells[1]:.3f} |")
    if "ours" in results:
        print_differences(results, budget, paired)
    n_top = int((target >= numpy.quantile(target, 0.99)).sum())
    print(f"random sampling needs (N + 1) / (K + 1) = {(target.size + 1) / (n_top + 1):.1f} measurements on average "
          f"to first hit one of the K = {n_top} top-1% positions of N = {target.size}")


def print_differences(results: dict[str, list[dict[str, object]]], budget: int, paired: bool = False) -> None:
    """Ours minus each other method: difference of the means over seeds and a 95% bootstrap interval.

    The seed-to-seed spread of every metric is larger than the differences between methods, so whether ours is
    "at least as good" is read from an interval, not from two means side by side. By default each method's seeds
    are resampled independently (unpaired): the peers' runs before 2026-11-29 14:00 started from other seed points
    than ours (see peers.seed_indices), so seed-by-seed pairs are not matched for them; unpaired is valid either
    way, only wider. `paired` (runs that started from the same seed points, seed for seed) resamples the per-seed
    differences instead, which removes the spread between seed sets (random sampling is never paired).
    """
    def metrics(run: dict[str, object]) -> list[float]:
        hit = run.get("first_top1")
        errors = typing.cast(dict, run.get("nrmse_at", {}))
        errors_at = [float(errors.get(str(f), numpy.nan)) for f in FRACTIONS]
        return [float(hit if hit is not None else budget + 1)] + errors_at

    rng = numpy.random.default_rng(0)
    print("| ours minus | first top-1% hit | NRMSE @1% | NRMSE @2.5% |  (negative: ours better; difference of means "
          f"[95% bootstrap, {'paired by seed; random sampling unpaired' if paired else 'unpaired'}])")
    print("|---|---|---|---|")
    ours = numpy.array([metrics(r) for r in results["ours"]])
    for method, runs in results.items():
        if method == "ours" or any("error" in r for r in runs):
            continue
        other = numpy.array([metrics(r) for r in runs])
        cells = []
        by_seed = paired and method != "random"
        for a, b in zip(ours.T, other.T):
            if by_seed:
                both = numpy.isfinite(a) & numpy.isfinite(b)
                a, b = a[both], b[both]
            else:
                a, b = a[numpy.isfinite(a)], b[numpy.isfinite(b)]
            if not a.size or not b.size:
                cells.append("")
                continue
            if by_seed:
                resampled = rng.choice(a - b, size=(10000, a.size)).mean(axis=1)
            else:
                resampled = (rng.choice(a, size=(10000, a.size)).mean(axis=1)
                             - rng.choice(b, size=(10000, b.size)).mean(axis=1))
            low, high = numpy.quantile(resampled, [0.025, 0.975])
            cells.append(f"{a.mean() - b.mean():+.3g} [{low:+.3g}, {high:+.3g}]")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Does the uncertainty map mean what it says? Coverage, NLPD and NRMSE on abTEM data, ours vs peers vs random.

For each dataset, seed and budget (measurements, seed points included): our loop (default EI unless
--acquisition) is stopped there and its maps are scored over the unmeasured positions against the ground truth
from all patterns (`dkl4dstem.evaluation.calibration`): the fraction with |prediction - truth| <= 1 and 2 sigma
(targets 0.55-0.85 and 0.85-0.99), the mean Gaussian NLPD (target: below `baseline`, a flat prediction with the
measured values' mean and std), and the NRMSE. The peers (AtomAI dklGPR, gpax viDKL; their venvs from
benchmarks/install_peers.sh, driven by benchmarks/peers.py --fit-sets) are fitted on exactly the points our run
measured and scored with their own predictive std ("+noise": AtomAI's latent variance plus its trained noise).
"random" is our model fitted once on a random subset of the same size that starts from the same seed points.

    python benchmarks/calibration.py [DATA.npz ...] [--seeds 0,1,2,3,4] [--budgets 40,100] \
        [--peers atomai,gpax --peer-seeds 0,1] [--acquisition ei] [--out benchmarks/out/calibration.json]
    python benchmarks/calibration.py --merge A.json B.json   # one table from several runs

Without DATA: the three abTEM sets (resources/graphene_si.npz and ../shared/data/*.npz when present).
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
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = [os.path.join(ROOT, "resources", "graphene_si.npz"),
                os.path.join(ROOT, "..", "shared", "data", "graphene_si4_vac2_32x32_10mrad.npz"),
                os.path.join(ROOT, "..", "shared", "data", "graphene_si4_vac2_48x48_30mrad.npz"),
                "/work/shared/data/graphene_si4_vac2_32x32_10mrad.npz",
                "/work/shared/data/graphene_si4_vac2_48x48_30mrad.npz"]
METRICS = ("coverage_1sigma", "coverage_2sigma", "nlpd", "baseline_nlpd", "nrmse")


def score(prediction: numpy.ndarray, sigma: numpy.ndarray, truth: numpy.ndarray, measured: numpy.ndarray,
          values: numpy.ndarray) -> dict[str, float]:
    from dkl4dstem.evaluation.calibration import baseline_nlpd, calibration_metrics

    return {**calibration_metrics(prediction, sigma, truth, measured),
            "baseline_nlpd": baseline_nlpd(values, truth, measured)}


def run_ours(path: str, truth: numpy.ndarray, seed: int, budgets: list[int], acquisition: str,
             settings: dict[str, typing.Any] | None = None) -> tuple[dict[str, dict[str, typing.Any]], list[int]]:
    """Our loop up to the largest budget; scores of its maps at each budget, and the visited indices."""
    from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent
    from dkl4dstem.instruments.replay import open_replay

    height, width = truth.shape
    scores: dict[str, dict[str, typing.Any]] = {}
    experiment: Experiment | None = None

    def on_event(event: StepEvent) -> None:
        if event.n_measured in budgets and event.prediction is not None and event.uncertainty is not None:
            run = experiment._current if experiment is not None else None  # noqa: SLF001 (benchmark introspection)
            measured = numpy.zeros(truth.size, dtype=bool)
            measured[run.points.indices] = True
            values = numpy.asarray(run.points.values, dtype=numpy.float64)
            unmeasured = ~measured.reshape(truth.shape) & numpy.isfinite(truth)
            ratio = numpy.abs(event.prediction - truth)[unmeasured] / event.uncertainty[unmeasured]
            scores[str(event.n_measured)] = {
                # |error| / sigma and mean log sigma: other variance scales can be scored afterwards
                "ratio": numpy.round(numpy.sort(ratio), 4).tolist(),
                "mean_log_sigma": float(numpy.mean(numpy.log(event.uncertainty[unmeasured]))),
                **score(event.prediction, event.uncertainty, truth, measured.reshape(truth.shape), values),
                "variance_scale": run.maps.recalibration.variance_scale(loo_scale(run)),
                "loo_scale": loo_scale(run), "z": list(run.maps.recalibration.z),
                "map_model": run.survey_map.name if run.survey_map is not None else "dkl",
                "median_sigma": float(numpy.median(event.uncertainty[~measured.reshape(truth.shape)]))}

    config = ExperimentConfig(seeds=10, steps=max(budgets) - 10, seed=seed, acquisition=acquisition,
                              **(settings or {}))
    experiment = Experiment(open_replay(path), config, on_event=on_event)
    result = experiment.run()
    return scores, [y * width + x for y, x in result.visited]


def loo_scale(run: typing.Any) -> float:
    """The recalibration's prior: the map model's leave-one-out scale (models/survey_map.py, or the DKL map model's)."""
    if run.survey_map is not None:
        return run.survey_map.loo_variance_scale()
    return run.maps.posterior.loo_scale


def random_subset(visited: list[int], n: int, size: int, seed: int) -> list[int]:
    """The run's seed points, then random other positions (a fixed order per seed)."""
    seeds = visited[:10]
    rest = [int(i) for i in numpy.random.default_rng(1000 + seed).permutation(n) if int(i) not in set(seeds)]
    return seeds + rest[:size - len(seeds)]


def run_random(survey: numpy.ndarray, truth: numpy.ndarray, indices: list[int], seed: int
               ) -> dict[str, typing.Any]:
    """Our model fitted once on a random subset (the `reconstruct` path), with its calibrated uncertainty."""
    from dkl4dstem.evaluation.reconstruct import fit_subset

    flat = truth.reshape(-1)
    prediction, sigma = fit_subset(survey, indices, [float(flat[i]) for i in indices], seed=seed)
    measured = numpy.zeros(truth.size, dtype=bool)
    measured[indices] = True
    return score(prediction, sigma, truth, measured.reshape(truth.shape), flat[indices])


def run_peer(peer: str, patches_path: str, target_path: str, sets: dict[str, list[int]], seed: int, work: str
             ) -> dict[str, dict[str, numpy.ndarray]] | str:
    python = os.path.join(HERE, ".venvs", peer, "bin", "python")
    if not os.path.exists(python):
        return f"venv {python} missing: run benchmarks/install_peers.sh"
    sets_path = os.path.join(work, f"{peer}_{seed}_sets.json")
    with open(sets_path, "w") as file:
        json.dump({"sets": [{"name": k, "indices": v} for k, v in sets.items()]}, file)
    out = os.path.join(work, f"{peer}_{seed}.json")
    command = [python, os.path.join(HERE, "peers.py"), "--peer", peer, "--patches", patches_path, "--target",
               target_path, "--fit-sets", sets_path, "--seed", str(seed), "--out", out, "--threads", "1"]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        return proc.stderr[-800:]
    arrays = numpy.load(os.path.splitext(out)[0] + ".npz")
    return {name: {key: arrays[f"{name}/{key}"] for key in ("mean", "var", "noise_var")} for name in sets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--budgets", default="40,100")
    parser.add_argument("--acquisition", default="ei")
    parser.add_argument("--peers", default="")
    parser.add_argument("--peer-seeds", default="0,1", help="the peers are slow: only these seeds")
    parser.add_argument("--no-random", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a config field of our runs, as `dkl4dstem run --set` takes it (e.g. steer=dkl)")
    parser.add_argument("--merge", nargs="+", metavar="JSON")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "calibration.json"))
    args = parser.parse_args()
    if args.merge:
        records = []
        for path in args.merge:
            with open(path) as file:
                records += json.load(file)["records"]
        print_table(records)
        return
    sys.path.insert(0, ROOT)
    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.instruments.replay import open_replay
    from dkl4dstem.runtime import ensure_threads_configured
    from dkl4dstem.scalarizers import get_scalarizer

    ensure_threads_configured()
    paths = args.data or [p for p in DEFAULT_DATA if os.path.exists(p)]
    paths = list(dict.fromkeys(os.path.realpath(p) for p in paths))
    from dkl4dstem.config import parse_setting

    settings = dict(parse_setting(item) for item in args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    peers = [p for p in args.peers.split(",") if p]
    peer_seeds = {int(s) for s in args.peer_seeds.split(",")}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "cores": os.cpu_count(), "load_avg_start": list(os.getloadavg()), "acquisition": args.acquisition,
            "settings": settings}
    records: list[dict[str, typing.Any]] = []
    work = tempfile.mkdtemp(prefix="dkl4dstem-calibration-")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for path in paths:
        name = os.path.basename(path)
        instrument = open_replay(path)
        truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
        survey = instrument.survey().image
        patches_path, target_path = os.path.join(work, "patches.npy"), os.path.join(work, "target.npy")
        numpy.save(patches_path, extract_patches(survey, 12))
        numpy.save(target_path, truth.reshape(-1))
        for seed in seeds:
            start = time.perf_counter()
            scores, visited = run_ours(path, truth, seed, budgets, args.acquisition, settings)
            seconds = time.perf_counter() - start
            for budget in budgets:
                if str(budget) in scores:
                    records.append({"data": name, "seed": seed, "budget": budget, "method": "ours",
                                    "seconds": seconds, **scores[str(budget)]})
                if not args.no_random:
                    subset = random_subset(visited, truth.size, budget, seed)
                    records.append({"data": name, "seed": seed, "budget": budget, "method": "random",
                                    **run_random(survey, truth, subset, seed)})
            if peers and seed in peer_seeds:
                sets = {f"b{b}": visited[:b] for b in budgets if len(visited) >= b}
                for peer in peers:
                    fitted = run_peer(peer, patches_path, target_path, sets, seed, work)
                    if isinstance(fitted, str):
                        records.append({"data": name, "seed": seed, "method": peer, "error": fitted})
                        continue
                    for key, arrays in fitted.items():
                        budget = int(key[1:])
                        measured = numpy.zeros(truth.size, dtype=bool)
                        measured[sets[key]] = True
                        values = truth.reshape(-1)[sets[key]]
                        mean = arrays["mean"].reshape(truth.shape)
                        for label, variance in ((peer, arrays["var"]),
                                                (peer + " +noise", arrays["var"] + arrays["noise_var"])):
                            if label.endswith("+noise") and not float(arrays["noise_var"]) > 0:
                                continue
                            sigma = numpy.sqrt(numpy.clip(variance, 0, None)).reshape(truth.shape)
                            records.append({"data": name, "seed": seed, "budget": budget, "method": label,
                                            **score(mean, sigma, truth, measured.reshape(truth.shape), values)})
            print(json.dumps({k: v for k, v in records[-1].items() if k not in ("z", "ratio")}), flush=True)
            with open(args.out, "w") as file:
                json.dump({"meta": meta, "records": records}, file, indent=1)
    meta["load_avg_end"] = list(os.getloadavg())
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "records": records}, file, indent=1)
    print(f"# calibration, {meta['date']}, {meta['machine']}, {meta['cores']} cores, acquisition {args.acquisition}")
    print_table(records)


def print_table(records: list[dict[str, typing.Any]]) -> None:
    """Means over seeds (min-max in brackets for the coverages); pass = inside the targets."""
    print("| data | budget | method | seeds | within 1 sigma | within 2 sigma | NLPD | baseline NLPD | NRMSE |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["data"], r.get("budget", 0), r["method"]) for r in records if "error" not in r},
                  key=lambda k: (k[0], k[1], ["ours", "random"].index(k[2]) if k[2] in ("ours", "random") else 2, k[2]))
    for data, budget, method in keys:
        rows = [r for r in records if (r["data"], r.get("budget", 0), r["method"]) == (data, budget, method)
                and "error" not in r]
        cells = []
        for metric in METRICS:
            values = numpy.array([r[metric] for r in rows], dtype=float)
            text = f"{numpy.nanmean(values):.3g}"
            if metric.startswith("coverage"):
                text += f" [{numpy.nanmin(values):.2f}, {numpy.nanmax(values):.2f}]"
            cells.append(text)
        print(f"| {data} | {budget} | {method} | {len(rows)} | " + " | ".join(cells) + " |")
    for r in records:
        if "error" in r:
            print(f"error: {r['data']} seed {r['seed']} {r['method']}: {r['error'][-300:]!r}")


if __name__ == "__main__":
    main()

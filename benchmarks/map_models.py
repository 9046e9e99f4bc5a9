"""Which map model makes the map after 1% of the positions readable? Paired comparison on the same measured points.

The map model does not steer the run (EI and its posterior are the decision path; the maps are computed after the
decision), so candidate map models can be scored on the very points a run measured: each (set, seed) run of the
loop is recorded once (visited positions, values, the shipped maps' scores at the checkpoints), then every
variant is fitted on the first b points and scored over the unmeasured positions against the ground truth
(NRMSE over all positions as sample_efficiency.py; coverage and NLPD as calibration.py).

    python benchmarks/map_models.py [--sets si,10mrad,48] [--seeds 0-9] [--acquisition ei] [--record-only]
        [--variants jet0.7,select,...] [--out benchmarks/out/map_models.json]

Variants: `loop` (the maps the run itself produced, recalibrated sigma: what the user sees), `bma`
(survey_map.SurveyMapModel fitted once on the first b points, raw sigma), `random` (the same on the run's 10 seed
points + random positions: the mapping mode's reference), `jetS` (one GP on the local jet at scale S px), `pcaK`
(one GP on K centre-weighted principal components). `--runs A.json` reuses recorded runs; `--map-model dkl`
records runs with the previous map model (the last fresh DKL fit).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import typing

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
SETS = {"si": os.path.join(ROOT, "resources", "graphene_si.npz"),
        "10mrad": "/work/shared/data/graphene_si4_vac2_32x32_10mrad.npz",
        "48": "/work/shared/data/graphene_si4_vac2_48x48_30mrad.npz"}


def checkpoints(n: int, seed_points: int = 10) -> dict[str, int]:
    """Named budgets: 1% and 2.5% of the positions (as sample_efficiency.py), 40 and 100 (calibration.py)."""
    return {"1%": max(seed_points + 1, int(round(0.01 * n))), "2.5%": int(round(0.025 * n)), "40": 40, "100": 100}


def load_set(path: str) -> dict[str, numpy.ndarray]:
    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.instruments.replay import open_replay
    from dkl4dstem.scalarizers import get_scalarizer

    instrument = open_replay(path)
    truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
    survey = instrument.survey().image
    return {"truth": truth, "survey": survey, "patches": extract_patches(survey, 12)}


def scores(prediction: numpy.ndarray, sigma: numpy.ndarray | None, truth: numpy.ndarray, indices: list[int],
           values: numpy.ndarray) -> dict[str, float]:
    from dkl4dstem.evaluation.calibration import baseline_nlpd, calibration_metrics
    from dkl4dstem.evaluation.groundtruth import nrmse

    measured = numpy.zeros(truth.size, dtype=bool)
    measured[indices] = True
    measured = measured.reshape(truth.shape)
    out = {"nrmse": nrmse(prediction.reshape(truth.shape), truth)}
    if sigma is not None:
        out.update(calibration_metrics(prediction.reshape(truth.shape), sigma.reshape(truth.shape), truth, measured))
        out["baseline_nlpd"] = baseline_nlpd(values, truth, measured)
    return out


def record(path: str, data: dict[str, numpy.ndarray], seed: int, acquisition: str, budget: int,
           map_model: str = "survey") -> dict[str, typing.Any]:
    """One run of the loop up to `budget` measurements: visited, values, first hit, the loop's own map scores."""
    from dkl4dstem.experiment import Experiment, ExperimentConfig, StepEvent
    from dkl4dstem.instruments.replay import open_replay
    from sample_efficiency import first_hit

    truth = data["truth"]
    named = checkpoints(truth.size)
    loop: dict[str, dict[str, float]] = {}
    experiment: Experiment | None = None

    def on_event(event: StepEvent) -> None:
        for name, b in named.items():
            if event.n_measured == b and event.prediction is not None:
                run = experiment._current  # noqa: SLF001 (benchmark introspection)
                loop[name] = scores(event.prediction, event.uncertainty, truth, list(run.indices),
                                    numpy.asarray(run.values))
                loop[name]["model"] = run.survey_map.name if run.survey_map is not None else "dkl"

    config = ExperimentConfig(seeds=10, steps=budget - 10, seed=seed, acquisition=acquisition, map_model=map_model)
    experiment = Experiment(open_replay(path), config, on_event=on_event)
    start = time.perf_counter()
    result = experiment.run()
    width = truth.shape[1]
    visited = [y * width + x for y, x in result.visited]
    return {"seed": seed, "visited": visited, "values": [float(v) for v in result.values],
            "first_top1": first_hit(visited, truth.reshape(-1)), "loop": loop, "error": result.error,
            "seconds": time.perf_counter() - start}


def evaluate(variant: str, data: dict[str, numpy.ndarray], run: dict[str, typing.Any], seed: int
             ) -> dict[str, dict[str, float]]:
    """A map-model variant fitted on each checkpoint's first b points (sigma without recalibration)."""
    from dkl4dstem.models import survey_map as mapmodel

    truth = data["truth"]
    out: dict[str, dict[str, float]] = {}
    for name, b in checkpoints(truth.size).items():
        indices, values = run["visited"][:b], numpy.asarray(run["values"][:b])
        if len(indices) < b:
            continue
        if variant == "random":  # the run's seed points, then random positions (as calibration.random_subset)
            rest = [int(i) for i in numpy.random.default_rng(1000 + seed).permutation(truth.size)
                    if int(i) not in set(indices[:10])]
            indices = indices[:10] + rest[:b - 10]
            values = truth.reshape(-1)[indices]
        if variant in ("bma", "random"):
            model = mapmodel.SurveyMapModel(data["survey"], data["patches"], seed)
            model.fit(indices, values)
            label = model.name
        elif variant.startswith("jet"):
            model, label = mapmodel.FixedFeatureGP(mapmodel.local_jet(data["survey"], float(variant[3:]))), variant
            model.fit(indices, values)
        elif variant.startswith("pca"):
            model = mapmodel.FixedFeatureGP(mapmodel.survey_features(data["patches"], int(variant[3:]), seed))
            label = variant
            model.fit(indices, values)
        else:
            raise SystemExit(f"unknown variant {variant}")
        mean, variance = model.predict()
        sigma = numpy.sqrt(variance.numpy() + model.noise)
        out[name] = {**scores(mean.numpy(), sigma, truth, indices, values), "model": label}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="si,10mrad,48")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--acquisition", default="ei")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--variants", default="select")
    parser.add_argument("--record-only", action="store_true")
    parser.add_argument("--map-model", default="survey")
    parser.add_argument("--cost", action="store_true", help="only time the map model per step at 128 x 128")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="paired: the loop's maps of two "
                        "recorded JSONs (same sets and seeds), AFTER minus BEFORE, and their first hits")
    parser.add_argument("--runs", default=None, help="recorded runs (JSON) to reuse instead of running the loop")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "map_models.json"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    sys.path.insert(0, ROOT)
    if args.cost:
        cost()
        return
    from dkl4dstem.runtime import ensure_threads_configured
    from pretrain_transfer import seed_list

    ensure_threads_configured()
    seeds = seed_list(args.seeds)
    previous = json.load(open(args.runs)) if args.runs else {"runs": {}}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "cores": os.cpu_count(), "load": os.getloadavg()[0], "acquisition": args.acquisition,
            "map_model": args.map_model}
    results: dict[str, typing.Any] = {"meta": meta, "runs": previous["runs"], "variants": {}}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for name in args.sets.split(","):
        data = load_set(SETS[name])
        for seed in seeds:
            key = f"{name}/{seed}"
            if key not in results["runs"]:
                results["runs"][key] = record(SETS[name], data, seed, args.acquisition, args.budget,
                                                  args.map_model)
            if not args.record_only:
                for variant in args.variants.split(","):
                    results["variants"].setdefault(variant, {})[key] = evaluate(variant, data,
                                                                                results["runs"][key], seed)
            with open(args.out, "w") as file:
                json.dump(results, file)
            print(key, json.dumps({"first": results["runs"][key]["first_top1"],
                                   "loop": {k: round(v["nrmse"], 3) for k, v in results["runs"][key]["loop"].items()},
                                   **{v: {k: round(s["nrmse"], 3) for k, s in r[key].items()}
                                      for v, r in results["variants"].items() if key in r}}), flush=True)
    print_table(results)


def bootstrap(diff: numpy.ndarray, seed: int = 0) -> tuple[float, float]:
    rng = numpy.random.default_rng(seed)
    means = rng.choice(diff, size=(10000, diff.size)).mean(axis=1)
    return float(numpy.quantile(means, 0.025)), float(numpy.quantile(means, 0.975))


def cost(size: int = 128) -> None:
    """The map model's cost per step (after the decision, before the next move) on a synthetic lattice survey."""
    from dkl4dstem.models import survey_map as mapmodel
    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.runtime import ensure_threads_configured

    ensure_threads_configured()
    rng = numpy.random.default_rng(0)
    yy, xx = numpy.mgrid[:size, :size]
    survey = (numpy.cos(yy / 2.1) * numpy.cos(xx / 2.3) + 0.1 * rng.normal(size=(size, size))).astype(numpy.float32)
    truth = numpy.hypot(*numpy.gradient(survey)).ravel()
    start = time.perf_counter()
    model = mapmodel.SurveyMapModel(survey, extract_patches(survey, 12))
    print(f"{size}²: features {1e3 * (time.perf_counter() - start):.0f} ms (once per run); load {os.getloadavg()[0]:.1f}")
    for n0 in (50, 100, 190):
        indices = rng.choice(truth.size, n0 + 10, replace=False).tolist()
        model = mapmodel.SurveyMapModel(survey, extract_patches(survey, 12))
        start = time.perf_counter()
        model.maps(indices[:n0], truth[indices[:n0]])
        first = time.perf_counter() - start
        steps = []
        for k in range(1, 11):
            start = time.perf_counter()
            model.maps(indices[:n0 + k], truth[indices[:n0 + k]])
            steps.append(1e3 * (time.perf_counter() - start))
        print(f"n = {n0}: first fit {1e3 * first:.0f} ms, next 10 steps median {numpy.median(steps):.0f} ms, max "
              f"{max(steps):.0f} ms (hyperparameters refitted when the data grew by a tenth)")


def compare(before_path: str, after_path: str) -> None:
    """NRMSE of the loop's maps, AFTER minus BEFORE per set and budget (paired bootstrap), and the first hits."""
    before, after = json.load(open(before_path))["runs"], json.load(open(after_path))["runs"]
    keys = [k for k in after if k in before]
    print("| set | budget | seeds | NRMSE before | NRMSE after | after minus before [95%] | first hits equal |")
    print("|---|---|---|---|---|---|---|")
    for name in sorted({k.split("/")[0] for k in keys}):
        common = [k for k in keys if k.startswith(name + "/")]
        same = sum(before[k]["first_top1"] == after[k]["first_top1"] for k in common)
        for budget in ("1%", "2.5%", "40", "100"):
            pairs = [(before[k]["loop"][budget]["nrmse"], after[k]["loop"][budget]["nrmse"]) for k in common
                     if budget in before[k]["loop"] and budget in after[k]["loop"]]
            if not pairs:
                continue
            b, a = numpy.array(pairs).T
            print(f"| {name} | {budget} | {len(pairs)} | {b.mean():.3f} | {a.mean():.3f} | "
                  "{:+.3f} [{:+.3f}, {:+.3f}] | {}/{} |".format((a - b).mean(), *bootstrap(a - b), same, len(common)))
    for name in sorted({k.split("/")[0] for k in keys}):
        hits = numpy.array([after[k]["first_top1"] or 0 for k in keys if k.startswith(name + "/")], dtype=float)
        print(f"{name}: first top-1% hit mean {hits.mean():.1f}, median {numpy.median(hits):.1f}")


def print_table(results: dict[str, typing.Any]) -> None:
    """Per set and checkpoint: mean NRMSE, coverages and NLPD per variant; variant minus loop [95% bootstrap]."""
    runs = results["runs"]
    sets = sorted({k.split("/")[0] for k in runs})
    print("| set | budget | variant | seeds | NRMSE | minus loop [95%] | within 1 sigma | within 2 sigma | NLPD | "
          "baseline NLPD | models chosen |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in sets:
        keys = sorted((k for k in runs if k.startswith(name + "/")), key=lambda k: int(k.split("/")[1]))
        for budget in ("1%", "2.5%", "40", "100"):
            base = {k: runs[k]["loop"][budget] for k in keys if budget in runs[k]["loop"]}
            for variant, per_key in [("loop", base), *[(v, {k: r[k][budget] for k in keys if k in r and budget
                                                            in r[k]}) for v, r in results["variants"].items()]]:
                common = [k for k in per_key if k in base]
                if not common:
                    continue
                row = {m: numpy.mean([per_key[k].get(m, numpy.nan) for k in common])
                       for m in ("nrmse", "coverage_1sigma", "coverage_2sigma", "nlpd", "baseline_nlpd")}
                diff = numpy.array([per_key[k]["nrmse"] - base[k]["nrmse"] for k in common])
                interval = "" if variant == "loop" else "{:+.3f} [{:+.3f}, {:+.3f}]".format(diff.mean(), *bootstrap(diff))
                chosen = sorted({str(per_key[k].get("model", "")) for k in common})
                print(f"| {name} | {budget} | {variant} | {len(common)} | {row['nrmse']:.3f} | {interval} | "
                      f"{row['coverage_1sigma']:.3f} | {row['coverage_2sigma']:.3f} | {row['nlpd']:.3g} | "
                      f"{row['baseline_nlpd']:.3g} | {' '.join(chosen)[:60]} |")
    first = {name: [runs[k]["first_top1"] for k in runs if k.startswith(name + "/")] for name in sets}
    print("first top-1% hits:", json.dumps(first))


if __name__ == "__main__":
    main()

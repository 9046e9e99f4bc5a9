"""Head start without dose: survey pre-training and transfer from an earlier run, paired against today's default.

Every variant runs on the same seeds (the same random seed points, the same measurement budget), so the per-seed
differences to the baseline ("base": pre-training off, 10 seed points) are paired; below the table, differences of
the means with 95% bootstrap intervals (over seeds) and the ratio of the mean first top-1% hit to the baseline's.

    python benchmarks/pretrain_transfer.py DATA.npz --variants base,pca,autoencoder --seeds 0-19 --out out/pt.json
    # transfer: a source run on one region, then runs on another region starting from it with 0-3 seed points
    python benchmarks/pretrain_transfer.py DATA.npz --crop 0:48,0:24 --make-source out/src --source-budget 10,50
    python benchmarks/pretrain_transfer.py DATA.npz --crop 0:48,24:48 --variants base,pca,transfer:0,transfer:3 \
        --init-from out/src --seeds 0-19 --out out/pt_transfer.json
    # or a source run per seed (seed for seed), so the seeds vary the earlier run as well
    python benchmarks/pretrain_transfer.py DATA.npz --crop 0:48,24:48 --source-data DATA.npz --source-crop 0:48,0:24 \
        --variants base,pca,transfer:0,transfer:3 --seeds 0-19 --out out/pt_transfer.json

Variants: `base` (pre-training off), `pretrain` (pre-training as shipped), `pca` / `autoencoder` (pre-training with that objective), `METHOD@STD`
(latent std after pre-training), `VARIANT/K` (K seed points instead of --seed-points), `VARIANT[NAME=VALUE;...]`
(config fields as `--set` takes them, e.g. `pretrain[steer=dkl]`), `transfer:K` (`--init-from`, K seed points, pre-training off; the budget of
measurements stays `--seed-points + --steps`). The JSON is rewritten after every seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import typing

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
FRACTIONS = (0.01, 0.025)
PRETRAIN_DEFAULTS: dict[str, typing.Any] = {}


def crop_npz(path: str, crop: str) -> str:
    """A copy of DATA restricted to rows y0:y1 and columns x0:x1 of the scan (a region of the same sample)."""
    (y0, y1), (x0, x1) = [tuple(int(v) for v in part.split(":")) for part in crop.split(",")]
    source = numpy.load(path)
    arrays = {k: source[k] for k in source.files}
    scan_shape = arrays["data"].shape[:2]
    for key, value in list(arrays.items()):
        if value.ndim >= 2 and value.shape[:2] == scan_shape:
            arrays[key] = value[y0:y1, x0:x1]
    out = os.path.join(tempfile.mkdtemp(prefix="dkl4dstem-crop-"), f"crop_{y0}_{y1}_{x0}_{x1}.npz")
    numpy.savez(out, **arrays)
    return out


def config_for(variant: str, seed: int, seed_points: int, steps: int, scalarizer: str, init_from: str | None
               ) -> typing.Any:
    from dkl4dstem.models import pretrain
    from dkl4dstem.experiment import ExperimentConfig

    restore_defaults()
    variant, _, settings = variant.partition("[")  # VARIANT[NAME=VALUE;...]: config fields (`--set`'s syntax)
    if settings:
        from dkl4dstem.config import parse_setting

        overrides = dict(parse_setting(item) for item in settings.rstrip("]").split(";") if item.strip())
        return dataclasses.replace(config_for(variant, seed, seed_points, steps, scalarizer, init_from), **overrides)
    total = seed_points + steps
    if variant.startswith("transfer:"):
        k = int(variant.split(":")[1])
        return ExperimentConfig(scalarizer=scalarizer, seeds=k, steps=total - k, seed=seed, pretrain=False,
                                init_from=init_from)
    variant, _, k_text = variant.partition("/")
    k = int(k_text) if k_text else seed_points
    if variant in ("base", "pretrain"):  # today's model without / with pre-training as shipped
        return ExperimentConfig(scalarizer=scalarizer, seeds=k, steps=total - k, seed=seed,
                                pretrain=variant == "pretrain")
    variant, plus, spread = variant.partition("+spread")  # METHOD+spreadN: N seed points spread over the embedding
    pretrain.SPREAD_SEEDS = (int(spread) if spread else 1 << 30) if plus else 0
    variant, _, sigma = variant.partition("~")  # METHOD~SIGMA: centre weighting (0: none)
    pretrain.CENTRE_SIGMA = float(sigma) if sigma else 1 / 6  # the value of the selection runs
    method, _, std = variant.partition("@")
    pretrain.DEFAULT_METHOD = method  # read when the trainer starts pre-training
    pretrain.LATENT_STD = float(std) if std else 1.0
    return ExperimentConfig(scalarizer=scalarizer, seeds=k, steps=total - k, seed=seed, pretrain=True)


def restore_defaults() -> None:
    """Variants set pretrain's module constants; the shipped values come back before every run."""
    from dkl4dstem.models import pretrain

    names = ("DEFAULT_METHOD", "LATENT_STD", "SPREAD_SEEDS", "CENTRE_SIGMA")
    if not PRETRAIN_DEFAULTS:
        PRETRAIN_DEFAULTS.update({name: getattr(pretrain, name) for name in names})
    for name, value in PRETRAIN_DEFAULTS.items():
        setattr(pretrain, name, value)


def run_variant(path: str, target: numpy.ndarray, config: typing.Any, checkpoints: dict[int, float]
                ) -> dict[str, typing.Any]:
    from dkl4dstem.experiment import Experiment, StepEvent
    from dkl4dstem.evaluation.groundtruth import nrmse
    from dkl4dstem.instruments.replay import open_replay
    from sample_efficiency import first_hit

    instrument = open_replay(path)
    height, width = instrument.scan_shape
    errors: dict[str, float] = {}

    steered: list[str] = []

    def on_event(event: StepEvent) -> None:
        if event.phase == "step" and event.next_position is not None:
            steered.append(event.steered_by)
        if event.n_measured in checkpoints and event.prediction is not None:
            errors[str(checkpoints[event.n_measured])] = nrmse(event.prediction, target.reshape(height, width))

    start = time.perf_counter()
    result = Experiment(instrument, config, on_event=on_event).run()
    visited = [y * width + x for y, x in result.visited]
    top = target >= numpy.quantile(target, 0.99)
    return {"first_top1": first_hit(visited, target), "nrmse_at": errors, "n_measured": len(visited),
            "top1_found": int(top[visited].sum()),  # top-1% positions measured within the budget
            "seconds": time.perf_counter() - start, "error": result.error,
            "steered_by_survey": [i for i, name in enumerate(steered) if name == "survey"]}


def make_source(path: str, out: str, budget: str, scalarizer: str, seed: int = 0) -> None:
    """An earlier run with today's defaults (the CLI's, pre-training included) to transfer from."""
    import contextlib
    import io

    from dkl4dstem.cli import main

    seeds, steps = budget.split(",")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", path, "--out", out, "--seeds", seeds, "--steps", steps, "--scalarizer", scalarizer,
                     "--seed", str(seed), "--overwrite", "--no-truth"])
    if code:
        raise SystemExit(f"source run on {path} failed (exit {code})")


def seed_list(text: str) -> list[int]:
    if "-" in text and "," not in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="one table from runs on other seeds of the same "
                        "data (the variants they share)")
    parser.add_argument("--crop", default=None, help="y0:y1,x0:x1 region of the scan")
    parser.add_argument("--make-source", default=None, metavar="DIR", help="only run a source run into DIR")
    parser.add_argument("--source-budget", default="10,50", help="seeds,steps of the source run")
    parser.add_argument("--scalarizer", default="com_magnitude")
    parser.add_argument("--variants", default="base,pca,autoencoder")
    parser.add_argument("--init-from", default=None, help="one earlier run for every seed")
    parser.add_argument("--source-data", default=None, help="instead: a source run on this data per seed (seed "
                        "for seed), so the seeds vary the earlier run too")
    parser.add_argument("--source-crop", default=None, help="y0:y1,x0:x1 region of --source-data")
    parser.add_argument("--seed-points", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "pretrain_transfer.json"))
    parser.add_argument("--table", nargs="+", default=None, metavar="JSON", help="only print the table of saved "
                        "runs on the same seeds (variants of later files that repeat a name get the file's name)")
    parser.add_argument("--reference", default="base", help="the variant the differences and ratios are to")
    args = parser.parse_args()
    if args.table:
        saved = [json.load(open(path)) for path in args.table]
        results: dict[str, list[dict[str, typing.Any]]] = {}
        for path, run in zip(args.table, saved):
            if run["meta"]["seeds"] != saved[0]["meta"]["seeds"]:
                raise SystemExit(f"pretrain_transfer: {path} has other seeds than {args.table[0]}")
            for variant, runs in run["results"].items():
                name = variant if variant not in results else f"{variant} ({os.path.basename(path)})"
                results[name] = runs
        print_table(saved[0]["meta"], results, args.reference)
        return
    if args.merge:
        merge(args.merge, args.out)
        return
    if not args.data:
        parser.error("DATA is required unless --merge is given")
    data = crop_npz(args.data, args.crop) if args.crop else args.data
    if args.make_source:
        make_source(data, args.make_source, args.source_budget, args.scalarizer)
        print(f"source run on {data} -> {args.make_source}")
        return

    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.instruments.replay import open_replay
    from dkl4dstem.runtime import ensure_threads_configured
    from dkl4dstem.scalarizers import get_scalarizer

    ensure_threads_configured()
    instrument = open_replay(data)
    target = ground_truth_map(instrument.data, get_scalarizer(args.scalarizer), instrument.calibration()).reshape(-1)
    checkpoints = {max(args.seed_points + 1, int(round(f * target.size))): f for f in FRACTIONS}
    variants = args.variants.split(",")
    results: dict[str, list[dict[str, typing.Any]]] = {v: [] for v in variants}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "cores": os.cpu_count(), "data": os.path.basename(args.data), "crop": args.crop,
            "init_from": args.init_from, "scalarizer": args.scalarizer, "candidates": int(target.size),
            "seed_points": args.seed_points, "steps": args.steps, "seeds": [], "load": os.getloadavg()[0]}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    source_data = None
    if args.source_data:
        source_data = crop_npz(args.source_data, args.source_crop) if args.source_crop else args.source_data
        meta.update(source_data=os.path.basename(args.source_data), source_crop=args.source_crop,
                    source_budget=args.source_budget)
    for seed in seed_list(args.seeds):
        init_from = args.init_from
        if source_data is not None:
            restore_defaults()
            init_from = tempfile.mkdtemp(prefix="dkl4dstem-source-")
            make_source(source_data, init_from, args.source_budget, args.scalarizer, seed)
        for variant in variants:
            config = config_for(variant, seed, args.seed_points, args.steps, args.scalarizer, init_from)
            results[variant].append(run_variant(data, target, config, checkpoints))
        print(json.dumps({"seed": seed, **{v: (r[-1]["first_top1"], r[-1]["nrmse_at"]) for v, r in results.items()}}),
              flush=True)
        meta["seeds"].append(seed)
        with open(args.out, "w") as file:
            json.dump({"meta": meta, "results": results}, file, indent=1)
    print_table(meta, results)


def merge(paths: list[str], out: str) -> None:
    runs = [json.load(open(path)) for path in paths]
    variants = [v for v in runs[0]["results"] if all(v in run["results"] for run in runs)]
    meta = {**runs[0]["meta"], "seeds": [s for run in runs for s in run["meta"]["seeds"]],
            "merged_from": [os.path.basename(p) for p in paths], "dates": [run["meta"]["date"] for run in runs]}
    if len(set(meta["seeds"])) != len(meta["seeds"]):
        raise SystemExit("pretrain_transfer: a seed is in more than one file")
    results = {v: [r for run in runs for r in run["results"][v][:len(run["meta"]["seeds"])]] for v in variants}
    with open(out, "w") as file:
        json.dump({"meta": meta, "results": results}, file, indent=1)
    print_table(meta, results)


def print_table(meta: dict[str, typing.Any], results: dict[str, list[dict[str, typing.Any]]], reference: str = "base"
                ) -> None:
    budget = int(meta["seed_points"]) + int(meta["steps"])
    rng = numpy.random.default_rng(0)

    def metrics(run: dict[str, typing.Any]) -> list[float]:
        hit = run["first_top1"]
        return [float(hit if hit is not None else budget + 1)] + [
            float(run["nrmse_at"].get(str(f), numpy.nan)) for f in FRACTIONS]

    print(f"# {meta['data']} crop {meta['crop']} ({meta['candidates']} positions), {meta['scalarizer']}, "
          f"{len(meta['seeds'])} seeds, budget {budget}, {meta['date']}")
    print("| variant | mean first top-1% hit (miss = budget+1) | median | misses | ratio to base [95%] | minus base [95%] "
          "| NRMSE @1% | minus base | NRMSE @2.5% | minus base |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = numpy.array([metrics(r) for r in results[reference]]) if reference in results else None
    if base is not None and reference != "base":
        print(f"(differences and ratios to {reference})")
    for variant, runs in results.items():
        m = numpy.array([metrics(r) for r in runs])
        cells = [f"{m[:, 0].mean():.1f}", f"{numpy.median(m[:, 0]):.1f}",
                 str(sum(r["first_top1"] is None for r in runs))]
        if base is not None:  # the ratio of the means, its 95% interval over seeds resampled in pairs
            pick = rng.integers(0, len(m), size=(10000, len(m)))
            low, high = numpy.quantile(m[pick, 0].mean(axis=1) / base[pick, 0].mean(axis=1), [0.025, 0.975])
            cells.append(f"{m[:, 0].mean() / base[:, 0].mean():.2f} [{low:.2f}, {high:.2f}]")
        else:
            cells.append("")
        if all("top1_found" in r for r in runs):
            cells[0] += f" ({numpy.mean([r['top1_found'] for r in runs]):.1f} top-1% positions found)"
        steered = [len(r.get("steered_by_survey", [])) for r in runs]
        cells[0] += f" (map model steered {numpy.mean(steered):.1f} steps)" if any(steered) else ""
        for column in range(3):
            if column:
                cells.append(f"{numpy.nanmean(m[:, column]):.3f}")
            if base is None or variant == reference:
                cells.append("")
                continue
            diff = m[:, column] - base[:, column]
            diff = diff[numpy.isfinite(diff)]
            if not diff.size:
                cells.append("")
                continue
            low, high = numpy.quantile(rng.choice(diff, size=(10000, diff.size)).mean(axis=1), [0.025, 0.975])
            cells.append(f"{diff.mean():+.3g} [{low:+.3g}, {high:+.3g}]")
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Peer DKL active-learning runs (AtomAI dklGPR, gpax viDKL) for the dkl4dstem performance benchmark.

Runs INSIDE a peer virtual environment (see benchmarks/install_peers.sh) as a subprocess of the benchmark
drivers, so it must never import dkl4dstem. Everything a driver needs comes back in one JSON file.

    python benchmarks/peers.py --peer atomai|gpax --patches P.npy --target T.npy \
        --seeds 10 --steps 100 --seed 0 --out result.json [--nrmse-at 0.01,0.025]
    python benchmarks/peers.py --peer gpax --patches P.npy --target T.npy --timing-only \
        --n-list 10,50,100,200 --repeats 3 --out timing.json

Inputs (identical for every method so all see the same candidates and targets):
  --patches  (N, w*w) float32, standardized, row = y*W + x (what dkl4dstem.data.patches.extract_patches returns)
  --target   (N,) or (H, W) float ground-truth scalar per candidate (e.g. |CoM| from all patterns)
  --data     .npz replay file (keys survey, data, ...). Only used when --patches / --target are missing:
             patches are then cut from `survey` with the same rule as dkl4dstem (reflection padding, even
             windows centred at index window//2, one global mean/std), and the target is |truth_com_mrad|
             when the file has that key.

Protocol (active learning, the same as dkl4dstem's Experiment):
  seeds:    numpy.random.default_rng(seed).permutation(N)[:K]  (K = --seeds), measured in that order
  step:     fit a FRESH peer model on all measured (patch, target) pairs, targets standardized with the
            measured mean/std; predict mean/variance on ALL N candidates; EI (xi=0.01, maximize, on the
            standardized scale, best_f = max of the standardized measured targets); argmax over the
            unmeasured candidates; "measure" = read the target.
  AtomAI:   dklGPR(indim=w*w, embedim=2, precision="double", seed=--seed); fit(X, y, training_cycles=200,
            lr=0.01); predict(X_all, batch_size=N). AtomAI ships no EI, so EI is computed here (closed form)
            from its predictive mean and variance.
  gpax:     viDKL(w*w, z_dim=2) (default 64-64 MLP, RBF, MAP "delta" guide), jax x64 enabled as in gpax's
            examples; fit(key, X, y, num_steps=1000, step_size=0.005); EI with gpax's own ei() on
            viDKL.predict's moments -- exactly what gpax.acquisition.EI does internally, done in two calls
            so the predicted mean is also available for the NRMSE without predicting twice; best_f is
            passed as max(y)+xi because gpax's EI has no xi argument (the two are the same formula).
  step_seconds = fit + predict(all N) + EI + argmax (wall clock, results forced to host memory).
  --timing-only: one untimed warm-up step (n = min(n-list)-1), then per n: --repeats steps on the same random
            n points; median_seconds and cold_seconds (the first repeat: gpax re-traces and re-compiles for
            every new n and every fresh model, so cold_seconds is its realistic active-learning step cost).
  nrmse_at[f] = RMSE(predicted mean map, target) / std(target) for the model fitted on exactly
            max(K+1, round(f*N)) measurements (one extra fit after the last step when that count is K+steps;
            null when the run never reaches it).
  first_top1_at = 1-based position in `visited` (seeds included) of the first index whose target is
            >= numpy.quantile(target, 0.99), or null.

Output JSON keys: see `run_active_learning` / `run_timing` below and benchmarks/PEERS_NOTES.md.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback

import numpy

XI = 0.01


# ----------------------------------------------------------------------------------------------- inputs
def extract_patches(image: numpy.ndarray, window: int) -> numpy.ndarray:
    """Same rule as dkl4dstem.data.patches.extract_patches (copied: peer venvs do not have dkl4dstem)."""
    image = numpy.asarray(image, dtype=numpy.float64)
    before = window // 2
    after = window - 1 - before
    padded = numpy.pad(image, ((before, after), (before, after)), mode="reflect")
    views = numpy.lib.stride_tricks.sliding_window_view(padded, (window, window))
    height, width = image.shape
    patches = numpy.ascontiguousarray(views.reshape(height * width, window * window), dtype=numpy.float32)
    patches -= numpy.float32(image.mean())
    patches /= numpy.float32(image.std())
    return patches


def load_inputs(args) -> tuple[numpy.ndarray, numpy.ndarray]:
    data = None
    if args.data and (args.patches is None or args.target is None):
        data = numpy.load(args.data)
    if args.patches is not None:
        patches = numpy.load(args.patches)
    elif data is not None:
        patches = extract_patches(data["survey"], args.window)
    else:
        raise SystemExit("peers.py: give --patches (or --data with a `survey` key)")
    if args.target is not None:
        target = numpy.load(args.target)
    elif data is not None and "truth_com_mrad" in data.files:
        target = numpy.linalg.norm(numpy.asarray(data["truth_com_mrad"], dtype=numpy.float64), axis=-1)
    else:
        raise SystemExit("peers.py: give --target (or --data with a `truth_com_mrad` key)")
    patches = numpy.ascontiguousarray(patches, dtype=numpy.float64).reshape(len(patches), -1)
    target = numpy.asarray(target, dtype=numpy.float64).reshape(-1)
    if len(target) != len(patches):
        raise SystemExit(f"peers.py: {len(patches)} patches but {len(target)} targets")
    if patches.shape[1] != args.window * args.window:
        print(f"peers.py: warning: patch length {patches.shape[1]} != window**2 ({args.window ** 2})",
              file=sys.stderr)
    if not numpy.all(numpy.isfinite(target)):
        raise SystemExit("peers.py: target has non-finite values")
    return patches, target


def seed_indices(n_candidates: int, n_seeds: int, seed: int) -> numpy.ndarray:
    """THE seed rule of dkl4dstem's loop (`_Run._run_seeds`): default_rng(seed).permutation(N)[:K], in that order.

    Until 2026-11-29 this was default_rng(seed).choice(N, K, replace=False), another random subset than the loop's
    (the loop had moved to a permutation so a resumed run continues the same sequence): the peers' runs before then
    started from other seed points than ours. tests/test_loop_replay.py checks the two rules agree.
    """
    return numpy.random.default_rng(seed).permutation(n_candidates)[:n_seeds]


def standardize(y: numpy.ndarray) -> tuple[numpy.ndarray, float, float]:
    mu = float(y.mean())
    sd = float(y.std())
    if not sd > 0:
        sd = 1.0
    return (y - mu) / sd, mu, sd


def expected_improvement(mean: numpy.ndarray, var: numpy.ndarray, best: float, xi: float = XI) -> numpy.ndarray:
    """Closed-form EI for maximization (used for AtomAI, which has none)."""
    from scipy.stats import norm

    sigma = numpy.sqrt(numpy.clip(var, 1e-18, None))
    improvement = mean - best - xi
    z = improvement / sigma
    return improvement * norm.cdf(z) + sigma * norm.pdf(z)


# ------------------------------------------------------------------------------------------------ peers
class AtomAIPeer:
    name = "atomai"

    def __init__(self, input_dim: int, seed: int, cycles: int, lr: float):
        import atomai
        import gpytorch
        import torch
        import torchvision

        from atomai.models import dklGPR

        self._dklGPR = dklGPR
        self.input_dim = input_dim
        self.seed = seed
        self.cycles = cycles
        self.lr = lr
        self.versions = {
            "atomai": atomai.__version__,
            "torch": torch.__version__,
            "gpytorch": gpytorch.__version__,
            "torchvision": torchvision.__version__,
            "torchvision_is_import_stub": bool(getattr(torchvision, "IS_DKL4DSTEM_STUB", False)),
            "torch_threads": torch.get_num_threads(),
        }
        self.settings = {"model": "atomai.models.dklGPR", "embedim": 2, "precision": "double",
                         "training_cycles": cycles, "lr": lr, "seed_kwarg": seed,
                         "acquisition": "EI closed form on dklGPR.predict mean/variance (AtomAI ships no EI)"}

    def fit_predict(self, X: numpy.ndarray, y: numpy.ndarray, X_all: numpy.ndarray):
        model = self._dklGPR(indim=self.input_dim, embedim=2, precision="double", seed=self.seed)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # dklGPR prints the loss every 10 cycles
            model.fit(X, y, training_cycles=self.cycles, lr=self.lr)
        t1 = time.perf_counter()
        mean, var = model.predict(X_all, batch_size=len(X_all))
        mean = numpy.asarray(mean, dtype=numpy.float64).reshape(-1)
        var = numpy.asarray(var, dtype=numpy.float64).reshape(-1)
        t2 = time.perf_counter()
        # dklGPR.predict's variance is the latent f's; its trained Gaussian noise, for --fit-sets
        self.last_noise = float(model.likelihood.noise.detach().reshape(-1)[0])
        return mean, var, t1 - t0, t2 - t1

    def acquisition(self, mean, var, best):
        return expected_improvement(mean, var, best, XI)


class GpaxPeer:
    name = "gpax"

    def __init__(self, input_dim: int, seed: int, num_steps: int, step_size: float, x64: bool):
        import jax

        if x64:
            jax.config.update("jax_enable_x64", True)  # == gpax.utils.enable_x64()
        import gpax
        import jaxlib
        import numpyro
        import haiku

        from gpax.acquisition.base_acq import ei

        self._jax = jax
        self._gpax = gpax
        self._ei = ei
        self.input_dim = input_dim
        self.num_steps = num_steps
        self.step_size = step_size
        self.key_fit, self.key_predict = gpax.utils.get_keys(seed)
        self.versions = {
            "gpax": gpax.__version__,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "numpyro": numpyro.__version__,
            "dm-haiku": haiku.__version__,
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_x64": bool(jax.config.jax_enable_x64),
            "xla_flags": os.environ.get("XLA_FLAGS"),
        }
        self.settings = {"model": "gpax.viDKL", "z_dim": 2, "kernel": "RBF", "guide": "delta",
                         "num_steps": num_steps, "step_size": step_size, "x64": x64,
                         "acquisition": "gpax.acquisition.base_acq.ei on viDKL.predict moments "
                                        "(== gpax.acquisition.EI), best_f = max(y) + xi"}

    def fit_predict(self, X, y, X_all):
        jnp = self._jax.numpy
        model = self._gpax.viDKL(self.input_dim, z_dim=2)
        t0 = time.perf_counter()
        model.fit(self.key_fit, jnp.asarray(X), jnp.asarray(y), num_steps=self.num_steps,
                  step_size=self.step_size, print_summary=False, progress_bar=False)
        self._jax.block_until_ready((model.nn_params, model.kernel_params))
        t1 = time.perf_counter()
        mean, var = model.predict(self.key_predict, jnp.asarray(X_all))
        mean = numpy.asarray(mean, dtype=numpy.float64).reshape(-1)
        var = numpy.asarray(var, dtype=numpy.float64).reshape(-1)
        t2 = time.perf_counter()
        self.last_noise = 0.0  # viDKL.predict's variance already includes the trained noise
        return mean, var, t1 - t0, t2 - t1

    def acquisition(self, mean, var, best):
        jnp = self._jax.numpy
        acq = self._ei((jnp.asarray(mean), jnp.asarray(var)), best_f=best + XI, maximize=True)
        return numpy.asarray(acq, dtype=numpy.float64)


def make_peer(args, input_dim: int):
    if args.peer == "atomai":
        return AtomAIPeer(input_dim, args.seed, args.atomai_cycles, args.atomai_lr)
    return GpaxPeer(input_dim, args.seed, args.gpax_steps, args.gpax_lr, not args.gpax_no_x64)


def one_step(peer, X_all, measured_idx, y_measured, mask_measured):
    """fit + predict all + EI + argmax over unmeasured. Returns (choice, mean_in_target_units, timings)."""
    t0 = time.perf_counter()
    y_std, mu, sd = standardize(y_measured)
    mean, var, t_fit, t_pred = peer.fit_predict(X_all[measured_idx], y_std, X_all)
    t2 = time.perf_counter()
    acq = peer.acquisition(mean, var, float(y_std.max()))
    acq = numpy.where(mask_measured | ~numpy.isfinite(acq), -numpy.inf, acq)
    choice = int(numpy.argmax(acq))
    t3 = time.perf_counter()
    return choice, mean * sd + mu, {"total": t3 - t0, "fit": t_fit, "predict": t_pred, "acq": t3 - t2}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def nrmse(pred: numpy.ndarray, target: numpy.ndarray) -> float:
    sd = float(target.std())
    return float(numpy.sqrt(numpy.mean((pred - target) ** 2)) / sd) if sd > 0 else float("nan")


# ------------------------------------------------------------------------------------------------- modes
def run_active_learning(args, patches, target, peer) -> dict:
    n = len(target)
    k = args.seeds
    if not 0 < k <= n:
        raise SystemExit(f"peers.py: --seeds must be in 1..{n}")
    steps = min(args.steps, n - k)
    fractions = [float(f) for f in args.nrmse_at.split(",") if f.strip()] if args.nrmse_at else []
    # checkpoint: the model fitted on exactly max(K+1, round(f*N)) measurements -- the same count rule as
    # benchmarks/sample_efficiency.py uses for dkl4dstem (which makes no prediction during seeding)
    checkpoints = {f: max(k + 1, int(round(f * n))) for f in fractions}
    # top-1 %: target >= its 0.99 quantile (numpy default interpolation), as sample_efficiency.first_hit
    top1_threshold = float(numpy.quantile(target, 0.99))
    top1 = set(numpy.flatnonzero(target >= top1_threshold).tolist())

    visited = [int(i) for i in seed_indices(n, k, args.seed)]
    mask = numpy.zeros(n, dtype=bool)
    mask[visited] = True
    step_seconds, fit_seconds, predict_seconds, acq_seconds, load_1min = [], [], [], [], []
    nrmse_at: dict[str, float | None] = {}
    final_mean = None

    def record_checkpoints(n_measured: int, mean: numpy.ndarray) -> None:
        for f, c in checkpoints.items():
            if c == n_measured and str(f) not in nrmse_at:
                nrmse_at[str(f)] = nrmse(mean, target)

    for step in range(steps):
        idx = numpy.asarray(visited)
        choice, mean, t = one_step(peer, patches, idx, target[idx], mask)
        record_checkpoints(len(visited), mean)
        final_mean = mean
        visited.append(choice)
        mask[choice] = True
        step_seconds.append(t["total"])
        fit_seconds.append(t["fit"])
        predict_seconds.append(t["predict"])
        acq_seconds.append(t["acq"])
        load_1min.append(os.getloadavg()[0])
        if args.verbose:
            print(f"[{peer.name}] step {step + 1}/{steps} n={len(visited) - 1} -> {choice} "
                  f"value={target[choice]:.4g} {t['total']:.2f}s", file=sys.stderr, flush=True)

    # a checkpoint that falls on the very last measurement needs one more fit (not counted as a step)
    if any(c == len(visited) for c in checkpoints.values()):
        idx = numpy.asarray(visited)
        y_std, mu, sd = standardize(target[idx])
        mean, _, _, _ = peer.fit_predict(patches[idx], y_std, patches)
        record_checkpoints(len(visited), mean * sd + mu)
    for f in fractions:  # never reached within this run
        nrmse_at.setdefault(str(f), None)

    first_top1 = next((i + 1 for i, v in enumerate(visited) if v in top1), None)
    return {
        "mode": "active_learning",
        "n_candidates": n,
        "n_seeds": k,
        "n_steps": steps,
        "seed": args.seed,
        "seed_rule": "numpy.random.default_rng(seed).choice(N, K, replace=False)",
        "visited": visited,
        "values": [float(target[i]) for i in visited],
        "step_seconds": step_seconds,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "acq_seconds": acq_seconds,
        "load_avg_1min": load_1min,
        "nrmse_at": nrmse_at,
        "nrmse_counts": {str(f): c for f, c in checkpoints.items()},
        "first_top1_at": first_top1,
        "top1_threshold": top1_threshold,
        "top1_count": len(top1),
        "best_value": float(max(target[visited])),
        "final_nrmse": nrmse(final_mean, target) if final_mean is not None else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)


def run_timing(args, patches, target, peer, partial: dict | None = None) -> dict:
    n = len(target)
    rng = numpy.random.default_rng(args.seed)
    n_list = [int(v) for v in args.n_list.split(",") if v.strip()]
    warmup_seconds = None
    if args.warmup:
        # one untimed step at a training-set size not in the list: absorbs one-time costs (lazy imports such as
        # torch._dynamo on the first optimizer, XLA/jax start-up) without pre-compiling any listed size
        n_warm = max(2, min(n_list) - 1)
        idx = rng.choice(n, n_warm, replace=False)
        mask = numpy.zeros(n, dtype=bool)
        mask[idx] = True
        warmup_seconds = one_step(peer, patches, idx, target[idx], mask)[2]["total"]
    rows = []
    for n_train in n_list:
        if not 1 < n_train < n:
            raise SystemExit(f"peers.py: --n-list values must be in 2..{n - 1}")
        idx = rng.choice(n, n_train, replace=False)
        mask = numpy.zeros(n, dtype=bool)
        mask[idx] = True
        times = []
        for _ in range(args.repeats):
            _, _, t = one_step(peer, patches, idx, target[idx], mask)
            times.append(t)
            if args.verbose:
                print(f"[{peer.name}] n={n_train} {t['total']:.2f}s (fit {t['fit']:.2f}, "
                      f"predict {t['predict']:.2f})", file=sys.stderr, flush=True)
        rows.append({
            "n": n_train,
            "median_seconds": statistics.median(t["total"] for t in times),
            "median_fit_seconds": statistics.median(t["fit"] for t in times),
            "median_predict_seconds": statistics.median(t["predict"] for t in times),
            "median_acq_seconds": statistics.median(t["acq"] for t in times),
            # first repeat = first step at this training-set size in this process. For gpax it includes the
            # XLA trace/compile that every active-learning step pays (each step has a new n and a fresh
            # model), so cold_seconds, not the median, is gpax's realistic per-step cost.
            "cold_seconds": times[0]["total"],
            "cold_fit_seconds": times[0]["fit"],
            "all_seconds": [t["total"] for t in times],
            "load_avg_1min": os.getloadavg()[0],
            "peak_rss_mb": peak_rss_mb(),
        })
        if partial is not None:  # rows so far, so a driver-side timeout still leaves data (marked partial)
            write_json(args.out, {**partial, "mode": "timing", "partial": True, "rows": rows})
    return {"mode": "timing", "n_candidates": n, "repeats": args.repeats, "seed": args.seed,
            "warmup_seconds": warmup_seconds, "rows": rows, "peak_rss_mb": peak_rss_mb()}


def run_fit_sets(args, patches, target, peer) -> dict:
    """One fresh fit per given index set: predictive mean and variance at every candidate, in target units.

    For benchmarks/calibration.py: the peers fitted on exactly the points our loop measured (or a random subset),
    so their reported uncertainty can be scored on the same unmeasured positions. `var` is what the peer's
    predict returns; `noise_var` its trained observation noise when that is not already included (AtomAI).
    """
    with open(args.fit_sets) as fh:
        sets = json.load(fh)["sets"]
    arrays: dict[str, numpy.ndarray] = {}
    rows = []
    for entry in sets:
        idx = numpy.asarray(entry["indices"], dtype=int)
        y_std, mu, sd = standardize(target[idx])
        t0 = time.perf_counter()
        mean, var, _, _ = peer.fit_predict(patches[idx], y_std, patches)
        arrays[entry["name"] + "/mean"] = mean * sd + mu
        arrays[entry["name"] + "/var"] = var * sd * sd
        arrays[entry["name"] + "/noise_var"] = numpy.asarray(getattr(peer, "last_noise", 0.0) * sd * sd)
        rows.append({"name": entry["name"], "n": int(idx.size), "seconds": time.perf_counter() - t0})
        if args.verbose:
            print(f"[{peer.name}] {entry['name']} n={idx.size} {rows[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
    numpy.savez(os.path.splitext(args.out)[0] + ".npz", **arrays)
    return {"mode": "fit_sets", "fits": rows, "peak_rss_mb": peak_rss_mb()}


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", required=True, choices=["atomai", "gpax"])
    p.add_argument("--data", help=".npz replay file (fallback source of patches/target)")
    p.add_argument("--patches", help="(N, w*w) float32 standardized patches .npy")
    p.add_argument("--target", help="(N,) ground-truth scalar per candidate .npy")
    p.add_argument("--window", type=int, default=12)
    p.add_argument("--seeds", type=int, default=10, help="number of random seed measurements K")
    p.add_argument("--steps", type=int, default=100, help="active-learning steps after the seeds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrmse-at", default="0.01,0.025", help="fractions of N at which to record NRMSE")
    p.add_argument("--out", required=True, help="JSON result path")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--fit-sets", help="JSON {\"sets\": [{\"name\": ..., \"indices\": [...]}]}: one fresh fit per set, "
                   "mean/var at every candidate written to OUT's .npz (benchmarks/calibration.py)")
    p.add_argument("--n-list", default="10,50,100,200")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="timing-only: skip the untimed warm-up step")
    p.add_argument("--atomai-cycles", type=int, default=200)
    p.add_argument("--atomai-lr", type=float, default=0.01)
    p.add_argument("--gpax-steps", type=int, default=1000)
    p.add_argument("--gpax-lr", type=float, default=0.005)
    p.add_argument("--gpax-no-x64", action="store_true", help="keep jax in float32")
    p.add_argument("--threads", type=int, default=0,
                   help="cap intra-op threads (torch.set_num_threads / XLA eigen pool); 0 = library default")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    return p.parse_args(argv)


def apply_thread_cap(threads: int) -> None:
    """Must run before torch / jax are imported (both read these at start-up)."""
    if threads <= 0:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                               f" intra_op_parallelism_threads={threads}").strip()


def main(argv=None) -> int:
    args = parse_args(argv)
    apply_thread_cap(args.threads)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t_start = time.perf_counter()
    patches, target = load_inputs(args)
    t_import = time.perf_counter()
    peer = make_peer(args, patches.shape[1])
    import_seconds = time.perf_counter() - t_import
    result = {
        "peer": args.peer,
        "versions": {**peer.versions, "python": platform.python_version(), "numpy": numpy.__version__},
        "settings": {**peer.settings, "xi": XI, "maximize": True, "window": args.window,
                     "targets": "standardized with the measured mean/std before every fit"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "started": started,
        "threads_cap": args.threads or None,
        "load_avg_start": list(os.getloadavg()),
        "import_seconds": import_seconds,
    }
    try:
        if args.fit_sets:
            result.update(run_fit_sets(args, patches, target, peer))
        elif args.timing_only:
            result.update(run_timing(args, patches, target, peer, partial=result))
        else:
            result.update(run_active_learning(args, patches, target, peer))
    except Exception as exc:  # still hand the driver a JSON it can read
        result.update({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        status = 1
    else:
        status = 0
    result["load_avg_end"] = list(os.getloadavg())
    result["wall_seconds"] = time.perf_counter() - t_start
    write_json(args.out, result)
    if status:
        print(result["traceback"], file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Per-step speed of dkl4dstem against AtomAI dklGPR and gpax viDKL, side by side in one run.

All three see the same candidates (HAADF patches of one survey, one global standardization), the same targets and
the same training-set sizes n, with the same number of intra-op threads (`--threads`, default: dkl4dstem's
policy for this machine). One step is, for each method, what its active-learning loop does per new measurement:

- dkl4dstem: condition the GP on the new point + predict all + log-EI + argmax (decision), plus what the
  background trainer does for that point (warm-start Adam steps, re-embed all candidates, factorize). This
  "full step" is what replay mode waits for; on the microscope only the decision is waited for.
- AtomAI: a fresh `dklGPR` fitted for 200 cycles, predict all, EI, argmax (as its examples and hAE do).
- gpax: a fresh `viDKL` fitted for 1000 steps, predict all, EI, argmax. Its first step at each n pays the XLA
  compile that every real active-learning step pays (n changes every step), so "cold" is its realistic cost.

Peers run in their own venvs (`bash benchmarks/install_peers.sh`) through `benchmarks/peers.py --timing-only`.

    python benchmarks/speed_vs_peers.py [--size 48] [--n 10,50,100] [--window 12] [--repeats 3]
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

import numpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from latency import measure_steps, synthetic_survey  # noqa: E402  (benchmarks/ is not a package)

PEERS = ("atomai", "gpax")


def run_peer(peer: str, patches_path: str, target_path: str, ns: list[int], repeats: int, threads: int,
             work: str) -> dict[str, object]:
    python = os.path.join(HERE, ".venvs", peer, "bin", "python")
    if not os.path.exists(python):
        return {"error": f"{python} missing: run bash benchmarks/install_peers.sh"}
    out = os.path.join(work, f"{peer}_timing.json")
    command = [python, os.path.join(HERE, "peers.py"), "--peer", peer, "--patches", patches_path,
               "--target", target_path, "--timing-only", "--n-list", ",".join(map(str, ns)),
               "--repeats", str(repeats), "--threads", str(threads), "--out", out]
    proc = subprocess.run(command, capture_output=True, text=True)
    if not os.path.exists(out):
        return {"error": proc.stderr[-1500:] or f"exit status {proc.returncode}"}
    with open(out) as file:
        return json.load(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=48, help="survey side: size x size candidates")
    parser.add_argument("--n", default="10,50,100")
    parser.add_argument("--window", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for every method (0: our policy)")
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--out", default=os.path.join(HERE, "out", "speed_vs_peers.json"))
    args = parser.parse_args()

    import torch

    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.runtime import configure_threads

    threads = configure_threads(args.threads or None)
    os.environ["DKL4DSTEM_THREADS"] = str(threads)  # our background trainer's thread sets its own: the same count
    ns = [int(v) for v in args.n.split(",")]
    survey = synthetic_survey(args.size)
    target = (survey ** 2).reshape(-1)
    patches = extract_patches(survey, args.window)
    work = tempfile.mkdtemp(prefix="dkl4dstem-speed-")
    patches_path, target_path = os.path.join(work, "patches.npy"), os.path.join(work, "target.npy")
    numpy.save(patches_path, patches)
    numpy.save(target_path, target)

    ours = measure_steps(patches, target, ns, args.window, args.repeats, size=args.size)
    peers = {p: run_peer(p, patches_path, target_path, ns, args.repeats, threads, work)
             for p in args.peers.split(",") if p}
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "candidates": int(target.size), "window": args.window,
            "repeats": args.repeats, "load_avg_1min_end": os.getloadavg()[0]}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "ours": ours, "peers": peers}, file, indent=1)

    print(f"# per-step speed, {meta['candidates']} candidates (window {args.window}), {meta['date']}, "
          f"{meta['machine']}, {meta['cores']} cores, {threads} thread(s) for every method, median of {args.repeats}")
    header = ["n", "dkl4dstem full step s", "dkl4dstem decision ms"]
    for peer in peers:
        header += [f"{peer} step s", f"{peer} / dkl4dstem"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in ours:
        cells = [str(row["n"]), f"{row['step_ms'] / 1e3:.3f}", f"{row['decision_ms']:.1f}"]
        for peer, payload in peers.items():
            match = [r for r in payload.get("rows", []) if r["n"] == row["n"]]
            if not match:
                cells += [f"error: {str(payload.get('error', 'no row'))[:60]!r}", ""]
                continue
            # gpax: the cold step (includes the XLA compile every real step pays); AtomAI: the median
            seconds = match[0]["cold_seconds"] if peer == "gpax" else match[0]["median_seconds"]
            cells += [f"{seconds:.2f}", f"{seconds / (row['step_ms'] / 1e3):.0f}x"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

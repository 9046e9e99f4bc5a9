"""Replay of a 4D file larger than memory: peak RSS of `dkl4dstem run` on a ~20 GB file (target: < 2 GB).

Writes DIR/big.npy (512 x 512 scan, 138 x 138 detector, float32 = 20 GB: the shipped graphene patterns tiled with
a little noise so every pattern differs), runs the CLI on it in a subprocess and reports its peak RSS and timings.
`--format h5|emd|hspy|zspy|mib|raw` writes the same data in that format instead (`big_formats.py`; `raw` is
EMPAD and needs `--det 128`). The file is deleted afterwards unless --keep.

    python benchmarks/large_replay.py --dir /tmp/dkl4dstem-big [--scan 512] [--det 138] [--steps 20] [--format npy]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import typing

import numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import big_formats  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(os.path.dirname(HERE), "resources", "graphene_si.npz")


def tiled_rows(scan: int, det: int) -> typing.Iterator[tuple[int, numpy.ndarray]]:
    """The graphene patterns centred on a det x det detector, tiled over the scan, a little noise per pattern."""
    source = numpy.load(FIXTURE)["data"]  # (32, 32, 41, 41)
    sy, sx, dy, dx = source.shape
    padded = numpy.zeros((sy, sx, det, det), dtype=numpy.float32)
    oy, ox = (det - dy) // 2, (det - dx) // 2
    padded[:, :, oy:oy + dy, ox:ox + dx] = source
    rng = numpy.random.default_rng(0)
    for y in range(scan):
        row = padded[y % sy][numpy.arange(scan) % sx]
        yield y, row + rng.random(row.shape[:1] + (1, 1), dtype=numpy.float32) * 1e-4


def write_big(path: str, scan: int, det: int, file_format: str = "npy") -> list[str]:
    """Writes the file; returns the CLI flags the format needs."""
    if file_format != "npy":
        return big_formats.WRITERS[file_format][1](path, tiled_rows(scan, det), (scan, scan, det, det))
    source = numpy.load(FIXTURE)["data"]  # (32, 32, 41, 41)
    sy, sx, dy, dx = source.shape
    padded = numpy.zeros((sy, sx, det, det), dtype=numpy.float32)
    oy, ox = (det - dy) // 2, (det - dx) // 2
    padded[:, :, oy:oy + dy, ox:ox + dx] = source
    out = numpy.lib.format.open_memmap(path, mode="w+", dtype=numpy.float32, shape=(scan, scan, det, det))
    rng = numpy.random.default_rng(0)
    for y in range(scan):
        row = padded[y % sy][numpy.arange(scan) % sx]
        out[y] = row + rng.random(row.shape[:1] + (1, 1), dtype=numpy.float32) * 1e-4
        if y % 64 == 63:
            out.flush()
    out.flush()
    del out
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="/tmp/dkl4dstem-big")
    parser.add_argument("--scan", type=int, default=512)
    parser.add_argument("--det", type=int, default=138)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--format", choices=["npy", *big_formats.WRITERS], default="npy")
    parser.add_argument("--out", default=None, help="JSON result (default out/large_replay[_FORMAT].json)")
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    suffix = "" if args.format == "npy" else f"_{args.format}"
    args.out = args.out or os.path.join(HERE, "out", f"large_replay{suffix}.json")
    path = os.path.join(args.dir, "big.npy" if args.format == "npy" else big_formats.WRITERS[args.format][0])
    flags_path = path + ".flags.json"
    if args.write_only:
        with open(flags_path, "w") as file:
            json.dump(write_big(path, args.scan, args.det, args.format), file)
        return
    start = time.perf_counter()
    if not os.path.exists(path):  # written by a child, so this process never holds the file's pages
        subprocess.run([sys.executable, __file__, "--write-only", "--dir", args.dir, "--scan", str(args.scan),
                        "--det", str(args.det), "--format", args.format], check=True)
    flags = json.load(open(flags_path)) if os.path.exists(flags_path) else []
    gigabytes = big_formats.size_of(path) / 1e9
    write_seconds = time.perf_counter() - start
    # The CLI runs in a child that reports its own peak RSS (VmHWM): RUSAGE_CHILDREN would also count pages the
    # child inherited from this process at fork time.
    wrapper = ("import resource, runpy, sys\n"
               "sys.argv = ['dkl4dstem'] + sys.argv[1:]\n"
               "try:\n    runpy.run_module('dkl4dstem', run_name='__main__')\n"
               "finally:\n    print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    command = [sys.executable, "-c", wrapper, "run", path, "--out", os.path.join(args.dir, "run"), "--overwrite",
               "--no-truth", "--seeds", "10", "--steps", str(args.steps), "--scalarizer", "com_magnitude", *flags]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    run_seconds = time.perf_counter() - start
    peaks = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_MB")]
    peak_rss_mb = peaks[-1] if peaks else None
    if not args.keep:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        if os.path.exists(flags_path):
            os.remove(flags_path)
    summary = {}
    if proc.returncode == 0:
        with open(os.path.join(args.dir, "run", "summary.json")) as file:
            summary = json.load(file)
    result = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
              "cores": os.cpu_count(), "format": args.format, "file_gb": gigabytes, "scan": args.scan,
              "detector": args.det,
              "write_seconds": write_seconds, "run_seconds": run_seconds, "peak_rss_mb": peak_rss_mb,
              "returncode": proc.returncode, "stderr_tail": proc.stderr[-500:],
              "median_step_seconds": summary.get("median_step_seconds"),
              "median_decision_seconds": summary.get("median_decision_seconds"),
              "n_measured": summary.get("n_measured")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(result, file, indent=1)
    print("| file | scan | detector | run (s) | peak RSS (MB) | median step (s) | median decision (ms) |")
    print("|---|---|---|---|---|---|---|")
    decision = result["median_decision_seconds"]
    print(f"| {gigabytes:.1f} GB {args.format} | {args.scan}² | {args.det}² | {run_seconds:.0f} | {peak_rss_mb} | "
          f"{result['median_step_seconds']} | {decision * 1e3 if decision else None} |")
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)


if __name__ == "__main__":
    main()

"""Per-pattern time of the built-in scalarizers, warm caches (what the loop pays per measured point).

Was a threshold in tests/test_scalarizers.py (median < 1 ms at 64²); timings belong here, not in unit tests.
For each detector size and scalarizer: one call warms the per-calibration caches (masks, coordinates), then the
median and 99th percentile of `--repeats` calls on one Gaussian-like pattern are printed as a table.

    python benchmarks/scalarizer_speed.py [--sizes 64,128,256] [--repeats 200] [--out FILE]
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
sys.path.insert(0, os.path.dirname(HERE))

NAMES = ("com_x", "com_magnitude", "vbf", "vabf", "vadf")


def measure(size: int, repeats: int, seed: int = 1) -> list[dict[str, typing.Any]]:
    from dkl4dstem.data.diffraction import DetectorCalibration
    from dkl4dstem.scalarizers import get_scalarizer

    rng = numpy.random.default_rng(seed)
    ys, xs = numpy.indices((size, size))
    centre = (size - 1) / 2
    reference = numpy.exp(-((ys - centre) ** 2 + (xs - centre) ** 2) / (50.0 * (size / 64) ** 2)).astype(numpy.float32)
    calibration = DetectorCalibration(reference=reference, mrad_per_px=64.0 / size, semiangle_mrad=10.0)
    pattern = (reference * rng.uniform(0.5, 1.5, reference.shape)).astype(numpy.float32)
    rows = []
    for name in NAMES:
        scalarizer = get_scalarizer(name)
        scalarizer(pattern, calibration)  # warm the caches
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            scalarizer(pattern, calibration)
            timings.append(time.perf_counter() - start)
        rows.append({"size": size, "scalarizer": name, "median_ms": 1e3 * float(numpy.median(timings)),
                     "p99_ms": 1e3 * float(numpy.quantile(timings, 0.99))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default=os.path.join(HERE, "out", "scalarizer_speed.json"))
    args = parser.parse_args()
    rows = [row for size in (int(s) for s in args.sizes.split(",")) for row in measure(size, args.repeats)]
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(), "repeats": args.repeats}
    print(f"{meta['date']}  {meta['machine']}  {meta['cores']} cores  {args.repeats} calls per row")
    print(f"{'detector':>9} {'scalarizer':>14} {'median ms':>10} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['size']:>7}^2 {row['scalarizer']:>14} {row['median_ms']:>10.3f} {row['p99_ms']:>8.3f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump({"meta": meta, "rows": rows}, file, indent=1)


if __name__ == "__main__":
    main()

"""The fast tier's share of the full suite, measured in ONE run (README, developer section).

Runs the whole suite once with per-test durations (`pytest --durations=0`), collects which tests the fast tier
(`-m "not slow"`) selects, and prints the full run's wall time, the sum of all test durations, and the fast tier's
part of that sum. Run from anywhere:  python benchmarks/tier_share.py [extra pytest args]
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DURATION = re.compile(r"^\s*([0-9.]+)s (call|setup|teardown)\s+(\S+)")


def pytest(args: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(ROOT / "tests"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True)


def node_key(node_id: str) -> str:
    """'…/tests/test_x.py::T::t[p]' and 'tests/test_x.py::T::t[p]' -> 'test_x.py::T::t[p]'."""
    path, _, rest = node_id.partition("::")
    return f"{pathlib.PurePath(path).name}::{rest}"


def main(extra: list[str]) -> int:
    with tempfile.TemporaryDirectory() as cwd:  # the suite never writes into the checkout
        collected = pytest(["-q", "--collect-only", "-m", "not slow", *extra], cwd)
        fast = {node_key(line) for line in collected.stdout.splitlines() if "::" in line}
        start = time.perf_counter()
        full = pytest(["-q", "--durations=0", "--durations-min=0", *extra], cwd)
        wall = time.perf_counter() - start
    per_test: dict[str, float] = {}
    for line in full.stdout.splitlines():
        match = DURATION.match(line)
        if match:
            key = node_key(match.group(3))
            per_test[key] = per_test.get(key, 0.0) + float(match.group(1))
    total = sum(per_test.values())
    fast_seconds = sum(seconds for key, seconds in per_test.items() if key in fast)
    print("\n".join(line for line in full.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))))
    print(full.stdout.strip().splitlines()[-1])
    print(f"| full suite wall | test durations | fast tier ({len(fast)} tests) | fast share |")
    print("|---|---|---|---|")
    print(f"| {wall:.0f} s | {total:.0f} s | {fast_seconds:.0f} s | {100 * fast_seconds / total:.1f} % |")
    return full.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

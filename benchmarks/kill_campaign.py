"""Fault matrix rerun: SIGKILL / SIGTERM the CLI at random instants, then resume; check every row.

Each trial starts `dkl4dstem run` (through `python -m tests.faults`, fast training) on the fixture, kills it at a
random instant (seeded, printed: after a random number of points plus up to 0.3 s, so during seeding, fitting,
stepping or checkpointing; SIGTERM and SIGHUP trials must stop cleanly with exit 0) -- then checks
`session.h5` (readable, checksums valid, each stored pattern byte-identical to the source, no duplicate), resumes
it to the end and checks the total again. Prints one row per trial and a summary line.

    python benchmarks/kill_campaign.py --trials 12 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from dkl4dstem.session.store import read_session  # noqa: E402

FIXTURE = os.path.join(ROOT, "resources", "graphene_si.npz")
SEEDS, STEPS = 6, 60


def check(path: str, source: numpy.ndarray) -> tuple[int, int]:
    """(rows, torn rows) after checking every row against the source; raises on any bad row."""
    data = read_session(path)  # InputError on a checksum failure
    positions = [tuple(int(v) for v in p) for p in data.positions]
    assert len(set(positions)) == len(positions), "duplicate position"
    for (y, x), pattern in zip(positions, data.patterns):
        assert numpy.array_equal(pattern, source[y, x]), f"pattern at {(y, x)} differs from the source"
    return len(positions), data.torn_rows


def trial(k: int, rng: random.Random, folder: str, source: numpy.ndarray, env: dict[str, str]) -> dict[str, object]:
    """Kill after a random number of reported points plus a random fraction of a second (mid-append, mid-fit,
    mid-checkpoint); signals rotate SIGKILL, SIGKILL, SIGTERM, SIGHUP."""
    out = os.path.join(folder, f"t{k}")
    after_points = rng.randrange(0, SEEDS + STEPS)
    extra_s = rng.uniform(0.0, 0.3)
    signum = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGHUP][k % 4]
    argv = [sys.executable, "-m", "tests.faults", "run", FIXTURE, "--out", out, "--seeds", str(SEEDS),
            "--steps", str(STEPS), "--no-truth", "--seed", str(k)]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    reported = 0
    while reported < after_points:
        line = process.stdout.readline()
        if not line:
            break
        reported += line.startswith("MEASURED ")
    time.sleep(extra_s)
    process.send_signal(signum)
    stdout, _ = process.communicate(timeout=120)
    reported += sum(line.startswith("MEASURED ") for line in stdout.splitlines())
    row: dict[str, object] = {"trial": k, "signal": signal.Signals(signum).name, "after_points": after_points,
                              "extra_s": round(extra_s, 3), "rc": process.returncode, "reported": reported}
    session = os.path.join(out, "session.h5")
    if not os.path.exists(session):
        row.update(rows=0, torn=0, resumed=None, ok=reported == 0)
        return row
    rows, torn = check(session, source)
    assert rows >= reported, f"{reported} points reported, {rows} stored"
    clean = signum == signal.SIGKILL or process.returncode == 0  # SIGTERM / SIGHUP stop like Ctrl-C
    resumed = subprocess.run(argv[:4] + ["--resume", out, "--no-truth"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    total, _ = check(session, source)
    with open(os.path.join(out, "summary.json")) as file:
        summary = json.load(file)
    visited = {tuple(p) for p in summary["visited"]}
    ok = clean and resumed.returncode == 0 and total == SEEDS + STEPS == summary["n_measured"] == len(visited)
    row.update(rows=rows, torn=torn, resumed=total, ok=ok)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"seed {args.seed}, {args.trials} trials, {SEEDS} seeds + {STEPS} steps each")
    rng = random.Random(args.seed)
    env = {**os.environ, "DKL4DSTEM_FAULTS_FAST": "1", "DKL4DSTEM_THREADS": "1",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with numpy.load(FIXTURE) as npz:
        source = npz["data"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.trials):
            row = trial(k, rng, folder, source, env)
            rows.append(row)
            print(" ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    bad = [row for row in rows if not row["ok"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} trials ok; torn rows dropped: {sum(int(r['torn']) for r in rows)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

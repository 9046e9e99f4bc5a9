"""Random choices in tests: seeded, printed, and reproducible from the printed line.

Every choice is drawn from `DKL4DSTEM_TEST_SEED` (default 0, so a plain run is deterministic) and the choice's
name; a named environment variable overrides one choice. Set another DKL4DSTEM_TEST_SEED to explore other kill
instants, and rerun a failure with the printed variables.
"""
from __future__ import annotations

import os
import random

SEED_ENV = "DKL4DSTEM_TEST_SEED"


def base_seed() -> int:
    return int(os.environ.get(SEED_ENV, "0"))


def seeded_rng(name: str) -> random.Random:
    """A generator for a sequence of choices called `name`, seeded from DKL4DSTEM_TEST_SEED; the seed is printed."""
    seed = base_seed()
    print(f"{name}: {SEED_ENV}={seed}")
    return random.Random(f"{seed}:{name}")


def seeded(name: str, low: int, high: int) -> int:
    """One integer in [low, high]: the environment variable `name` when set, else drawn from the test seed; printed."""
    seed = base_seed()
    value = int(os.environ.get(name, random.Random(f"{seed}:{name}").randint(low, high)))
    print(f"{name}={value} ({SEED_ENV}={seed})")
    return value

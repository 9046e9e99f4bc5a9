"""Where the model runs: CUDA when present, CPU otherwise, with thread counts that suit the machine."""
from __future__ import annotations

import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_threads(threads: int | None = None) -> int:
    """Leave one core to the acquisition thread and Swift's UI on a many-core PC; use all on a 2-core box.

    Oversubscription (torch's default of all cores plus our background trainer plus numpy) costs more than it
    gains for the small matrices here, so the count is capped. DKL4DSTEM_THREADS overrides.
    """
    if threads is None:
        env = os.environ.get("DKL4DSTEM_THREADS")
        cores = os.cpu_count() or 1
        threads = int(env) if env else (cores if cores <= 2 else min(cores - 1, 8))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()

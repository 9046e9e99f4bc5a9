"""Where the model runs: CUDA when present, CPU otherwise, with thread counts that suit the machine."""
from __future__ import annotations

import os

import torch

_configured = False


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_threads(cores: int | None = None) -> int:
    """Intra-op threads per torch call.

    The decision path and the background trainer run at the same time, each on small matrices (n <= a few
    hundred), where a second intra-op thread costs more in synchronisation than it gains: on a 2-core machine
    (or one whose other core is busy) multi-threaded torch made the same fit several times slower. So: one thread
    per concurrent task, i.e. half the cores, at most 8 (a microscope PC also runs Swift and the camera).
    """
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores // 2, 8))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's thread count for the calling thread (DKL4DSTEM_THREADS overrides the default policy).

    With torch's OpenMP/MKL CPU backends the setting is per OS thread: a new thread does not inherit the main
    thread's (measured: after the main thread set 1, a fresh thread ran MKL matrix products on both cores), so the
    background trainer calls this on its own thread too.
    """
    global _configured
    if threads is None:
        env = os.environ.get("DKL4DSTEM_THREADS")
        threads = int(env) if env else default_threads()
    torch.set_num_threads(max(1, threads))
    _configured = True
    return torch.get_num_threads()


def ensure_threads_configured() -> None:
    """Apply the default policy once, unless the application already chose."""
    if not _configured:
        configure_threads()

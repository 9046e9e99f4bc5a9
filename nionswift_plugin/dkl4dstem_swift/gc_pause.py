"""Python's full garbage collections skip the objects that existed when a run started, until the run ends.

Why: a full (generation 2) collection walks every tracked object. With torch and Swift loaded that is about half a
million objects, tenths of a second per collection, with the GIL held: Swift's UI thread stops wherever it happens (about
three times in a 500-point run), whichever thread triggered it. gc.freeze() moves the objects that exist at Start into
the permanent generation, which collections do not scan, so the collections during the run only walk what the run
allocates (tens of ms). gc.unfreeze() at the end gives them back to the oldest generation: garbage cycles among them
are collected after the run, as before (one full collection, soon after the run ended: the one Python would have made
every 10-20 s during it). Nested runs (several
windows) share one freeze; a freeze made by someone else is left alone.
"""
from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_ours = False


class Pause:
    """One run's hold on the freeze. release() is idempotent."""

    def __init__(self) -> None:
        global _holders, _ours
        self.__held = True
        with _lock:
            if _holders == 0 and gc.get_freeze_count() == 0:
                gc.collect(1)  # the young garbage is not frozen with the rest (cheap: young generations only)
                gc.freeze()
                _ours = True
            _holders += 1

    def release(self) -> None:
        global _holders, _ours
        with _lock:
            if not self.__held:
                return
            self.__held = False
            _holders -= 1
            if _holders == 0 and _ours:
                gc.unfreeze()
                _ours = False


def frozen_count() -> int:
    """Objects in the permanent generation now (0 when no run holds the freeze)."""
    return gc.get_freeze_count()

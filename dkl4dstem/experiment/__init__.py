"""The loop: seeds, then measure -> record -> decide steps; the session file; checks before any dose."""
from __future__ import annotations

import importlib
import typing

# Names resolve on first use (PEP 562): importing the package stays cheap (`dkl4dstem --help` loads no torch).
_EXPORTS = {
    "Experiment": "dkl4dstem.experiment.loop",
    "ExperimentResult": "dkl4dstem.experiment.events",
    "StepEvent": "dkl4dstem.experiment.events",
    "ExperimentConfig": "dkl4dstem.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> typing.Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

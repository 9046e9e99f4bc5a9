"""The loop and its parts, one job each: seeds, then measure -> record -> decide -> maps; checks before any dose."""
from __future__ import annotations

from dkl4dstem import exports

_EXPORTS = {
    "Experiment": "dkl4dstem.experiment.loop",
    "ExperimentResult": "dkl4dstem.experiment.events",
    "StepEvent": "dkl4dstem.experiment.events",
    "ExperimentConfig": "dkl4dstem.config",
}
__getattr__, __all__ = exports.lazy(__name__, _EXPORTS)

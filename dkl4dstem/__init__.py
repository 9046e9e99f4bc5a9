"""dkl4dstem: deep-kernel-learning automated 4D-STEM experiments (engine; no Nion Swift import here)."""
from __future__ import annotations

from dkl4dstem import exports

__version__ = "0.1.0"

_EXPORTS = {
    "Experiment": "dkl4dstem.experiment.loop",
    "ExperimentResult": "dkl4dstem.experiment.events",
    "StepEvent": "dkl4dstem.experiment.events",
    "ExperimentConfig": "dkl4dstem.config",
    "Instrument": "dkl4dstem.instruments.base",
    "ReplayInstrument": "dkl4dstem.instruments.replay",
    "open_replay": "dkl4dstem.instruments.replay",
    "Survey": "dkl4dstem.data.survey",
    "DetectorCalibration": "dkl4dstem.data.diffraction",
    "Measurement": "dkl4dstem.data.diffraction",
    "get_scalarizer": "dkl4dstem.scalarizers.registry",
    "available_scalarizers": "dkl4dstem.scalarizers.registry",
}
__getattr__, __all__ = exports.lazy(__name__, _EXPORTS)

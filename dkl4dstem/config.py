"""Settings of one automated experiment, validated before any dose is spent.

Kept free of torch imports so the CLI and the Swift panel can check input instantly.
"""
from __future__ import annotations

import dataclasses
import math
import typing

from dkl4dstem.errors import InputError
from dkl4dstem.scalarizers import get_scalarizer

ACQUISITIONS = ("ei", "ucb", "uncertainty", "map")
MAP_MODELS = ("survey", "dkl")


@dataclasses.dataclass
class ExperimentConfig:
    scalarizer: str = "com_magnitude"
    scalarizer_params: dict[str, float] = dataclasses.field(default_factory=dict)
    window: int = 12
    seeds: int = 10
    steps: int = 100
    acquisition: str = "ei"
    xi: float = 0.01
    beta: float = 4.0
    observation_noise: bool = True  # acquisition on the next measurement (latent + noise variance): RESULTS.md
    maximize: bool = True
    seed: int = 0
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 0.01
    initial_iterations: int = 200   # full fit after the seed points
    update_iterations: int = 10     # warm-start Adam steps per new point (30 found no better: RESULTS.md)
    refit_every: int = 25           # every this many points a fuller refit ...
    refit_iterations: int = 200     # ... of this many steps ...
    refit_from_initial: bool = True  # ... from the initial weights: no overfitting accumulated over rounds (RESULTS.md)
    refit_growth: float = 0.2       # past refit_every / refit_growth points, refit when the data grew by this fraction
    wait_for_training: bool = True  # replay: reproducible; live microscope: False
    latent_grid: bool = True        # large surveys: posterior on a latent-space grid, interpolated (latentgrid.py)
    max_retries: int = 2            # re-tries of a failed camera frame before the point is excluded
    max_consecutive_failures: int = 5
    device: str | None = None
    checkpoint_every: int = 25
    measure_timeout_s: float | None = None  # None: the instrument's `measure_timeout_s` (None there: no limit)
    pretrain: bool = True           # self-supervised pre-training of the network on the survey (pretrain.py)
    init_from: str | None = None    # start from an earlier run's model and points (transfer.py); seeds may be 0
    map_model: str = "survey"       # the maps: "survey" (GP on fixed survey features, mapmodel.py) or "dkl"

    def validate(self, survey_shape: tuple[int, int], n_excluded: int = 0) -> None:
        """Refuse settings that cannot work, before any dose is spent."""
        for name in ("window", "seeds", "latent_dim", "initial_iterations", "refit_every"):
            if int(getattr(self, name)) < (0 if name == "seeds" and self.init_from else 1):
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)}"
                                 + (" (0 seed points need a model to start from: --init-from)" if name == "seeds"
                                    else ""))
        for name in ("steps", "update_iterations", "max_retries", "refit_iterations"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be zero or a positive integer, got {getattr(self, name)}")
        for name in ("xi", "beta", "learning_rate", "refit_growth"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (name == "learning_rate" and value == 0):
                raise InputError(f"{name} must be a positive number, got {value}")
        if self.measure_timeout_s is not None and not (math.isfinite(self.measure_timeout_s)
                                                       and self.measure_timeout_s > 0):
            raise InputError(f"measure_timeout_s must be a positive number, got {self.measure_timeout_s}")
        if self.acquisition not in ACQUISITIONS:
            raise InputError(f"unknown acquisition {self.acquisition!r}; choose one of "
                             f"{', '.join(ACQUISITIONS)}")
        if self.map_model not in MAP_MODELS:
            raise InputError(f"unknown map model {self.map_model!r}; choose one of {', '.join(MAP_MODELS)}")
        height, width = survey_shape
        if self.window >= min(height, width):
            raise InputError(f"window {self.window} must be smaller than the survey {height}x{width}")
        available = height * width - n_excluded
        if self.seeds + self.steps > available:
            raise InputError(f"seeds + steps = {self.seeds + self.steps} is more than the {available} candidate "
                             f"positions of the {height}x{width} survey")
        get_scalarizer(self.scalarizer, **self.scalarizer_params)

    def to_dict(self) -> dict[str, typing.Any]:
        return dataclasses.asdict(self)

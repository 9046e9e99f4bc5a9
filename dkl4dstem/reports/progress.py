"""The run's progress bar and the map snapshots the step figure is drawn from; the ground truth's progress bar."""
from __future__ import annotations

import math
import typing

import numpy
from tqdm import tqdm

from dkl4dstem.evaluation.groundtruth import ground_truth_map
from dkl4dstem.scalarizers.registry import get_scalarizer

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.experiment.loop import StepEvent
    from dkl4dstem.instruments.replay import ReplayInstrument

N_SNAPSHOTS = 4


class RunRecorder:
    """Experiment listener: a progress bar and map snapshots at a few evenly spaced steps for the figures."""

    def __init__(self, config: ExperimentConfig) -> None:
        total = config.seeds + config.steps
        self.snapshot_steps = {int(round(s)) for s in numpy.linspace(config.seeds, total - 1, N_SNAPSHOTS)}
        self.snapshots: list[dict[str, typing.Any]] = []
        self.visited: list[tuple[int, int]] = []
        self.bar = tqdm(total=total, desc="dkl4dstem", unit="pt", disable=None, leave=False)

    def __call__(self, event: StepEvent) -> None:
        if event.excluded:
            return
        self.visited.append(event.position)
        if self.bar.n < event.n_measured:
            self.bar.update(event.n_measured - self.bar.n)
        if math.isfinite(event.best_value):
            self.bar.set_postfix(best=f"{event.best_value:.4g}", refresh=False)
        if event.phase == "step" and event.step in self.snapshot_steps and event.prediction is not None:
            self.snapshots.append({"step": event.step, "n_measured": event.n_measured, "visited": list(self.visited),
                                   "prediction": event.prediction, "uncertainty": event.uncertainty,
                                   "acquisition": event.acquisition, "next_position": event.next_position})

    def close(self) -> None:
        self.bar.close()


def truth_for(instrument: ReplayInstrument, config: ExperimentConfig, dask: str | bool | None = None
              ) -> numpy.ndarray:
    scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
    with tqdm(total=instrument.scan_shape[0], desc="ground truth", unit="row", disable=None, leave=False) as bar:
        return ground_truth_map(instrument.data, scalarizer, instrument.calibration(), dask=dask,
                                progress=bar.update)


"""Early steering by the map model (experiment/steering.py): it chooses the first positions, the DKL takes over
once its out-of-sample predictions are the better ones or its EI expects no improvement above the noise, and
`--no-pretrain` / `steer=dkl` switch it off."""
from __future__ import annotations

import os

import numpy
import pytest
import torch

from dkl4dstem.acquisition import functions as acquisition
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError
from dkl4dstem.experiment import Experiment, StepEvent
from dkl4dstem.experiment.deciding import worth_steering
from dkl4dstem.experiment.steering import DKL, SURVEY, Steering
from dkl4dstem.instruments.replay import open_replay
from dkl4dstem.posterior.predictive import Predictive

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = dict(initial_iterations=60, update_iterations=10, refit_every=10, refit_iterations=40)


def test_the_map_model_leads_until_the_dkl_predicts_the_measured_values_better() -> None:
    steering = Steering(enabled=True)
    assert steering.leader == SURVEY  # no out-of-sample residual yet
    # (index, measured value, map model's prediction, DKL's prediction), made before each measurement
    early = [(5, 1.0, 1.1, 2.0), (9, 2.0, 1.8, 0.5), (12, 0.5, 0.7, 1.5)]
    late = [(20 + k, 1.0 + 0.1 * k, 1.0 + 0.1 * k + 0.6, 1.0 + 0.1 * k - 0.05) for k in range(12)]
    leaders = []
    for index, value, survey, dkl in early + late:
        steering.predicted(index, {SURVEY: survey, DKL: dkl})
        steering.measured(index, value)
        leaders.append(steering.leader)
    print("leaders", leaders, "errors", steering.weighted_errors())
    assert leaders[:len(early)] == [SURVEY] * len(early)
    assert leaders[-1] == DKL and SURVEY in leaders and leaders.index(DKL) > len(early)
    # nothing is final: should the map model predict better again, it leads again
    for k in range(30):
        steering.predicted(100 + k, {SURVEY: 2.0, DKL: 4.0})
        steering.measured(100 + k, 2.0)
    assert steering.leader == SURVEY
    # a prediction of another position, or a value that is not finite, is no residual
    steering.predicted(7, {SURVEY: 0.0, DKL: 1.0})
    steering.measured(8, 1.0)
    steering.predicted(7, {SURVEY: 0.0, DKL: 1.0})
    steering.measured(7, float("nan"))
    assert len(steering.errors[SURVEY]) == len(steering.errors[DKL]) == len(early) + len(late) + 30
    assert Steering(enabled=False).leader == DKL


def _steered(path: str, **fields: object) -> list[str]:
    config = ExperimentConfig(**{"seeds": 10, "steps": 8, "seed": 0, "scalarizer": "vbf", **FAST, **fields})  # type: ignore[arg-type]
    events: list[StepEvent] = []
    result = Experiment(open_replay(path), config, on_event=events.append).run()
    assert result.error is None, result.error
    print(fields, "seed 0, vbf, steered by", result.steered_by)
    assert len(result.steered_by) == config.steps  # one per decision, the first one (after the seeds) included
    # each step's event names who chose its next position
    assert [e.steered_by for e in events if e.phase == "step" and e.next_position is not None] == result.steered_by[1:]
    return result.steered_by


@pytest.mark.slow
def test_a_run_is_steered_by_the_map_model_first_and_only_with_pre_training() -> None:
    """The shipped 10 mrad graphene, virtual bright field: the map model chooses the first position after the seed
    points, then (its EI expecting no improvement above the noise, or the DKL predicting better) the DKL steers."""
    path = os.path.join(REPO, "resources", "graphene_10mrad.npz")
    steered = _steered(path)
    assert steered[0] == SURVEY  # the first decision, before any out-of-sample residual
    assert DKL in steered[1:]  # handed over
    assert _steered(path, pretrain=False) == [DKL] * len(steered)
    assert _steered(path, steer="dkl") == [DKL] * len(steered)
    assert _steered(path, map_model="dkl") == [DKL] * len(steered)  # no map model, nothing to steer


def test_the_map_model_steers_only_while_its_ei_expects_more_than_the_noise() -> None:
    """EI of the next measurement on a posterior whose best candidate is barely above the incumbent is below the
    noise std: not worth steering; a candidate well above it is."""
    blocked = numpy.array([True, False, False, False])
    noise = 0.01  # variance, standardized units: std 0.1
    flat = Predictive(torch.tensor([1.0, 0.0, 0.1, -0.5]), torch.full((4,), 1e-4), noise, 0.0, 1.0)
    peaked = Predictive(torch.tensor([1.0, 0.0, 1.6, -0.5]), torch.full((4,), 1e-4), noise, 0.0, 1.0)
    for predictive, worth in ((flat, False), (peaked, True)):
        values = acquisition.acquisition_values(predictive, 1.0, kind="ei")
        print("EI", values.exp().tolist(), "noise std", noise ** 0.5)
        assert worth_steering(values, predictive, blocked, "ei") is worth
    assert worth_steering(acquisition.acquisition_values(flat, 1.0, kind="ucb"), flat, blocked, "ucb")  # EI only


@pytest.mark.slow
def test_the_summary_says_who_steered(tmp_path) -> None:
    """`dkl4dstem run` as a user runs it: summary.json lists who chose each position after the seed points."""
    import json

    from dkl4dstem.cli import main

    out = tmp_path / "run"
    path = os.path.join(REPO, "resources", "graphene_10mrad.npz")
    assert main(["run", path, "--out", str(out), "--seeds", "10", "--steps", "8", "--scalarizer", "vbf",
                 "--seed", "0", "--no-truth"]) == 0
    steered = json.loads((out / "summary.json").read_text())["steered_by"]
    print("seed 0, vbf, steered by", steered)
    assert len(steered) == 8 and steered[0] == SURVEY and DKL in steered


def test_unknown_steering_is_refused_before_any_dose() -> None:
    with pytest.raises(InputError, match="steer"):
        ExperimentConfig(steer="survey-always").validate((32, 32))

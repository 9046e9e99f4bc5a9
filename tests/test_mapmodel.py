"""The map model (models/survey_map.py): a GP on fixed survey features that reads the map from few points."""
from __future__ import annotations

import os

import numpy
import pytest

from dkl4dstem.models import survey_map as mapmodel
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.errors import InputError
from dkl4dstem.experiment import Experiment
from dkl4dstem.evaluation.groundtruth import ground_truth_map, nrmse
from dkl4dstem.instruments.replay import open_replay
from dkl4dstem.scalarizers import get_scalarizer

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "graphene_si.npz")


@pytest.fixture(scope="module")
def graphene() -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Survey, patches and the |CoM| truth of the shipped abTEM set."""
    from dkl4dstem.data.patches import extract_patches

    instrument = open_replay(DATA)
    truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
    survey = instrument.survey().image
    return survey, extract_patches(survey, 12), truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_from_26_random_points_is_far_better_than_a_flat_map(graphene, seed: int) -> None:
    survey, patches, truth = graphene
    indices = numpy.random.default_rng(seed).choice(truth.size, 26, replace=False).tolist()
    print("seed", seed, "indices", indices)
    model = mapmodel.SurveyMapModel(survey, patches, seed=seed)
    model.fit(indices, truth.reshape(-1)[indices])
    mean, variance = model.predict()
    error = nrmse(mean.numpy().reshape(truth.shape), truth)
    print("NRMSE", error, "leading embedding", model.name, "weights", numpy.round(model.weights, 3))
    assert error < 0.8  # a flat map at the truth's mean scores 1.0
    assert bool((variance > 0).all())
    # at the measured points the map follows the measurements (up to the fitted noise)
    measured = mean.numpy()[indices]
    assert numpy.sqrt(numpy.mean((measured - truth.reshape(-1)[indices]) ** 2)) < 0.5 * truth.std()


def test_evidence_prefers_the_embedding_that_carries_the_signal(graphene) -> None:
    """A value that is a smooth function of one embedding's features gets (nearly) all the weight there."""
    survey, patches, _ = graphene
    seed = 3
    model = mapmodel.SurveyMapModel(survey, patches, seed=seed, scales_px=(0.7, 2.0))
    target = numpy.tanh(model.models[1].features[:, 1].numpy())  # jet at 2 px, gradient magnitude
    indices = numpy.random.default_rng(seed).choice(len(target), 40, replace=False).tolist()
    print("seed", seed, "indices", indices)
    model.fit(indices, target[indices])
    print("names", model.names, "weights", model.weights)
    assert model.name == "jet2"
    assert model.weights[1] > 0.9


def test_design_targets_unmeasured_positions_away_from_the_measured_ones(graphene) -> None:
    survey, patches, truth = graphene
    seed = 4
    indices = numpy.random.default_rng(seed).choice(truth.size, 12, replace=False).tolist()
    print("seed", seed, "indices", indices)
    model = mapmodel.SurveyMapModel(survey, patches, seed=seed)
    blocked = numpy.zeros(truth.size, dtype=bool)
    blocked[indices] = True
    values = model.design_values(indices, truth.reshape(-1)[indices], blocked).numpy()
    assert numpy.isfinite(values).all()
    # a measured position has the least to teach: its reduction is below the median of the others
    assert numpy.median(values[indices]) < numpy.median(values[~blocked])


def test_unknown_map_model_is_refused_before_any_dose() -> None:
    with pytest.raises(InputError, match="map_model"):
        ExperimentConfig(map_model="nope").validate((32, 32))


@pytest.mark.slow
def test_map_model_without_steering_keeps_the_positions_and_reads_better_than_the_dkl_map() -> None:
    """Same seed, both map models, steering by the DKL only (steer="dkl"): identical positions (EI decides on the
    DKL's posterior), better map."""
    seed = 5
    print("seed", seed)
    instrument = open_replay(DATA)
    truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
    runs = {}
    for name in ("survey", "dkl"):
        config = ExperimentConfig(seeds=10, steps=16, seed=seed, map_model=name, steer="dkl")
        runs[name] = Experiment(open_replay(DATA), config).run()
        print(name, "NRMSE", nrmse(runs[name].prediction, truth))
    assert runs["survey"].visited == runs["dkl"].visited
    assert nrmse(runs["survey"].prediction, truth) < nrmse(runs["dkl"].prediction, truth)
    assert numpy.isfinite(runs["survey"].uncertainty).all() and (runs["survey"].uncertainty > 0).all()

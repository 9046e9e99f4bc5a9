"""Calibrated uncertainty: the metrics, the leave-one-out shortcut, prequential recalibration, the 'map' mode."""
from __future__ import annotations

import math

import gpytorch
import numpy
import pytest
import torch

from dkl4dstem.evaluation.calibration import baseline_nlpd, calibration_metrics
from dkl4dstem.experiment import Experiment, ExperimentConfig
from dkl4dstem.acquisition.mapping import FeatureSpaceDesign, patch_features
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.posterior.cache import PosteriorCache
from dkl4dstem.posterior.recalibration import PrequentialCalibration, loo_variance_scale
from dkl4dstem.instruments.replay import open_replay


def test_metrics_of_a_gaussian_with_the_right_sigma_hit_the_nominal_coverage() -> None:
    seed = 0
    print("seed", seed)
    rng = numpy.random.default_rng(seed)
    truth = rng.normal(size=(100, 100))
    sigma = rng.uniform(0.2, 2.0, size=truth.shape)
    prediction = truth + sigma * rng.normal(size=truth.shape)
    measured = numpy.zeros(truth.shape, dtype=bool)
    measured[:10] = True
    prediction[measured] = 1e6  # measured positions are never scored
    scores = calibration_metrics(prediction, sigma, truth, measured)
    assert scores["coverage_1sigma"] == pytest.approx(0.683, abs=0.015)
    assert scores["coverage_2sigma"] == pytest.approx(0.954, abs=0.01)
    expected = numpy.mean(0.5 * math.log(2 * math.pi) + numpy.log(sigma[~measured]) + 0.5)
    assert scores["nlpd"] == pytest.approx(expected, abs=0.03)
    # ten times too confident: coverage collapses and the NLPD is far above the flat baseline
    narrow = calibration_metrics(prediction, sigma / 10, truth, measured)
    assert narrow["coverage_2sigma"] < 0.3
    assert narrow["nlpd"] > baseline_nlpd(truth[measured], truth, measured) > scores["nlpd"]


def test_loo_scale_from_the_cholesky_equals_refitting_without_each_point() -> None:
    seed = 1
    print("seed", seed)
    rng = numpy.random.default_rng(seed)
    x = torch.as_tensor(rng.uniform(-2, 2, size=(25, 2)))
    y = torch.as_tensor(numpy.sin(2 * x[:, 0].numpy()) + 0.3 * rng.normal(size=25))
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel()).double()
    noise = 0.05
    with torch.no_grad():
        covariance = kernel(x, x).to_dense() + noise * torch.eye(25, dtype=torch.float64)
    z2 = []
    for i in range(25):
        keep = [j for j in range(25) if j != i]
        k_rest = covariance[keep][:, keep]
        cross = covariance[i, keep]
        mean = cross @ torch.linalg.solve(k_rest, y[keep])
        variance = covariance[i, i] - cross @ torch.linalg.solve(k_rest, cross)
        z2.append(float((y[i] - mean) ** 2 / variance))
    assert loo_variance_scale(torch.linalg.cholesky(covariance), y) == pytest.approx(numpy.mean(z2), rel=1e-9)


def test_prequential_scale_follows_the_out_of_sample_residuals() -> None:
    seed = 2
    print("seed", seed)
    rng = numpy.random.default_rng(seed)
    calibration = PrequentialCalibration(half_life=1e9, prior_weight=2.0)
    assert calibration.variance_scale(prior_scale=4.0) == pytest.approx(4.0)  # nothing out of sample yet
    for index, error in enumerate(3.0 * rng.normal(size=400)):
        calibration.predicted(index, mean=10.0, variance=0.25)
        calibration.measured(index, 10.0 + 0.5 * error)  # errors 3x the predicted sigma of 0.5
    assert calibration.variance_scale() == pytest.approx(9.0, rel=0.15)
    calibration.measured(12345, 1.0)   # never predicted: ignored
    calibration.predicted(7, 0.0, 1.0)
    calibration.measured(7, math.nan)  # unusable value: ignored
    assert len(calibration.z) == 400
    # never narrower than the model's own predictive variance
    tight = PrequentialCalibration()
    for index in range(50):
        tight.predicted(index, 0.0, 1.0)
        tight.measured(index, 0.01)
    assert tight.variance_scale() == 1.0


def test_map_design_value_is_the_drop_of_the_summed_variance(graphene_path: str) -> None:
    """The running-sum integrated variance reduction equals adding the point and summing the variance again."""
    patches = extract_patches(numpy.load(graphene_path)["survey"], 12)
    design = FeatureSpaceDesign(patches, capacity=12, seed=5)
    measured = [3, 100, 517]
    design.values(measured[:1])  # two rounds of running updates
    values = design.values(measured)
    cache = design.cache

    def summed_variance(indices: list[int]) -> float:
        trial = PosteriorCache(cache.kernel, cache.noise, 0.0, cache.latent, capacity=12)
        trial.add_many(indices, [0.0] * len(indices))
        return float(trial.predict()[1][design.reference].sum())

    before = summed_variance(measured)
    for candidate in (7, 400, 1000):
        drop = before - summed_variance(measured + [candidate])
        assert math.exp(float(values[candidate])) == pytest.approx(drop, rel=1e-4)  # float32 running sum


def test_map_design_spreads_measurements_over_the_kinds_of_patch(graphene_path: str) -> None:
    """After one measurement, the positions with the same local structure teach the map least."""
    survey = numpy.load(graphene_path)["survey"]
    patches = extract_patches(survey, 12)
    features = patch_features(patches)
    assert features.shape == (32 * 32, 8)
    assert float(features.std(dim=0, correction=0).mean()) == pytest.approx(1.0)
    design = FeatureSpaceDesign(patches, capacity=8, seed=0)
    first = design.values([])
    measured = int(torch.argmax(first))
    after = design.values([measured])
    assert torch.all(torch.isfinite(after))
    similar = torch.cdist(features, features[measured:measured + 1])[:, 0].argsort()[1:6]
    dissimilar = torch.cdist(features, features[measured:measured + 1])[:, 0].argsort()[-50:]
    drop = first - after  # log-reduction lost by measuring `measured`
    assert float(drop[similar].mean()) > float(drop[dissimilar].mean()) + 1.0
    assert float(after[measured]) < float(first[measured]) - 1.0


@pytest.mark.slow
@pytest.mark.parametrize("acquisition", ["ei", "map"])
def test_loop_maps_carry_calibrated_sigma_on_abtem_graphene(graphene_path: str, acquisition: str) -> None:
    """10 seeds + 20 steps on the shipped abTEM set: the uncertainty is a measurement's sigma in mrad that covers
    the truth at the unmeasured positions about as often as it claims (loose bounds: one seed, 30 points)."""
    seed = 4
    print("seed", seed, "acquisition", acquisition)
    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.scalarizers import get_scalarizer

    instrument = open_replay(graphene_path)
    truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
    result = Experiment(open_replay(graphene_path),
                        ExperimentConfig(seeds=10, steps=20, seed=seed, acquisition=acquisition)).run()
    assert result.error is None and result.units == "mrad"
    assert len(set(result.visited)) == 30
    measured = numpy.zeros(truth.shape, dtype=bool)
    for y, x in result.visited:
        measured[y, x] = True
    assert numpy.all(numpy.isfinite(result.uncertainty)) and numpy.all(result.uncertainty > 0)
    scores = calibration_metrics(result.prediction, result.uncertainty, truth, measured)
    print(scores)
    assert scores["coverage_2sigma"] > 0.7 and scores["coverage_1sigma"] > 0.4
    assert scores["nlpd"] < baseline_nlpd(numpy.asarray(result.values), truth, measured) + 0.5


def test_one_shot_fit_on_a_random_subset_has_cross_validated_sigma(graphene_path: str) -> None:
    """`reconstruct.fit_subset` (the benchmark's random-subset maps): sigma from 5-fold CV with fresh fits."""
    from dkl4dstem.evaluation.groundtruth import ground_truth_map
    from dkl4dstem.evaluation.reconstruct import fit_subset
    from dkl4dstem.scalarizers import get_scalarizer

    seed = 6
    instrument = open_replay(graphene_path)
    truth = ground_truth_map(instrument.data, get_scalarizer("com_magnitude"), instrument.calibration())
    indices = [int(i) for i in numpy.random.default_rng(seed).choice(truth.size, 40, replace=False)]
    print("seed", seed, "indices", indices)
    prediction, sigma = fit_subset(instrument.survey().image, indices, [float(truth.flat[i]) for i in indices],
                                   seed=seed, iterations=100)
    measured = numpy.zeros(truth.size, dtype=bool)
    measured[indices] = True
    scores = calibration_metrics(prediction, sigma, truth, measured.reshape(truth.shape))
    print(scores)
    assert numpy.all(sigma > 0) and scores["coverage_2sigma"] > 0.7

"""Engine pieces against independent computations: patches, GP posterior, acquisition numerics, model."""
from __future__ import annotations

import math

import gpytorch
import numpy
import pytest
import torch
from scipy.stats import norm

from dkl4dstem.acquisition.functions import CandidateModel, acquisition_values, choose_next
from dkl4dstem.errors import InputError
from dkl4dstem.experiment import ExperimentConfig
from dkl4dstem.posterior.latentgrid import LatentGrid
from dkl4dstem.models.dkl import DKLModel
from dkl4dstem.data.patches import extract_patches
from dkl4dstem.posterior.cache import PosteriorCache
from dkl4dstem.models.schedule import next_refit
from dkl4dstem.models.trainer import BackgroundTrainer
from dkl4dstem.posterior.predictive import Predictive
from dkl4dstem.runtime import pick_device


def test_patches_are_centred_reflected_and_standardized() -> None:
    image = numpy.random.default_rng(0).random((20, 30))
    patches = extract_patches(image, 12)
    assert patches.shape == (600, 144) and patches.dtype == numpy.float32
    padded = numpy.pad(image, ((6, 5), (6, 5)), mode="reflect")
    standardized = (padded - image.mean()) / image.std()
    for y, x in [(0, 0), (7, 9), (19, 29), (10, 0)]:
        expected = standardized[y:y + 12, x:x + 12]
        assert expected[6, 6] == pytest.approx((image[y, x] - image.mean()) / image.std())
        numpy.testing.assert_allclose(patches[y * 30 + x], expected.ravel(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("image, window, message", [
    (numpy.ones((5, 5, 2)), 3, "2D"),
    (numpy.full((8, 8), numpy.nan), 3, "NaN"),
    (numpy.ones((8, 8)), 3, "constant"),
    (numpy.random.default_rng(0).random((8, 8)), 8, "smaller than the survey"),
])
def test_patches_refuse_bad_surveys(image: numpy.ndarray, window: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        extract_patches(image, window)


def _kernel() -> gpytorch.kernels.Kernel:
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2)).double()
    kernel.base_kernel.lengthscale = torch.tensor([[0.7, 1.3]], dtype=torch.float64)
    kernel.outputscale = 1.7
    return kernel.eval()


@pytest.mark.parametrize("storage, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_incremental_posterior_equals_direct_solve(storage: torch.dtype, tolerance: float) -> None:
    torch.manual_seed(0)
    latent = torch.randn(3000, 2, dtype=torch.float64)
    indices = [int(i) for i in numpy.random.default_rng(1).choice(3000, 60, replace=False)]
    targets = numpy.random.default_rng(2).normal(size=60)
    kernel, noise, constant = _kernel(), 0.02, 0.3
    cache = PosteriorCache(kernel, noise, constant, latent, capacity=8, batch_size=1000,  # growth + batching
                           storage_dtype=storage)
    raw = 250.0 + 40.0 * targets  # raw units (e.g. mrad or counts); the cache standardizes at predict time
    cache.add_many(indices[:20], raw[:20])  # from scratch
    cache.add_many(indices[20:45], raw[20:45])  # block update (catching up after a long training)
    for index, value in zip(indices[45:], raw[45:]):  # rank-1 updates (the decision path)
        cache.add(index, value)
    with torch.no_grad():
        k_xx = kernel(latent[indices]).to_dense() + noise * torch.eye(60, dtype=torch.float64)
        k_xs = kernel(latent[indices], latent).to_dense()
        direct_var = kernel(latent, diag=True) - (k_xs * torch.linalg.solve(k_xx, k_xs)).sum(0)
    for target_mean, target_std in [(250.0, 40.0), (raw.mean(), raw.std()), (-3.0, 500.0)]:  # any standardization
        mean, variance = cache.predict(target_mean, target_std)
        standardized = torch.as_tensor((raw - target_mean) / target_std)
        direct_mean = constant + k_xs.T @ torch.linalg.solve(k_xx, standardized - constant)
        torch.testing.assert_close(mean, direct_mean, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(variance, direct_var.clamp_min(1e-12), rtol=tolerance, atol=tolerance)
    assert float(variance[indices].max()) < noise  # measured points are well determined


def test_latent_grid_posterior_matches_the_exact_one() -> None:
    """Large surveys: the posterior computed on a latent grid and interpolated stays close to the exact one."""
    torch.manual_seed(0)
    latent = 3.0 * torch.rand(40000, 2, dtype=torch.float64)
    kernel, noise, constant = _kernel(), 0.02, 0.3
    grid = LatentGrid.build(latent, kernel.base_kernel.lengthscale)
    assert grid is not None and grid.size <= len(latent) / 8
    affine = torch.tensor([0.4, -1.1], dtype=torch.float64)  # multilinear interpolation is exact for affine maps
    torch.testing.assert_close(grid.interpolate(grid.nodes @ affine + 2.0), latent @ affine + 2.0)
    indices = [int(i) for i in numpy.random.default_rng(1).choice(len(latent), 80, replace=False)]
    raw = 5.0 + 2.0 * numpy.random.default_rng(2).normal(size=80)
    caches = [PosteriorCache(kernel, noise, constant, latent, capacity=16, grid=g) for g in (None, grid)]
    for cache in caches:
        cache.add_many(indices[:50], raw[:50])
        cache.add_many(indices[50:70], raw[50:70])
        for index, value in zip(indices[70:], raw[70:]):
            cache.add(index, value)
    (exact_mean, exact_var), (grid_mean, grid_var) = (c.predict(raw.mean(), raw.std()) for c in caches)
    assert float((grid_mean - exact_mean).abs().max()) < 0.015 * float(exact_mean.std())
    assert float((grid_var - exact_var).abs().max()) < 0.001 * 1.7  # 1.7 = the prior variance
    torch.testing.assert_close(caches[1].L[:80, :80], caches[0].L[:80, :80])  # the same GP on the points
    # a thin embedding with one patch thrown far away: its bounding box would need ~600,000 nodes, the occupied cells
    # a few thousand, and the interpolation stays exact for affine maps
    t = torch.rand(40000, dtype=torch.float64)
    curve = torch.stack([10.0 * t, torch.sin(10.0 * t)], dim=1)
    curve[0] = torch.tensor([60.0, 40.0], dtype=torch.float64)
    sparse = LatentGrid.build(curve, torch.ones(2))
    assert sparse is not None and sparse.size <= len(curve) / 8
    torch.testing.assert_close(sparse.interpolate(sparse.nodes @ affine + 2.0), curve @ affine + 2.0)
    # no grid where the exact path is cheap, where the grid would not be much smaller than the candidate set, or in a
    # high-dimensional latent space
    assert LatentGrid.build(latent[:20000], 100 * kernel.base_kernel.lengthscale) is None
    assert LatentGrid.build(latent, kernel.base_kernel.lengthscale / 4) is None
    assert LatentGrid.build(torch.rand(40000, 4, dtype=torch.float64), torch.ones(4)) is None


def test_dense_mll_equals_gpytorch_exact_mll_value_and_gradient() -> None:
    """The training loss must be gpytorch's ExactMarginalLogLikelihood (priors included), only computed faster."""
    rng = numpy.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(40, 25)).astype(numpy.float32))
    y = torch.as_tensor(rng.normal(size=40))
    model = DKLModel(25)
    model.gp.covar_module.register_prior("outputscale_prior", gpytorch.priors.GammaPrior(2.0, 0.5), "outputscale")
    parameters = list(model.net.parameters()) + list(model.gp.parameters())

    def loss_and_gradients(loss: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
        model.optimizer.zero_grad()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in parameters]

    model.gp.train()
    model.likelihood.train()
    z = model.net(x).double()
    model.gp.set_train_data(z, y, strict=False)
    reference, reference_gradients = loss_and_gradients(-model.mll(model.gp(z), y))
    ours, gradients = loss_and_gradients(model.negative_mll(model.net(x).double(), y))
    assert ours == pytest.approx(reference, rel=1e-10)
    for expected, got in zip(reference_gradients, gradients):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
    # the prior really is in both: without it the loss changes
    model.gp.covar_module._priors.clear()
    assert float(model.negative_mll(model.net(x).double(), y).detach()) != pytest.approx(reference, rel=1e-6)


def latent(mean: torch.Tensor, variance: torch.Tensor) -> Predictive:
    """A posterior without observation noise, already in standardized units."""
    return Predictive(mean, variance, noise=0.0, target_mean=0.0, target_std=1.0)


def test_log_ei_matches_closed_form_and_stays_finite_far_away() -> None:
    mean = torch.tensor([0.0, 0.5, 1.0, -30.0, -300.0], dtype=torch.float64)
    variance = torch.tensor([1.0, 0.25, 4.0, 1.0, 1e-6], dtype=torch.float64)
    best, xi = 0.8, 0.01
    values = acquisition_values(latent(mean, variance), best, kind="ei", xi=xi)
    sigma = variance.sqrt().numpy()
    z = (mean.numpy() - best - xi) / sigma
    closed = sigma * (z * norm.cdf(z) + norm.pdf(z))
    numpy.testing.assert_allclose(values.numpy()[:3], numpy.log(closed[:3]), rtol=1e-6)
    assert torch.isfinite(values).all()  # closed form underflows to log(0) = -inf for the last two
    assert values[3] > values[4]  # still ordered far from the incumbent
    # minimizing below -0.5: candidate 4 (mean -300, sigma 1e-3) improves by ~299.5, candidate 3 by ~29.5; the
    # closed form is finite here (z >= -1.5) and the argmax is unique
    minimized = acquisition_values(latent(mean, variance), -0.5, kind="ei", xi=xi, maximize=False)
    z_min = (-0.5 - xi - mean.numpy()) / sigma
    closed_min = sigma * (z_min * norm.cdf(z_min) + norm.pdf(z_min))
    numpy.testing.assert_allclose(minimized.numpy(), numpy.log(closed_min), rtol=1e-6)
    assert int(torch.argmax(minimized)) == 4


def test_ucb_and_uncertainty_are_what_they_say() -> None:
    mean = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    variance = torch.tensor([4.0, 1.0, 0.01], dtype=torch.float64)
    ucb = acquisition_values(latent(mean, variance), 0.0, kind="ucb", beta=4.0)
    torch.testing.assert_close(ucb, mean + 2.0 * variance.sqrt())
    lcb = acquisition_values(latent(mean, variance), 0.0, kind="ucb", beta=4.0, maximize=False)
    torch.testing.assert_close(lcb, -(mean - 2.0 * variance.sqrt()))
    torch.testing.assert_close(acquisition_values(latent(mean, variance), 0.0, kind="uncertainty"), variance.sqrt())
    with pytest.raises(InputError, match="unknown acquisition"):
        acquisition_values(latent(mean, variance), 0.0, kind="pi")


def test_the_predictive_adds_the_noise_and_undoes_the_standardization() -> None:
    """Observation noise only when asked (also through BoTorch's own `observation_noise` argument), in one place;
    the acquisition reads standardized units, the maps the scalar's."""
    mean = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    variance = torch.tensor([4.0, 1.0, 0.01], dtype=torch.float64)
    predictive = Predictive(mean, variance, noise=0.5, target_mean=10.0, target_std=3.0)
    with_noise = acquisition_values(predictive, 0.0, kind="uncertainty", observation_noise=True)
    without = acquisition_values(predictive, 0.0, kind="uncertainty", observation_noise=False)
    torch.testing.assert_close(with_noise, (variance + 0.5).sqrt())
    torch.testing.assert_close(without, variance.sqrt())
    X = torch.arange(3, dtype=torch.float64).reshape(-1, 1, 1)
    asked = CandidateModel(predictive, observation_noise=False).posterior(X, observation_noise=True)
    torch.testing.assert_close(asked.variance.reshape(-1), variance + 0.5)
    torch.testing.assert_close(predictive.mean_in_units(), mean * 3.0 + 10.0)
    torch.testing.assert_close(predictive.variance_in_units(observation_noise=True), (variance + 0.5) * 9.0)
    assert predictive.standardize(16.0) == 2.0
    # EI's incumbent is given in the scalar's units and standardized with the posterior's own standardization
    torch.testing.assert_close(acquisition_values(predictive, 16.0, kind="ei", xi=0.0),
                               acquisition_values(latent(mean, variance + 0.5), 2.0, kind="ei", xi=0.0))


def test_choose_next_never_picks_measured_or_excluded() -> None:
    values = torch.tensor([5.0, 4.0, float("nan"), 1.0])
    blocked = numpy.array([True, True, False, False])
    assert choose_next(values, blocked) == 3
    assert choose_next(values, numpy.ones(4, dtype=bool)) is None


def test_model_is_deterministic_for_a_seed_and_learns_a_structure_map() -> None:
    rng = numpy.random.default_rng(0)
    yy, xx = numpy.mgrid[0:24, 0:24]
    survey = numpy.sin(xx / 2.0) + numpy.cos(yy / 3.0) + 0.05 * rng.normal(size=(24, 24))
    patches = extract_patches(survey, 6)
    target = survey.reshape(-1) ** 2  # a function of local structure
    indices = [int(i) for i in rng.choice(576, 80, replace=False)]
    config = ExperimentConfig(window=6, seeds=80, steps=0)
    predictions = []
    for _ in range(2):
        trainer = BackgroundTrainer(patches, config)
        trainer.fit_now(indices, list(target[indices]), iterations=150)
        posterior = trainer.take_result(wait=True)
        assert posterior is not None
        predictions.append(posterior.predict(target[indices]).mean_in_units().numpy())
    numpy.testing.assert_array_equal(predictions[0], predictions[1])
    unseen = numpy.setdiff1d(numpy.arange(576), indices)
    correlation = numpy.corrcoef(predictions[0][unseen], target[unseen])[0, 1]
    assert correlation > 0.8


@pytest.mark.parametrize("live", [True, False], ids=["live", "replay"])
def test_live_training_conditions_on_points_measured_while_it_ran(live: bool) -> None:
    """Live mode: the trainer, not the decision path, adds the points that arrived during its round."""
    rng = numpy.random.default_rng(3)
    survey = rng.random((20, 20))
    patches = extract_patches(survey, 6)
    target = survey.reshape(-1)
    order = [int(i) for i in rng.permutation(400)[:45]]
    indices, values = order[:40], [float(target[i]) for i in order[:40]]
    config = ExperimentConfig(window=6, seeds=40, steps=10, update_iterations=60, wait_for_training=not live)
    trainer = BackgroundTrainer(patches, config)  # 60 iterations: a round far longer than 5 appends
    trainer.start(indices, values)  # the loop's own lists: trains on a copy of the 40 ...
    for i in order[40:]:  # ... while the loop measures 5 more
        indices.append(i)
        values.append(float(target[i]))
    posterior = trainer.take_result(wait=True)
    assert posterior is not None
    assert posterior.cache.n == (45 if live else 40)
    posterior.catch_up(indices, values)  # whatever is left is the loop's, and nothing is added twice
    assert sorted(posterior.cache.indices) == sorted(order)
    trainer.close()


def test_failed_training_rolls_back() -> None:
    model = DKLModel(16, seed=0)
    before = [p.detach().clone() for p in model.net.parameters()]
    with pytest.warns(RuntimeWarning, match="rolled back"):
        report = model.fit(numpy.zeros((5, 16), numpy.float32), numpy.array([0, 1, math.nan, 2, 3.0]), 5)
    assert report.failed
    for old, new in zip(before, model.net.parameters()):
        torch.testing.assert_close(old, new.detach())


def test_refit_round_restarts_from_the_initial_weights() -> None:
    """Every refit_every points the trainer trains from the initial weights: the same model a fresh start would give."""
    rng = numpy.random.default_rng(5)
    survey = rng.random((16, 16))
    patches = extract_patches(survey, 4)
    target = survey.reshape(-1) ** 2
    config = ExperimentConfig(window=4, seeds=6, steps=10, refit_every=10, refit_iterations=30, update_iterations=5)
    trainer = BackgroundTrainer(patches, config)
    indices = [int(i) for i in rng.permutation(256)[:12]]
    values = [float(target[i]) for i in indices]
    trainer.fit_now(indices[:6], values[:6], iterations=40)
    trainer.start(indices[:8], values[:8])  # an update round: warm start
    assert trainer.take_result(wait=True) is not None
    trained = [p.detach().clone() for p in trainer.model.net.parameters()]
    trainer.start(indices[:10], values[:10])  # 10 points: a refit, from the initial weights
    assert trainer.take_result(wait=True) is not None
    fresh = DKLModel(patches.shape[1], seed=config.seed)
    y = numpy.array(values[:10])
    fresh.fit(patches[indices[:10]], (y - y.mean()) / y.std(), 30)
    for expected, got, warm in zip(fresh.net.parameters(), trainer.model.net.parameters(), trained):
        torch.testing.assert_close(got.detach(), expected.detach())
        assert not torch.allclose(got.detach(), warm)
    trainer.close()


def test_refits_every_25_points_then_as_the_data_grows_by_a_fifth() -> None:
    def boundaries(config: ExperimentConfig, until: int) -> list[int]:
        found, n = [], 10
        while n < until:
            n = next_refit(n, config)
            found.append(n)
        return found

    assert boundaries(ExperimentConfig(), 520) == [25, 50, 75, 100, 125, 150, 180, 216, 260, 312, 375, 450, 540]
    assert boundaries(ExperimentConfig(refit_growth=0.0), 200) == list(range(25, 201, 25))
    # live mode: a round may start past a boundary; the next refit follows from where it happened
    assert next_refit(60, ExperimentConfig()) == 75 and next_refit(300, ExperimentConfig()) == 360


def test_failed_restart_keeps_the_trained_model() -> None:
    model = DKLModel(16, seed=0)
    x = numpy.random.default_rng(1).normal(size=(8, 16)).astype(numpy.float32)
    model.fit(x, numpy.linspace(-1, 1, 8), 20)
    trained = [p.detach().clone() for p in model.net.parameters()]
    with pytest.warns(RuntimeWarning, match="rolled back"):
        report = model.fit(x, numpy.array([0, 1, math.nan, 2, 3, 4, 5, 6.0]), 5, from_initial=True)
    assert report.failed
    for old, new in zip(trained, model.net.parameters()):
        torch.testing.assert_close(old, new.detach())


def test_trainer_thread_sets_its_own_torch_threads(monkeypatch) -> None:
    """A new thread does not inherit the main thread's setting: the trainer's thread must apply the policy itself."""
    monkeypatch.setenv("DKL4DSTEM_THREADS", "1")
    survey = numpy.random.default_rng(0).random((16, 16))
    trainer = BackgroundTrainer(extract_patches(survey, 4), ExperimentConfig(window=4, seeds=20, steps=5))
    seen: list[int] = []
    fit = trainer.model.fit
    monkeypatch.setattr(trainer.model, "fit", lambda *args, **kwargs: seen.append(torch.get_num_threads())
                        or fit(*args, **kwargs))
    main_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the loop's thread with another setting than the policy's
    try:
        trainer.start(list(range(20)), list(survey.reshape(-1)[:20]))
        assert trainer.take_result(wait=True) is not None
    finally:
        torch.set_num_threads(main_threads)
    assert seen == [1]


def test_device_is_cuda_exactly_when_torch_reports_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pick_device` follows torch's own answer (the seam patched here is torch's, not ours); an explicit device wins;
    without CUDA the model's parameters live on the CPU, the network in float32 and the GP in float64."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    model = DKLModel(16)
    assert model.device == torch.device("cpu")
    assert {p.device.type for p in [*model.net.parameters(), *model.gp.parameters()]} == {"cpu"}
    assert next(model.net.parameters()).dtype == torch.float32
    assert model.gp.covar_module.raw_outputscale.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_model_runs_on_cuda_when_present() -> None:
    """On a GPU machine the default model trains and embeds on the GPU."""
    model = DKLModel(16)
    assert next(model.net.parameters()).device.type == "cuda"
    x = numpy.random.default_rng(1).normal(size=(12, 16)).astype(numpy.float32)
    report = model.fit(x, numpy.linspace(-1, 1, 12), 5)
    assert not report.failed and math.isfinite(report.loss)
    assert model.embed(x).device.type == "cuda"

"""One synchronous fit: train the DKL on the measured points, embed every candidate, factorize the GP.

The background trainer runs it on its thread after each decision; `evaluation.reconstruct` calls it directly.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import typing

import numpy
import torch

from dkl4dstem.models.dkl import DKLModel
from dkl4dstem.posterior.cache import PosteriorCache
from dkl4dstem.posterior.latentgrid import LatentGrid
from dkl4dstem.posterior.predictive import standardization
from dkl4dstem.posterior.recalibration import loo_variance_scale
from dkl4dstem.posterior.trained import TrainedPosterior, new_points

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig

logger = logging.getLogger(__name__)

Live = tuple[list[int], list[float]]


@dataclasses.dataclass
class Fit:
    model: DKLModel
    posterior: TrainedPosterior | None  # None: cancelled, or the GP could not be factorized (see failures)
    failures: list[str]


def new_model(input_dim: int, config: ExperimentConfig) -> DKLModel:
    return DKLModel(input_dim, latent_dim=config.latent_dim, hidden=config.hidden,
                    learning_rate=config.learning_rate, seed=config.seed, device=config.device)


def fit(patches: numpy.ndarray, indices: typing.Sequence[int], values: typing.Sequence[float],
        config: ExperimentConfig, *, iterations: int, model: DKLModel | None = None,
        init_state: dict[str, typing.Any] | None = None, from_initial: bool = False, refit: bool = True,
        capacity: int | None = None, should_stop: typing.Callable[[], bool] | None = None,
        live: Live | None = None) -> Fit:
    """Train `model` (a new one from `config`, with `init_state` when given) on the points with a finite value.

    `patches` are every candidate's (rows past the survey's: a transferred run's prior points), `indices` rows of
    it. The posterior can hold `capacity` points before it grows (default: every point the run will measure).
    `live`: the loop's growing lists, read again at the end to condition on the points measured meanwhile.
    Raises only on unforeseen errors; a rolled-back training or a failed factorization is in `failures`.
    """
    start = time.perf_counter()
    if model is None:
        model = new_model(patches.shape[1], config)
        if init_state is not None:
            model.load_state(init_state)
    stop = should_stop or (lambda: False)
    train_indices, train_values = new_points(indices, values, known=())
    targets = numpy.array(train_values, dtype=numpy.float64)
    target_mean, target_std = standardization(targets)
    failures: list[str] = []
    if iterations > 0:
        report = model.fit(patches[train_indices], (targets - target_mean) / target_std, iterations,
                           should_stop=stop, from_initial=from_initial)
        if report.failed:
            failures.append(report.failed)
    if stop():
        return Fit(model, None, failures)
    latent = model.embed(patches)
    grid = LatentGrid.build(latent, model.lengthscale) if config.latent_grid else None
    cache = PosteriorCache(model.kernel(), model.noise, model.mean_constant, latent,
                           capacity or config.seeds + config.steps + 1, grid=grid)
    try:
        cache.add_many(train_indices, train_values)
        k = len(train_indices)
        residual = torch.as_tensor((targets - target_mean) / target_std - cache.mean_constant, device=cache.L.device)
        loo_scale = loo_variance_scale(cache.L[:k, :k], residual)
        if live is not None:
            catch_up_live(cache, live, stop)
    except torch.linalg.LinAlgError as exc:  # the caller keeps its previous posterior
        failures.append(f"posterior factorization failed: {exc}")
        logger.warning("GP factorization failed after training; the previous model stays in use: %s", exc)
        return Fit(model, None, failures)
    return Fit(model, TrainedPosterior(cache, 0, time.perf_counter() - start, refit=refit, loo_scale=loo_scale),
               failures)


def catch_up_live(cache: PosteriorCache, live: Live, should_stop: typing.Callable[[], bool]) -> None:
    """Live mode: condition the new posterior here on the points measured while it trained.

    Otherwise the loop would do it on the decision path: at 512 x 512 candidates a round takes seconds, tens of
    points arrive meanwhile, and their block update (k n N) made one step several times slower. Repeated passes,
    because points keep arriving during each (each pass is shorter); the loop adds the last one or two (a few more
    only if catching up is slower than measuring, hence the cap on passes). Replay mode waits for the trainer
    anyway and keeps the loop doing it, so its results do not depend on thread timing.
    """
    live_indices, live_values = live
    for _ in range(8):
        if should_stop():
            return
        n = min(len(live_indices), len(live_values))  # the loop appends to both; read a consistent prefix
        missing, missing_values = new_points(live_indices[:n], live_values[:n], set(cache.indices))
        if len(missing) < 2:
            return
        try:
            cache.add_many(missing, missing_values)
        except torch.linalg.LinAlgError:  # nothing was added; the loop's rank-1 catch-up cannot fail
            return

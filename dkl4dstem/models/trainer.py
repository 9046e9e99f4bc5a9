"""Network training off the decision path.

The trainer owns the DKL model. After each decision the loop hands it a snapshot of the measured data; a
background thread runs a few warm-start Adam steps (now and then a fuller refit from the initial weights, see
`next_refit`), re-embeds all candidates once, factorizes the GP and publishes a `TrainedPosterior`. The loop
swaps that in before its next decision and conditions it on the points measured meanwhile.
"""
from __future__ import annotations

import copy
import logging
import math
import threading
import time
import typing

import numpy
import torch

from dkl4dstem.posterior.latentgrid import LatentGrid
from dkl4dstem.models.dkl import DKLModel, snapshot
from dkl4dstem.posterior.cache import PosteriorCache
from dkl4dstem.posterior.recalibration import loo_variance_scale
from dkl4dstem.runtime import configure_threads

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig

logger = logging.getLogger(__name__)


def standardization(values: numpy.ndarray) -> tuple[float, float]:
    mean = float(values.mean()) if values.size else 0.0
    std = float(values.std()) if values.size > 1 else 1.0
    return mean, (std if std > 1e-12 * max(1.0, abs(mean)) else 1.0)


def new_points(indices: typing.Sequence[int], values: typing.Sequence[float], known: typing.Container[int]
               ) -> tuple[list[int], list[float]]:
    """The measured points with a usable value that the posterior is not yet conditioned on."""
    pairs = [(i, v) for i, v in zip(indices, values) if i not in known and math.isfinite(v)]
    return [i for i, _ in pairs], [v for _, v in pairs]


def next_refit(n: int, config: ExperimentConfig) -> int:
    """The data-set size of the first refit after one at n points.

    Every `refit_every` points while n is small; once that is less than `refit_growth` of the data, when the data
    grew by that fraction: a refit from the initial weights is 200 Adam iterations of O(n^3) (6-9 s at n = 500 on
    the 2-core box) while 25 new points then change the data by only 5%, and a fixed interval made replay's mean
    step at 512², n = 500 exceed a second (RESULTS.md, latency). By default: 25, 50, ..., 125, then 150, 180, 216...
    """
    every = config.refit_every
    step = refit_interval(n, config)
    return (n // every + 1) * every if step == every else n + step


def refit_interval(n: int, config: ExperimentConfig) -> int:
    """Points between refits around a data set of n points."""
    return max(config.refit_every, math.ceil(config.refit_growth * n))


class TrainedPosterior:
    """A trained model's frozen kernel + embedding, conditioned incrementally on measured points."""

    def __init__(self, cache: PosteriorCache, version: int, training_seconds: float, refit: bool = False,
                 loo_scale: float = 1.0) -> None:
        self.cache = cache
        self.version = version
        self.training_seconds = training_seconds
        self.refit = refit  # trained afresh (first fit or a refit): the loop's map model until the next one
        self.loo_scale = loo_scale  # mean squared leave-one-out z-score on its training points (in-sample)
        self._in_cache: set[int] = set(cache.indices)

    def catch_up(self, indices: typing.Sequence[int], values: typing.Sequence[float]) -> None:
        missing, missing_values = new_points(indices, values, self._in_cache)
        try:
            self.cache.add_many(missing, missing_values)
        except torch.linalg.LinAlgError:  # block factor not PD numerically (nothing was added): rank-1 updates
            for index, value in zip(missing, missing_values):  # clamp and cannot fail
                self.cache.add(index, value)
        self._in_cache.update(missing)

    @property
    def noise(self) -> float:
        """The trained observation-noise variance, in the same standardized units as `predict`'s variance."""
        return self.cache.noise

    def predict(self, finite_values: numpy.ndarray) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        """Mean and latent variance in standardized units, plus the standardization (mean, std) of the values."""
        target_mean, target_std = standardization(finite_values)
        mean, variance = self.cache.predict(target_mean, target_std)
        return mean, variance, target_mean, target_std


class BackgroundTrainer:
    def __init__(self, patches: numpy.ndarray, config: ExperimentConfig,
                 prior: tuple[list[int], list[float]] | None = None) -> None:
        self.patches = patches
        self.prior = prior or ([], [])  # an earlier run's points (rows of `patches` past the survey's: transfer.py)
        self.config = config
        self.model = DKLModel(patches.shape[1], latent_dim=config.latent_dim, hidden=config.hidden,
                              learning_rate=config.learning_rate, seed=config.seed, device=config.device)
        self.capacity = config.seeds + config.steps + 1
        self._thread: threading.Thread | None = None
        self._result: TrainedPosterior | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._version = 0
        self._trained_count = -1
        self._next_refit = next_refit(0, config)
        self._state = snapshot(self.model.state())
        self._live: tuple[list[int], list[float]] | None = None
        self.failures: list[str] = []

    def _round_for(self, n: int) -> tuple[int, bool, bool]:
        """(Adam iterations, restart from the initial weights, is a refit) for a round on n points."""
        if n >= self._next_refit:
            self._next_refit = next_refit(n, self.config)
            return self.config.refit_iterations, self.config.refit_from_initial, True
        return self.config.update_iterations, False, False

    def _train_in_background(self, indices: list[int], values: list[float], iterations: int,
                             from_initial: bool, refit: bool) -> None:
        """The round on its own thread, which must set its torch thread count itself (see `configure_threads`).

        The same policy as the loop's, also in replay where the loop waits: giving the trainer every core there
        was faster on an idle 2-core box (512 x 512, n = 500: 0.55 instead of ~0.8 s a round) but 3x slower as
        soon as anything else ran (graphene replay beside two other processes: 0.16 -> 0.54 s per step).
        """
        configure_threads()
        self._train(indices, values, iterations, from_initial, refit)

    def _train(self, indices: list[int], values: list[float], iterations: int, from_initial: bool = False,
               refit: bool = False) -> None:
        """Never raises: a failed training keeps the previous posterior and is logged (the loop goes on)."""
        try:
            self._train_unguarded(indices, values, iterations, from_initial, refit)
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            logger.warning("background DKL training failed; the previous model stays in use: %s", exc,
                           exc_info=True)

    def _train_unguarded(self, indices: list[int], values: list[float], iterations: int, from_initial: bool,
                         refit: bool) -> None:
        start = time.perf_counter()
        train_indices, train_values = new_points([*self.prior[0], *indices], [*self.prior[1], *values], known=())
        targets = numpy.array(train_values, dtype=numpy.float64)
        target_mean, target_std = standardization(targets)
        if iterations > 0:
            report = self.model.fit(self.patches[train_indices], (targets - target_mean) / target_std, iterations,
                                    should_stop=self._cancel.is_set, from_initial=from_initial)
            if report.failed:
                self.failures.append(report.failed)
        if self._cancel.is_set():
            return
        latent = self.model.embed(self.patches)
        grid = LatentGrid.build(latent, self.model.lengthscale) if self.config.latent_grid else None
        cache = PosteriorCache(self.model.kernel(), self.model.noise, self.model.mean_constant, latent, self.capacity,
                               grid=grid)
        try:
            cache.add_many(train_indices, train_values)
            k = len(train_indices)
            residual = torch.as_tensor((targets - target_mean) / target_std - cache.mean_constant, device=cache.L.device)
            loo_scale = loo_variance_scale(cache.L[:k, :k], residual)
            self._catch_up_live(cache)
        except torch.linalg.LinAlgError as exc:  # keep the previous posterior rather than stop the experiment
            self.failures.append(f"posterior factorization failed: {exc}")
            logger.warning("GP factorization failed after training; the previous model stays in use: %s", exc)
            return
        with self._lock:
            self._version += 1
            self._state = snapshot(self.model.state())
            self._result = TrainedPosterior(cache, self._version, time.perf_counter() - start, refit=refit,
                                            loo_scale=loo_scale)

    def _catch_up_live(self, cache: PosteriorCache) -> None:
        """Live mode: condition the new posterior here on the points measured while it trained.

        Otherwise the loop would do it on the decision path: at 512 x 512 candidates a round takes ~10 s, ~50 points
        arrive meanwhile, and their block update (k n N) made one step take 2.6 s instead of 0.2 s. Repeated passes,
        because points keep arriving during each (each pass is shorter); the loop adds the last one or two (a few
        more only if catching up is slower than measuring, hence the cap on passes). Replay mode waits for the
        trainer anyway and keeps the loop doing it, so its results do not depend on thread timing.
        """
        if self._live is None or self.config.wait_for_training:
            return
        live_indices, live_values = self._live
        for _ in range(8):
            if self._cancel.is_set():
                return
            n = min(len(live_indices), len(live_values))  # the loop appends to both; read a consistent prefix
            missing, missing_values = new_points(live_indices[:n], live_values[:n], set(cache.indices))
            if len(missing) < 2:
                return
            try:
                cache.add_many(missing, missing_values)
            except torch.linalg.LinAlgError:  # nothing was added; the loop's rank-1 catch-up cannot fail
                return

    def start_pretraining(self, method: str | None = None) -> None:
        """Self-supervised pre-training on the survey (pretrain.py) on the training thread, e.g. while the seed
        points are measured; the next round (`fit_now` joins) starts from its weights, and so does every refit."""
        from dkl4dstem.models import pretrain

        def run() -> None:
            configure_threads()
            try:
                pretrain.pretrain(self.model, self.patches, seed=self.config.seed,
                                  method=method or pretrain.DEFAULT_METHOD, should_stop=self._cancel.is_set)
                self.model.mark_initial()
                with self._lock:
                    self._state = snapshot(self.model.state())
            except Exception as exc:  # the random initial weights stay; the experiment goes on
                self.failures.append(f"pre-training failed: {type(exc).__name__}: {exc}")
                logger.warning("pre-training failed; training starts from random weights: %s", exc, exc_info=True)

        self.join()
        self._thread = threading.Thread(target=run, name="dkl4dstem-pretraining", daemon=True)
        self._thread.start()

    def fit_now(self, indices: list[int], values: list[float], iterations: int) -> None:
        self.join()
        self._trained_count = len(indices)
        self._next_refit = next_refit(len(indices), self.config)
        self._train(list(indices), list(values), iterations, refit=True)

    def start(self, indices: list[int], values: list[float]) -> None:
        """Train on a snapshot in the background unless a training is running or nothing new was measured.

        `indices` and `values` are the loop's own growing lists: the training uses a copy taken now, and in live
        mode reads them again at the end to catch up on what was measured meanwhile (`_catch_up_live`).
        """
        self._live = (indices, values)
        if (self._thread is not None and self._thread.is_alive()) or len(indices) == self._trained_count:
            return
        self._trained_count = len(indices)
        iterations, from_initial, refit = self._round_for(len(indices))
        self._thread = threading.Thread(target=self._train_in_background,
                                        args=(list(indices), list(values), iterations, from_initial, refit),
                                        name="dkl4dstem-training", daemon=True)
        self._thread.start()

    def take_result(self, wait: bool) -> TrainedPosterior | None:
        if wait:
            self.join()
        with self._lock:
            result, self._result = self._result, None
        return result

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def state(self) -> dict[str, typing.Any]:
        with self._lock:
            return self._state

    def load_state(self, state: dict[str, typing.Any]) -> None:
        self.join()
        self.model.load_state(state)
        self._state = copy.deepcopy(state)

    def cancel(self) -> None:
        """Ask a running training to stop at its next Adam iteration (a Stop must not wait for a refit)."""
        self._cancel.set()

    def close(self) -> None:
        self.cancel()
        self.join()

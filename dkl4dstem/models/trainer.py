"""Network training off the decision path: `models.fit` on a background thread.

The trainer owns the run's DKL model. After each decision the loop hands it a snapshot of the measured data; its
thread runs one round (`schedule.RefitSchedule`: a few warm-start Adam steps, now and then a refit from the initial
weights) through `fit.fit` and publishes the `TrainedPosterior`. The loop swaps that in before its next decision
and conditions it on the points measured meanwhile.
"""
from __future__ import annotations

import copy
import logging
import threading
import typing

import numpy

from dkl4dstem.models import fit as fitting
from dkl4dstem.models.dkl import snapshot
from dkl4dstem.models.schedule import RefitSchedule, Round
from dkl4dstem.posterior.trained import TrainedPosterior
from dkl4dstem.runtime import configure_threads

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig

logger = logging.getLogger(__name__)


class BackgroundTrainer:
    def __init__(self, patches: numpy.ndarray, config: ExperimentConfig,
                 prior: tuple[list[int], list[float]] | None = None) -> None:
        self.patches = patches
        self.prior = prior or ([], [])  # an earlier run's points (rows of `patches` past the survey's: transfer.py)
        self.config = config
        self.model = fitting.new_model(patches.shape[1], config)
        self.capacity = config.seeds + config.steps + 1
        self.schedule = RefitSchedule(config)
        self._thread: threading.Thread | None = None
        self._result: TrainedPosterior | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._version = 0
        self._trained_count = -1
        self._state = snapshot(self.model.state())
        self._live: fitting.Live | None = None
        self.failures: list[str] = []

    def _train_in_background(self, indices: list[int], values: list[float], round_: Round) -> None:
        """The round on its own thread, which must set its torch thread count itself (see `configure_threads`).

        The same policy as the loop's, also in replay where the loop waits: giving the trainer every core was
        faster on an idle box but several times slower as soon as anything else ran (RESULTS.md, latency).
        """
        configure_threads()
        self._train(indices, values, round_)

    def _train(self, indices: list[int], values: list[float], round_: Round) -> None:
        """Never raises: a failed training keeps the previous posterior and is logged (the loop goes on)."""
        live = None if self.config.wait_for_training else self._live
        try:
            result = fitting.fit(self.patches, [*self.prior[0], *indices], [*self.prior[1], *values], self.config,
                                 iterations=round_.iterations, model=self.model, from_initial=round_.from_initial,
                                 refit=round_.refit, capacity=self.capacity, should_stop=self._cancel.is_set,
                                 live=live)
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            logger.warning("background DKL training failed; the previous model stays in use: %s", exc,
                           exc_info=True)
            return
        self.failures += result.failures
        if result.posterior is None:
            return
        with self._lock:
            self._version += 1
            result.posterior.version = self._version
            self._state = snapshot(self.model.state())
            self._result = result.posterior

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
        """A fit on this thread (the first one, on the seed points); its result is taken with `take_result`."""
        self.join()
        self._trained_count = len(indices)
        self.schedule.fitted(len(indices))
        self._train(list(indices), list(values), Round(iterations, False, True))

    def start(self, indices: list[int], values: list[float]) -> None:
        """Train on a snapshot in the background unless a training is running or nothing new was measured.

        `indices` and `values` are the loop's own growing lists: the training uses a copy taken now, and in live
        mode reads them again at the end to catch up on what was measured meanwhile (`fit.catch_up_live`).
        """
        self._live = (indices, values)
        if (self._thread is not None and self._thread.is_alive()) or len(indices) == self._trained_count:
            return
        self._trained_count = len(indices)
        round_ = self.schedule.round_for(len(indices))
        self._thread = threading.Thread(target=self._train_in_background,
                                        args=(list(indices), list(values), round_),
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

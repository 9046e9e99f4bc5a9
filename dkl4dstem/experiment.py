"""The automated experiment: K random seed points, then N steps chosen by the DKL model.

Per step: measure -> scalarize -> write to the session file -> condition the GP on the new point with the current
embedding (cheap, `PosteriorCache.add`) -> acquisition -> next position. Network training runs on a background
thread (`trainer.BackgroundTrainer`) on a snapshot of the data and is swapped in when ready, so the microscope never
waits for it; with `wait_for_training` (replay default) the loop waits for it before the next decision, which
makes a run reproducible for a given seed.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import typing
import warnings

import numpy
import torch

from dkl4dstem import acquisition as acquisition_module, mapmodel, preflight
from dkl4dstem.config import ExperimentConfig
from dkl4dstem.diffraction import DetectorCalibration, Measurement
from dkl4dstem.errors import InputError, InstrumentError, ModelError, StorageError
from dkl4dstem.instrument import Instrument
from dkl4dstem.mapping import FeatureSpaceDesign
from dkl4dstem.patches import extract_patches, position_of
from dkl4dstem.recalibration import PrequentialCalibration
from dkl4dstem.scalarizers import Scalarizer, get_scalarizer
from dkl4dstem.session import SessionData, SessionWriter, resume_differences
from dkl4dstem.survey import validate_survey
from dkl4dstem.trainer import BackgroundTrainer, TrainedPosterior, standardization
from dkl4dstem.watchdog import CameraNotResponding, TimedMeasure
from dkl4dstem.transfer import TransferModel, load_transfer, restandardize, write_standardization

__all__ = ["Experiment", "ExperimentConfig", "ExperimentResult", "StepEvent"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class StepEvent:
    step: int
    phase: str
    position: tuple[int, int]
    value: float
    next_position: tuple[int, int] | None
    prediction: numpy.ndarray | None   # (H, W) the map model's mean, scalar units; None while seeding
    uncertainty: numpy.ndarray | None  # (H, W) calibrated 1 sigma of a measurement there, scalar units (`units`)
    acquisition: numpy.ndarray | None
    decision_seconds: float
    training_seconds: float
    instrument_seconds: float
    step_seconds: float
    n_measured: int
    n_total: int
    best_value: float
    best_position: tuple[int, int] | None
    units: str
    model_version: int = 0
    excluded: bool = False  # the position's frames all failed: not measured, not counted in n_measured


@dataclasses.dataclass
class ExperimentResult:
    visited: list[tuple[int, int]]
    values: list[float]
    phases: list[str]
    best_value: float
    best_position: tuple[int, int] | None
    decision_seconds: list[float]
    step_seconds: list[float]
    training_seconds: list[float]
    instrument_seconds: list[float]
    prediction: numpy.ndarray | None
    uncertainty: numpy.ndarray | None
    acquisition: numpy.ndarray | None
    stopped: bool
    error: str | None
    units: str
    n_candidates: int
    excluded: list[tuple[int, int]]


class Experiment:
    def __init__(self, instrument: Instrument, config: ExperimentConfig, *, session_path: str | None = None,
                 exclude_mask: numpy.ndarray | None = None, on_event: typing.Callable[[StepEvent], None] | None = None,
                 resume: SessionData | None = None, session_settings: dict[str, typing.Any] | None = None) -> None:
        self.instrument = instrument
        self.config = config
        self.session_path = session_path
        self.exclude_mask = exclude_mask
        self.on_event = on_event
        self.resume_data = resume
        self.session_settings = session_settings or {}  # e.g. the data path, so a resume needs nothing else
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._current: _Run | None = None
        self._forced: list[tuple[int, int]] = []  # force_next() queue, taken in order before the model's choice
        self._forced_lock = threading.Lock()
        self.forced_measured: list[tuple[int, int]] = []  # the forced positions measured, in order

    # --- control, thread safe --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        run = self._current
        if run is not None:  # a stop must not wait for a long (re)fit: cancel it (checked every Adam iteration)
            run.trainer.cancel()

    def force_next(self, y: int, x: int) -> None:
        """Measure survey pixel (y, x) next, before the model's choice (a user's click); thread safe.

        Honoured at the next measurement (seed or step); a point measured or excluded meanwhile is skipped."""
        y, x = int(y), int(x)
        run = self._current
        shape = (run.height, run.width) if run is not None else None
        if y < 0 or x < 0 or (shape is not None and (y >= shape[0] or x >= shape[1])):
            raise InputError(f"forced point ({y}, {x}) is outside the survey{f' {shape[0]}x{shape[1]}' if shape else ''}")
        if run is not None and run.blocked[y * run.width + x]:
            raise InputError(f"({y}, {x}) is already measured or excluded")
        with self._forced_lock:
            self._forced.append((y, x))

    def _pop_forced(self) -> tuple[int, int] | None:
        with self._forced_lock:
            return self._forced.pop(0) if self._forced else None

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> ExperimentResult:
        """Blocking. The instrument is closed (camera stopped, probe released) on every exit path."""
        try:
            run = _Run(self)
            self._current = run
            if self.stopped:  # stop() arrived while the run was being set up
                run.trainer.cancel()
            return run.execute()
        finally:
            self._current = None
            self.instrument.close()


class _Run:
    """State of one run; kept apart from `Experiment` so the public object stays a small control surface."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.config = experiment.config
        self.instrument = experiment.instrument
        survey = self.instrument.survey()
        self.survey_image = validate_survey(survey.image, self.config.window)
        self.height, self.width = self.survey_image.shape
        self.n_candidates = self.height * self.width
        self.calibration: DetectorCalibration = self.instrument.calibration()
        self.scalarizer: Scalarizer = get_scalarizer(self.config.scalarizer, **self.config.scalarizer_params)
        self.units = self.scalarizer.units_for(self.calibration)
        self.blocked = numpy.zeros(self.n_candidates, dtype=bool)  # measured or excluded
        if experiment.exclude_mask is not None:
            mask = numpy.asarray(experiment.exclude_mask, dtype=bool)
            if mask.shape != (self.height, self.width):
                raise InputError(f"exclude mask shape {mask.shape} does not match the survey {self.height}x{self.width}")
            self.blocked |= mask.reshape(-1)
        self.config.validate((self.height, self.width), int(self.blocked.sum()))
        # every frame must have this shape; when nothing tells it beforehand, the first good frame sets it
        self._pattern_shape: tuple[int, ...] | None = self._known_detector_shape()
        preflight.check_before_dose(self.scalarizer, self.calibration, self._pattern_shape)
        timeout_s = self.config.measure_timeout_s or getattr(self.instrument, "measure_timeout_s", None)
        self._timed_measure = TimedMeasure(self.instrument.measure, timeout_s)
        if experiment.resume_data is not None:
            self._check_resume(experiment.resume_data)
        self.patches = extract_patches(self.survey_image, self.config.window)
        self.indices: list[int] = []
        self.values: list[float] = []
        self.phases: list[str] = []
        self.excluded: list[int] = []
        self._excluded_set: set[int] = set()
        self.timings: dict[str, list[float]] = {"decision": [], "step": [], "training": [], "instrument": []}
        self.posterior: TrainedPosterior | None = None
        self.map_posterior: TrainedPosterior | None = None  # the last fresh fit: prediction and uncertainty maps
        self.recalibration = PrequentialCalibration()
        self.design: FeatureSpaceDesign | None = None  # --acquisition map
        self.survey_map = mapmodel.for_run(self.config, self.survey_image, self.patches, self.n_candidates)
        self.maps: tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray] | None = None
        self.writer: SessionWriter | None = None
        self.transfer: TransferModel | None = None
        self.trainer = self._new_trainer()
        self.error: str | None = None
        self._failures = 0  # consecutive positions whose frames all failed

    def _new_trainer(self) -> BackgroundTrainer:
        """With `init_from` (transfer.py): the earlier run's model as initial weights, its points as prior data
        (rows of the patch array past the survey's, never candidates). Checked here, before any dose."""
        if not self.config.init_from:
            return BackgroundTrainer(self.patches, self.config)
        self.transfer = load_transfer(self.config.init_from, self.config)
        restandardize(self.patches, self.survey_image, self.transfer)  # as the network learned them
        n_prior = len(self.transfer.values)
        self.patches = numpy.concatenate([self.patches, self.transfer.patches])
        prior = (list(range(self.n_candidates, self.n_candidates + n_prior)), self.transfer.values.tolist())
        trainer = BackgroundTrainer(self.patches, self.config, prior)
        trainer.load_state(self.transfer.state)
        trainer.model.mark_initial()
        return trainer

    def _with_prior(self, values: numpy.ndarray) -> numpy.ndarray:
        """The values the targets are standardized over: this run's plus a transferred run's."""
        return values if self.transfer is None else numpy.concatenate([self.transfer.values, values])

    @property
    def total(self) -> int:
        return self.config.seeds + self.config.steps

    def execute(self) -> ExperimentResult:
        try:
            self._open_session()
            if self.config.pretrain and self.transfer is None:  # on the training thread while seeds are measured
                self.trainer.start_pretraining()
            self._replay_resumed()
            self._run_seeds()
            self._run_steps()
        except (InstrumentError, InputError, ModelError, StorageError) as exc:
            self.error = str(exc)
            logger.error("experiment stopped: %s", exc)
        except Exception as exc:  # a bug or an unforeseen failure: stop cleanly, keep what was measured
            self.error = f"internal error: {type(exc).__name__}: {exc}"
            logger.exception("experiment stopped by an unexpected error")
        finally:
            self.trainer.close()
            if self.writer is not None:
                try:
                    if self.posterior is not None:
                        self._checkpoint(force=True)
                except StorageError as exc:  # every row is safe; a resume retrains the model from them
                    logger.warning("the final model checkpoint was not written (%s); every measured point is in "
                                   "the session", exc)
                self.writer.close()
        return self._result()

    # --- phases ---------------------------------------------------------------------------------------------
    def _open_session(self) -> None:
        path = self.experiment.session_path
        if path is None:
            return
        resume = self.experiment.resume_data is not None
        settings = {**self.config.to_dict(), "units": self.units, "calibration": self.calibration.to_metadata(),
                    **self.experiment.session_settings}
        detector_shape = self._detector_shape()
        self.writer = SessionWriter(path, settings, self.survey_image, detector_shape,
                                    reference=self.calibration.reference, resume=resume)
        write_standardization(self.writer.file, self.survey_image, self.transfer)  # for a later run's init_from

    def _known_detector_shape(self) -> tuple[int, ...] | None:
        """Pattern shape known before measuring: reference, instrument, or the resumed session."""
        if self.calibration.reference is not None:
            return tuple(self.calibration.reference.shape)
        shape = getattr(self.instrument, "detector_shape", None)
        if shape is not None:
            return tuple(int(n) for n in shape)
        if self.experiment.resume_data is not None:
            return tuple(self.experiment.resume_data.patterns.shape[1:])
        return None

    def _detector_shape(self) -> tuple[int, int]:
        if self._pattern_shape is None:
            raise InputError("the instrument does not report its detector shape; acquire a vacuum reference first")
        return typing.cast(tuple[int, int], self._pattern_shape)

    def _check_resume(self, data: SessionData) -> None:
        """Refuse to continue a session on other data before anything is measured or written."""
        differences = resume_differences(data.settings, {**self.config.to_dict(), **self.experiment.session_settings})
        if differences:
            raise InputError("cannot resume: this run differs from the session in " + "; ".join(differences)
                             + ". Resume with the session's settings, or start a new run with another --out")
        if tuple(data.survey.shape) != (self.height, self.width):
            raise InputError(f"session survey {data.survey.shape} does not match this survey {self.height}x{self.width}")
        if not numpy.allclose(data.survey, self.survey_image, rtol=1e-5, atol=0, equal_nan=False):
            raise InputError("the session was recorded on a different survey image; resume it with the data it was "
                             "started on")
        session_shape = tuple(data.patterns.shape[1:])
        detector_shape = tuple(self._detector_shape())
        if session_shape != detector_shape:
            raise InputError(f"session patterns are {session_shape}, but this detector gives {detector_shape}")

    def _replay_resumed(self) -> None:
        data = self.experiment.resume_data
        if data is None:
            return
        for (y, x), value, phase in zip(data.positions, data.values, data.phases):
            index = int(y) * self.width + int(x)
            if self.blocked[index]:
                continue  # a point recorded twice (should not happen) is counted once
            self._record(index, float(value), "seed" if phase == 0 else "step")
        if data.model_state is not None:
            try:
                self.trainer.load_state(data.model_state)
            except (RuntimeError, KeyError, ValueError) as exc:  # e.g. resumed with another window or network
                logger.warning("the session's model checkpoint does not fit this configuration (%s); the model "
                               "is trained afresh on the measured points", exc)

    def _run_seeds(self) -> None:
        # A fixed permutation per seed: a resumed run continues the same seed sequence, skipping measured points.
        order = numpy.random.default_rng(self.config.seed).permutation(self.n_candidates)
        for index in self._seed_candidates(order):
            if self.experiment.stopped or self.phases.count("seed") >= self.config.seeds:
                break
            if self.blocked[index]:
                continue
            self._wait_if_paused()
            index = self._forced_or(index)
            step_start = time.perf_counter()
            value, instrument_seconds = self._measure(index, "seed")
            self._emit(index, value, "seed", None, 0.0, 0.0, instrument_seconds, time.perf_counter() - step_start)

    def _seed_candidates(self, order: numpy.ndarray) -> typing.Iterator[int]:
        """Seed positions in order (measured or excluded ones are skipped by the caller): the permutation's first,
        then, with pre-training, the points spread over the pre-trained embedding from it (pretrain.spread_points;
        pre-training runs while the first is measured), then the rest of the permutation. Deterministic per seed,
        so a resumed run continues the same sequence."""
        from dkl4dstem import pretrain
        yield int(order[0])
        count = min(self.config.seeds, pretrain.SPREAD_SEEDS)
        if self.config.pretrain and self.transfer is None and count > 1:
            self.trainer.join()
            latent = self.trainer.model.embed(self.patches[:self.n_candidates])
            yield from pretrain.spread_points(latent, count, int(order[0]))[1:]
        yield from (int(i) for i in order[1:])

    def _run_steps(self) -> None:
        if self.experiment.stopped or len(self.indices) >= self.total:
            return
        if not self._training_values().size and self.transfer is None:
            raise InstrumentError("no seed point gave a usable value; check the camera and the scalarizer")
        self.trainer.fit_now(self.indices, self.values, iterations=self.config.initial_iterations)
        self.posterior = self.trainer.take_result(wait=True)
        if self.experiment.stopped:
            return
        if self.posterior is None:
            raise ModelError("the DKL model could not be fitted to the seed points: "
                             + "; ".join(self.trainer.failures[-2:]))
        self.map_posterior = self.posterior
        next_index, decision_seconds = self._decide()
        while len(self.indices) < self.total and not self.experiment.stopped and next_index is not None:
            self._wait_if_paused()
            if self.experiment.stopped:
                break
            next_index = self._forced_or(next_index)
            step_start = time.perf_counter()
            value, instrument_seconds = self._measure(next_index, "step")
            measured = next_index
            training_seconds = self._swap_in_training()
            next_index, decision_seconds = self._decide() if len(self.indices) < self.total else self._decide(final=True)
            self._emit(measured, value, "step", next_index if len(self.indices) < self.total else None,
                       decision_seconds, training_seconds, instrument_seconds, time.perf_counter() - step_start)
            self._checkpoint()

    # --- pieces -----------------------------------------------------------------------------------------------
    def _wait_if_paused(self) -> None:
        while not self.experiment._running.wait(timeout=0.1):
            if self.experiment.stopped:
                return

    def _forced_or(self, index: int) -> int:
        """The user's forced position (Experiment.force_next) when one is waiting and still free, else index."""
        while (position := self.experiment._pop_forced()) is not None:
            y, x = position
            if y < self.height and x < self.width and not self.blocked[y * self.width + x]:
                self.experiment.forced_measured.append(position)
                return y * self.width + x
            logger.warning("forced point (%d, %d) skipped: outside the survey, measured or excluded", y, x)
        return index

    def _measure(self, index: int, phase: str) -> tuple[float, float]:
        """Measure one point with retries; a point whose frames keep failing is excluded, not retried forever."""
        y, x = position_of(index, self.width)
        start = time.perf_counter()
        measurement: Measurement | None = None
        problem = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt and self.experiment.stopped:  # a stop does not wait for retries of a failing camera
                break
            try:
                measurement = self._timed_measure(y, x)
                problem = _frame_problem(measurement.pattern, self._pattern_shape)
                if not problem:
                    break
            except CameraNotResponding:
                raise  # a hung camera: measuring again cannot be trusted
            except InstrumentError as exc:
                problem = str(exc)
            except Exception as exc:  # a camera driver may raise anything; the point is what matters
                problem = f"{type(exc).__name__}: {exc}"
            logger.warning("measurement at (%d, %d) attempt %d failed: %s", y, x, attempt + 1, problem)
            measurement = None
        instrument_seconds = time.perf_counter() - start
        if measurement is None:
            self._failures += 1
            self.blocked[index] = True
            self.excluded.append(index)
            self._excluded_set.add(index)
            warnings.warn(f"position ({y}, {x}) excluded: {problem}", RuntimeWarning, stacklevel=2)
            if self._failures >= self.config.max_consecutive_failures:
                raise InstrumentError(f"{self._failures} positions in a row failed; last: {problem}")
            return math.nan, instrument_seconds
        self._failures = 0
        if self._pattern_shape is None:
            self._pattern_shape = tuple(numpy.shape(measurement.pattern))
        value = self._scalarize(measurement.pattern, y, x)
        if self.writer is not None:
            self.writer.append(y, x, measurement.pattern, value, phase)
        self._record(index, value, phase)
        self.recalibration.measured(index, value)
        return value, instrument_seconds

    def _scalarize(self, pattern: numpy.ndarray, y: int, x: int) -> float:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = float(self.scalarizer(pattern, self.calibration))
        except Exception as exc:
            logger.warning("scalarizer %s failed at (%d, %d): %s", self.scalarizer.name, y, x,
                           str(exc) or type(exc).__name__)  # never an empty reason
            return math.nan
        except (SystemExit, KeyboardInterrupt) as exc:  # from the user's code, not a signal (the CLI handles those)
            if isinstance(exc, KeyboardInterrupt) and self.experiment.stopped:
                raise  # a second Ctrl-C: abort
            self.error = (f"scalarizer {self.scalarizer.name} raised {type(exc).__name__}({exc}) at ({y}, {x}); the "
                          "run stopped (the point is kept with value NaN)")
            logger.error("%s", self.error)
            self.experiment.stop()
            return math.nan
        if not math.isfinite(value):
            logger.warning("scalarizer %s gave %s at (%d, %d); the point is kept but not used for training",
                           self.scalarizer.name, value, y, x)
            return math.nan
        return value

    def _record(self, index: int, value: float, phase: str) -> None:
        self.blocked[index] = True
        self.indices.append(index)
        self.values.append(value)
        self.phases.append(phase)

    def _training_values(self) -> numpy.ndarray:
        values = numpy.asarray(self.values, dtype=numpy.float64)
        return values[numpy.isfinite(values)]

    def _swap_in_training(self) -> float:
        """Swap in a finished background training; with wait_for_training wait for it first."""
        result = self.trainer.take_result(wait=self.config.wait_for_training)
        if result is None:
            return 0.0
        self.posterior = result  # points measured while it trained are conditioned on in _decide
        if result.refit:
            self.map_posterior = result
        return result.training_seconds

    def _decide(self, final: bool = False) -> tuple[int | None, float]:
        start = time.perf_counter()
        assert self.posterior is not None
        self.posterior.catch_up(self.indices, self.values)
        valid = self._training_values()
        mean, variance, target_mean, target_std = self.posterior.predict(self._with_prior(valid))
        mean, variance = mean[:self.n_candidates], variance[:self.n_candidates]  # transfer: drop the prior rows
        incumbent = valid if valid.size else self._with_prior(valid)  # no own point yet: the earlier run's best
        best_raw = float(incumbent.max() if self.config.maximize else incumbent.min())
        best_std = (best_raw - target_mean) / target_std
        # EI and UCB on the predictive distribution of the next *measurement* (as gpax does), not of the noiseless
        # latent function: measured values are noisy and so is the incumbent; on three abTEM datasets this found
        # the top-1% positions as soon or sooner (RESULTS.md). The maps come from `_maps`.
        acquisition_variance = variance + self.posterior.noise if self.config.observation_noise else variance
        if self.config.acquisition == "map":  # the mapping mode: a design in fixed patch features (mapping.py)
            if self.survey_map is not None:  # the design targets the map model (mapmodel.py)
                values = self.survey_map.design_values(self.indices, self.values, self.blocked)
            else:
                if self.design is None:
                    self.design = FeatureSpaceDesign(self.patches, capacity=self.total + 1, seed=self.config.seed)
                values = self.design.values(self.indices)
        else:
            values = acquisition_module.acquisition_values(
                mean, acquisition_variance, best_std, kind=self.config.acquisition, xi=self.config.xi,
                beta=self.config.beta, maximize=self.config.maximize)
        next_index = None if final else acquisition_module.choose_next(values, self.blocked)
        decision_seconds = time.perf_counter() - start
        if not final and not self.experiment.stopped:
            self.trainer.start(self.indices, self.values)
        self.maps = self._maps(mean, variance, values, valid, next_index)
        return next_index, decision_seconds

    def _maps(self, mean: torch.Tensor, variance: torch.Tensor, acquisition: torch.Tensor, valid: numpy.ndarray,
              next_index: int | None) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """Prediction and uncertainty maps in scalar units, computed after the decision is timed (not counted in
        decision_seconds, but still before the next move: a few to tens of ms at n = 100-200, see RESULTS.md).

        They come from the map model: by default a GP on fixed survey features (mapmodel.py), which reads the map
        from few points where a network trained on them does not; else (map_model="dkl", --init-from, very large
        surveys) the last fresh DKL fit conditioned on every point since (the warm-started rounds between refits
        drift ever more overconfident; RESULTS.md, calibration). The uncertainty is the standard deviation of a
        measurement there (latent variance + noise), scaled by the prequential recalibration; the map model's
        prediction of the next position is recorded for it.
        """
        assert self.posterior is not None
        if self.survey_map is not None:  # a GP on fixed survey features (mapmodel.py), the default
            prediction, measurement_variance, prior_scale = self.survey_map.maps(self.indices, self.values)
        else:
            model = self.map_posterior or self.posterior
            targets = self._with_prior(valid)  # standardized as the posterior's targets (a transferred run's too)
            if model is not self.posterior:
                model.catch_up(self.indices, self.values)
                mean, variance, _, _ = model.predict(targets)
                mean, variance = mean[:self.n_candidates], variance[:self.n_candidates]  # transfer: no prior rows
            target_mean, target_std = standardization(targets)
            measurement_variance = (variance + model.noise) * target_std ** 2
            prediction = mean * target_std + target_mean
            prior_scale = model.loo_scale
        if next_index is not None:
            self.recalibration.predicted(next_index, float(prediction[next_index]),
                                         float(measurement_variance[next_index]))
        scale = self.recalibration.variance_scale(prior_scale)
        return (prediction.cpu().numpy().reshape(self.height, self.width),
                (measurement_variance * scale).sqrt().cpu().numpy().reshape(self.height, self.width),
                acquisition.cpu().numpy().reshape(self.height, self.width))

    def _best(self) -> tuple[float, tuple[int, int] | None]:
        values = numpy.asarray(self.values, dtype=numpy.float64)
        finite = numpy.isfinite(values)
        if not finite.any():
            return math.nan, None
        masked = numpy.where(finite, values, -numpy.inf if self.config.maximize else numpy.inf)
        k = int(numpy.argmax(masked) if self.config.maximize else numpy.argmin(masked))
        return float(values[k]), position_of(self.indices[k], self.width)

    def _emit(self, index: int, value: float, phase: str, next_index: int | None, decision_seconds: float,
              training_seconds: float, instrument_seconds: float, step_seconds: float) -> None:
        self.timings["instrument"].append(instrument_seconds)
        if phase == "step":  # decision, training and step times are per DKL step (seed points have none)
            for name, seconds in (("decision", decision_seconds), ("training", training_seconds),
                                  ("step", step_seconds)):
                self.timings[name].append(seconds)
        if self.experiment.on_event is None:
            return
        best_value, best_position = self._best()
        maps = self.maps if phase == "step" else None
        event = StepEvent(
            step=len(self.indices) - 1, phase=phase, position=position_of(index, self.width), value=value,
            next_position=None if next_index is None else position_of(next_index, self.width),
            prediction=None if maps is None else maps[0], uncertainty=None if maps is None else maps[1],
            acquisition=None if maps is None else maps[2], decision_seconds=decision_seconds,
            training_seconds=training_seconds, instrument_seconds=instrument_seconds, step_seconds=step_seconds,
            n_measured=len(self.indices), n_total=self.total, best_value=best_value, best_position=best_position,
            units=self.units, model_version=self.posterior.version if self.posterior is not None else 0,
            excluded=index in self._excluded_set)
        try:
            self.experiment.on_event(event)
        except Exception:  # a broken listener (UI) must never stop the microscope
            logger.exception("experiment event listener failed")

    def _checkpoint(self, force: bool = False) -> None:
        if self.writer is None or self.posterior is None:
            return
        if force or len(self.indices) % self.config.checkpoint_every == 0:
            self.writer.checkpoint(len(self.indices), self.trainer.state())

    def _result(self) -> ExperimentResult:
        best_value, best_position = self._best()
        maps = self.maps or (None, None, None)
        return ExperimentResult(
            visited=[position_of(i, self.width) for i in self.indices], values=list(self.values),
            phases=list(self.phases), best_value=best_value, best_position=best_position,
            decision_seconds=self.timings["decision"], step_seconds=self.timings["step"],
            training_seconds=self.timings["training"], instrument_seconds=self.timings["instrument"],
            prediction=maps[0], uncertainty=maps[1], acquisition=maps[2], stopped=self.experiment.stopped,
            error=self.error, units=self.units, n_candidates=self.n_candidates,
            excluded=[position_of(i, self.width) for i in self.excluded])


def _frame_problem(pattern: typing.Any, expected_shape: tuple[int, ...] | None) -> str:
    """Why a camera frame is unusable ('' when it is fine)."""
    array = numpy.asarray(pattern) if pattern is not None else None
    if array is None or array.size == 0:
        return "empty frame"
    if array.ndim != 2:
        return f"frame is not 2D (shape {array.shape})"
    if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
        return f"frame shape {array.shape} differs from the expected {tuple(expected_shape)}"
    if not numpy.all(numpy.isfinite(array)):
        return "frame contains NaN/Inf"
    return ""

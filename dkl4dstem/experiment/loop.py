"""The automated experiment: K random seed points, then N steps chosen by the DKL model.

Per step: measure (measuring.py) -> record (points.py, the session file: recording.py) -> swap in a finished
training -> decide (deciding.py: condition the GP on the new points with the current embedding, acquisition, next
position; early in a run on the map model's posterior instead, steering.py) -> start the next training round ->
maps (maps.py) -> event. Network training runs on a background
thread (`models.trainer.BackgroundTrainer`) on a snapshot of the data and is swapped in when ready, so the
microscope never waits for it; with `wait_for_training` (replay default) the loop waits for it before the next
decision, which makes a run reproducible for a given seed.
"""
from __future__ import annotations

import logging
import math
import time
import typing

import numpy

from dkl4dstem.config import ExperimentConfig
from dkl4dstem.data.patches import extract_patches, position_of
from dkl4dstem.data.survey import validate_survey
from dkl4dstem.errors import InputError, InstrumentError, ModelError, StorageError
from dkl4dstem.experiment import preflight
from dkl4dstem.experiment.control import RunControl
from dkl4dstem.experiment.deciding import Decider, Decision, blocked_mask, forced_or, seed_candidates
from dkl4dstem.experiment.events import ExperimentResult, StepEvent
from dkl4dstem.experiment.maps import MapModel
from dkl4dstem.models import survey_map
from dkl4dstem.experiment.measuring import Measurer
from dkl4dstem.experiment.points import Points
from dkl4dstem.experiment.reporting import Reporter
from dkl4dstem.experiment.recording import Recorder, check_resume, detector_shape, replay_resumed
from dkl4dstem.experiment.steering import DKL, SURVEY
from dkl4dstem.session.store import SessionData
from dkl4dstem.experiment.setup import known_detector_shape, new_trainer
from dkl4dstem.instruments.base import Instrument
from dkl4dstem.posterior.trained import TrainedPosterior
from dkl4dstem.scalarizers.registry import get_scalarizer

__all__ = ["Experiment", "ExperimentConfig", "ExperimentResult", "StepEvent"]

logger = logging.getLogger(__name__)


class Experiment:
    """The public control surface of one run: run() blocks; stop / pause / resume / force_next from any thread."""

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
        self.control = RunControl()
        self._current: _Run | None = None

    # --- control, thread safe --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Takes effect within one step; a running (re)fit is cancelled (checked every Adam iteration)."""
        self.control.stop()

    def force_next(self, y: int, x: int) -> None:
        """Measure survey pixel (y, x) next, before the model's choice (a user's click); thread safe.

        Honoured at the next measurement (seed or step); a point measured or excluded meanwhile is skipped."""
        y, x = int(y), int(x)
        run = self._current
        shape = (run.height, run.width) if run is not None else None
        if y < 0 or x < 0 or (shape is not None and (y >= shape[0] or x >= shape[1])):
            raise InputError(f"forced point ({y}, {x}) is outside the survey{f' {shape[0]}x{shape[1]}' if shape else ''}")
        if run is not None and run.points.blocked[y * run.width + x]:
            raise InputError(f"({y}, {x}) is already measured or excluded")
        self.control.force(y, x)

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    @property
    def stopped(self) -> bool:
        return self.control.stopped

    @property
    def forced_measured(self) -> list[tuple[int, int]]:
        """The forced positions measured, in order."""
        return self.control.forced_measured

    def run(self) -> ExperimentResult:
        """Blocking. The instrument is closed (camera stopped, probe released) on every exit path."""
        try:
            self._current = _Run(self)
            return self._current.execute()
        finally:
            self._current = None
            self.instrument.close()


class _Run:
    """One run: the loop over its parts (measuring, recording, deciding, maps), each in its own module."""

    def __init__(self, experiment: Experiment) -> None:
        self.config = config = experiment.config
        self.control = experiment.control
        self.resume_data = experiment.resume_data
        self.survey_image = survey_image = validate_survey(experiment.instrument.survey().image, config.window)
        self.height, self.width = survey_image.shape
        self.n_candidates = self.height * self.width
        self.calibration = calibration = experiment.instrument.calibration()
        scalarizer = get_scalarizer(config.scalarizer, **config.scalarizer_params)
        self.units = scalarizer.units_for(calibration)
        self.points = Points(blocked_mask(experiment.exclude_mask, (self.height, self.width)), self.width)
        config.validate((self.height, self.width), int(self.points.blocked.sum()))
        pattern_shape = known_detector_shape(calibration, experiment.instrument, self.resume_data)
        preflight.check_before_dose(scalarizer, calibration, pattern_shape)
        self.measurer = Measurer(experiment.instrument, config, scalarizer, calibration, pattern_shape, self.control)
        self.session_settings = experiment.session_settings
        if self.resume_data is not None:
            check_resume(self.resume_data, {**config.to_dict(), **self.session_settings}, survey_image,
                         detector_shape(pattern_shape))
        self.patches, self.transfer, self.trainer = new_trainer(
            config, survey_image, extract_patches(survey_image, config.window))
        self.survey_map = survey_map.for_run(config, survey_image, self.patches, self.n_candidates)
        self.decider = Decider(config, self.patches, self.n_candidates,
                               None if self.transfer is None else self.transfer.values, self.survey_map)
        self.maps = MapModel((self.height, self.width), self.survey_map)
        self.recorder = Recorder(experiment.session_path, config)
        self.posterior: TrainedPosterior | None = None  # the acquisition's: the latest training, conditioned since
        self.reporter = Reporter(experiment.on_event, self.points, self.maps, self.total, self.units, config.maximize)
        self.error: str | None = None

    @property
    def total(self) -> int:
        return self.config.seeds + self.config.steps

    def execute(self) -> ExperimentResult:
        self.control.on_stop(self.trainer.cancel)  # a stop must not wait for a long (re)fit
        try:
            settings = {**self.config.to_dict(), "units": self.units, "calibration": self.calibration.to_metadata(),
                        **self.session_settings}
            self.recorder.open(settings, self.survey_image, self.measurer.pattern_shape, self.calibration.reference,
                               self.resume_data is not None, self.transfer)
            if self.config.pretrain and self.transfer is None:  # on the training thread while seeds are measured
                self.trainer.start_pretraining()
            if self.resume_data is not None:
                replay_resumed(self.resume_data, self.points, self.trainer)
            self._run_seeds()
            self._run_steps()
        except (InstrumentError, InputError, ModelError, StorageError) as exc:
            self.error = str(exc)
            logger.error("experiment stopped: %s", exc)
        except Exception as exc:  # a bug or an unforeseen failure: stop cleanly, keep what was measured
            self.error = f"internal error: {type(exc).__name__}: {exc}"
            logger.exception("experiment stopped by an unexpected error")
        finally:
            self.control.clear_on_stop()
            self.trainer.close()
            self.recorder.close(len(self.points), self.trainer.state if self.posterior is not None else None)
        return self.reporter.result(self.control.stopped, self.error or self.measurer.error,
                                    self.decider.steering.history)

    # --- the loop -------------------------------------------------------------------------------------------
    def _run_seeds(self) -> None:
        pretrained = self.config.pretrain and self.transfer is None
        for index in seed_candidates(self.config, self.n_candidates, self.trainer, self.patches, pretrained):
            if self.control.stopped or self.points.phases.count("seed") >= self.config.seeds:
                break
            if self.points.blocked[index]:
                continue
            self.control.wait_if_paused(self.measurer.rest)
            index = forced_or(index, self.control, self.points, self.height)
            step_start = time.perf_counter()
            value, instrument_seconds = self._measure(index, "seed")
            self._emit(index, value, "seed", None, 0.0, instrument_seconds, time.perf_counter() - step_start)

    def _run_steps(self) -> None:
        if self.control.stopped or len(self.points) >= self.total or not self._first_fit():
            return
        decision = self._decide_train_and_map(final=False)
        while len(self.points) < self.total and not self.control.stopped and decision.next_index is not None:
            self.control.wait_if_paused(self.measurer.rest)
            if self.control.stopped:
                break
            index = forced_or(decision.next_index, self.control, self.points, self.height)
            step_start = time.perf_counter()
            value, instrument_seconds = self._measure(index, "step")
            training_seconds = self._swap_in_training()
            decision = self._decide_train_and_map(final=len(self.points) >= self.total)
            self._emit(index, value, "step", decision, training_seconds, instrument_seconds,
                       time.perf_counter() - step_start)
            self.recorder.checkpoint(len(self.points), self.trainer.state)

    # --- its parts --------------------------------------------------------------------------------------------
    def _measure(self, index: int, phase: str) -> tuple[float, float]:
        """(value, instrument seconds); a position whose frames all failed is excluded, its value NaN."""
        y, x = position_of(index, self.width)
        measured = self.measurer.measure(y, x)
        if measured.pattern is None:
            self.points.exclude(index)
            self.measurer.given_up(y, x, measured.problem)
            return math.nan, measured.instrument_seconds
        self.recorder.append(y, x, measured.pattern, measured.value, phase)
        self.points.record(index, measured.value, phase)
        self.maps.measured(index, measured.value)
        self.decider.steering.measured(index, measured.value)
        return measured.value, measured.instrument_seconds

    def _first_fit(self) -> bool:
        """The first fit on the seed points, on this thread; False when stopped meanwhile."""
        if not self.points.training_values().size and self.transfer is None:
            raise InstrumentError("no seed point gave a usable value; check the camera and the scalarizer")
        self.trainer.fit_now(self.points.indices, self.points.values, iterations=self.config.initial_iterations)
        self.posterior = self.trainer.take_result(wait=True)
        if self.control.stopped:
            return False
        if self.posterior is None:
            raise ModelError("the DKL model could not be fitted to the seed points: "
                             + "; ".join(self.trainer.failures[-2:]))
        self.maps.swapped_in(self.posterior)
        return True

    def _swap_in_training(self) -> float:
        """Swap in a finished background training; with wait_for_training wait for it first."""
        result = self.trainer.take_result(wait=self.config.wait_for_training)
        if result is None:
            return 0.0
        self.posterior = result  # points measured while it trained are conditioned on in the decision
        self.maps.swapped_in(result)
        return result.training_seconds

    def _decide_train_and_map(self, final: bool) -> Decision:
        """The decision (timed), then the next training round on the trainer's thread, then the maps meanwhile."""
        assert self.posterior is not None
        decision = self.decider.decide(self.posterior, self.points, final)
        if not final and not self.control.stopped:
            self.trainer.start(self.points.indices, self.points.values)
        maps = self.maps.update(self.posterior, decision, self.points)
        if decision.next_index is not None and self.decider.steering.enabled:
            # both models' predictions of the next value, scored against it once measured (steering.py)
            self.decider.steering.predicted(decision.next_index, {
                SURVEY: float(maps[0].reshape(-1)[decision.next_index]),
                DKL: float(decision.predictive.mean_in_units()[decision.next_index])})
        return decision

    def _emit(self, index: int, value: float, phase: str, decision: Decision | None, training_seconds: float,
              instrument_seconds: float, step_seconds: float) -> None:
        version = self.posterior.version if self.posterior is not None else 0
        self.reporter.emit(index, value, phase, decision, training_seconds, instrument_seconds, step_seconds, version)

"""The run's record on disk: the session file (one row per measurement, model checkpoints) and resuming from one.

Rows are flushed before the probe moves on (session.py); a resume is checked against this run's settings, survey
and detector before anything is measured or written, then its points are replayed into the run.
"""
from __future__ import annotations

import logging
import typing

import numpy

from dkl4dstem.errors import InputError, StorageError
from dkl4dstem.experiment.points import Points
from dkl4dstem.session.store import SessionData, SessionWriter, resume_differences
from dkl4dstem.models.transfer import TransferModel, write_standardization

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.models.trainer import BackgroundTrainer

logger = logging.getLogger(__name__)


def detector_shape(shape: tuple[int, ...] | None) -> tuple[int, int]:
    if shape is None:
        raise InputError("the instrument does not report its detector shape; acquire a vacuum reference first")
    return typing.cast(tuple[int, int], shape)


def check_resume(data: SessionData, settings: dict[str, typing.Any], survey: numpy.ndarray,
                 detector_shape: tuple[int, ...]) -> None:
    """Refuse to continue a session on other data before anything is measured or written."""
    differences = resume_differences(data.settings, settings)
    if differences:
        raise InputError("cannot resume: this run differs from the session in " + "; ".join(differences)
                         + ". Resume with the session's settings, or start a new run with another --out")
    height, width = survey.shape
    if tuple(data.survey.shape) != (height, width):
        raise InputError(f"session survey {data.survey.shape} does not match this survey {height}x{width}")
    if not numpy.allclose(data.survey, survey, rtol=1e-5, atol=0, equal_nan=False):
        raise InputError("the session was recorded on a different survey image; resume it with the data it was "
                         "started on")
    session_shape = tuple(data.patterns.shape[1:])
    if session_shape != tuple(detector_shape):
        raise InputError(f"session patterns are {session_shape}, but this detector gives {tuple(detector_shape)}")


def replay_resumed(data: SessionData, points: Points, trainer: BackgroundTrainer) -> None:
    """The session's points as this run's first ones; its latest model checkpoint as the model's weights."""
    for (y, x), value, phase in zip(data.positions, data.values, data.phases):
        index = int(y) * points.width + int(x)
        if points.blocked[index]:
            continue  # a point recorded twice (should not happen) is counted once
        points.record(index, float(value), "seed" if phase == 0 else "step")
    if data.model_state is not None:
        try:
            trainer.load_state(data.model_state)
        except (RuntimeError, KeyError, ValueError) as exc:  # e.g. resumed with another window or network
            logger.warning("the session's model checkpoint does not fit this configuration (%s); the model "
                           "is trained afresh on the measured points", exc)


class Recorder:
    """The session file of one run (nothing is written without a session path)."""

    def __init__(self, path: str | None, config: ExperimentConfig) -> None:
        self.path = path
        self.config = config
        self.writer: SessionWriter | None = None

    def open(self, settings: dict[str, typing.Any], survey: numpy.ndarray, pattern_shape: tuple[int, ...] | None,
             reference: numpy.ndarray | None, resume: bool, transfer: TransferModel | None) -> None:
        if self.path is None:
            return
        self.writer = SessionWriter(self.path, settings, survey, detector_shape(pattern_shape), reference=reference,
                                    resume=resume)
        write_standardization(self.writer.file, survey, transfer)  # for a later run's init_from

    def append(self, y: int, x: int, pattern: numpy.ndarray, value: float, phase: str) -> None:
        if self.writer is not None:
            self.writer.append(y, x, pattern, value, phase)

    def checkpoint(self, n_measured: int, state: typing.Callable[[], dict[str, typing.Any]],
                   force: bool = False) -> None:
        """The model's state every `checkpoint_every` points (and at the end: `force`)."""
        if self.writer is not None and (force or n_measured % self.config.checkpoint_every == 0):
            self.writer.checkpoint(n_measured, state())

    def close(self, n_measured: int, state: typing.Callable[[], dict[str, typing.Any]] | None) -> None:
        """Final checkpoint (when a model was trained) and close; every row is already safe on disk."""
        if self.writer is None:
            return
        try:
            if state is not None:
                self.checkpoint(n_measured, state, force=True)
        except StorageError as exc:  # every row is safe; a resume retrains the model from them
            logger.warning("the final model checkpoint was not written (%s); every measured point is in "
                           "the session", exc)
        self.writer.close()

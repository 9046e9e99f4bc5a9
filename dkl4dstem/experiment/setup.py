"""What a run fixes before any dose: the detector's pattern shape and the model (fresh, or an earlier run's)."""
from __future__ import annotations

import typing

import numpy

from dkl4dstem.data.diffraction import DetectorCalibration
from dkl4dstem.session.store import SessionData
from dkl4dstem.models.trainer import BackgroundTrainer
from dkl4dstem.models.transfer import TransferModel, load_transfer, restandardize

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig
    from dkl4dstem.instruments.base import Instrument


def known_detector_shape(calibration: DetectorCalibration, instrument: Instrument, resume: SessionData | None
                         ) -> tuple[int, ...] | None:
    """Pattern shape known before measuring: reference, instrument, or the resumed session."""
    if calibration.reference is not None:
        return tuple(calibration.reference.shape)
    shape = getattr(instrument, "detector_shape", None)
    if shape is not None:
        return tuple(int(n) for n in shape)
    if resume is not None:
        return tuple(resume.patterns.shape[1:])
    return None


def new_trainer(config: ExperimentConfig, survey: numpy.ndarray, patches: numpy.ndarray
                ) -> tuple[numpy.ndarray, TransferModel | None, BackgroundTrainer]:
    """(patches, transfer, trainer). With `init_from` (transfer.py): the earlier run's model as initial weights,
    its points as prior data (rows of the patch array past the survey's, never candidates), checked here, before
    any dose; the survey's patches restandardized as that network learned them."""
    if not config.init_from:
        return patches, None, BackgroundTrainer(patches, config)
    transfer = load_transfer(config.init_from, config)
    restandardize(patches, survey, transfer)
    n_candidates, n_prior = len(patches), len(transfer.values)
    patches = numpy.concatenate([patches, transfer.patches])
    prior = (list(range(n_candidates, n_candidates + n_prior)), transfer.values.tolist())
    trainer = BackgroundTrainer(patches, config, prior)
    trainer.load_state(transfer.state)
    trainer.model.mark_initial()
    return patches, transfer, trainer

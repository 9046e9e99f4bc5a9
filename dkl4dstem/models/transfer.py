"""Transfer between runs: start from the model an earlier run (its output directory or session.h5) left.

What a microscopist returning to the same sample expects: the network already knows what the patches mean, and
what was measured before still counts. So a transfer brings (1) the earlier run's latest trained model state
(network + GP hyperparameters), which becomes the new run's initial weights (refits restart from it), and (2) its
measured points as prior data: their HAADF patches, cut from the earlier run's survey with the patch
standardization that run used, and their values. The GP is conditioned on them together with the new points, so
the very first position can be chosen by the model (`seeds = 0`). The new survey's patches are standardized with
the earlier run's patch mean and std (stored in the session file as attributes of its `model` group), not the new
survey's own: a region with more or fewer heavy atoms has other statistics, and the network learned intensities
on the earlier scale. (A different beam current or detector gain changes that scale too: a transfer assumes the
same imaging conditions.)

Everything is checked before any dose: a missing or unreadable file, a session without a model, or a model of
another window / latent size / network / scalarizer is an `InputError` (one line, exit 2 in the CLI).
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing

import h5py
import numpy

from dkl4dstem.errors import InputError

if typing.TYPE_CHECKING:
    from dkl4dstem.config import ExperimentConfig

SESSION_FILE = "session.h5"
# settings that must agree between the earlier run and this one (a CLI run takes them over when not given)
MODEL_SETTINGS = ("window", "latent_dim", "hidden", "scalarizer", "scalarizer_params")


@dataclasses.dataclass
class TransferModel:
    path: str
    settings: dict[str, typing.Any]
    state: dict[str, typing.Any]  # {"net": ..., "gp": ...} as DKLModel.state()
    patches: numpy.ndarray        # (M, window * window) float32: the earlier run's measured points
    values: numpy.ndarray         # (M,) their finite values
    patch_mean: float
    patch_std: float


def session_path(path: str | os.PathLike[str]) -> str:
    """The session file of a run directory, or the file itself."""
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, SESSION_FILE)
        if not os.path.isfile(candidate):
            raise InputError(f"earlier session {path}: no {SESSION_FILE} there (give a run's output directory or its "
                             "session file)")
        return candidate
    if not os.path.isfile(path):
        raise InputError(f"earlier session {path}: no such file or directory")
    return path


def survey_standardization(survey: numpy.ndarray) -> tuple[float, float]:
    """The (mean, std) `extract_patches` standardizes a survey's patches with."""
    return float(numpy.mean(survey, dtype=numpy.float64)), float(numpy.std(survey, dtype=numpy.float64))


def write_standardization(file: h5py.File, survey: numpy.ndarray, transfer: TransferModel | None = None) -> None:
    """Record the patch standardization this run's network sees (a transferred one's, or the survey's own) next
    to its model checkpoints, for a later run's transfer."""
    mean, std = (transfer.patch_mean, transfer.patch_std) if transfer is not None else survey_standardization(survey)
    group = file.require_group("model")
    group.attrs["patch_mean"] = mean
    group.attrs["patch_std"] = std
    file.flush()


def restandardize(patches: numpy.ndarray, survey: numpy.ndarray, transfer: TransferModel) -> None:
    """In place: this survey's patches (standardized with its own mean / std) as the earlier run standardized."""
    own_mean, own_std = survey_standardization(survey)
    patches *= numpy.float32(own_std / transfer.patch_std)
    patches += numpy.float32((own_mean - transfer.patch_mean) / transfer.patch_std)


def read_settings(path: str | os.PathLike[str]) -> dict[str, typing.Any]:
    """The earlier run's settings only (cheap: for defaults in the CLI before the full check)."""
    filename = session_path(path)
    try:
        with h5py.File(filename, "r") as file:
            return typing.cast(dict[str, typing.Any], json.loads(file.attrs["settings"]))
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"earlier session {filename}: not a readable dkl4dstem session ({exc})") from None


def load_transfer(path: str | os.PathLike[str], config: ExperimentConfig) -> TransferModel:
    """Read and check an earlier run for this configuration; InputError on anything that cannot work."""
    from dkl4dstem.data.patches import extract_patches
    from dkl4dstem.session.store import _latest_model_state

    filename = session_path(path)
    try:
        with h5py.File(filename, "r") as file:
            settings = json.loads(file.attrs["settings"])
            survey = numpy.asarray(file["survey"][()], dtype=numpy.float64)
            points = file["points"]
            n = min(points["position"].shape[0], points["value"].shape[0])
            positions, values = points["position"][:n], points["value"][:n]
            state = _latest_model_state(file)
            stored = {k: float(file["model"].attrs[k]) for k in ("patch_mean", "patch_std")
                      if "model" in file and k in file["model"].attrs}
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"earlier session {filename}: not a readable dkl4dstem session ({exc})") from None
    if state is None:
        raise InputError(f"earlier session {filename}: the session holds no trained model (it stopped before the "
                         "first fit, or its checkpoints are unreadable)")
    check_compatible(settings, config, filename)
    _check_state(state, config, filename)
    finite = numpy.isfinite(values)
    if not finite.any():
        raise InputError(f"earlier session {filename}: the session has no measured point with a usable value")
    window = int(settings["window"])
    own_mean, own_std = survey_standardization(survey)
    mean, std = stored.get("patch_mean", own_mean), stored.get("patch_std", own_std)
    all_patches = extract_patches(survey, window)  # standardized with the survey's own mean / std ...
    indices = positions[finite, 0].astype(numpy.int64) * survey.shape[1] + positions[finite, 1]
    patches = all_patches[indices] * numpy.float32(own_std / std) + numpy.float32((own_mean - mean) / std)
    return TransferModel(path=filename, settings=settings, state=state, patches=patches.astype(numpy.float32),
                         values=values[finite].astype(numpy.float64), patch_mean=mean, patch_std=std)


def check_compatible(settings: dict[str, typing.Any], config: ExperimentConfig, filename: str) -> None:
    """The model must have been trained for the same patches, latent space and scalar."""
    mine: dict[str, typing.Any] = {
        "window": config.window, "latent_dim": config.latent_dim, "hidden": list(config.hidden),
        "scalarizer": config.scalarizer, "scalarizer_params": dict(config.scalarizer_params)}
    for name in MODEL_SETTINGS:
        theirs = settings.get(name)
        if name == "hidden" and theirs is not None:
            theirs = list(theirs)
        if name == "scalarizer_params":
            theirs, mine[name] = _params(theirs or {}), _params(mine[name])
        if theirs != mine[name]:
            raise InputError(f"earlier session {filename}: its model was trained with {name} {theirs!r}, this run uses "
                             f"{mine[name]!r}")


def _params(params: dict[str, typing.Any]) -> dict[str, typing.Any]:
    out: dict[str, typing.Any] = {}
    for key, value in params.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _check_state(state: dict[str, typing.Any], config: ExperimentConfig, filename: str) -> None:
    """Load the state into a model of this configuration: a network of another shape is refused here."""
    from dkl4dstem.models.dkl import DKLModel

    model = DKLModel(config.window * config.window, latent_dim=config.latent_dim, hidden=config.hidden,
                     device="cpu")
    try:
        model.load_state(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"earlier session {filename}: its model does not fit this configuration ({first})") from None

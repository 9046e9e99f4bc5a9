"""The session file: every measured pattern is on disk before the probe moves again.

HDF5 layout (`session.h5`):
  attrs: settings (JSON), scalarizer, units, survey_shape, created, dkl4dstem_version
  survey                 (H, W) float32 survey the run was planned on
  reference              (det_y, det_x) vacuum reference, when known
  points/position        (n, 2) int32   y, x in survey pixels, measurement order
  points/value           (n,)   float64 scalar (NaN when unusable)
  points/timestamp       (n,)   float64 unix seconds
  points/phase           (n,)   int8    0 = seed, 1 = step
  points/pattern         (n, det_y, det_x) float32 raw pattern
  model/<step>           opaque bytes: model state at checkpoints (torch.save)
Rows are appended and the file flushed after each one, so a killed process leaves a readable file holding every
point reported as measured.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import typing
import warnings

import h5py
import numpy
import torch

from dkl4dstem.errors import InputError

PHASES = {"seed": 0, "step": 1}


@dataclasses.dataclass
class SessionData:
    settings: dict[str, typing.Any]
    survey: numpy.ndarray
    reference: numpy.ndarray | None
    positions: numpy.ndarray  # (n, 2)
    values: numpy.ndarray
    timestamps: numpy.ndarray
    phases: numpy.ndarray
    patterns: numpy.ndarray
    model_state: dict[str, typing.Any] | None


class SessionWriter:
    def __init__(self, path: str | os.PathLike[str], settings: dict[str, typing.Any], survey: numpy.ndarray,
                 pattern_shape: tuple[int, int], reference: numpy.ndarray | None = None,
                 resume: bool = False) -> None:
        self.path = os.fspath(path)
        if resume:
            self.file = h5py.File(self.path, "a")
            self.file.attrs["settings"] = json.dumps(settings)  # a later resume continues with these (e.g. more steps)
            self.file.flush()
        else:
            self.file = h5py.File(self.path, "w")
            self.file.attrs["settings"] = json.dumps(settings)
            self.file.attrs["created"] = time.time()
            self.file.create_dataset("survey", data=numpy.asarray(survey, dtype=numpy.float32))
            if reference is not None:
                self.file.create_dataset("reference", data=numpy.asarray(reference, dtype=numpy.float32))
            points = self.file.create_group("points")
            points.create_dataset("position", shape=(0, 2), maxshape=(None, 2), dtype="i4", chunks=(256, 2))
            points.create_dataset("value", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
            points.create_dataset("timestamp", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
            points.create_dataset("phase", shape=(0,), maxshape=(None,), dtype="i1", chunks=(256,))
            points.create_dataset("pattern", shape=(0, *pattern_shape), maxshape=(None, *pattern_shape),
                                  dtype="f4", chunks=(1, *pattern_shape))
            self.file.create_group("model")
            self.file.flush()
        self.points = self.file["points"]
        self.pattern_shape = tuple(self.points["pattern"].shape[1:])

    @property
    def count(self) -> int:
        return int(self.points["value"].shape[0])

    def append(self, y: int, x: int, pattern: numpy.ndarray | None, value: float, phase: str,
               timestamp: float | None = None) -> None:
        n = self.count
        for name in ("position", "value", "timestamp", "phase", "pattern"):
            self.points[name].resize(n + 1, axis=0)
        self.points["position"][n] = (y, x)
        self.points["value"][n] = value
        self.points["timestamp"][n] = time.time() if timestamp is None else timestamp
        self.points["phase"][n] = PHASES[phase]
        if pattern is not None and tuple(pattern.shape) == self.pattern_shape:
            self.points["pattern"][n] = pattern
        else:  # a failed frame is recorded as NaN so positions and values stay aligned
            self.points["pattern"][n] = numpy.full(self.pattern_shape, numpy.nan, dtype=numpy.float32)
        self.file.flush()

    def checkpoint(self, step: int, state: dict[str, typing.Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        name = f"model/{step:06d}"
        if name in self.file:
            del self.file[name]
        self.file.create_dataset(name, data=numpy.frombuffer(buffer.getvalue(), dtype=numpy.uint8))
        self.file.flush()

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


def read_session(path: str | os.PathLike[str]) -> SessionData:
    """Read a session file, also one left by a killed process; a clear InputError when it is not one."""
    try:
        with h5py.File(path, "r") as file:
            points = file["points"]
            n = min(points[name].shape[0] for name in ("position", "value", "timestamp", "phase", "pattern"))
            model_state = _latest_model_state(file)
            return SessionData(
                settings=json.loads(file.attrs["settings"]),
                survey=file["survey"][()],
                reference=file["reference"][()] if "reference" in file else None,
                positions=points["position"][:n], values=points["value"][:n],
                timestamps=points["timestamp"][:n], phases=points["phase"][:n],
                patterns=points["pattern"][:n], model_state=model_state)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"cannot read session file {os.fspath(path)}: {exc}") from None


def _latest_model_state(file: h5py.File) -> dict[str, typing.Any] | None:
    """The newest readable model checkpoint. A checkpoint cut short by a kill is skipped (the measured points are
    what matters; the model is retrained from them), never a reason to refuse the whole session."""
    if "model" not in file:
        return None
    for name in sorted(file["model"].keys(), reverse=True):
        try:
            return typing.cast(dict[str, typing.Any],
                               torch.load(io.BytesIO(file["model"][name][()].tobytes()), weights_only=True))
        except Exception as exc:  # torch.load raises RuntimeError/ValueError/EOFError/UnpicklingError on bad bytes
            warnings.warn(f"session model checkpoint {name} is unreadable and was skipped: {exc}", RuntimeWarning,
                          stacklevel=3)
    return None

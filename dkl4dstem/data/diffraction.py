"""One diffraction pattern (ronchigram) and the calibration needed to turn it into physics."""
from __future__ import annotations

import dataclasses
import typing

import numpy


@dataclasses.dataclass(frozen=True)
class DetectorCalibration:
    """What a scalarizer needs besides the pattern: vacuum reference and angular scale."""

    reference: numpy.ndarray | None = None  # vacuum pattern (det_y, det_x)
    mrad_per_px: float | None = None
    semiangle_mrad: float | None = None

    def to_metadata(self) -> dict[str, typing.Any]:
        return {"mrad_per_px": self.mrad_per_px, "semiangle_mrad": self.semiangle_mrad,
                "has_reference": self.reference is not None}


@dataclasses.dataclass
class Measurement:
    pattern: numpy.ndarray  # (det_y, det_x)
    metadata: dict[str, typing.Any] = dataclasses.field(default_factory=dict)

"""The seam between the experiment loop and where data comes from (Swift hardware or a replayed 4D file)."""
from __future__ import annotations

import typing

from dkl4dstem.data.diffraction import DetectorCalibration, Measurement
from dkl4dstem.data.survey import Survey


@typing.runtime_checkable
class Instrument(typing.Protocol):
    def survey(self) -> Survey:
        """The HAADF survey whose pixels are the candidate probe positions."""
        ...

    def calibration(self) -> DetectorCalibration:
        """Vacuum reference and angular calibration of the diffraction camera."""
        ...

    def measure(self, y: int, x: int) -> Measurement:
        """Move the probe to survey pixel (y, x) and return one pattern recorded after the move."""
        ...

    def close(self) -> None:
        """Stop the camera and release (or park) the probe. Idempotent; called on every exit path."""
        ...

# Optional: `rest() -> None`, called on the loop's thread when a run pauses: take the beam off the sample point (stop
# the camera, park the probe) until the next measure() moves it again. Without it the probe stays where it was.

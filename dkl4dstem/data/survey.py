"""The HAADF survey image: the structure every candidate position is described by."""
from __future__ import annotations

import dataclasses

import numpy

from dkl4dstem.errors import InputError


@dataclasses.dataclass
class Survey:
    image: numpy.ndarray
    nm_per_px: float | None = None
    metadata: dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def n_candidates(self) -> int:
        return self.shape[0] * self.shape[1]


def validate_survey(image: numpy.ndarray, window: int | None = None) -> numpy.ndarray:
    """Refuse surveys the model cannot learn from, with a message the user can act on."""
    image = numpy.asarray(image)
    if image.ndim != 2:
        raise InputError(f"survey must be a 2D image, got shape {tuple(image.shape)}")
    if image.size == 0:
        raise InputError("survey is empty")
    if not numpy.issubdtype(image.dtype, numpy.number) or numpy.iscomplexobj(image):
        raise InputError(f"survey must be real-valued, got dtype {image.dtype}")
    if not numpy.all(numpy.isfinite(image)):
        raise InputError(f"survey contains {int(numpy.count_nonzero(~numpy.isfinite(image)))} NaN/Inf pixels")
    if float(numpy.ptp(image)) == 0.0:
        raise InputError("survey is constant: it carries no structure to learn from")
    if window is not None:
        if window < 1:
            raise InputError(f"window must be a positive integer, got {window}")
        if window >= min(image.shape):
            raise InputError(f"window {window} must be smaller than the survey {image.shape[0]}x{image.shape[1]}")
    return image.astype(numpy.float32, copy=False)

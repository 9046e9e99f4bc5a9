"""Structure descriptors: the HAADF patch around every scan pixel (every pixel is a candidate)."""
from __future__ import annotations

import numpy

from dkl4dstem.data.survey import validate_survey


def extract_patches(image: numpy.ndarray, window: int = 12) -> numpy.ndarray:
    """Return (H*W, window*window) float32 patches, row y*W + x centred on pixel (y, x).

    Edges use reflection padding so border pixels stay candidates. For even windows the centre pixel sits at
    index window // 2 of the patch. Standardization is global (one mean and std over the whole survey) so the
    relative contrast between patches, which is the structural information, is kept.
    """
    image = validate_survey(image, window)
    before = window // 2
    after = window - 1 - before
    # float32 before the window copy: a float64 copy first added 0.5 GB to the peak at 512 x 512, window 16
    padded = numpy.pad(image.astype(numpy.float32), ((before, after), (before, after)), mode="reflect")
    views = numpy.lib.stride_tricks.sliding_window_view(padded, (window, window))
    height, width = image.shape
    patches = views.reshape(height * width, window * window)
    if not (patches.flags.writeable and patches.flags.c_contiguous):  # window 1: reshape gives a read-only view
        patches = patches.copy()
    mean = float(image.mean(dtype=numpy.float64))
    std = float(image.std(dtype=numpy.float64))
    patches -= numpy.float32(mean)
    patches /= numpy.float32(std)
    return patches


def position_of(index: int, width: int) -> tuple[int, int]:
    return (int(index // width), int(index % width))

"""Nion Swift plug-in of dkl4dstem: a dock panel and a "DKL" menu that run the deep-kernel-learning automated
4D-STEM experiment on the microscope (or on usim). Glue only: the science lives in the `dkl4dstem` package."""
from __future__ import annotations

from .extension import DKLExtension

__all__ = ["DKLExtension"]

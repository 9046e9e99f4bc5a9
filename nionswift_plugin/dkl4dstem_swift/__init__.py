"""Nion Swift plug-in of dkl4dstem: a dock panel and a "DKL" menu that run the deep-kernel-learning automated
4D-STEM experiment on the microscope (or on usim). Glue only: the science lives in the `dkl4dstem` package.

Swift's plug-in manager scans this package and its submodules for classes named *Extension; the extension class
is therefore only reachable through the `extension` submodule (exporting it here too would create it twice)."""
from __future__ import annotations

from . import extension

__all__ = ["extension"]

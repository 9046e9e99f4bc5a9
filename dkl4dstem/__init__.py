"""dkl4dstem: deep-kernel-learning automated 4D-STEM experiments (engine; no Nion Swift import here)."""
from __future__ import annotations

__version__ = "0.1.0"

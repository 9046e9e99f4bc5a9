"""Scalarizers: a diffraction pattern -> one physical number (CoM, virtual detectors, Bragg-disc distance, user functions)."""
from __future__ import annotations

from dkl4dstem import exports

_EXPORTS = {
    "Scalarizer": "dkl4dstem.scalarizers.registry",
    "get_scalarizer": "dkl4dstem.scalarizers.registry",
    "available_scalarizers": "dkl4dstem.scalarizers.registry",
    "builtin_scalarizer": "dkl4dstem.scalarizers.registry",
    "from_function": "dkl4dstem.scalarizers.registry",
    "ENTRY_POINT_GROUP": "dkl4dstem.scalarizers.registry",
}
__getattr__, __all__ = exports.lazy(__name__, _EXPORTS)

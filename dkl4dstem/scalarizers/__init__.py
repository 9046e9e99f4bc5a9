"""Scalarizers: a diffraction pattern -> one physical number (CoM, virtual detectors, Bragg-disc distance, user functions)."""
from __future__ import annotations

import importlib
import typing

# Names resolve on first use (PEP 562): importing the package stays cheap (`dkl4dstem --help` loads no torch).
_EXPORTS = {
    "Scalarizer": "dkl4dstem.scalarizers.registry",
    "get_scalarizer": "dkl4dstem.scalarizers.registry",
    "available_scalarizers": "dkl4dstem.scalarizers.registry",
    "builtin_scalarizer": "dkl4dstem.scalarizers.registry",
    "from_function": "dkl4dstem.scalarizers.registry",
    "ENTRY_POINT_GROUP": "dkl4dstem.scalarizers.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> typing.Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

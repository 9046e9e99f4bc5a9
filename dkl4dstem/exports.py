"""Lazy public names for a package (PEP 562): importing the package stays cheap (`dkl4dstem --help` loads no torch,
numpy or h5py); a name is imported from its module on first use."""
from __future__ import annotations

import importlib
import typing


def lazy(package: str, exports: dict[str, str]) -> tuple[typing.Callable[[str], typing.Any], list[str]]:
    """`__getattr__, __all__ = lazy(__name__, {name: module})` in a package's `__init__.py`."""

    def __getattr__(name: str) -> typing.Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)

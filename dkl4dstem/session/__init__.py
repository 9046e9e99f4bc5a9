"""The session file: the record of every dose spent (one flushed row per measurement), its lock and its checksums."""
from __future__ import annotations

import importlib
import typing

# Names resolve on first use (PEP 562): importing the package stays cheap (`dkl4dstem --help` loads no h5py).
_EXPORTS = {
    "SessionWriter": "dkl4dstem.session.store",
    "SessionData": "dkl4dstem.session.store",
    "read_session": "dkl4dstem.session.store",
    "SessionLock": "dkl4dstem.session.lock",
    "data_fingerprint": "dkl4dstem.session.checksums",
    "resume_differences": "dkl4dstem.session.checksums",
    "row_checksum": "dkl4dstem.session.checksums",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> typing.Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

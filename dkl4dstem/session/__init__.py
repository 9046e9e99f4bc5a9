"""The session file: the record of every dose spent (one flushed row per measurement), its lock and its checksums."""
from __future__ import annotations

from dkl4dstem import exports

_EXPORTS = {
    "SessionWriter": "dkl4dstem.session.store",
    "SessionData": "dkl4dstem.session.store",
    "read_session": "dkl4dstem.session.store",
    "SessionLock": "dkl4dstem.session.lock",
    "data_fingerprint": "dkl4dstem.session.checksums",
    "resume_differences": "dkl4dstem.session.checksums",
    "row_checksum": "dkl4dstem.session.checksums",
}
__getattr__, __all__ = exports.lazy(__name__, _EXPORTS)

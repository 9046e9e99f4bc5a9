"""Error types that decide what the user sees: InputError -> one line and exit code 2, never a traceback."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input (file, parameter, shape). Raised before any dose is spent where possible."""


class InstrumentError(RuntimeError):
    """The instrument failed to deliver a usable measurement (camera raised, timed out, bad frame)."""


class ModelError(RuntimeError):
    """The DKL model could not be fitted (diverged, singular kernel) even after rollback."""


class StorageError(RuntimeError):
    """The session file could not be written (disk full, I/O error, read-only): the run stops after the last
    good row."""

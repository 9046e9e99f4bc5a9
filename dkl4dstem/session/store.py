"""The session file: every measured pattern is on disk before the probe moves again.

HDF5 layout (`session.h5`):
  attrs: settings (JSON, with the data fingerprint), committed (rows fully written), created
  survey                 (H, W) float32 survey the run was planned on
  reference              (det_y, det_x) vacuum reference, when known
  points/position        (n, 2) int32   y, x in survey pixels, measurement order
  points/value           (n,)   float64 scalar (NaN when unusable)
  points/timestamp       (n,)   float64 unix seconds
  points/phase           (n,)   int8    0 = seed, 1 = step
  points/pattern         (n, det_y, det_x) float32 raw pattern
  points/checksum        (n,)   uint64  BLAKE2b-64 of the row's position, value, timestamp, phase and pattern
  model/<step>           opaque bytes: model state at checkpoints (torch.save)
A row counts once `committed` covers it: a row cut short by a kill (or a failed write) lies beyond it and is
dropped on resume; an edited or damaged row fails its checksum and the resume is refused. `<file>.lock` (flock)
keeps a second run (another process or thread) from opening the same session for writing.
"""
from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import re
import time
import typing
import warnings

import h5py
import numpy

from dkl4dstem.errors import InputError, StorageError
from dkl4dstem.session.checksums import data_fingerprint, resume_differences, row_checksum
from dkl4dstem.session.lock import SessionLock

__all__ = ["SessionData", "SessionWriter", "read_session", "SessionLock", "row_checksum", "data_fingerprint",
           "resume_differences"]  # the lock and the checksums live in lock.py / checksums.py

PHASES = {"seed": 0, "step": 1}
ROW_FIELDS = ("position", "value", "timestamp", "phase", "pattern")
RESERVE_BYTES = 256 << 10  # free space kept on the disk besides a few rows, so a row is never half written


@dataclasses.dataclass
class SessionData:
    settings: dict[str, typing.Any]
    survey: numpy.ndarray
    reference: numpy.ndarray | None
    positions: numpy.ndarray  # (n, 2)
    values: numpy.ndarray
    timestamps: numpy.ndarray
    phases: numpy.ndarray
    patterns: numpy.ndarray
    model_state: dict[str, typing.Any] | None
    torn_rows: int = 0  # rows beyond the committed count (cut short by a kill or a failed write), dropped


class SessionWriter:
    def __init__(self, path: str | os.PathLike[str], settings: dict[str, typing.Any], survey: numpy.ndarray,
                 pattern_shape: tuple[int, int], reference: numpy.ndarray | None = None,
                 resume: bool = False) -> None:
        self.path = os.fspath(path)
        self.failed: str | None = None
        self.lock = SessionLock(self.path)  # before anything is opened for writing
        try:
            # no raw-data chunk cache: a row reaches the file inside append(), where a write error can be seen
            if resume:
                self.file = _open_for_resume(self.path)
                self.file.attrs["settings"] = json.dumps(settings)  # a later resume continues with these
            else:
                self.file = h5py.File(self.path, "w", rdcc_nbytes=0)
                self.file.attrs["settings"] = json.dumps(settings)
                self.file.attrs["created"] = time.time()
                self.file.create_dataset("survey", data=numpy.asarray(survey, dtype=numpy.float32))
                if reference is not None:
                    self.file.create_dataset("reference", data=numpy.asarray(reference, dtype=numpy.float32))
                points = self.file.create_group("points")
                points.create_dataset("position", shape=(0, 2), maxshape=(None, 2), dtype="i4", chunks=(256, 2))
                points.create_dataset("value", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
                points.create_dataset("timestamp", shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
                points.create_dataset("phase", shape=(0,), maxshape=(None,), dtype="i1", chunks=(256,))
                points.create_dataset("pattern", shape=(0, *pattern_shape), maxshape=(None, *pattern_shape),
                                      dtype="f4", chunks=(1, *pattern_shape))
                self.file.create_group("model")
            self.points = self.file["points"]
            self.datasets = {name: self.points[name] for name in ROW_FIELDS}
            self._prepare_checksums()
            self.file.flush()
        except BaseException as exc:
            self._abandon()
            if isinstance(exc, Exception):
                raise StorageError(f"cannot write {self.path}: {_reason(exc)}") from None
            raise
        self.pattern_shape = tuple(self.datasets["pattern"].shape[1:])
        self.row_bytes = int(numpy.prod(self.pattern_shape)) * 4 + 64

    def _prepare_checksums(self) -> None:
        """New file: empty checksums. Resume: drop a torn row; an older session without checksums gets them."""
        committed = self.file.attrs.get("committed")
        n = int(committed) if committed is not None else min(self.points[k].shape[0] for k in ROW_FIELDS)
        if "checksum" not in self.points:
            self.points.create_dataset("checksum", shape=(0,), maxshape=(None,), dtype="u8", chunks=(256,))
        checksum = self.points["checksum"]
        old = checksum.shape[0]
        for name in (*ROW_FIELDS, "checksum"):
            if self.points[name].shape[0] != n:
                self.points[name].resize(n, axis=0)
        for row in range(min(old, n), n):  # rows of an older version's session, trusted as read
            d = self.datasets
            checksum[row] = row_checksum(d["position"][row], d["value"][row], d["timestamp"][row],
                                         int(d["phase"][row]), d["pattern"][row])
        self.datasets["checksum"] = checksum
        self.file.attrs["committed"] = n

    @property
    def count(self) -> int:
        return int(self.file.attrs["committed"])

    def append(self, y: int, x: int, pattern: numpy.ndarray | None, value: float, phase: str,
               timestamp: float | None = None) -> None:
        """Write one row; it counts once `committed` is raised after it. StorageError (run stops) on a failure."""
        if self.failed:
            raise StorageError(self.failed)
        n = self.count
        self._check_space()
        if pattern is None or tuple(pattern.shape) != self.pattern_shape:  # keeps positions and values aligned
            pattern = numpy.full(self.pattern_shape, numpy.nan, dtype=numpy.float32)
        stamp = time.time() if timestamp is None else timestamp
        row = ((y, x), value, stamp, PHASES[phase], numpy.asarray(pattern, dtype=numpy.float32))
        try:
            for name in (*ROW_FIELDS, "checksum"):
                if self.datasets[name].shape[0] < n + 1:
                    self.datasets[name].resize(n + 1, axis=0)
            for name, item in zip(ROW_FIELDS, row):
                self.datasets[name][n] = item
            self.datasets["checksum"][n] = row_checksum(*row)
            self.file.flush()
            self.file.attrs["committed"] = n + 1
            self.file.flush()
        except Exception as exc:
            self.failed = f"cannot write {self.path}: {_reason(exc)}"
            raise StorageError(self.failed) from None

    def _check_space(self) -> None:
        """Stop before the disk is full: HDF5 does not always report a failed write (it may lose it in a cache)."""
        free = _free_bytes(self.path)
        if free is not None and free < RESERVE_BYTES + 4 * self.row_bytes:
            self.failed = (f"the disk holding {self.path} is full ({free >> 10} KiB free); the run stopped after "
                           f"the last good row")
            raise StorageError(self.failed)

    def checkpoint(self, step: int, state: dict[str, typing.Any]) -> None:
        if self.failed:
            return
        buffer = io.BytesIO()
        import torch  # only when a model is stored: reading a session or --help needs no torch

        torch.save(state, buffer)
        name = f"model/{step:06d}"
        free = _free_bytes(self.path)
        if free is not None and free < RESERVE_BYTES + 2 * buffer.tell() + 4 * self.row_bytes:
            self.failed = (f"the disk holding {self.path} is full ({free >> 10} KiB free, a model checkpoint needs "
                           f"{buffer.tell() >> 10} KiB); the run stopped after the last good row")
            raise StorageError(self.failed)
        try:
            if name in self.file:
                del self.file[name]
            self.file.create_dataset(name, data=numpy.frombuffer(buffer.getvalue(), dtype=numpy.uint8))
            self.file.flush()
        except Exception as exc:
            self.failed = f"cannot write a model checkpoint to {self.path}: {_reason(exc)}"
            raise StorageError(self.failed) from None

    def close(self) -> None:
        try:
            if self.file.id.valid:
                self.file.close()
        except Exception as exc:  # the rows are committed one by one; a failed close loses none of them
            warnings.warn(f"closing {self.path} failed: {_reason(exc)}", RuntimeWarning, stacklevel=2)
        finally:
            self.lock.release()

    def _abandon(self) -> None:
        try:
            file = getattr(self, "file", None)
            if file is not None and file.id.valid:
                file.close()
        except Exception:
            pass
        finally:
            self.lock.release()


def _free_bytes(path: str) -> int | None:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return None
    return int(stats.f_bavail * stats.f_frsize)


def _stored_eof(exc: BaseException) -> int | None:
    """HDF5's size of a file whose last write failed (disk full): the superblock promises more bytes than exist."""
    match = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
    return int(match.group(2)) if match and int(match.group(2)) > int(match.group(1)) else None


def _open_for_resume(path: str) -> h5py.File:
    """r+; a file cut short by a failed write is first extended with zeros to the size HDF5 expects (only the
    uncommitted row lay there)."""
    try:
        return h5py.File(path, "r+", rdcc_nbytes=0)
    except OSError as exc:
        size = _stored_eof(exc)
        if size is None:
            raise
    os.truncate(path, size)
    return h5py.File(path, "r+", rdcc_nbytes=0)


class _ZeroPadded(io.RawIOBase):
    """A read-only view of a file that reads as zeros past its end, up to `size`: opens a session whose last write
    failed without changing it."""

    def __init__(self, path: str, size: int) -> None:
        super().__init__()
        self.file = open(path, "rb")
        self.size = size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: typing.Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.size - self.position))
        self.file.seek(self.position)
        got = self.file.readinto(view[:count]) or 0
        view[got:count] = bytes(count - got)
        self.position += count
        return count

    def close(self) -> None:
        self.file.close()
        super().close()


def _open_for_reading(path: str | os.PathLike[str]) -> tuple[h5py.File, _ZeroPadded | None]:
    try:
        return h5py.File(path, "r"), None
    except OSError as exc:
        size = _stored_eof(exc)
        if size is None:
            raise
    padded = _ZeroPadded(os.fspath(path), size)
    try:
        return h5py.File(padded, "r"), padded
    except BaseException:
        padded.close()
        raise


def _reason(exc: BaseException) -> str:
    """The OS reason of an h5py/OS error in one line (h5py puts the errno text deep in a long message)."""
    text = str(exc)
    for code, words in ((errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
                        (errno.EIO, "Input/output error"), (errno.EDQUOT, "Disk quota exceeded"),
                        (errno.EFBIG, "File too large")):
        if isinstance(exc, OSError) and exc.errno == code or words in text:
            return words
    return text.splitlines()[0] if text else type(exc).__name__


def read_session(path: str | os.PathLike[str]) -> SessionData:
    """Read a session file, also one left by a killed process; a clear InputError when it is not one, or when a
    row was edited or damaged (checksum). A row beyond the committed count (torn by a kill) is dropped."""
    padded = None
    try:
        file, padded = _open_for_reading(path)
        with file:
            points = file["points"]
            available = min(points[name].shape[0] for name in ROW_FIELDS)
            committed = file.attrs.get("committed")
            n = available if committed is None else min(int(committed), available)
            torn = max(points[name].shape[0] for name in ROW_FIELDS) - n
            data = SessionData(
                settings=json.loads(file.attrs["settings"]),
                survey=file["survey"][()],
                reference=file["reference"][()] if "reference" in file else None,
                positions=points["position"][:n], values=points["value"][:n],
                timestamps=points["timestamp"][:n], phases=points["phase"][:n],
                patterns=points["pattern"][:n], model_state=_latest_model_state(file), torn_rows=torn)
            checksums = points["checksum"][:n] if "checksum" in points and committed is not None else None
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read session file {os.fspath(path)}: {exc}") from None
    finally:
        if padded is not None:
            padded.close()
    if committed is not None and checksums is None or checksums is not None and len(checksums) < n:
        raise InputError(f"session file {os.fspath(path)} lacks the checksums of its rows; it was altered")
    if checksums is not None:
        _verify_rows(os.fspath(path), data, checksums)
    elif len(data.patterns):  # an older version's session: no checksums; an all-zero row is most likely a lost write
        zero = numpy.flatnonzero(~data.patterns.reshape(len(data.patterns), -1).any(axis=1))
        if zero.size:
            warnings.warn(f"{os.fspath(path)} (no row checksums: an older dkl4dstem) holds {zero.size} row(s) with an "
                          f"all-zero pattern, first row {int(zero[0])}: probably lost writes (full disk); check them",
                          RuntimeWarning, stacklevel=2)
    if torn:
        warnings.warn(f"{os.fspath(path)}: {torn} row(s) cut short by a kill or a failed write are not counted; "
                      "those positions may be measured again", RuntimeWarning, stacklevel=2)
    return data


def _verify_rows(path: str, data: SessionData, checksums: numpy.ndarray) -> None:
    bad = [row for row in range(len(checksums))
           if row_checksum(data.positions[row], float(data.values[row]), float(data.timestamps[row]),
                           int(data.phases[row]), data.patterns[row]) != int(checksums[row])]
    if bad:
        rows = ", ".join(f"{row} at {tuple(int(v) for v in data.positions[row])}" for row in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InputError(f"session file {path}: {len(bad)} row(s) fail their checksum (edited or damaged): "
                         f"row {rows}{more}; refusing to continue on altered data")


def _latest_model_state(file: h5py.File) -> dict[str, typing.Any] | None:
    """The newest readable model checkpoint. A checkpoint cut short by a kill is skipped (the measured points are
    what matters; the model is retrained from them), never a reason to refuse the whole session."""
    if "model" not in file:
        return None
    import torch

    for name in sorted(file["model"].keys(), reverse=True):
        try:
            return typing.cast(dict[str, typing.Any],
                               torch.load(io.BytesIO(file["model"][name][()].tobytes()), weights_only=True))
        except Exception as exc:  # torch.load raises RuntimeError/ValueError/EOFError/UnpicklingError on bad bytes
            warnings.warn(f"session model checkpoint {name} is unreadable and was skipped: {exc}", RuntimeWarning,
                          stacklevel=3)
    return None


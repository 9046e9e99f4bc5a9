"""SessionLock: one writer per session file (`<file>.lock`, flock), taken before anything is opened for writing."""
from __future__ import annotations

import errno
import fcntl
import os
import threading
import typing

from dkl4dstem.errors import InputError


class SessionLock:
    """Exclusive lock on one session file (`<file>.lock`, flock) before anything is opened for writing.

    Re-entrant within a thread (the CLI locks, then the engine's writer locks again); a second process, or another
    thread of this one (a second Swift panel), is refused with a one-line InputError."""

    _held: dict[tuple[str, int], tuple[int, int]] = {}  # (lock path, thread) -> (fd, depth)
    _guard = threading.Lock()

    def __init__(self, session_path: str | os.PathLike[str]) -> None:
        self.path = os.path.realpath(os.fspath(session_path)) + ".lock"
        self.key = (self.path, threading.get_ident())
        with self._guard:
            if self.key in self._held:
                fd, depth = self._held[self.key]
                self._held[self.key] = (fd, depth + 1)
                return
            self._held[self.key] = (self._lock(), 1)

    def _lock(self) -> int:
        folder = os.path.dirname(self.path)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InputError(f"cannot write to {folder}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _read_owner(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise InputError(f"{self.path[:-5]} is in use by another run{owner}; wait for it to end or "
                                     "choose another --out") from None
                raise InputError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released and removed it between our open and flock: take the new file
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy for the message above; the flock is what counts
        return fd

    def release(self) -> None:
        with self._guard:
            entry = self._held.get(self.key)
            if entry is None:
                return
            fd, depth = entry
            if depth > 1:
                self._held[self.key] = (fd, depth - 1)
                return
            del self._held[self.key]
        try:
            os.unlink(self.path)  # while still locked: a run that opened it meanwhile sees it is gone and retries
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc: typing.Any) -> None:
        self.release()


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read_owner(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


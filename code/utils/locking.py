"""An exclusive lock on an open file or folder, held until its descriptor is closed (the kernel also releases it
when the process dies, so a killed process never leaves a stale lock): `try_lock` without waiting, `wait_lock`
until the holder lets go; `LockFile`, a lock on a file that exists while it is held."""

import contextlib
import errno
import os
from pathlib import Path

from cdvd_tsp.utils.atomic import WriteError, writing

try:
    import fcntl
except ImportError:  # not POSIX: no locks; a second process is then not detected
    fcntl = None  # type: ignore[assignment]

AVAILABLE = fcntl is not None
"""Whether this system has ``flock`` (POSIX)."""

HELD_ELSEWHERE = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def try_lock(descriptor: int) -> bool:
    """Lock ``descriptor`` for this process without waiting: False if another live process holds the lock (True
    where the system has no ``flock``); any other failure is raised as the ``OSError`` it is."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in HELD_ELSEWHERE:
            return False
        raise
    return True


def wait_lock(descriptor: int) -> None:
    """Lock ``descriptor`` for this process, waiting while another process holds the lock (no wait where the system
    has no ``flock``)."""
    if fcntl is not None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)


class LockFile:
    """An flock on a lock file, held from `acquire` until `release` removes the file and closes it. The kernel
    releases the lock when the process dies: a killed holder leaves the file, never a stale lock."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self.descriptor = descriptor

    @classmethod
    def acquire(cls, path: Path) -> "LockFile | None":
        """Lock ``path`` (created if missing); None if another live process holds it. A holder that removed the
        file as this process opened it is noticed (the name leads to another file): the file there now is locked."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        while True:
            with writing(path):
                descriptor = os.open(path, flags, 0o666)
            try:
                locked = try_lock(descriptor)
            except OSError as error:
                os.close(descriptor)
                raise WriteError(path, error) from None
            if not locked:
                os.close(descriptor)
                return None
            try:
                same = os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(descriptor))
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, descriptor)
            os.close(descriptor)

    def release(self) -> None:
        if self.descriptor < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: whoever locks the removed file sees that it is gone
        os.close(self.descriptor)
        self.descriptor = -1

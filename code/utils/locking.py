"""An exclusive lock on an open file or folder, held until its descriptor is closed (the kernel also releases it
when the process dies, so a killed process never leaves a stale lock): `try_lock` without waiting, `wait_lock`
until the holder lets go."""

import errno

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

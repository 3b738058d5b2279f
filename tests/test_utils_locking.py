import os
from pathlib import Path

import pytest

from cdvd_tsp.utils import locking
from cdvd_tsp.utils.locking import try_lock

pytestmark = pytest.mark.skipif(not locking.AVAILABLE, reason="needs flock (POSIX)")


def test_a_second_holder_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    # flock belongs to an open file description, so two opens in one process compete like two processes
    first, second = os.open(tmp_path, os.O_RDONLY), os.open(tmp_path, os.O_RDONLY)
    try:
        assert try_lock(first) is True
        assert try_lock(second) is False
        os.close(first)
        first = -1
        assert try_lock(second) is True
    finally:
        for descriptor in (first, second):
            if descriptor >= 0:
                os.close(descriptor)


def test_a_failure_other_than_contention_is_raised(tmp_path: Path) -> None:
    descriptor = os.open(tmp_path, os.O_RDONLY)
    os.close(descriptor)
    with pytest.raises(OSError):
        try_lock(descriptor)  # closed: EBADF, not "held elsewhere"

"""Stop requests by signal (SIGTERM, SIGUSR1, and Ctrl-C in training), for the tools' main threads.

Clusters stop a job with SIGTERM (SLURM can also send SIGUSR1 ahead of its time limit). `StopRequests` is a context
manager that handles those signals (`STOP_SIGNALS`) while it is open and then puts back the handlers it found, in
one of two modes:

- **recording** (the default): a signal is only recorded (`StopRequests.signal_number`, the first one, and
  `StopRequests.count`); the code asks `StopRequests.requested` where it can stop cleanly (training: after each
  step, where it commits its position and exits). Later signals are recorded too and change nothing else, so a
  commit being made when one arrives finishes;
- **raising** (``raise_in_main=True``): the first signal raises `Interrupted` in the main thread, a
  ``KeyboardInterrupt``, so that the clean-up written for Ctrl-C runs (``finally`` blocks, ``except
  KeyboardInterrupt``); later signals are only recorded and do not interrupt that clean-up.

Training also records Ctrl-C (`TRAINING_STOP_SIGNALS`): its first SIGINT stops training at the next step boundary,
committed, as SIGTERM does; a SIGINT after a stop was asked for (``again_raises``) raises `Interrupted` at once, even
during a commit (which is crash-safe: utils/committed.py), so that a second Ctrl-C always ends the command. A
``notice`` is written to stderr when that first SIGINT is recorded, by the process that opened the context only (not
by a forked DataLoader worker, which inherits the handler), with ``os.write``: no Python stream, whose lock the
interrupted main thread may hold.

Contexts nest: an inner one (training's, recording) takes over from an outer one (the whole command's, raising)
and gives the signals back to it when it closes. `utils.errors.run_cli` ends a command that `Interrupted` stopped
with exit status 128 + the signal's number (`exit_status`; 143 for SIGTERM, 138 for SIGUSR1, 130 for Ctrl-C), the
status a shell reports for a process the signal ended. Python runs signal handlers in the main thread only: in
another thread the context handles nothing (and says so in `active`).
"""

import os
import signal
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
"""The signals that ask a run to stop: SIGTERM (kill, a scheduler stopping or preempting a job), SIGUSR1 (SLURM's
``--signal=USR1@<seconds>`` warning ahead of the time limit)."""

TRAINING_STOP_SIGNALS = (signal.SIGINT, *STOP_SIGNALS)
"""The signals training records and stops at a step boundary for: Ctrl-C as well (outside training it raises
``KeyboardInterrupt`` at once, Python's default)."""


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15: the signal's name (its number where it has none)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_status(number: int) -> int:
    """The exit status of a command stopped by signal ``number``: 128 + the number, as a shell reports it."""
    return 128 + number


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a stop signal in raising mode: handled like Ctrl-C, with the signal's status."""

    def __init__(self, number: int) -> None:
        super().__init__(signal_name(number))
        self.signal_number = number


class StopRequests:
    """Handles ``signals`` while open: records them, or raises `Interrupted` on the first (see the module docstring)."""

    def __init__(
        self,
        signals: Iterable[int] = STOP_SIGNALS,
        raise_in_main: bool = False,
        again_raises: Iterable[int] = (),
        notices: dict[int, str] | None = None,
    ) -> None:
        self.signals = tuple(signals)
        self.raise_in_main = raise_in_main
        self.again_raises = frozenset(again_raises)
        """Signals that raise `Interrupted` when a stop was already asked for (a second Ctrl-C: stop at once)."""
        self.notices = dict(notices or {})
        """A line for stderr when the first signal is one of these (what happens next, how to stop at once)."""
        self.signal_number: int | None = None
        """The first signal received while open (None if none)."""
        self.count = 0
        """How many signals were received while open."""
        self.active = False
        """Whether the handlers are installed (only in the main thread)."""
        self._previous: dict[int, Any] = {}
        self._pid = 0

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signal_number is not None

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signal_number is not None:
            if number in self.again_raises:
                raise Interrupted(number)  # asked again: stop now, whatever is in progress
            return  # a repeated signal: already on the way out, nothing more to do
        self.signal_number = number
        if self.raise_in_main:
            raise Interrupted(number)
        notice = self.notices.get(number)
        if notice and os.getpid() == self._pid:
            os.write(2, f"\n{notice}\n".encode())

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
            self.active = True
            self._pid = os.getpid()
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: one set outside Python
        self._previous.clear()
        self.active = False

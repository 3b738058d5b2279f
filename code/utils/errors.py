"""How the commands end: one line on stderr and an exit status, no traceback.

Exit statuses (`run_cli`): 0 done; 2 a `UserError` (bad input or options, a full disk, a diverged run); 128 + the
signal's number for a run stopped by a signal (`utils.signals.exit_status`): 130 Ctrl-C (SIGINT), 143 SIGTERM, 138
SIGUSR1, both for a run that stopped having kept its work (`Stopped`) and for one interrupted like Ctrl-C
(`utils.signals.Interrupted`).
"""

import signal
import sys
from collections.abc import Callable

from cdvd_tsp.utils.signals import exit_status, signal_name

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = exit_status(signal.SIGINT)


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of ``error``'s message (its type's name when it has none), optionally after that name."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return f"{type(error).__name__}: {line}" if with_type else line


class UserError(Exception):
    """A problem with the user's input or options; its message is one line naming the file or option."""


class Stopped(Exception):
    """A run stopped by a signal after keeping its work: ``message`` is the one line saying what was kept and how
    to continue ("" in a process that stays quiet: torchrun's ranks other than 0); the exit status is 128 + the
    signal's number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.message = message
        self.signal_number = signal_number

    @property
    def status(self) -> int:
        return exit_status(self.signal_number)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run an entry point and exit with its status: user errors (`UserError` and its kinds, such as
    `CheckpointError`) as ``error: <message>``, a run stopped by a signal (`Stopped`) as ``stopped: <message>``,
    Ctrl-C and `utils.signals.Interrupted` as ``interrupted by <signal>[: <what was kept and how to continue>]``
    (the exception's ``explanation``, where the run set one); no traceback (the statuses: module docstring)."""
    try:
        status = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Stopped as stop:
        if stop.message:
            print(f"stopped: {stop.message}", file=sys.stderr)
        sys.exit(stop.status)
    except KeyboardInterrupt as interrupt:
        number = getattr(interrupt, "signal_number", signal.SIGINT)
        explanation = getattr(interrupt, "explanation", "")  # what was kept and how to continue, if the run says
        name = "Ctrl-C" if number == signal.SIGINT else signal_name(number)
        print(f"interrupted by {name}" + (f": {explanation}" if explanation else ""), file=sys.stderr)
        sys.exit(exit_status(number))
    sys.exit(status or 0)

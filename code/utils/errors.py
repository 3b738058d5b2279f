"""User-facing errors: one line on stderr, a non-zero exit, no traceback."""

import logging
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of ``error``'s message (its type's name when it has none), optionally after that name."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return f"{type(error).__name__}: {line}" if with_type else line


class UserError(Exception):
    """A problem with the user's input or options; its message is one line naming the file or option."""


def run_cli(main: Callable[[], int | None]) -> None:
    """Run an entry point; report user errors (`UserError` and its kinds, such as `CheckpointError`) as
    ``error: <message>`` and exit non-zero without a traceback."""
    try:
        status = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        logging.getLogger(__name__).warning("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(status or 0)

"""The commands' argument parser: help with every default shown, and one-line errors that suggest the nearest option.

argparse's own error prints the whole usage block (17-23 lines for these commands) before the message, and a typo
gets no suggestion. `CommandParser.error` prints one line, ``error: <message>``, with ``did you mean --x?`` for an
unknown option close to a known one, and exits with status 2 like every other user error (`utils.errors`).
"""

import argparse
import difflib
import os
import re
import shlex
import sys
from typing import NoReturn

from cdvd_tsp.utils.errors import EXIT_USER_ERROR

UNKNOWN = re.compile(r"unrecognized arguments: (.*)")


class DefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's and epilog's lines as written, and appends ``(default: X)`` to an option's help
    unless its help already says its default; a switch's default is ``on`` or ``off``, and an option without a value
    by default is left to its help to explain."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is argparse.SUPPRESS
        if unset or re.search(r"\bdefault\b", text) or not action.option_strings:
            return text
        if isinstance(default, bool):
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) and not action.const:
                return text  # the negative of a pair of switches: its positive says the default
            default = "on" if default else "off"
        return f"{text} (default: {str(default).replace('%', '%%')})"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def option_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings if name.startswith("--")]

    def suggestion(self, word: str) -> str:
        """`` (did you mean --output?)`` for an unknown ``--otput=x``, or "" when nothing is close."""
        if not word.startswith("-"):
            return ""
        flag = "--" + word.lstrip("-").split("=", 1)[0]
        close = difflib.get_close_matches(flag, self.option_names(), n=1, cutoff=0.6)
        return f" (did you mean {close[0]}?)" if close else ""

    def error(self, message: str) -> NoReturn:
        unknown = UNKNOWN.fullmatch(message)
        if unknown:
            flags = [word for word in unknown.group(1).split() if word.startswith("-")] or unknown.group(1).split()
            message = f"unknown argument {flags[0]}{self.suggestion(flags[0])}"
            if len(flags) > 1:
                message += f", and {', '.join(flags[1:])}"
        print(f"error: {message}; {self.prog} --help lists the options", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def program_words(program: str) -> list[str]:
    """How to run ``program`` (``sys.argv[0]``) again from a shell: ``python code/main.py`` for a script, the name of
    an installed command (``cdvd-tsp-train``) for one."""
    return ["python", program] if program.endswith(".py") else [program.rsplit("/", 1)[-1]]


def rerun_command(flag: str | None = None) -> str:
    """This process's command line, quoted for a shell, with ``flag`` added if it is not there (``python
    code/inference.py ... --resume``); under torchrun, which runs this script with its own options, the same
    command with ``flag``."""
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        return f"the same torchrun command with {flag}" if flag else "the same torchrun command"
    argv = [*program_words(sys.argv[0]), *sys.argv[1:]]
    if flag and flag not in argv:
        argv.append(flag)
    return shlex.join(argv)

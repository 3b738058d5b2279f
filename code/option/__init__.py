"""Command-line options of `main.py`: the release's flags with their meanings, plus this project's additions.

- `option.parser`: the flags, the template under them, the release's aliases (--load, --save .);
- `option.derive`: the values that follow from them (``n_sequence``, absolute folders), each computed once;
- `option.checks`: a one-line `UserError` naming the flag whose value cannot work, and warnings for flags that
  have no effect; they never change the options;
- `option.resume`: what a run saves of its options and how --resume takes them back;
- `option.template`: the named recipes (the release's module name).
"""

import argparse
from collections.abc import Sequence

from cdvd_tsp.option.checks import check_options, option_warnings
from cdvd_tsp.option.derive import DERIVED, derive
from cdvd_tsp.option.parser import (
    AMP_MODES,
    CHANNELS_LAST_MODES,
    MODELS,
    NO_VALUE,
    OPTIMIZER_IMPLEMENTATIONS,
    build_parser,
    explicit_options,
    read_options,
)
from cdvd_tsp.option.resume import ADJUSTABLE_OPTIONS, CONTROL_OPTIONS, apply_saved_options, run_options

__all__ = [
    "ADJUSTABLE_OPTIONS",
    "AMP_MODES",
    "CHANNELS_LAST_MODES",
    "CONTROL_OPTIONS",
    "DERIVED",
    "MODELS",
    "NO_VALUE",
    "OPTIMIZER_IMPLEMENTATIONS",
    "apply_saved_options",
    "build_parser",
    "check_options",
    "derive",
    "explicit_options",
    "option_warnings",
    "parse_args",
    "read_options",
    "run_options",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Read the options (template under the flags given), add the derived values and check every value."""
    args = read_options(argv)
    derive(args)
    check_options(args)
    return args

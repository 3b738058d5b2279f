"""utils/errors.py: how a command ends for a user error (one line, status 2, no traceback) and the first line of a
message. The statuses of signals and stops: tests/test_utils_signals.py."""

import subprocess
import sys

from cdvd_tsp.utils.errors import Stopped, UserError, first_line
from cdvd_tsp.utils.paths import REPO_ROOT


def test_a_user_error_is_one_line_on_stderr_and_status_2_in_a_real_process() -> None:
    script = (
        "from cdvd_tsp.utils.errors import UserError, run_cli\n"
        "def main():\n    raise UserError('bad --flag')\nrun_cli(main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT / "code", capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr == "error: bad --flag\n"


def test_the_first_line_of_a_message() -> None:
    assert first_line(OSError("disk full\nmore detail")) == "disk full"
    assert first_line(ValueError("  padded  ")) == "padded"
    assert first_line(KeyError(), with_type=True) == "KeyError"  # no message: the type's name
    assert first_line(RuntimeError("boom\nline 2"), with_type=True) == "RuntimeError: boom"


def test_a_stop_carries_its_line_and_the_status_of_its_signal() -> None:
    stop = Stopped("kept epoch 3", 15)
    assert (stop.message, stop.status, str(stop)) == ("kept epoch 3", 143, "kept epoch 3")
    assert Stopped("", 10).status == 138
    assert issubclass(UserError, Exception) and not issubclass(UserError, (OSError, ValueError))

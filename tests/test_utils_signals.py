"""utils/signals.py and run_cli's exit statuses: real signals sent to this process while a context is open."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cdvd_tsp.utils.errors import Stopped, UserError, run_cli
from cdvd_tsp.utils.paths import REPO_ROOT
from cdvd_tsp.utils.signals import (
    STOP_SIGNALS,
    TRAINING_STOP_SIGNALS,
    Interrupted,
    StopRequests,
    exit_status,
    signal_name,
)


def send(number: int) -> None:
    """A signal to this process; its Python handler has run when this returns (main thread)."""
    os.kill(os.getpid(), number)


def test_recording_keeps_the_first_signal_and_counts_the_others() -> None:
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    with StopRequests() as requests:
        assert requests.active and not requests.requested
        send(signal.SIGTERM)
        assert (requests.signal_number, requests.count) == (signal.SIGTERM, 1)
        send(signal.SIGUSR1)  # a second one, as during a commit: recorded, nothing else
        send(signal.SIGTERM)
        assert (requests.signal_number, requests.count, requests.requested) == (signal.SIGTERM, 3, True)
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before  # handlers put back
    assert not requests.active


def test_raising_interrupts_like_ctrl_c_once() -> None:
    cleaned = []
    with pytest.raises(Interrupted) as raised, StopRequests(raise_in_main=True) as requests:
        try:
            send(signal.SIGUSR1)
            pytest.fail("the signal did not interrupt")
        finally:
            send(signal.SIGTERM)  # during the clean-up: recorded, the clean-up goes on
            cleaned.append(True)
    assert isinstance(raised.value, KeyboardInterrupt) and raised.value.signal_number == signal.SIGUSR1
    assert str(raised.value) == "SIGUSR1" and cleaned == [True] and requests.count == 2


def test_an_inner_recording_context_takes_over_and_gives_back() -> None:
    with StopRequests(raise_in_main=True) as outer:
        with StopRequests() as inner:
            send(signal.SIGTERM)  # training: recorded, not raised
        assert inner.signal_number == signal.SIGTERM and not outer.requested
        with pytest.raises(Interrupted):
            send(signal.SIGTERM)  # after training: the outer context interrupts again
    assert outer.signal_number == signal.SIGTERM


def training_requests() -> StopRequests:
    """main.py's training context: Ctrl-C recorded like SIGTERM, a second Ctrl-C raising, a notice on the first."""
    return StopRequests(TRAINING_STOP_SIGNALS, again_raises=[signal.SIGINT], notices={signal.SIGINT: "noticed"})


def test_training_records_a_first_ctrl_c_and_raises_on_a_second(capfd: pytest.CaptureFixture) -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as raised, training_requests() as requests:
        send(signal.SIGINT)  # recorded: training stops at its next step boundary
        assert (requests.signal_number, requests.count) == (signal.SIGINT, 1)
        assert capfd.readouterr().err == "\nnoticed\n"
        send(signal.SIGTERM)  # another stop signal: recorded only (a commit under way finishes)
        send(signal.SIGUSR1)
        assert requests.count == 3
        send(signal.SIGINT)  # Ctrl-C again: at once
        pytest.fail("the second Ctrl-C did not interrupt")
    assert raised.value.signal_number == signal.SIGINT and exit_status(raised.value.signal_number) == 130
    assert signal.getsignal(signal.SIGINT) is before and requests.count == 4
    assert capfd.readouterr().err == ""  # one notice


def test_ctrl_c_after_a_sigterm_stops_at_once_and_sigterm_twice_does_not(capfd: pytest.CaptureFixture) -> None:
    with training_requests() as requests:
        send(signal.SIGTERM)
        send(signal.SIGTERM)  # SLURM and torchrun often send it twice: recorded
        with pytest.raises(Interrupted):
            send(signal.SIGINT)  # a person who will not wait for the commit
    assert requests.signal_number == signal.SIGTERM and requests.count == 3
    assert capfd.readouterr().err == ""  # the notice is Ctrl-C's


def test_a_forked_child_records_but_does_not_write_the_notice(capfd: pytest.CaptureFixture) -> None:
    """DataLoader workers are forked inside training's context and get a terminal's Ctrl-C too: they inherit the
    handler, so they record it (and go on loading) but stay quiet."""
    with training_requests() as requests:
        child = os.fork()
        if child == 0:  # the child: exits 0 if it recorded the signal (after its handler ran)
            os.kill(os.getpid(), signal.SIGINT)
            os._exit(0 if requests.signal_number == signal.SIGINT else 1)
        _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and not requests.requested
    assert capfd.readouterr().err == ""


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen = []

    def open_context() -> None:
        with StopRequests() as requests:
            seen.append((requests.active, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=open_context)
    thread.start()
    thread.join()
    assert seen == [(False, before)]


def test_names_and_statuses_are_the_shells() -> None:
    assert [exit_status(number) for number in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)] == [130, 138, 143]
    assert (signal_name(15), signal_name(10), signal_name(99)) == ("SIGTERM", "SIGUSR1", "signal 99")


def exit_of(main: object, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_status_:
        run_cli(main)
    return exit_status_.value.code, capsys.readouterr().err


def raise_(error: BaseException) -> object:
    def main() -> None:
        raise error

    return main


def test_run_cli_ends_each_kind_of_stop_with_its_status(capsys: pytest.CaptureFixture, caplog) -> None:
    assert exit_of(raise_(Stopped("SIGTERM in epoch 2: kept", signal.SIGTERM)), capsys) == (
        143,
        "stopped: SIGTERM in epoch 2: kept\n",
    )
    assert exit_of(raise_(Stopped("", signal.SIGUSR1)), capsys) == (138, "")  # another rank: quiet
    assert exit_of(raise_(UserError("bad")), capsys) == (2, "error: bad\n")
    assert exit_of(raise_(Interrupted(signal.SIGTERM)), capsys) == (143, "interrupted by SIGTERM\n")
    assert exit_of(raise_(KeyboardInterrupt()), capsys) == (130, "interrupted by Ctrl-C\n")
    explained = KeyboardInterrupt()
    explained.explanation = "nothing was kept"
    assert exit_of(raise_(explained), capsys) == (130, "interrupted by Ctrl-C: nothing was kept\n")
    assert exit_of(lambda: 0, capsys) == (0, "")


def test_a_command_without_a_context_dies_of_sigterm_and_with_one_exits_143() -> None:
    """What the contexts change for a real process: SIGTERM kills a bare one; inside StopRequests(raise_in_main)
    the clean-up runs and run_cli exits with 143."""
    program = (
        "import contextlib, sys, time\n"
        "sys.path.insert(0, 'code')\n"
        "from cdvd_tsp.utils.errors import run_cli\n"
        "from cdvd_tsp.utils.signals import StopRequests\n"
        "def main():\n"
        "    handled = sys.argv[1] == 'handled'\n"
        "    with StopRequests(raise_in_main=True) if handled else contextlib.nullcontext():\n"
        "        try:\n"
        "            print('ready', flush=True)\n"
        "            time.sleep(60)\n"
        "        finally:\n"
        "            print('cleaned up', flush=True)\n"
        "run_cli(main)\n"
    )
    for mode, status, cleaned in (("bare", -signal.SIGTERM, False), ("handled", 143, True)):
        process = subprocess.Popen(
            [sys.executable, "-c", program, mode], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout.readline() == b"ready\n"
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == status, err
        assert (b"cleaned up" in out) == cleaned

"""Training stopped by SIGTERM, SIGUSR1 and Ctrl-C in one process: the stop at the next step boundary, the commit of
the point reached, the one line (with the command that continues the run) and the exit status, --resume ending with
the files of an uninterrupted run, and a second Ctrl-C stopping at once, during the commit, leaving a resumable run.

Real signals are sent to the training process at chosen points: to this one (the handlers of utils/signals.py run
in pytest's main thread, as in main.py's) from hooks in the optimisation step or the validation, and, for the exit
status, the printed line and a second signal during the commit, to a subprocess (conftest.hooked_training).
Tiny runs: a one-stage model, 32 x 32 crops, two epochs of three steps, HEM in the loss (its generator is part of
what a stop must keep). torchrun's stops and restarts: tests/test_main_torchrun.py.
"""

import argparse
import json
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy
import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.data.videodata import VideoData
from cdvd_tsp.trainer.randomness import capture_rng_state
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.trainer.trainer import Trainer, continue_command
from cdvd_tsp.utils import committed
from cdvd_tsp.utils.errors import Stopped, UserError
from cdvd_tsp.utils.paths import REPO_ROOT
from cdvd_tsp.utils.signals import Interrupted, signal_name
from conftest import (
    assert_same_training,
    hooked_training,
    hooks_environment,
    run_folder,
    tiny_training_argv,
)

pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")

STEPS = ["--test_every", "3", "--epochs", "2", "--flow_lr", "0"]
"""Two training windows at batch 2, repeated three times: three steps an epoch; PWC-Net frozen (smaller files)."""
KEPT = "keeps this point (weights, optimizer, scheduler, every random state, the epoch's progress)"


def resume(run: Path, program: str | None = None) -> str:
    """The end of a stop's line: the command that continues ``run`` (a tiny run's, given its --experiment_dir)."""
    args = argparse.Namespace(save=run.name, experiment_dir=str(run.parent), explicit=["experiment_dir"])
    return f"to continue it: {continue_command(args, distributed=False, program=program)}"


@pytest.fixture(scope="module")
def argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return tiny_training_argv(tmp_path_factory.mktemp("preemption"), *STEPS)


def train(argv: list[str], save: str) -> int:
    """The one command line of every start: --resume starts the run, or continues it."""
    return train_main.main([*argv, "--save", save, "--resume"])


def read_training_samples(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(epoch, index) of every training sample read from now on."""
    read: list[tuple[int, int]] = []
    real = VideoData.__getitem__

    def getitem(self: VideoData, index: int) -> tuple:
        if self.train:
            read.append((self.epoch, index))
        return real(self, index)

    monkeypatch.setattr(VideoData, "__getitem__", getitem)
    return read


@pytest.fixture(scope="module")
def reference(argv: list[str]) -> Iterator[tuple[Path, list[tuple[int, int]]]]:
    """The uninterrupted run, and the training samples it read."""
    with pytest.MonkeyPatch.context() as patch:
        read = read_training_samples(patch)
        assert train(argv, "reference") == 0
    yield run_folder(argv, "reference"), read


def signal_after_step(monkeypatch: pytest.MonkeyPatch, step: int, number: int, draw: bool = False) -> None:
    """Send ``number`` to this process right after the ``step``-th optimisation step (counting from 1); with
    ``draw``, each step also draws from the global generators (as a model with dropout would)."""
    real, done = TrainStep.optimise, []

    def optimise(self: TrainStep, total: torch.Tensor) -> None:
        real(self, total)
        if draw:
            random.random(), numpy.random.rand(), torch.rand(1)
        done.append(step)
        if len(done) == step:
            signal.raise_signal(number)

    monkeypatch.setattr(TrainStep, "optimise", optimise)


def stop(argv: list[str], save: str, hook: Callable[[pytest.MonkeyPatch], None]) -> Stopped:
    """Train ``save`` with ``hook`` installed until a signal stops it; the `Stopped` that ends main."""
    with pytest.MonkeyPatch.context() as patch:
        hook(patch)
        with pytest.raises(Stopped) as stopped:
            train(argv, save)
    return stopped.value


def tuple_of(value: object) -> object:
    """Python's generator state as `random.getstate` gives it (a saved copy may hold lists)."""
    return tuple(tuple_of(item) for item in value) if isinstance(value, list | tuple) else value


def state_of(run: Path) -> dict:
    return torch.load(run / "state.pt", weights_only=True)


def manifest(run: Path) -> dict:
    return json.loads(committed.manifest_path(run, "state.pt").read_text())


@pytest.fixture(scope="module")
def stopped_in_epoch_2(argv: list[str], reference: tuple) -> Path:
    """A run stopped by SIGTERM during the first step of epoch 2 (the fourth step); left as the stop left it. Its
    steps draw from the global generators, so that where it left them differs from where a new process has them."""
    stopped = stop(argv, "sigterm", lambda patch: signal_after_step(patch, 4, signal.SIGTERM, draw=True))
    run = run_folder(argv, "sigterm")
    assert stopped.message == f"SIGTERM in epoch 2 after batch 1 of 3: {run} {KEPT}; {resume(run)}"
    assert stopped.status == 143
    return run


def test_sigterm_stops_after_the_step_it_came_in_and_resume_is_exact(
    argv: list[str], reference: tuple, stopped_in_epoch_2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full, full_read = reference
    run = Path(shutil.copytree(stopped_in_epoch_2, stopped_in_epoch_2.parent / "sigterm_resumed"))
    state = state_of(run)
    assert state["epoch"] == 1 and state["inside"] == {"epoch": 2, "batches": 1, "signal": "SIGTERM"}
    assert manifest(run)["meta"] == {"tool": "main.py", "epoch": 1, "inside": {"epoch": 2, "batches": 1}}
    assert [sorted(rank) for rank in state["ranks"]] == [["batches", "device", "loss_rng", "rng", "sums"]]
    assert state["ranks"][0]["batches"] == 1 and len(state["ranks"][0]["sums"]) == 3  # L1, HEM, Total
    assert (run / "log.txt").read_text().splitlines()[-1].startswith("[2/6]\tLoss : [total: ")  # epoch 2's first

    read = read_training_samples(monkeypatch)
    continued_with = []
    real_continue = Trainer.continue_epoch

    def continue_epoch(self: Trainer, progress: object) -> None:
        continued_with.append(capture_rng_state())  # the global generators where the stopped run left them
        real_continue(self, progress)

    monkeypatch.setattr(Trainer, "continue_epoch", continue_epoch)
    assert train(argv, "sigterm_resumed") == 0
    saved, restored = state["ranks"][0]["rng"], continued_with[0]
    assert restored["python"] == tuple_of(saved["python"]) and torch.equal(restored["torch"], saved["torch"])
    assert torch.equal(restored["numpy"]["keys"], saved["numpy"]["keys"])
    epoch_2 = [index for epoch, index in full_read if epoch == 2]
    assert read == [(2, index) for index in epoch_2[2:]]  # the first batch (2 samples) skipped, not even read
    assert_same_training(run, full)
    assert (
        "Continue from epoch 1, inside epoch 2 after batch 1 (stopped by SIGTERM)..." in (run / "log.txt").read_text()
    )


def signal_during_validation(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    real = Trainer.evaluate

    def evaluate(self: Trainer) -> tuple[float, float]:
        signal.raise_signal(number)
        return real(self)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def test_stops_after_an_epochs_last_step_and_during_validation_resume_exactly(
    argv: list[str], reference: tuple
) -> None:
    """SIGUSR1 in epoch 1's last step stops before its validation (a point inside the epoch: all its batches done);
    resumed, SIGTERM during that validation stops at epoch 2's start (nothing more to keep than epoch 1's commit);
    resumed again, the run ends as the uninterrupted one."""
    run = run_folder(argv, "epoch_end")
    stopped = stop(argv, "epoch_end", lambda patch: signal_after_step(patch, 3, signal.SIGUSR1))
    assert stopped.message == f"SIGUSR1 in epoch 1 after batch 3 of 3: {run} {KEPT}; {resume(run)}"
    assert stopped.status == 138
    assert state_of(run)["inside"] == {"epoch": 1, "batches": 3, "signal": "SIGUSR1"}
    assert "Evaluation:" not in (run / "log.txt").read_text()

    stopped = stop(argv, "epoch_end", lambda patch: signal_during_validation(patch, signal.SIGTERM))
    assert stopped.message == f"SIGTERM before epoch 2: {run} keeps epoch 1, its last commit; {resume(run)}"
    state = state_of(run)
    assert state["epoch"] == 1 and "inside" not in state
    assert "Evaluation:" in (run / "log.txt").read_text() and "Epoch   2 with" not in (run / "log.txt").read_text()

    assert train(argv, "epoch_end") == 0
    assert_same_training(run, reference[0])


def test_a_real_process_stopped_and_signalled_again_while_committing(argv: list[str], reference: tuple) -> None:
    """SIGTERM in step 2, then SIGTERM and SIGUSR1 just before the commit point of the point reached: the commit
    finishes (neither kills the process nor interrupts the commit), one line, exit status 143."""
    run = run_folder(argv, "twice")
    hooks = hooks_environment(
        {"at": "step", "count": 2, "signal": "SIGTERM"},
        {"at": "progress commit", "count": 1, "signal": "SIGTERM"},
        {"at": "progress commit", "count": 1, "signal": "SIGUSR1"},
    )
    script = hooked_training(run.parent.parent)
    command = [sys.executable, str(script), *argv, "--save", "twice", "--resume"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=hooks, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr[-3000:]
    assert re.findall(r"(?:test hook|stopped|error): [^\r\n]*", result.stderr) == [
        "test hook: SIGTERM to self at step 2",
        "test hook: SIGTERM to self at progress commit 1",
        "test hook: SIGUSR1 to self at progress commit 1",
        f"stopped: SIGTERM in epoch 1 after batch 2 of 3: {run} {KEPT}; {resume(run, str(script))}",
        "test hook: rank 0 exits with 143",
    ]
    assert manifest(run)["meta"]["inside"] == {"epoch": 1, "batches": 2}  # committed, whole
    assert not list(run.glob(".state.pt.*staging*")) and not (run / ".state.pt.lock").exists()
    assert train(argv, "twice") == 0
    assert_same_training(run, reference[0])


def hooked(argv: list[str], save: str, *hooks: dict) -> tuple[subprocess.CompletedProcess, Path]:
    """main.py with ``hooks`` in a subprocess (conftest.hooked_training), run ``save``; its result and script."""
    script = hooked_training(run_folder(argv, save).parent.parent)
    command = [sys.executable, str(script), *argv, "--save", save, "--resume"]
    env = hooks_environment(*hooks)
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300), script


def run_printed_command(line: str) -> subprocess.CompletedProcess:
    """Run the command a stop's line ends with (``to continue it: <command>``), as a user would paste it."""
    command = shlex.split(line.split("to continue it: ", 1)[1])
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_ctrl_c_in_training_commits_the_step_and_its_command_continues_exactly(
    argv: list[str], reference: tuple
) -> None:
    """A real process gets SIGINT after its fourth step (epoch 2's first): it stops there as SIGTERM would, commits
    that point, says so with the command that continues it, exits 130; that command, run as printed, ends with the
    files of the uninterrupted run."""
    run = run_folder(argv, "ctrl_c")
    result, script = hooked(argv, "ctrl_c", {"at": "step", "count": 4, "signal": "SIGINT"})
    assert result.returncode == 130, result.stderr[-3000:]
    line = f"stopped: Ctrl-C (SIGINT) in epoch 2 after batch 1 of 3: {run} {KEPT}; {resume(run, str(script))}"
    assert re.findall(r"(?:test hook|stopped|error|interrupted by Ctrl-C): [^\r\n]*", result.stderr) == [
        "test hook: SIGINT to self at step 4",
        line,
        "test hook: rank 0 exits with 130",
    ]
    assert "Ctrl-C: training stops after this step, committing it; Ctrl-C again stops at once" in result.stderr
    assert state_of(run)["inside"] == {"epoch": 2, "batches": 1, "signal": "SIGINT"}
    assert "Traceback" not in result.stderr
    resumed = run_printed_command(line)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Continue from epoch 1, inside epoch 2 after batch 1 (stopped by SIGINT)..." in (run / "log.txt").read_text()
    assert_same_training(run, reference[0])


def test_a_second_ctrl_c_during_the_commit_stops_at_once_and_leaves_a_resumable_run(
    argv: list[str], reference: tuple
) -> None:
    """SIGINT after step 2, then SIGINT again just before the commit point of that step: the process stops at once
    (the commit not made: the folder keeps epoch 0, the staging folder removed), exits 130 with a line saying what
    is kept; the printed command continues it and ends as the uninterrupted run."""
    run = run_folder(argv, "ctrl_c_twice")
    first = {"at": "step", "count": 2, "signal": "SIGINT"}
    again = {"at": "progress commit", "count": 1, "signal": "SIGINT"}
    result, script = hooked(argv, "ctrl_c_twice", first, again)
    assert result.returncode == 130, result.stderr[-3000:]
    line = (
        f"interrupted by Ctrl-C: a second time, stopped at once; {run} keeps its last commit (epoch 0, the initial "
        "weights, or epoch 1 after batch 2 if its commit got through: the next start completes it); "
        f"{resume(run, str(script))}"
    )
    assert re.findall(r"(?:test hook|stopped|error|interrupted by Ctrl-C): [^\r\n]*", result.stderr) == [
        "test hook: SIGINT to self at step 2",
        "test hook: SIGINT to self at progress commit 1",
        line,
        "test hook: rank 0 exits with 130",
    ]
    assert "Traceback" not in result.stderr
    assert manifest(run)["meta"] == {"tool": "main.py", "epoch": 0}  # the last commit, whole
    assert not list(run.glob(".*staging*"))  # cut short before its commit point: undone at once
    resumed = run_printed_command(line)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training(run, reference[0])  # no staging folder or lock left either


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_outside_training_interrupts_like_ctrl_c(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, number: int
) -> None:
    real = train_main.build_datasets

    def build_datasets(*args: object, **kwargs: object) -> tuple:
        signal.raise_signal(number)  # while reading the data: nothing to keep yet
        return real(*args, **kwargs)

    monkeypatch.setattr(train_main, "build_datasets", build_datasets)
    save = f"setting_up_{signal_name(number)}"
    with pytest.raises(KeyboardInterrupt) as interrupted:
        train(argv, save)
    # SIGTERM: the command's context raises Interrupted; Ctrl-C: Python's own KeyboardInterrupt, as before training
    assert getattr(interrupted.value, "signal_number", signal.SIGINT) == number
    assert isinstance(interrupted.value, Interrupted) == (number != signal.SIGINT)
    run = run_folder(argv, save)
    assert not run.exists() or not any(run.iterdir())  # a start that never committed leaves nothing


def test_a_point_inside_an_epoch_resumes_only_with_the_same_processes_and_device(
    argv: list[str], stopped_in_epoch_2: Path
) -> None:
    for name, change, message in (
        ("two_ranks", lambda state: state["ranks"].append(state["ranks"][0]), "with 2 process(es); continue it with 2"),
        ("on_cuda", lambda state: state["ranks"][0].update(device="cuda:0"), "on cuda:0; continue it on the same"),
    ):
        run = Path(shutil.copytree(stopped_in_epoch_2, stopped_in_epoch_2.parent / name))
        state = state_of(run)
        change(state)
        torch.save(state, run / "state.pt")
        with pytest.raises(UserError, match=re.escape(f"stopped inside epoch 2 (after batch 1) {message}")):
            train(argv, name)

"""Training under torchrun (gloo on the CPU): two processes on one node, a worker killed and restarted, two nodes on
one machine stopped by SIGTERM and resumed; each ends with the files of one uninterrupted two-process run.

Every launch trains the same tiny run (a one-stage model, 32 x 32 crops, two epochs of three steps of one sample per
process) into one folder with one command line, --resume included. Kills and signals come from test hooks in the
workers (conftest.hooked_training) at chosen steps, so that they land where the test says.
"""

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.main import start_runtime
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT
from cdvd_tsp.utils.runtime import SHARED_STORE_SWITCH, check_restarts_can_meet
from conftest import (
    TINY_TRAINING,
    TORCHRUN,
    assert_same_training,
    free_port,
    hooked_training,
    hooks_environment,
    make_dataset,
)

pytestmark = pytest.mark.usefixtures("single_thread")

RUN = ["--test_every", "3", "--epochs", "2", "--flow_lr", "0", "--save_images"]
"""Global batch 2 (one sample per process), six samples an epoch: three steps; PWC-Net frozen (smaller files)."""
RESTARTABLE = {SHARED_STORE_SWITCH: "1"}
"""torchrun's environment for --max-restarts (utils/runtime.py, check_restarts_can_meet)."""


@pytest.fixture(scope="module")
def space() -> Iterator[Path]:
    """A scratch folder in memory where there is one (each epoch's commit writes ~120 MB, fsync'ed)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="train_torchrun_", dir=base))
    yield from _filled(root)
    shutil.rmtree(root, ignore_errors=True)


def _filled(root: Path) -> Iterator[Path]:
    make_dataset(root / "train", {"video0": 3, "video1": 3}, height=32, width=40)
    make_dataset(root / "test", {"video0": 4}, height=32, width=32, seed=7)  # two windows: one per process
    hooked_training(root)
    yield root


def argv(space: Path, save: str) -> list[str]:
    data = ["--dir_data", str(space / "train"), "--dir_data_test", str(space / "test")]
    return [*TINY_TRAINING, *RUN, *data, "--experiment_dir", str(space / "runs"), "--save", save, "--resume"]


def launch(launcher: list[str], script: str, arguments: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*TORCHRUN, *launcher, script, *arguments],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def two_nodes(space: Path, save: str, env: dict | None = None) -> list[tuple[int, str, str]]:
    """Two torchrun launches of one process each, joined by a c10d rendezvous on localhost, into one folder."""
    rendezvous = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d"]
    rendezvous += ["--rdzv_endpoint", f"localhost:{free_port()}", "--rdzv_id", save]
    script = str(space / "hooked_training.py")
    nodes = [launch([*rendezvous, "--node_rank", str(node)], script, argv(space, save), env) for node in (0, 1)]
    return [finish(node) for node in nodes]


@pytest.fixture(scope="module")
def reference(space: Path) -> tuple[Path, str]:
    """The uninterrupted run: one node, two processes; and what it printed."""
    status, out, err = finish(launch(["--standalone", "--nproc_per_node", "2"], "code/main.py", argv(space, "ddp")))
    assert status == 0, err[-3000:]
    return space / "runs" / "ddp", out


def test_two_processes_train_and_only_rank_0_writes(space: Path, reference: tuple[Path, str]) -> None:
    run, out = reference
    log = (run / "log.txt").read_text()
    assert log.count("Epoch   1 with Lr") == 1 and (run / "config.txt").read_text().count("From epoch") == 1
    assert out.count("average PSNR_iter1") == 2  # one line an epoch: the other process logs nothing
    assert "--resume: " in out and "holds no run yet; starting it" in out  # --resume started it
    for frame in ("00001", "00002"):  # one validation window per process; rank 0 writes both
        assert (run / "result" / "DVD" / "video0" / f"{frame}_deblur_iter2.png").is_file()
    load_weights(CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1), run / "model" / "model_latest.pt")
    # validation reduced over both processes equals validating every window in one process
    check = argv(space, "ddp_check")[:-1]  # without --resume
    assert train_main.main([*check, "--test_only", "--pre_train", str(run / "model" / "model_latest.pt")]) == 0
    ddp_line = [line for line in log.splitlines() if "average PSNR_iter1" in line][-1].split(" (Best")[0]
    check_lines = (space / "runs" / "ddp_check" / "log.txt").read_text().splitlines()
    assert [line for line in check_lines if "average PSNR_iter1" in line] == [ddp_line]


def test_a_worker_killed_or_signalled_is_restarted_and_the_run_ends_as_uninterrupted(
    space: Path, reference: tuple[Path, str]
) -> None:
    """torchrun --max-restarts 2 ... --resume: rank 1 is SIGKILLed after the first step of epoch 2, and torchrun
    restarts both processes with the same command, which continues from epoch 1's commit; in that attempt rank 0
    alone gets SIGTERM after its second step: both stop after the third (the vote), commit and exit 143, and
    torchrun, with a restart left, starts them again, to continue from that step."""
    kill = {"at": "step", "count": 4, "signal": "SIGKILL", "rank": 1, "attempt": 0}
    term = {"at": "step", "count": 2, "signal": "SIGTERM", "rank": 0, "attempt": 1}
    env = {**hooks_environment(kill, term), **RESTARTABLE}
    launcher = ["--standalone", "--nproc_per_node", "2", "--max-restarts", "2"]
    status, out, err = finish(launch(launcher, str(space / "hooked_training.py"), argv(space, "restarted"), env))
    assert status == 0, err[-3000:]
    run = space / "runs" / "restarted"
    assert "test hook: SIGKILL to self at step 4" in err and "exitcode: -9" in err  # killed, and seen dead
    assert "test hook: SIGTERM to self at step 2" in err
    assert sorted(re.findall(r"test hook: rank \d exits with \d+", err)) == [
        *["test hook: rank 0 exits with 0", "test hook: rank 0 exits with 143"],
        *["test hook: rank 1 exits with 0", "test hook: rank 1 exits with 143"],
    ]  # the attempt stopped by SIGTERM, then the last one
    assert re.findall(r"stopped: SIGTERM [^:]*", err) == ["stopped: SIGTERM in epoch 2 after batch 3 of 3"]
    log = (run / "log.txt").read_text()
    assert log.count("Continue from epoch 1...") == 1  # the restart after the kill: from epoch 1's commit
    assert log.count("Continue from epoch 1, inside epoch 2 after batch 3 (stopped by SIGTERM)...") == 1
    assert out.count("Epoch   2 with Lr") == 2  # epoch 2 began twice: killed in it, then run again
    assert_same_training(run, reference[0])


def test_torchrun_restarts_need_a_store_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's shared rendezvous store keeps the first start's keys: restarted processes would wait forever."""
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    message = f"torchrun --max-restarts 1: launch torchrun with {SHARED_STORE_SWITCH}=1 (and --standalone or"
    with pytest.raises(UserError, match=re.escape(message)):
        start_runtime(cpu=True, n_gpus=1)  # before it joins the process group
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # what the switch makes torchrun say
    check_restarts_can_meet()
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    check_restarts_can_meet()


def test_two_nodes_stopped_by_sigterm_to_one_resume_to_one_nodes_result(
    space: Path, reference: tuple[Path, str]
) -> None:
    """Two nodes (a torchrun each); SIGTERM to the torchrun of rank 1's node only, after step 1: that torchrun
    forwards it to its process, the other process learns it from the vote, both stop after step 2, commit and exit
    with 143. The same two commands again continue and end with one node's two-process result."""
    run = space / "runs" / "nodes"
    hook = {"at": "step", "count": 1, "signal": "SIGTERM", "rank": 1, "to": "parent", "wait": True}
    nodes = two_nodes(space, "nodes", hooks_environment(hook))
    errors = "".join(err for _, _, err in nodes)
    assert all(status != 0 for status, _, _ in nodes), errors[-3000:]
    assert errors.count("test hook: SIGTERM to parent at step 1") == 1
    assert "Received Signals.SIGTERM death signal" in errors or "got signal: 15" in errors  # the torchrun told
    # the other node's process stopped too (by the vote), with the signal's status
    assert sorted(re.findall(r"test hook: rank \d exits with \d+", errors)) == [
        "test hook: rank 0 exits with 143",
        "test hook: rank 1 exits with 143",
    ]
    stops = re.findall(r"stopped: [^\r\n]*", errors)
    kept = "keeps this point (weights, optimizer, scheduler, every random state, the epoch's progress)"
    resume = continue_line(space, "nodes")
    assert stops == [f"stopped: SIGTERM in epoch 1 after batch 2 of 3: {run} {kept}; {resume}"]  # rank 0 only
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["inside"] == {"epoch": 1, "batches": 2, "signal": "SIGTERM"}
    assert [rank["batches"] for rank in state["ranks"]] == [2, 2]  # both ranks stopped at the same step

    nodes = two_nodes(space, "nodes")
    assert all(status == 0 for status, _, _ in nodes), "".join(err for _, _, err in nodes)[-3000:]
    assert_same_training(run, reference[0])


def continue_line(space: Path, save: str) -> str:
    """The end of a stop's line under torchrun: the command that continues run ``save``."""
    script, runs = space / "hooked_training.py", space / "runs"
    command = f"{script} --save {save} --experiment_dir {runs} --resume"
    return f"to continue it: torchrun <the same torchrun options> {command}"

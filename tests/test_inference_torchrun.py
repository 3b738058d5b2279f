"""inference.py under torchrun: the videos are shared among the processes and rank 0 writes the one log and the
one results.json, equal to a one-process run's, on one node or two; a process that fails makes every process stop,
none waits forever, and the videos finished are kept for --resume; a process killed is restarted by torchrun
(--max-restarts) with the same command, whose --resume continues the run."""

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from cdvd_tsp.inference import main
from cdvd_tsp.utils import committed
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT
from cdvd_tsp.utils.runtime import SHARED_STORE_SWITCH, Ranks, join
from conftest import (
    TORCHRUN,
    free_port,
    hooked_inference,
    inference_hook_environment,
    make_dataset,
    restored_videos,
    save_seeded_weights,
)

pytestmark = pytest.mark.usefixtures("single_thread")

VIDEOS = {"v1": 6, "v2": 5, "v3": 7}
"""Shared out longest first (planning.shard, tests/test_infer_planning.py): v3 (7 frames) to rank 0, v1 (6) and v2
(5) to rank 1."""
TIMEOUT = 180


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("torchrun")
    hooked_inference(root)
    return make_dataset(root / "data", VIDEOS, height=36, width=48), save_seeded_weights(root / "model.pt", seed=5)


@pytest.fixture(scope="module")
def one(dataset: tuple[Path, Path]) -> Path:
    """The run in one process."""
    data, weights = dataset
    assert main(argv(data, weights, data.parent / "one")) == 0
    return data.parent / "one"


def argv(data: Path, weights: Path, result: Path) -> list[str]:
    return ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result), "--device", "cpu"]


def torchrun(
    *args: str,
    launcher: tuple[str, ...] = ("--standalone", "--nproc_per_node", "2"),
    script: str = "code/inference.py",
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    environment = env or inference_hook_environment()
    return subprocess.run(
        [*TORCHRUN, *launcher, script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment,
    )


def only_log(folder: Path) -> list[str]:
    (log,) = folder.glob("inference_log_*.txt")
    return log.read_text().splitlines()


def newest_log(folder: Path) -> list[str]:
    return sorted(folder.glob("inference_log_*.txt"))[-1].read_text().splitlines()


def without_times(lines: list[str]) -> list[str]:
    """The frame, video and total lines without their times."""
    lines = [line for line in lines if line.startswith(("> ", "# "))]
    return [line.split(" pre_time:")[0].split(", seconds_per_frame=")[0] for line in lines]


def comparable(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in {"seconds_per_frame", "model_seconds_per_frame"}}


def assert_results_of_one(result: Path, one: Path, processes: int = 2) -> None:
    """The scores, frames, log lines and files of ``result`` are those of the one-process run ``one``."""
    one_results = json.loads((one / "results.json").read_text())
    results = json.loads((result / "results.json").read_text())
    assert (one_results["settings"]["processes"], results["settings"]["processes"]) == (1, processes)
    results["settings"]["processes"] = 1
    # how the OpenMP threads wait depends on how the process started (inference.py sets the passive wait before
    # torch loads; ``one`` ran in this process, where torch was loaded already), not on the run's results
    results["settings"]["openmp_wait"] = one_results["settings"]["openmp_wait"]
    assert comparable(results) == comparable(one_results)  # every score exactly, the videos and frames in order
    assert list(results["videos"]) == ["v1", "v2", "v3"] and results["frames"] == 2 + 1 + 3

    assert without_times(newest_log(result)) == without_times(only_log(one))
    assert f"+ processes: {processes}" in newest_log(result)
    frames = sorted(path.relative_to(one) for path in one.rglob("*.png"))
    assert frames == sorted(path.relative_to(result) for path in result.rglob("*.png"))
    for frame in frames:
        assert (one / frame).read_bytes() == (result / frame).read_bytes()
    # every process wrote into rank 0's staging folder, committed as one run: nothing staged is left, no lock
    manifest = committed.read_manifest(result, "results.json")
    assert manifest is not None and sorted(manifest.files - {"results.json"}) == [frame.as_posix() for frame in frames]
    assert sorted(path.name for path in result.rglob(".*")) == [".results.json.manifest.json"]


def test_two_processes_give_the_results_of_one(dataset: tuple[Path, Path], one: Path, tmp_path: Path) -> None:
    data, weights = dataset
    completed = torchrun(*argv(data, weights, tmp_path / "two"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert_results_of_one(tmp_path / "two", one)
    assert completed.stdout.count("# Total") == 1  # only rank 0 reports


def test_two_nodes_give_the_results_of_one_process(dataset: tuple[Path, Path], one: Path, tmp_path: Path) -> None:
    """Two torchrun launches of one process each (as on two machines), joined by a c10d rendezvous on localhost,
    writing into one result folder (which two machines would share)."""
    data, weights = dataset
    rendezvous = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d"]
    rendezvous += ["--rdzv_endpoint", f"localhost:{free_port()}", "--rdzv_id", "two_nodes"]
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN,
                *rendezvous,
                "--node_rank",
                str(node),
                "code/inference.py",
                *argv(data, weights, tmp_path / "r"),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=inference_hook_environment(),
        )
        for node in (0, 1)
    ]
    finished = [node.communicate(timeout=TIMEOUT) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "".join(err for _, err in finished)[-3000:]
    assert_results_of_one(tmp_path / "r", one)
    assert [out.count("# Total") for out, _ in finished] == [1, 0]  # rank 0 (node 0) reports


def test_a_killed_process_is_restarted_and_its_resume_ends_with_the_results_of_one(
    dataset: tuple[Path, Path], one: Path, tmp_path: Path
) -> None:
    """torchrun --max-restarts 1 ... --resume: rank 1 is SIGKILLed right after it recorded its first video (v1);
    torchrun restarts both processes with the same command, which keeps v1 and shares out the others anew."""
    data, weights = dataset
    hook = {"at": "record", "count": 1, "rank": 1, "attempt": 0}
    completed = torchrun(
        *argv(data, weights, tmp_path / "r"),
        "--resume",
        launcher=("--standalone", "--nproc_per_node", "2", "--max-restarts", "1"),
        script=str(data.parent / "hooked_inference.py"),
        env=inference_hook_environment(hook, **{SHARED_STORE_SWITCH: "1"}),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "test hook: SIGKILL after the record of v1" in completed.stderr and "exitcode: -9" in completed.stderr
    restored = restored_videos(completed.stderr)
    assert restored.count("v1") == 1  # kept
    # v2 and v3 are done after the restart, and were begun before the kill or not: that depends on timing
    assert all(1 <= restored.count(video) <= 2 for video in ("v2", "v3")), restored
    log = newest_log(tmp_path / "r")
    resumed = [line for line in log if line.startswith("+ resumed: ")]
    assert len(resumed) == 1 and resumed[0].split(" videos were")[0] in ("+ resumed: 1 of 3", "+ resumed: 2 of 3")
    assert_results_of_one(tmp_path / "r", one)


def test_torchrun_restarts_need_a_store_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun's shared rendezvous store keeps the first start's keys: restarted processes would look for the
    first start's processes. Refused in one line before the process joins its group."""
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    message = f"torchrun --max-restarts 1: launch torchrun with {SHARED_STORE_SWITCH}=1 (and --standalone or"
    with pytest.raises(UserError, match=re.escape(message)):
        join(Ranks(rank=0, local_rank=0, world_size=2), torch.device("cpu"))  # would wait for a second process


def test_a_process_that_fails_stops_every_process_with_one_line(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    data, weights = dataset
    broken = tmp_path / "data"
    for path in data.rglob("*.png"):
        target = broken / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    frame = broken / "blur" / "v1" / "00003.png"  # v1 is rank 1's
    frame.write_bytes(frame.read_bytes()[:200])  # the header (and size) reads, the pixels do not

    completed = torchrun(*argv(broken, weights, tmp_path / "result"))  # within TIMEOUT: nobody waits forever
    assert completed.returncode != 0  # torchrun's own status: 1, with its report of the processes' statuses
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot read image {frame}")
    # both processes end with the usual status, unless torchrun stops one that is still exiting when the other ended
    statuses = re.findall(r"exitcode\s*:\s*(-?\d+)", completed.stderr)
    assert "2" in statuses and set(statuses) <= {"2", str(-signal.SIGTERM)}
    assert "UserError" not in completed.stderr
    assert not (tmp_path / "result" / "results.json").exists()
    log = only_log(tmp_path / "result")
    assert log[-1] == errors[0] and "# Video:v3" in "\n".join(log)  # rank 0's own video finished
    # and is kept for --resume, in the staging folder (unlocked), which only the finished video's files are sure of
    (staging,) = (tmp_path / "result").glob(".results.json.staging-*")
    kept = f"stopped: 1 of 3 videos are finished and kept in {staging}; run the same command with --resume to continue"
    assert log[-2] == f"+ {kept}" and f"WARNING: {kept}" in completed.stderr
    assert sorted(path.name for path in (staging / ".progress").iterdir()) == ["run.json", "video-000002.json"]
    assert sorted(path.name for path in (tmp_path / "result").glob(".*")) == [staging.name]


def test_sigterm_to_torchrun_stops_every_process_keeping_the_finished_videos_and_resume_continues(
    dataset: tuple[Path, Path], one: Path, tmp_path: Path
) -> None:
    """SIGTERM (what a scheduler sends) to torchrun's agent right after rank 1 recorded v1: torchrun forwards it to
    both processes, which stop as with Ctrl-C, take part in the final exchange and exit with 143; rank 0 keeps
    every finished video (v1, and v3 if rank 0 had finished it) for --resume, which then ends with the results of
    one process."""
    data, weights = dataset
    result = tmp_path / "r"
    hook = {"at": "record", "count": 1, "rank": 1, "signal": "SIGTERM", "to": "parent", "wait": True}
    script = str(data.parent / "hooked_inference.py")
    completed = torchrun(*argv(data, weights, result), "--resume", script=script, env=inference_hook_environment(hook))
    assert completed.returncode != 0  # torchrun's own: it was stopped by the signal
    assert "test hook: SIGTERM to parent after the record of v1" in completed.stderr, completed.stderr[-3000:]
    for rank in (0, 1):
        assert f"test hook: rank {rank} exits with 143" in completed.stderr, completed.stderr[-3000:]
    assert f'File "{REPO_ROOT / "code"}' not in completed.stderr  # no traceback of ours (torchrun prints its own)
    (staging,) = result.glob(".results.json.staging-*")
    kept = sorted(path.name for path in (staging / ".progress").glob("video-*.json"))
    assert "video-000000.json" in kept and "video-000001.json" not in kept  # v1 kept; v2, begun by rank 1, not
    log = only_log(result)
    stopped = (
        f"stopped: {len(kept)} of 3 videos are finished and kept in {staging}; run the same command with --resume "
        "to continue"
    )
    assert log[-2:] == [f"+ {stopped}", "+ interrupted by SIGTERM"]
    assert (
        f"interrupted by SIGTERM: {len(kept)} of 3 videos are finished and kept in {staging}; the same torchrun "
        "command with --resume continues the run"
    ) in completed.stderr
    assert sorted(path.name for path in result.glob(".*")) == [staging.name]  # unlocked: the lock file is gone

    resumed = torchrun(*argv(data, weights, result), "--resume", script=script)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "v1" not in restored_videos(resumed.stderr)
    assert_results_of_one(result, one)

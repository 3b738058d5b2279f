"""inference.py under torchrun: the videos are shared among the processes and rank 0 writes the one log and the
one results.json, equal to a one-process run's; a process that fails makes every process stop, none waits forever."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_dataset, save_seeded_weights
from inference import main
from utils import committed
from utils.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("single_thread")

VIDEOS = {"v1": 6, "v2": 5, "v3": 7}
"""Shared out longest first (planning.shard, tests/test_infer_planning.py): v3 (7 frames) to rank 0, v1 (6) and v2
(5) to rank 1."""
TIMEOUT = 180


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("torchrun")
    return make_dataset(root / "data", VIDEOS, height=36, width=48), save_seeded_weights(root / "model.pt", seed=5)


def argv(data: Path, weights: Path, result: Path) -> list[str]:
    return ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result), "--device", "cpu"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, "code/inference.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment,
    )


def only_log(folder: Path) -> list[str]:
    (log,) = folder.glob("inference_log_*.txt")
    return log.read_text().splitlines()


def without_times(lines: list[str]) -> list[str]:
    """The frame, video and total lines without their times."""
    lines = [line for line in lines if line.startswith(("> ", "# "))]
    return [line.split(" pre_time:")[0].split(", seconds_per_frame=")[0] for line in lines]


def comparable(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in {"seconds_per_frame", "model_seconds_per_frame"}}


def test_two_processes_give_the_results_of_one(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    data, weights = dataset
    assert main(argv(data, weights, tmp_path / "one")) == 0
    completed = torchrun(*argv(data, weights, tmp_path / "two"))
    assert completed.returncode == 0, completed.stderr[-3000:]

    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (one["settings"]["processes"], two["settings"]["processes"]) == (1, 2)
    two["settings"]["processes"] = 1
    assert comparable(two) == comparable(one)  # every score exactly, the videos and frames in the plan's order
    assert list(two["videos"]) == ["v1", "v2", "v3"] and two["frames"] == 2 + 1 + 3

    assert without_times(only_log(tmp_path / "two")) == without_times(only_log(tmp_path / "one"))
    assert "+ processes: 2" in only_log(tmp_path / "two")
    assert completed.stdout.count("# Total") == 1  # only rank 0 reports
    frames = sorted(path.relative_to(tmp_path / "one") for path in (tmp_path / "one").rglob("*.png"))
    assert frames == sorted(path.relative_to(tmp_path / "two") for path in (tmp_path / "two").rglob("*.png"))
    for frame in frames:
        assert (tmp_path / "one" / frame).read_bytes() == (tmp_path / "two" / frame).read_bytes()
    # every process wrote into rank 0's staging folder, committed as one run: nothing staged is left, no lock
    manifest = committed.read_manifest(tmp_path / "two", "results.json")
    assert manifest is not None and sorted(manifest.files - {"results.json"}) == [frame.as_posix() for frame in frames]
    assert sorted(path.name for path in (tmp_path / "two").rglob(".*")) == [".results.json.manifest.json"]


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
    assert sorted(path.name for path in (tmp_path / "result").rglob(".*")) == []  # the failed run's staging removed
    log = only_log(tmp_path / "result")
    assert log[-1] == errors[0] and "# Video:v3" in "\n".join(log)  # rank 0's own video finished

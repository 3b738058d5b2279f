"""A run into a folder that holds an earlier run's results: committed as a whole, never a mix; a kill at any
instant (during the run, or at each write of the commit) leaves the earlier run whole or the new one, and the next
run cleans up; files that no run wrote are never replaced."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import INFERENCE, evaluation_argv, make_dataset, save_seeded_weights, sharp_frames
from data.video_io import VideoWriter
from infer import staging as staging_module
from infer.staging import Staging
from inference import main
from utils.errors import UserError

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=11)


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the logs and hidden ones (staged), with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and "inference_log_" not in path.name
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }


def hidden(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*"))


def assert_one_run(folder: Path, results_name: str = "results.json") -> dict:
    """The folder holds exactly the files its results.json lists (and that results.json), nothing staged."""
    document = json.loads((folder / results_name).read_text())
    assert set(outputs(folder)) - {"notes.txt"} == {*document["files"], results_name}
    assert hidden(folder) == []
    return document


def test_a_rerun_with_other_settings_replaces_the_earlier_run_as_a_whole(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 6, "w": 5}, height=36, width=48)
    result = tmp_path / "result"
    assert main([*evaluation_argv(data, weights, result), "--border", "--showcase"]) == 0
    assert len(assert_one_run(result)["files"]) == 6 + 5 + 4  # the frames, a picture and an animation per video
    (result / "notes.txt").write_text("mine")  # no run wrote it: never touched

    assert main([*evaluation_argv(data, weights, result), "--no_border"]) == 0
    report = assert_one_run(result)
    assert report["files"] == ["v/00002.png", "v/00003.png", "w/00002.png"]  # no border frame, no showcase left
    assert not (result / "showcase").exists() and (result / "notes.txt").read_text() == "mine"

    assert main([*evaluation_argv(data, weights, result), "--no_save_image"]) == 0
    assert (
        assert_one_run(result)["files"] == [] and sorted(path.name for path in result.iterdir() if path.is_dir()) == []
    )
    assert len(list(result.glob("inference_log_*.txt"))) == 3  # each run's log is kept


def wait_for(predicate: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_killed_run_leaves_the_earlier_run_whole_and_the_next_run_cleans_up(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 12}, height=36, width=48)
    result = tmp_path / "result"
    assert main([*evaluation_argv(data, weights, result), "--no_border"]) == 0
    earlier = outputs(result)

    command = [sys.executable, str(INFERENCE), *evaluation_argv(data, weights, result), "--border", "--workers", "0"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(result.glob(".results.json.staging-*/v/*.png"))) >= 3 or process.poll(), 120)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert outputs(result) == earlier  # the earlier run as it was; the killed run's frames only in its staging folder
    assert [path.name.split("-")[0] for path in result.glob(".*")] == [".results.json.staging"]

    assert main([*evaluation_argv(data, weights, result), "--border"]) == 0  # removes the leftover, then runs
    assert assert_one_run(result)["files"] == [f"v/{index:05d}.png" for index in range(12)]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (the commit has no cleanup handlers to run)."""


def stage_run(folder: Path, files: dict[str, bytes], name: str = "results.json") -> Staging:
    staging = Staging.begin(folder / name, [folder / file for file in files], "--result_path")
    for file, content in files.items():
        staging.stage(folder / file).parent.mkdir(parents=True, exist_ok=True)
        staging.stage(folder / file).write_bytes(content)
    return staging


EARLIER = {"a/1.png": b"old a1", "a/2.png": b"old a2", "b/1.png": b"old b1", "showcase/a.gif": b"old gif"}
LATER = {"a/2.png": b"new a2", "a/3.png": b"new a3", "c/1.png": b"new c1"}


def file_operations(monkeypatch: pytest.MonkeyPatch, kill_at: int | None) -> list[str]:
    """Count the renames and removals from here on; raise `Killed` at the ``kill_at``-th."""
    calls: list[str] = []
    for name in ("replace", "unlink", "rmdir"):
        real = getattr(os, name)

        def counted(*args: object, _real: object = real, _name: str = name, **kwargs: object) -> object:
            calls.append(_name)
            if kill_at is not None and len(calls) == kill_at:
                raise Killed
            return _real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(staging_module.os, name, counted)
    return calls


def test_a_kill_at_each_write_of_the_commit_leaves_one_run_and_the_next_run_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    stage_run(folder, EARLIER).commit({"run": "earlier"})
    with monkeypatch.context() as patch:  # how many renames and removals a commit makes
        staging = stage_run(folder, LATER)
        operations = file_operations(patch, None)
        staging.commit({"run": "later"})
    writes = len(operations)
    assert writes > len(LATER) + 3

    after_the_next_run = []
    for kill_at in range(1, writes + 1):
        run = tmp_path / f"kill{kill_at}"
        run.mkdir()
        (run / "notes.txt").write_text("mine")
        stage_run(run, EARLIER).commit({"run": "earlier"})
        staging = stage_run(run, LATER)
        with monkeypatch.context() as patch:
            file_operations(patch, kill_at)
            with pytest.raises(Killed):
                staging.commit({"run": "later"})
        staging.close()  # the killed process's lock goes with it
        if (run / "results.json").exists():  # at any instant: a results.json describes exactly the files there
            document = json.loads((run / "results.json").read_text())
            expected = {"earlier": EARLIER, "later": LATER}[document["run"]]
            assert {name: content for name, content in outputs(run).items() if name in document["files"]} == expected
            if document["run"] == "earlier":
                assert outputs(run) == {**expected, "results.json": outputs(run)["results.json"], "notes.txt": b"mine"}
        Staging.begin(run / "results.json", [], "--result_path").discard()  # the next run: finishes or removes
        document = assert_one_run(run)
        expected = {"earlier": EARLIER, "later": LATER}[document["run"]]
        assert outputs(run) == {**expected, "results.json": outputs(run)["results.json"], "notes.txt": b"mine"}
        assert not (run / "b").exists() or document["run"] == "earlier"  # an emptied folder of the earlier run goes
        after_the_next_run.append(document["run"])
    # killed before the new results.json was written whole: the earlier run; after: the later one, rolled forward
    first_later = after_the_next_run.index("later")
    assert after_the_next_run == ["earlier"] * first_later + ["later"] * (writes - first_later) and first_later > 0


def test_a_second_run_into_a_folder_a_live_run_writes_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    live = stage_run(folder, LATER)
    with pytest.raises(UserError, match=r"another inference run is writing into .*result.*; wait until it ends"):
        Staging.begin(folder / "results.json", [], "--result_path")
    live.commit({"run": "live"})
    assert assert_one_run(folder)["run"] == "live"


def test_outputs_that_would_replace_files_no_run_wrote_are_refused(tmp_path: Path, weights: Path) -> None:
    frames = sharp_frames(3, 32, 40)
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, (32, 40), fps=10.0) as writer:
        for frame in frames:
            writer.write(frame)
    unrelated = tmp_path / "holiday.mp4"
    unrelated.write_bytes(b"someone's video")
    argv = ["--input", str(clip), "--model_path", str(weights), "--device", "cpu", "--output"]
    with pytest.raises(UserError, match=r"^--output: .*holiday\.mp4 exists and is no output of an earlier run"):
        main([*argv, str(unrelated)])
    assert unrelated.read_bytes() == b"someone's video" and hidden(tmp_path) == []

    output = tmp_path / "out" / "deblurred.mp4"
    assert main([*argv, str(output)]) == 0
    first = output.read_bytes()
    assert main([*argv, str(output)]) == 0  # its own earlier output is replaced
    assert assert_one_run(output.parent, "deblurred_results.json")["files"] == ["deblurred.mp4"]
    assert len(first) > 0

    folder = tmp_path / "frames_out"
    folder.mkdir()
    (folder / "00001.png").write_bytes(b"a photo")
    with pytest.raises(UserError, match=r"00001\.png exists and is no output of an earlier run"):
        main([*argv, str(folder)])
    assert outputs(folder) == {"00001.png": b"a photo"}


def test_results_inside_the_datasets_blur_folder_are_refused(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError, match=r"^--result_path .*blur[/\\]res: is inside the dataset's blur/ folder"):
        main(evaluation_argv(data, weights, data / "blur" / "res"))
    assert not (data / "blur" / "res").exists()

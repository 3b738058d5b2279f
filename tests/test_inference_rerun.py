"""A run into a place that holds an earlier run's results: committed as a whole (infer/staging.py over
utils/committed.py), never a mix; a kill at any instant (during the run, or at each write of the commit) leaves the
earlier run whole or the new one, and the next run cleans up; files that no run of this project wrote (a foreign or
user-written results.json, another method's frames, a results.json of the project's earlier version, files a
tampered manifest names) are never replaced, and the run is refused in one line before it writes anything."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdvd_tsp.data.video_io import VideoWriter
from cdvd_tsp.infer.planning import CLAIM_NAME, records_folder
from cdvd_tsp.infer.report import Report
from cdvd_tsp.infer.staging import Staging
from cdvd_tsp.inference import main
from cdvd_tsp.utils import atomic, committed
from cdvd_tsp.utils.errors import UserError, run_cli
from conftest import (
    INFERENCE,
    evaluation_argv,
    inference_refused,
    make_dataset,
    save_seeded_weights,
    sharp_frames,
    write_image,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=11)


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the logs and hidden ones (the manifest, staged files), with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and "inference_log_" not in path.name
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }


def everything(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, hidden ones and logs included, with its bytes."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*"))


def owned(folder: Path, results_name: str = "results.json") -> list[str]:
    """The files the manifest of ``folder/results_name`` lists, but that results.json."""
    manifest = committed.read_manifest(folder, results_name)
    assert manifest is not None and manifest.meta["tool"] == "inference.py"
    return sorted(manifest.files - {results_name})


def assert_one_run(folder: Path, results_name: str = "results.json", others: tuple[str, ...] = ()) -> dict:
    """The folder holds exactly the files its manifest lists (and results.json), nothing staged, no lock; returns
    results.json. ``others``: the results names of other units in the folder (their files and manifests)."""
    document = json.loads((folder / results_name).read_text())
    theirs = {name for other in others for name in [other, *owned(folder, other)]}
    kept = {"notes.txt", CLAIM_NAME}  # a user's note; a records folder's claim on its video (not the run's output)
    assert set(outputs(folder)) - kept - theirs == {*owned(folder, results_name), results_name}
    assert hidden(folder) == sorted(committed.manifest_path(folder, name).name for name in (results_name, *others))
    return document


def test_a_rerun_with_other_settings_replaces_the_earlier_run_as_a_whole(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 6, "w": 5}, height=36, width=48)
    result = tmp_path / "result"
    assert main([*evaluation_argv(data, weights, result), "--border", "--showcase"]) == 0
    assert_one_run(result)
    assert len(owned(result)) == 6 + 5 + 4  # the frames, a picture and an animation per video
    (result / "notes.txt").write_text("mine")  # no run wrote it: never touched

    assert main([*evaluation_argv(data, weights, result), "--no_border"]) == 0
    assert_one_run(result)
    assert owned(result) == ["v/00002.png", "v/00003.png", "w/00002.png"]  # no border frame, no showcase left
    assert not (result / "showcase").exists() and (result / "notes.txt").read_text() == "mine"

    assert main([*evaluation_argv(data, weights, result), "--no_save_image"]) == 0
    assert_one_run(result)
    assert owned(result) == [] and sorted(path.name for path in result.iterdir() if path.is_dir()) == []
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
    left = sorted(path.name.split("-")[0] for path in result.glob(".*"))
    assert left == [".results.json.lock", ".results.json.manifest.json", ".results.json.staging"]

    assert main([*evaluation_argv(data, weights, result), "--border"]) == 0  # removes the leftovers, then runs
    assert_one_run(result)
    assert owned(result) == [f"v/{index:05d}.png" for index in range(12)]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (the commit has no cleanup handlers to run)."""


def die(staging: Staging) -> None:
    """What the end of a killed process does: its lock is released, its lock file stays."""
    assert staging.unit is not None
    os.close(staging.unit.lock.descriptor)
    staging.unit.lock.descriptor = -1
    staging.unit = None


def stage_run(folder: Path, files: dict[str, bytes], name: str = "results.json") -> Staging:
    staging = Staging.begin(folder / name, [folder / file for file in files], "--result_path")
    for file, content in files.items():
        staging.stage(folder / file).parent.mkdir(parents=True, exist_ok=True)
        staging.stage(folder / file).write_bytes(content)
    return staging


EARLIER = {"a/1.png": b"old a1", "a/2.png": b"old a2", "b/1.png": b"old b1", "showcase/a.gif": b"old gif"}
LATER = {"a/2.png": b"new a2", "a/3.png": b"new a3", "c/1.png": b"new c1"}


def file_operations(monkeypatch: pytest.MonkeyPatch, kill_at: int | None) -> list[str]:
    """Count the writes, renames and removals of the commit from here on; raise `Killed` at the ``kill_at``-th."""
    calls: list[str] = []
    for name in committed.WRITE_POINTS:
        real = getattr(atomic, name)

        def counted(*args: object, _real: object = real, _name: str = name, **kwargs: object) -> object:
            calls.append(_name)
            if kill_at is not None and len(calls) == kill_at:
                raise Killed
            return _real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(atomic, name, counted)
    return calls


def test_a_kill_at_each_write_of_the_commit_leaves_one_run_and_the_next_run_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "result"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    stage_run(folder, EARLIER).commit({"run": "earlier"})
    with monkeypatch.context() as patch:  # how many writes, renames and removals a commit makes
        staging = stage_run(folder, LATER)
        operations = file_operations(patch, None)
        staging.commit({"run": "later"})
    writes = len(operations)
    assert writes > len(LATER) + 3 and set(operations) >= {"write_file", "rename", "remove_file", "remove_tree"}

    runs = {"earlier": EARLIER, "later": LATER}
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
        die(staging)
        # at any instant: the manifest lists one run's files, and a results.json is there only with its run's files
        listed = committed.read_manifest(run, "results.json")
        assert listed is not None and listed.files - {"results.json"} in ({*EARLIER}, {*LATER})
        if (run / "results.json").exists():
            document = json.loads((run / "results.json").read_text())
            in_place = {**runs[document["run"]], "results.json": outputs(run)["results.json"], "notes.txt": b"mine"}
            assert outputs(run) == in_place
        Staging.begin(run / "results.json", [], "--result_path").discard()  # the next run: finishes or removes
        document = assert_one_run(run)
        expected = runs[document["run"]]
        assert owned(run) == sorted(expected)
        assert outputs(run) == {**expected, "results.json": outputs(run)["results.json"], "notes.txt": b"mine"}
        assert not (run / "b").exists() or document["run"] == "earlier"  # an emptied folder of the earlier run goes
        after_the_next_run.append(document["run"])
    # killed before the commit point (the manifest's rename): the earlier run; after it: the later one, rolled forward
    first_later = after_the_next_run.index("later")
    assert after_the_next_run == ["earlier"] * first_later + ["later"] * (writes - first_later) and first_later > 0


def test_a_second_run_into_a_folder_a_live_run_writes_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    live = stage_run(folder, LATER)
    with pytest.raises(UserError, match=r"another inference run is writing into .*result.*; wait until it ends"):
        Staging.begin(folder / "results.json", [], "--result_path")
    live.commit({"run": "live"})
    assert assert_one_run(folder)["run"] == "live"


def make_clip(path: Path, seed: int = 0) -> Path:
    with VideoWriter(path, (32, 40), fps=10.0) as writer:
        for frame in sharp_frames(3, 32, 40, seed):
            writer.write(frame)
    return path


def test_outputs_that_would_replace_files_no_run_wrote_are_refused(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    unrelated = tmp_path / "holiday.mp4"
    unrelated.write_bytes(b"someone's video")
    argv = ["--input", str(clip), "--model_path", str(weights), "--device", "cpu", "--output"]
    line = inference_refused([*argv, str(unrelated)], capsys)
    assert (
        line == f"--output {unrelated}: exists and was not written by this project; give another name or move it away"
    )
    assert unrelated.read_bytes() == b"someone's video" and hidden(tmp_path) == []
    assert not records_folder(unrelated).exists()

    output = tmp_path / "out" / "deblurred.mp4"
    assert main([*argv, str(output)]) == 0
    first = output.read_bytes()
    assert main([*argv, str(output)]) == 0  # its own earlier output is replaced
    assert sorted(everything(output.parent)) == ["deblurred.mp4"] and len(first) > 0  # nothing beside it
    assert_one_run(records_folder(output))  # the log and results.json in its records folder
    assert owned(records_folder(output)) == []

    folder = tmp_path / "frames_out"
    folder.mkdir()
    (folder / "00001.png").write_bytes(b"a photo")
    line = inference_refused([*argv, str(folder)], capsys)
    assert line.startswith("--output: ") and "00001.png exists and is no output of an earlier run" in line
    assert everything(folder) == {"00001.png": b"a photo"}


def test_results_inside_the_datasets_blur_folder_are_refused(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError, match=r"^--result_path .*blur[/\\]res: is inside the dataset's blur/ folder"):
        main(evaluation_argv(data, weights, data / "blur" / "res"))
    assert not (data / "blur" / "res").exists()


# ----- what is in the result folder before the run: never believed, never replaced unless this project wrote it


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "data", {"v": 5}, height=32, width=40)


def earlier_version_results(result: Path) -> None:
    """What this project's earlier version left: frames and a results.json listing them under ``files``."""
    for name in ("00002.png", "00003.png"):
        write_image(result / "v" / name, sharp_frames(1, 32, 40)[0])
    document = {"psnr": 30.0, "frames": 2, "settings": {}, "videos": {"v": {"frames": {"00002": {}, "00003": {}}}}}
    (result / "results.json").write_text(json.dumps({**document, "files": ["v/00002.png", "v/00003.png"]}))


def foreign_results_listing_outside_files(result: Path) -> None:
    """A results.json this project did not write, whose list names files outside the folder."""
    result.mkdir(parents=True)
    files = [str(result.parent / "victim.txt"), "../victim2.txt", "v", "v/00002.png"]
    (result / "results.json").write_text(json.dumps({"files": files}))
    write_image(result / "v" / "00002.png", sharp_frames(1, 32, 40)[0])


def users_own_results(result: Path) -> None:
    result.mkdir(parents=True)
    (result / "results.json").write_text("my notes on this folder, not JSON")


def other_methods_frames_and_results(result: Path) -> None:
    """Another method's result folder: its deblurred frames, named as ours, and its own results.json."""
    for name in ("00002.png", "00003.png", "00004.png"):
        write_image(result / "v" / name, sharp_frames(1, 32, 40, seed=9)[0])
    (result / "results.json").write_text(json.dumps({"method": "another deblurrer", "psnr": 31.2, "videos": {}}))


def other_methods_frames(result: Path) -> None:
    for name in ("00002.png", "00003.png", "00004.png"):
        write_image(result / "v" / name, sharp_frames(1, 32, 40, seed=9)[0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (earlier_version_results, r"results\.json was written by an earlier version of this project, which kept no "),
        (foreign_results_listing_outside_files, r"results\.json exists and was not written by this project"),
        (users_own_results, r"results\.json exists and was not written by this project"),
        (other_methods_frames_and_results, r"results\.json exists and was not written by this project"),
        (other_methods_frames, r"00002\.png exists and is no output of an earlier run"),
    ],
)
def test_a_result_folder_this_project_did_not_write_is_refused_before_anything_is_written(
    tmp_path: Path, weights: Path, dataset: Path, capsys: pytest.CaptureFixture, make: object, message: str
) -> None:
    result = tmp_path / "result"
    (tmp_path / "victim.txt").write_text("outside the folder, named by an absolute path")
    (tmp_path / "victim2.txt").write_text("outside the folder, named by ../")
    make(result)  # type: ignore[operator]
    before = everything(tmp_path)
    line = inference_refused(evaluation_argv(dataset, weights, result), capsys)
    assert line.startswith("--result_path: ")
    assert re.search(message, line), line
    assert line.endswith("or choose another --result_path")
    assert everything(tmp_path) == before  # nothing written, nothing removed, inside the folder or outside


def tamper(result: Path, change: object) -> None:
    path = committed.manifest_path(result, "results.json")
    document = json.loads(path.read_text())
    change(document, result.parent)  # type: ignore[operator]
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda document, tmp: document["files"].append(str(tmp / "victim.txt")), "which is an absolute path"),
        (lambda document, tmp: document["files"].append("../victim2.txt"), "which is not a plain relative path"),
        (lambda document, tmp: document["files"].append("v"), r"but .*result/v is a folder"),
        (lambda document, tmp: document.update(format="something else"), "not a manifest of this project"),
    ],
)
def test_a_tampered_manifest_is_refused_and_nothing_is_removed(
    tmp_path: Path, weights: Path, dataset: Path, capsys: pytest.CaptureFixture, change: object, message: str
) -> None:
    result = tmp_path / "result"
    assert main(evaluation_argv(dataset, weights, result)) == 0
    (tmp_path / "victim.txt").write_text("outside the folder, named by an absolute path")
    (tmp_path / "victim2.txt").write_text("outside the folder, named by ../")
    tamper(result, change)
    before = everything(tmp_path)
    line = inference_refused([*evaluation_argv(dataset, weights, result), "--no_save_image"], capsys)
    assert line.startswith(f"{committed.manifest_path(result, 'results.json')}: ")
    assert "nothing was changed" in line
    assert re.search(message, line), line
    assert everything(tmp_path) == before


def test_outputs_of_two_videos_in_one_folder_are_separate_runs(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "infer_results"
    clips = {name: make_clip(tmp_path / f"{name}.mp4", seed) for seed, name in enumerate(("a", "b"))}

    def argv(name: str, *more: str) -> list[str]:
        output = str(out / f"{name}_deblurred.mp4")
        return ["--input", str(clips[name]), "--model_path", str(weights), "--device", "cpu", "--output", output, *more]

    assert main(argv("a")) == 0 and main(argv("b")) == 0
    assert sorted(everything(out)) == ["a_deblurred.mp4", "b_deblurred.mp4"]
    records = {name: records_folder(out / f"{name}_deblurred.mp4") for name in ("a", "b")}
    assert records["a"] != records["b"]
    a_video = (out / "a_deblurred.mp4").read_bytes()
    live = Staging.begin(records["a"] / "results.json", [], "--output")  # a run of a, alive
    try:
        assert "another inference run is writing into" in inference_refused(argv("a"), capsys)
        b_results = (records["b"] / "results.json").read_bytes()
        assert main(argv("b")) == 0  # b is another run: a live run of a is not in its way, nor it in a's
    finally:
        live.discard()
    assert (out / "a_deblurred.mp4").read_bytes() == a_video
    assert (records["b"] / "results.json").read_bytes() != b_results  # b replaced its own
    assert main(argv("a")) == 0
    assert sorted(everything(out)) == ["a_deblurred.mp4", "b_deblurred.mp4"]
    for name in ("a", "b"):
        assert_one_run(records[name])


def test_ctrl_c_in_a_video_run_says_nothing_was_kept_and_how_to_start_again_leaving_nothing_beside_the_output(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    output = tmp_path / "out" / "deblurred.mp4"
    argv = ["--input", str(clip), "--model_path", str(weights), "--device", "cpu", "--output", str(output)]
    frame = Report.frame
    calls = []

    def interrupted_at_the_second(report: Report, *args: object) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        frame(report, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Report, "frame", interrupted_at_the_second)
    monkeypatch.setattr(sys, "argv", ["code/inference.py", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(lambda: main(argv))
    assert stop.value.code == 130
    line = capsys.readouterr().err.splitlines()[-1]
    assert line == (
        "interrupted by Ctrl-C: no video was finished, so nothing was kept (a video is kept once all its frames are "
        "done; earlier results in the same place are untouched); "
        f"python code/inference.py {' '.join(argv)} starts it again"
    )
    assert list(output.parent.iterdir()) == []  # no partial video left
    records = records_folder(output)
    assert sorted(path.name for path in records.iterdir() if not path.name.startswith("inference_log_")) == [
        CLAIM_NAME
    ]  # nothing staged, no lock: the claim on the video it was writing, and the log
    monkeypatch.setattr(Report, "frame", frame)
    partial = output.with_name(".deblurred.partial.mp4")
    partial.write_bytes(b"what a killed run left")
    assert main(argv) == 0
    assert sorted(path.name for path in output.parent.iterdir()) == ["deblurred.mp4"]  # the stale partial removed

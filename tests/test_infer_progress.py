"""What a run keeps of its finished videos for --resume (infer/progress.py): the records read back exactly; a record
cut short, of another video, of other frames, or whose files changed or went is never trusted (the video is done
again and its files removed); a kill at each write of a record leaves it whole or absent; and what makes a stopped
run another run than this one, named. The kill-and-resume runs end to end: tests/test_inference_resume.py."""

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch

from cdvd_tsp.infer import progress
from cdvd_tsp.infer.options import parse_args
from cdvd_tsp.infer.planning import make_plan
from cdvd_tsp.infer.progress import PlannedVideo, Recorder, RunRecord, keep_finished
from cdvd_tsp.infer.report import FrameTimes, VideoResults
from cdvd_tsp.infer.settings import run_settings
from cdvd_tsp.utils import atomic, committed
from cdvd_tsp.utils.committed import Stage, Unit
from cdvd_tsp.utils.metrics import FrameScores
from conftest import evaluation_argv, make_dataset, save_seeded_weights

VIDEOS = (
    PlannedVideo("a", ("00000", "00001"), ("a/00000.png", "a/00001.png", "showcase/a.gif")),
    PlannedVideo("b", ("x",), ("b/x.png",)),
    PlannedVideo("c", ("1",), ()),  # --no_save_image: a video without files
)
SETTINGS = {"border_mode": "release", "tile": None, "videos": None, "workers": 4, "processes": 1}
RUN = RunRecord(SETTINGS, "0" * 64, VIDEOS)


def results_of(video: PlannedVideo, psnr: float = 30.5) -> VideoResults:
    results = VideoResults()
    for index, frame in enumerate(video.frames):
        scored = None if video.name == "c" else FrameScores(psnr + index / 3, 0.9 + index / 7, 20.0 / 3, 0.5)
        results.frames[frame] = scored
        results.times[frame] = FrameTimes(0.1 / 3, 2.0 / 7, 0.25, 1.0 + index / 11)
    return results


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    """A staging folder of ``RUN`` in which every video's files are written (as the pipeline leaves them)."""
    folder = tmp_path / "result"
    folder.mkdir()
    unit = Unit.open(folder, "results.json")
    stage = unit.begin()
    progress.start(stage, RUN)
    for video in VIDEOS:
        for relative in video.files:
            stage.write(relative, f"the bytes of {relative}".encode())
    return stage


def record_all(stage: Stage) -> dict[str, VideoResults]:
    recorder = Recorder(stage.root, VIDEOS)
    expected = {video.name: results_of(video, psnr=math.inf if video.name == "b" else 30.5) for video in VIDEOS}
    for name, results in expected.items():
        recorder(name, results)
    return expected


def test_each_stopped_run_is_read_with_its_record_and_finished_videos(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    for token, run, finished in [("0" * 12, RUN, 2), ("1" * 12, None, 0)]:
        private = committed.staging_path(folder, "results.json", token) / ".progress"
        private.mkdir(parents=True)
        if run is not None:
            (private / "run.json").write_bytes(run.to_bytes())
        for index in range(finished):
            (private / f"video-{index:06d}.json").write_text("{}")  # counted, not checked
    with Unit.open(folder, "results.json", keep_uncommitted=True) as unit:
        stopped = progress.stopped_runs(unit)
    assert [(other.stage.token, other.run, other.finished) for other in stopped] == [
        ("0" * 12, RUN, 2),
        ("1" * 12, None, 0),
    ]


def test_finished_videos_are_read_back_exactly_and_nothing_else_is_kept(stage: Stage) -> None:
    assert progress.read_run(stage.private) == RUN
    expected = record_all(stage)
    stage.write("d/00000.png", b"an unfinished video's frame")
    stage.write("a/.00002.png.x1y2.tmp", b"a partial frame")
    (stage.private / ".video-000003.json.abc.tmp").write_bytes(b'{"format": "cdvd-tsp inf')  # killed writing it
    assert progress.finished_count(stage) == 3

    kept = keep_finished(stage, RUN)
    assert list(kept) == ["a", "b", "c"] and kept == expected  # every float as it was, inf included
    assert stage.staged_files() == sorted(relative for video in VIDEOS for relative in video.files)
    assert sorted(path.name for path in stage.private.iterdir()) == [
        "run.json",
        "video-000000.json",
        "video-000001.json",
        "video-000002.json",
    ]


def corrupt_record(stage: Stage) -> None:
    path = stage.private / "video-000001.json"
    path.write_bytes(path.read_bytes()[:40])  # cut short (a file system that lost the end)


def record_of_another_video(stage: Stage) -> None:
    (stage.private / "video-000001.json").write_bytes((stage.private / "video-000000.json").read_bytes())


def named_otherwise(stage: Stage) -> None:
    path = stage.private / "video-000001.json"
    document = json.loads(path.read_bytes())
    document["video"] = "z"  # all else b's
    path.write_text(json.dumps(document))


def other_frames(stage: Stage) -> None:
    path = stage.private / "video-000001.json"
    document = json.loads(path.read_bytes())
    document["frames"][0][0] = "y"
    path.write_text(json.dumps(document))


def file_changed(stage: Stage) -> None:
    path = stage.path("b/x.png")
    data = bytearray(path.read_bytes())
    data[3] ^= 1  # the same size: only the digest tells
    path.write_bytes(bytes(data))


def file_gone(stage: Stage) -> None:
    stage.path("b/x.png").unlink()


def not_a_number(stage: Stage) -> None:
    path = stage.private / "video-000001.json"
    document = json.loads(path.read_bytes())
    document["frames"][0][2][1] = "fast"
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    "damage",
    [corrupt_record, record_of_another_video, named_otherwise, other_frames, file_changed, file_gone, not_a_number],
)
def test_a_record_that_does_not_hold_is_never_trusted(
    stage: Stage, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    expected = record_all(stage)
    damage(stage)  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        kept = keep_finished(stage, RUN)
    assert kept == {"a": expected["a"], "c": expected["c"]}  # b is done again
    assert f"{stage.root}: b is not as its record says; it is restored again" in caplog.messages
    assert stage.staged_files() == ["a/00000.png", "a/00001.png", "showcase/a.gif"]  # b's file removed
    assert not (stage.private / "video-000001.json").exists()


def test_a_kill_at_each_write_of_a_record_leaves_it_whole_or_absent(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        pass

    results = results_of(VIDEOS[0])
    operations = []
    with monkeypatch.context() as patch:
        for name in committed.WRITE_POINTS:
            real = getattr(atomic, name)
            patch.setattr(atomic, name, lambda *args, _real=real, _name=name: operations.append(_name) or _real(*args))
        Recorder(stage.root, VIDEOS)("a", results)
    assert operations == ["write_file", "rename"]  # then the folder is flushed
    (stage.private / "video-000000.json").unlink()

    for name in operations:
        for half in (False, True) if name == "write_file" else (False,):
            real = getattr(atomic, name)

            def killed(path: Path, *args: object, _real: object = real, _half: bool = half) -> None:
                if _half:
                    Path(path).write_bytes(args[0][: len(args[0]) // 2])  # type: ignore[index]
                raise Killed

            with monkeypatch.context() as patch:
                patch.setattr(atomic, name, killed)
                with pytest.raises(Killed):
                    Recorder(stage.root, VIDEOS)("a", results)
            assert not (stage.private / "video-000000.json").exists()  # never there half-written
            assert keep_finished(stage, RUN) == {}
            assert sorted(path.name for path in stage.private.iterdir()) == ["run.json"]  # the temporary removed
            for relative in VIDEOS[0].files:
                stage.write(relative, f"the bytes of {relative}".encode())
    Recorder(stage.root, VIDEOS)("a", results)
    assert keep_finished(stage, RUN) == {"a": results}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=4)


def record(data: Path, weights: Path, result: Path, *flags: str, processes: int = 1) -> RunRecord:
    plan = make_plan(parse_args([*evaluation_argv(data, weights, result), *flags]))
    return RunRecord.of(plan, run_settings(plan, processes))


def test_what_makes_a_stopped_run_another_run_is_named(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5, "b": 6}, height=22, width=26)
    weights = Path(shutil.copy(weights, tmp_path / "model.pt"))
    result = tmp_path / "result"
    earlier = record(data, weights, result, "--border")
    assert earlier.videos == (
        PlannedVideo("a", ("00000", "00001", "00002", "00003", "00004"), tuple(f"a/0000{i}.png" for i in range(5))),
        PlannedVideo(
            "b", ("00000", "00001", "00002", "00003", "00004", "00005"), tuple(f"b/0000{i}.png" for i in range(6))
        ),
    )
    assert progress.read_run(write_run(tmp_path / "progress", earlier)) == earlier  # the JSON round trip
    # the outputs are the same with any number of workers or processes: a run goes on with other values of those
    assert record(data, weights, result, "--border", "--workers", "1", processes=2).differences(earlier) == []

    assert record(data, weights, result, "--border", "--border_mode", "replicate", "--tile", "64").differences(
        earlier
    ) == ["border_mode 'release' there, 'replicate' now", "tile None there, 64 now", "tile_overlap None there, 32 now"]
    assert record(data, weights, result).differences(earlier) == [
        "border True there, False now",
        "border_mode 'release' there, None now",
        "video a has 1 frames with an output, 5 there",
        "video b has 2 frames with an output, 6 there",
    ]
    assert record(data, weights, result, "--border", "--showcase").differences(earlier) == [
        "video a makes other files",
        "video b makes other files",
    ]
    assert record(data, weights, result, "--border", "--videos", "a").differences(earlier) == [
        "videos None there, ['a'] now",
        "the videos differ (videos no longer planned: b)",
    ]
    other = Path(shutil.copy(weights, tmp_path / "other.pt"))  # the same file elsewhere: only the path differs
    assert record(data, other, result, "--border", "--videos", "a,b").differences(earlier) == [
        "videos None there, ['a', 'b'] now",
        f"model_path {str(weights)!r} there, {str(other)!r} now",
    ]
    save_seeded_weights(weights, seed=5)  # retrained into the same file
    assert record(data, weights, result, "--border").differences(earlier) == [
        f"the model file {weights} has changed since (another SHA-256)"
    ]
    shutil.copy(other, weights)
    make_dataset(data, {"a": 5, "b": 6, "c": 3}, height=22, width=26)
    assert record(data, weights, result, "--border").differences(earlier) == ["the videos differ (new videos: c)"]


def test_a_stopped_run_goes_on_with_other_threads_but_not_with_another_step(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26)
    result = tmp_path / "result"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        earlier = record(data, weights, result, "--border", "--channels_last", "restoration")
        torch.set_num_threads(2)  # a requeued job on a machine of other cores
        assert record(data, weights, result, "--border", "--channels_last", "restoration").differences(earlier) == []
    finally:
        torch.set_num_threads(threads)
    assert earlier.settings["threads"] == 1
    changed = record(data, weights, result, "--border", "--release_step", "--deterministic")
    assert changed.differences(earlier) == [
        "channels_last 'restoration' there, 'off' now",
        "deterministic False there, True now",
    ]
    assert record(data, weights, result, "--border", "--batched_flows", "on").differences(earlier) == [
        "batched_flows False there, True now"
    ]


def write_run(folder: Path, run: RunRecord) -> Path:
    folder.mkdir()
    (folder / progress.RUN).write_bytes(run.to_bytes())
    return folder

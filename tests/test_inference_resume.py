"""inference.py --resume: a run killed (SIGKILL of a subprocess after a video, in the middle of one, half-way
through writing a video's record), stopped by an error or by Ctrl-C, and resumed, ends with the outputs, the
results.json and the log lines of an uninterrupted run, and the videos finished before are not restored again (nor
their files rewritten); a stopped run of other settings is refused in one line; --resume with nothing to continue
starts the run; without --resume a stopped run is removed, with a warning of what --resume would have kept.
Under torchrun: tests/test_inference_torchrun.py."""

import json
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdvd_tsp.infer import pipeline
from cdvd_tsp.infer.report import Report
from cdvd_tsp.inference import main
from cdvd_tsp.model.checkpoint import with_n_sequence
from cdvd_tsp.utils import committed
from cdvd_tsp.utils.errors import UserError, run_cli
from conftest import (
    evaluation_argv,
    hooked_inference,
    inference_hook_environment,
    make_dataset,
    restored_videos,
    seeded_model,
)

pytestmark = pytest.mark.usefixtures("single_thread")

VIDEOS = {"a": 3, "b": 4, "c": 3}
"""Every frame restored (--border): frames 1-3 are a's, 4-7 b's, 8-10 c's."""
FLAGS = ["--border", "--showcase"]
"""Frames and, written when a video ends, a picture and an animation per video."""
TIMEOUT = 180


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset, a one-stage model (three frames a window: fast), the hooked inference script."""
    root = tmp_path_factory.mktemp("resume")
    make_dataset(root / "data", VIDEOS, height=32, width=48)
    torch.save(with_n_sequence(seeded_model(3, n_sequence=3).state_dict(), 3), root / "model.pt")
    hooked_inference(root)
    return root


def argv(space: Path, result: Path, *more: str, data: Path | None = None) -> list[str]:
    return [*evaluation_argv(data or space / "data", space / "model.pt", result), *FLAGS, *more]


@pytest.fixture(scope="module")
def reference(space: Path) -> Path:
    """The uninterrupted run."""
    assert main(argv(space, space / "reference")) == 0
    return space / "reference"


def killed(space: Path, result: Path, hook: dict) -> str:
    """Run the command with --resume in a subprocess that SIGKILLs itself at ``hook``; returns its stderr."""
    command = [sys.executable, str(space / "hooked_inference.py"), *argv(space, result, "--resume")]
    environment = inference_hook_environment(hook)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=environment)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]
    assert "test hook: SIGKILL" in completed.stderr
    return completed.stderr


def counting_restores(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The videos the pipeline restores in this process from here on."""
    restored: list[str] = []
    real = pipeline.Pipeline.video

    def video(self: pipeline.Pipeline, job: pipeline.Job) -> None:
        restored.append(job.source.name)
        real(self, job)

    monkeypatch.setattr(pipeline.Pipeline, "video", video)
    return restored


def staging_folder(result: Path) -> Path:
    (token,) = committed.staging_tokens(result, "results.json")
    return committed.staging_path(result, "results.json", token)


def records(result: Path) -> list[str]:
    return sorted(path.name for path in (staging_folder(result) / ".progress").glob("video-*.json"))


def file_identities(folder: Path, videos: list[str]) -> dict[str, tuple[int, int]]:
    """The inode and modification time of every file of ``videos`` under ``folder`` (frames, showcase)."""
    return {
        path.relative_to(folder).as_posix(): (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file()
        and (path.parts[-2] in videos or path.name.split("_")[0].split(".")[0] in videos)
        and ".progress" not in path.parts
    }


def without_times(document: dict) -> dict:
    return {
        key: value for key, value in document.items() if key not in {"seconds_per_frame", "model_seconds_per_frame"}
    }


def newest_log(folder: Path) -> list[str]:
    return sorted(folder.glob("inference_log_*.txt"))[-1].read_text().splitlines()


HELD_SIGNAL_LINE = " came while the run was being reported and committed; it was committed first"
"""Part of the log's last line when a signal came during the commit (which completed)."""


def log_body(lines: list[str]) -> list[str]:
    """The log from the model's line on (the header names the result folder), without times, the resumed line or
    the line of a signal held back during the commit."""
    body = lines[next(index for index, line in enumerate(lines) if line.startswith("Loading model from")) :]
    return [
        line.split(" pre_time:")[0].split(", seconds_per_frame=")[0]
        for line in body
        if not line.startswith(("+ resumed: ", "+ outputs: ")) and HELD_SIGNAL_LINE not in line
    ]


def assert_as_uninterrupted(result: Path, reference: Path) -> None:
    """The outputs are the uninterrupted run's, byte for byte; results.json and the newest log's lines are too but
    for their times; nothing of the stopped run is left."""

    def files(folder: Path) -> dict[str, bytes]:
        return {
            path.relative_to(folder).as_posix(): path.read_bytes()
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith((".", "inference_log_")) and path.name != "results.json"
        }

    assert files(result) == files(reference) and len(files(result)) == 10 + 2 * len(VIDEOS)
    results, expected = (json.loads((folder / "results.json").read_text()) for folder in (result, reference))
    assert without_times(results) == without_times(expected)
    assert log_body(newest_log(result)) == log_body(newest_log(reference))
    assert newest_log(result)[-1] == f"+ outputs: the frames, showcase/, the log and results.json in {result}"
    assert sorted(path.name for path in result.rglob(".*")) == [".results.json.manifest.json"]
    manifest, expected_manifest = (committed.read_manifest(folder, "results.json") for folder in (result, reference))
    assert manifest is not None and expected_manifest is not None and manifest.files == expected_manifest.files


STOPPED = {"at": "record", "count": 2}
"""Killed right after the second video's record: a and b finished (the `stopped` run)."""
KILLS = [
    pytest.param(STOPPED, ["a", "b"], id="after the second video"),
    pytest.param({"at": "frame", "count": 5}, ["a"], id="in the middle of the second video"),
    pytest.param({"at": "record_write", "count": 2}, ["a"], id="half-way through the second video's record"),
]


@pytest.mark.parametrize(("hook", "finished"), KILLS)
def test_a_killed_run_resumed_ends_as_an_uninterrupted_run_and_keeps_what_was_finished(
    space: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    hook: dict,
    finished: list[str],
) -> None:
    if hook == STOPPED:  # killed once for this test and the others that start from it
        stopped, stderr = request.getfixturevalue("stopped")
        result = copy_of(stopped, tmp_path)
    else:
        result = tmp_path / "result"
        stderr = killed(space, result, hook)
    assert restored_videos(stderr)[: len(finished)] == finished
    assert records(result) == [f"video-{index:06d}.json" for index in range(len(finished))]
    if hook["at"] == "record_write":  # the half-written record never got its name: only its temporary is there
        (temporary,) = (staging_folder(result) / ".progress").glob(".video-000001.json.*")
        assert temporary.stat().st_size > 0
    kept_files = file_identities(staging_folder(result), finished)
    assert len(kept_files) == sum(VIDEOS[name] + 2 for name in finished)

    restored = counting_restores(monkeypatch)
    assert main(argv(space, result, "--resume")) == 0
    assert restored == [name for name in VIDEOS if name not in finished]  # the finished ones are not done again
    assert file_identities(result, finished) == kept_files  # nor their files rewritten: moved into place as they were
    assert_as_uninterrupted(result, reference)
    log = newest_log(result)
    resumed = f"+ resumed: {len(finished)} of 3 videos were finished by an earlier start of this run and are kept"
    assert [line for line in log if line.startswith("+ resumed")] == [f"{resumed} (their lines are that start's)"]
    loading = next(index for index, line in enumerate(log) if line.startswith("Loading model from"))
    assert log[loading + 1].startswith("+ resumed: ")  # right after the header, before the frame lines


@pytest.fixture(scope="module")
def stopped(space: Path) -> tuple[Path, str]:
    """A run killed right after its second video's record (a and b finished), and its stderr; tests use copies."""
    stderr = killed(space, space / "stopped", STOPPED)
    return space / "stopped", stderr


def copy_of(stopped: Path, tmp_path: Path) -> Path:
    shutil.copytree(stopped, tmp_path / "result", symlinks=True)
    return tmp_path / "result"


def everything(folder: Path) -> dict[str, bytes]:
    """Every file with its bytes, but the lock file (a killed run's: the next run that opens the unit removes it)."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and path.name != ".results.json.lock"
    }


@pytest.mark.parametrize(
    ("flags", "differences"),
    [
        (["--border_mode", "replicate"], "border_mode 'release' there, 'replicate' now"),
        (["--metric_channel", "y", "--crop_border", "2"], "metric_channel 'rgb' there, 'y' now; crop_border 4 there"),
        (["--videos", "a,b"], "videos None there, ['a', 'b'] now; the videos differ (videos no longer planned: c)"),
    ],
)
def test_a_stopped_run_of_other_settings_is_refused_in_one_line_and_left_as_it_was(
    space: Path,
    stopped: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    flags: list[str],
    differences: str,
) -> None:
    result = copy_of(stopped[0], tmp_path)
    before = everything(result)
    with pytest.raises(SystemExit) as exit_status:
        run_cli(lambda: main(argv(space, result, "--resume", *flags)))
    assert exit_status.value.code == 2
    stderr = capsys.readouterr().err
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr
    assert line.startswith(
        f"error: --resume: {result} holds a run that was stopped with 2 of its 3 videos finished, with other "
        f"settings: {differences}"
    )
    assert line.endswith(
        "; run with its settings to continue it, or without --resume to start again (which removes it)"
    )
    assert everything(result) == before


def test_without_resume_a_stopped_run_is_removed_saying_what_resume_would_have_kept(
    space: Path,
    reference: Path,
    stopped: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = copy_of(stopped[0], tmp_path)
    staging = staging_folder(result)
    restored = counting_restores(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert main(argv(space, result)) == 0
    assert restored == ["a", "b", "c"]
    assert caplog.messages == [
        f"{staging}: removed the outputs of an earlier run that was stopped before it ended, with 2 of its 3 videos "
        "finished; --resume would have kept them"
    ]
    assert_as_uninterrupted(result, reference)
    assert not any(line.startswith("+ resumed") for line in newest_log(result))


def test_resume_with_nothing_to_continue_starts_the_run(space: Path, reference: Path, tmp_path: Path) -> None:
    result = tmp_path / "new" / "result"
    assert main(argv(space, result, "--resume")) == 0
    assert_as_uninterrupted(result, reference)
    assert not any(line.startswith("+ resumed") for line in newest_log(result))


def unreadable_frame(data: Path) -> None:
    frame = data / "blur" / "c" / "00001.png"
    frame.write_bytes(frame.read_bytes()[:200])  # the header (and size) reads, the pixels do not


@pytest.mark.parametrize("stop", ["an unreadable frame", "Ctrl-C"])
def test_a_run_stopped_by_an_error_or_ctrl_c_keeps_its_finished_videos_for_resume(
    space: Path,
    reference: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stop: str,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(space / "data", data)
    result = tmp_path / "result"
    with monkeypatch.context() as patch:
        if stop == "Ctrl-C":
            frame = Report.frame

            def interrupted_in_c(report: Report, video: str, *args: object) -> None:
                if video == "c":
                    raise KeyboardInterrupt
                frame(report, video, *args)  # type: ignore[arg-type]

            patch.setattr(Report, "frame", interrupted_in_c)
        else:
            unreadable_frame(data)
        with (
            caplog.at_level(logging.WARNING),
            pytest.raises(KeyboardInterrupt if stop == "Ctrl-C" else UserError) as stopped,
        ):
            main(argv(space, result, data=data))
    staging = staging_folder(result)
    kept = f"stopped: 2 of 3 videos are finished and kept in {staging}; run the same command with --resume to continue"
    if stop == "Ctrl-C":  # said once, by the command, with the command that continues it
        explanation = stopped.value.explanation
        assert explanation.startswith(f"2 of 3 videos are finished and kept in {staging}; ")
        assert explanation.endswith(" --resume continues the run") and kept not in caplog.messages
    else:
        assert caplog.messages[-1] == kept
    log = newest_log(result)
    assert f"+ {kept}" in log and "# Video:b AVG-PSNR" in "\n".join(log) and "# Total" not in "\n".join(log)
    if stop != "Ctrl-C":
        assert log[-1].startswith("error: cannot read image") and log[-2] == f"+ {kept}"
    assert records(result) == ["video-000000.json", "video-000001.json"]
    assert not (result / "results.json").exists()

    shutil.copy(space / "data" / "blur" / "c" / "00001.png", data / "blur" / "c" / "00001.png")  # mended
    restored = counting_restores(monkeypatch)
    assert main(argv(space, result, "--resume", data=data)) == 0
    assert restored == ["c"]
    assert_as_uninterrupted(result, reference)


# ----- stopped by a real signal: SIGTERM and SIGUSR1 as Ctrl-C, and never in the middle of the commit


def signalled(space: Path, result: Path, hook: dict) -> subprocess.CompletedProcess:
    """Run the command with --resume in a subprocess that sends itself ``hook``'s signal at ``hook``'s point."""
    command = [sys.executable, str(space / "hooked_inference.py"), *argv(space, result, "--resume")]
    environment = inference_hook_environment(hook)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=environment)
    assert f"test hook: {hook['signal']} " in completed.stderr, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    return completed


def hidden(result: Path) -> list[str]:
    return sorted(path.name for path in result.glob(".*"))


@pytest.mark.parametrize(
    ("hook", "finished"),
    [
        pytest.param({"at": "frame", "count": 5, "signal": "SIGTERM"}, ["a"], id="SIGTERM while b is restored"),
        pytest.param({"at": "record", "count": 2, "signal": "SIGUSR1"}, ["a", "b"], id="SIGUSR1 between videos"),
    ],
)
def test_a_stop_signal_stops_the_run_as_ctrl_c_keeping_its_finished_videos_for_resume(
    space: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: dict, finished: list[str]
) -> None:
    result = tmp_path / "result"
    completed = signalled(space, result, hook)
    number = getattr(signal, hook["signal"])
    assert completed.returncode == 128 + number  # 143 for SIGTERM, 138 for SIGUSR1
    assert f"test hook: rank 0 exits with {128 + number}" in completed.stderr
    staging = staging_folder(result)
    kept = (
        f"stopped: {len(finished)} of 3 videos are finished and kept in {staging}; run the same command with "
        "--resume to continue"
    )
    (last,) = [line for line in completed.stderr.splitlines() if line.startswith("interrupted by")]
    assert last.startswith(
        f"interrupted by {hook['signal']}: {len(finished)} of 3 videos are finished and kept in {staging}; python "
    )
    assert last.endswith(" --resume continues the run") and "hooked_inference.py" in last
    log = newest_log(result)
    assert log[-2:] == [f"+ {kept}", f"+ interrupted by {hook['signal']}"]
    assert "# Total" not in "\n".join(log)
    # nothing stale: the staging folder, unlocked, with the finished videos' records; no temporary, no partial video
    assert hidden(result) == [staging.name] and not (result / "results.json").exists()
    assert records(result) == [f"video-{index:06d}.json" for index in range(len(finished))]
    assert not [path for path in staging.rglob("*") if path.name.endswith(".tmp") or ".partial" in path.name]

    restored = counting_restores(monkeypatch)
    assert main(argv(space, result, "--resume")) == 0
    assert restored == [name for name in VIDEOS if name not in finished]
    assert_as_uninterrupted(result, reference)


@pytest.mark.parametrize(
    "hook",
    [
        pytest.param({"at": "commit", "count": 1, "signal": "SIGTERM"}, id="SIGTERM just before the commit point"),
        pytest.param({"at": "roll_forward", "count": 1, "signal": "SIGTERM"}, id="SIGTERM after the commit point"),
        pytest.param({"at": "commit", "count": 1, "signal": "SIGINT"}, id="Ctrl-C just before the commit point"),
    ],
)
def test_a_signal_during_the_commit_is_honoured_once_the_commit_is_complete(
    space: Path, reference: Path, tmp_path: Path, hook: dict
) -> None:
    result = tmp_path / "result"
    completed = signalled(space, result, hook)
    number = getattr(signal, hook["signal"])
    assert completed.returncode == 128 + number, completed.stderr[-3000:]
    assert_as_uninterrupted(result, reference)  # committed whole, nothing staged or locked left
    name = "Ctrl-C (SIGINT)" if hook["signal"] == "SIGINT" else hook["signal"]
    assert newest_log(result)[-2] == f"+ {name}{HELD_SIGNAL_LINE}: its results are complete"
    assert completed.stderr.splitlines()[-2] == (
        f"interrupted by {'Ctrl-C' if number == signal.SIGINT else 'SIGTERM'}: it came as the run was being reported "
        "and committed; the run was finished first"
    )

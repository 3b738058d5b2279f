"""Which stopped run --resume continues (infer/staging.py over infer/progress.py), without a model: the one of the
same settings with the most finished videos, the others removed; one of other settings is refused only if it has
finished videos to lose; a run that stops keeps its staging folder only if it has finished a video. The runs end
to end: tests/test_inference_resume.py, tests/test_inference_rerun.py."""

import logging
import os
from pathlib import Path

import pytest

from cdvd_tsp.infer import progress
from cdvd_tsp.infer.progress import PlannedVideo, Recorder, RunRecord
from cdvd_tsp.infer.report import FrameTimes, VideoResults
from cdvd_tsp.infer.staging import Staging
from cdvd_tsp.utils import committed
from cdvd_tsp.utils.errors import UserError

VIDEOS = (PlannedVideo("a", ("1",), ("a/1.png",)), PlannedVideo("b", ("1",), ("b/1.png",)))
RUN = RunRecord({"border_mode": "release", "workers": 4}, "0" * 64, VIDEOS)
OTHER = RunRecord({"border_mode": "replicate", "workers": 4}, "0" * 64, VIDEOS)


def stopped(folder: Path, run: RunRecord, finished: list[str]) -> Path:
    """A run of ``run`` into ``folder`` that finished ``finished`` and was killed; its staging folder."""
    staging = Staging.begin(folder / "results.json", [], "--result_path", run=run)
    results = VideoResults({"1": None}, {"1": FrameTimes(1.0, 1.0, 1.0, 1.0)})
    for video in VIDEOS:
        staging.stage(folder / video.files[0]).parent.mkdir(parents=True, exist_ok=True)
        staging.stage(folder / video.files[0]).write_bytes(f"{video.name}'s frame".encode())
        if video.name in finished:
            Recorder(staging.root, VIDEOS)(video.name, results)
    assert staging.unit is not None
    os.close(staging.unit.lock.descriptor)  # killed: the kernel releases the lock
    staging.unit.lock.descriptor = -1
    staging.unit = None
    return staging.root


def test_the_stopped_run_with_the_most_finished_videos_is_continued_and_the_others_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "result"
    folder.mkdir()
    roots = []
    for index, finished in enumerate([["a"], ["a", "b"], []]):  # three runs stopped in three places, brought together
        root = stopped(tmp_path / f"place{index}", RUN, finished)
        roots.append(root.rename(folder / root.name))
    one, two, none = roots
    with caplog.at_level(logging.WARNING):
        staging = Staging.begin(folder / "results.json", [], "--result_path", run=RUN, resume=True)
    try:
        assert staging.root == two and list(staging.kept) == ["a", "b"] and staging.total_videos == 2
        assert committed.staging_tokens(folder, "results.json") == [staging.token]
        assert sorted(caplog.messages) == sorted(
            [
                f"{one}: removed the outputs of an earlier run that was stopped before it ended, with 1 of its 2 "
                "videos finished",
                f"{none}: removed the outputs of an earlier run that was stopped before it ended",
            ]
        )
    finally:
        staging.discard()


def test_a_stopped_run_of_other_settings_is_refused_only_if_it_finished_a_video(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    root = stopped(folder, OTHER, ["a"])
    with pytest.raises(UserError, match=r"^--resume: .* holds a run that was stopped with 1 of its 2 videos finished"):
        Staging.begin(folder / "results.json", [], "--result_path", run=RUN, resume=True)
    assert root.is_dir()
    (root / ".progress" / "video-000000.json").unlink()  # as if it had finished none
    staging = Staging.begin(folder / "results.json", [], "--result_path", run=RUN, resume=True)
    try:
        assert staging.kept == {} and not root.exists()  # nothing to lose: removed, and the run starts
        assert progress.read_run(staging.root / ".progress") == RUN
    finally:
        staging.discard()


def test_a_run_that_stops_keeps_its_staging_folder_only_if_it_finished_a_video(tmp_path: Path) -> None:
    folder = tmp_path / "result"
    staging = Staging.begin(folder / "results.json", [], "--result_path", run=RUN)
    assert staging.stop() == 0 and not staging.root.exists() and not folder.exists()  # as a failed run always did
    staging = Staging.begin(folder / "results.json", [], "--result_path", run=RUN)
    staging.stage(folder / "a/1.png").parent.mkdir(parents=True)
    staging.stage(folder / "a/1.png").write_bytes(b"a's frame")
    Recorder(staging.root, VIDEOS)("a", VideoResults({"1": None}, {"1": FrameTimes(1.0, 1.0, 1.0, 1.0)}))
    assert staging.stop() == 1 and staging.root.is_dir() and staging.unit is None
    assert sorted(path.name for path in folder.iterdir()) == [staging.root.name]  # unlocked: no lock file
    continued = Staging.begin(folder / "results.json", [], "--result_path", run=RUN, resume=True)
    try:
        assert continued.root == staging.root and list(continued.kept) == ["a"]
        assert (continued.root / "a" / "1.png").read_bytes() == b"a's frame"
    finally:
        continued.discard()

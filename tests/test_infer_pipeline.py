"""The overlapped inference pipeline: reading ahead, in-order workers, atomic PNG writes, and, on tiny videos, the
CUDA branch's metrics (run on CPU tensors), what the four times mean, no pause between videos (the next video's
first frames read while the current one is restored), output videos byte for byte those of the serial path, and
the x16 backward pass's border."""

import errno
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data import frames as frames_module
from cdvd_tsp.data.frames import read_rgb, write_png
from cdvd_tsp.data.video_io import FolderSource, VideoWriter
from cdvd_tsp.infer import outputs as outputs_module
from cdvd_tsp.infer import runners as runners_module
from cdvd_tsp.infer.options import parse_args
from cdvd_tsp.infer.pipeline import Pipeline
from cdvd_tsp.infer.planning import Plan, make_plan
from cdvd_tsp.infer.reader import Prefetcher
from cdvd_tsp.infer.report import Report
from cdvd_tsp.infer.restorer import Restorer
from cdvd_tsp.infer.workers import InOrder
from cdvd_tsp.inference import main
from cdvd_tsp.utils.errors import UserError
from conftest import make_dataset, save_seeded_weights, seeded_model, sharp_frames, write_image

pytestmark = pytest.mark.usefixtures("single_thread")


def restorer_of(model: torch.nn.Module, plan: Plan) -> Restorer:
    return Restorer(model, plan.restoration, plan.execution)  # type: ignore[arg-type]


def infer_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("infer-")]


# ----- reading ahead


def test_prefetcher_yields_in_order_and_reads_a_bounded_number_ahead() -> None:
    produced: list[int] = []

    def numbers() -> Iterator[int]:
        for number in range(20):
            produced.append(number)
            yield number

    seen = []
    with Prefetcher(numbers(), ahead=3) as items:
        for number in items:
            time.sleep(0.002)
            assert len(produced) - len(seen) <= 3 + 2  # the queue, the item in hand and one being put
            seen.append(number)
    assert seen == list(range(20)) and infer_threads() == []


def test_prefetcher_raises_a_read_error_in_the_consumer_at_its_place() -> None:
    def frames() -> Iterator[int]:
        yield 0
        yield 1
        raise UserError("cannot read image 00002.png: truncated")

    seen = []
    with pytest.raises(UserError, match=r"00002\.png"), Prefetcher(frames(), ahead=4) as items:
        seen.extend(items)
    assert seen == [0, 1] and infer_threads() == []


def test_closing_a_prefetcher_stops_its_thread_and_closes_the_source_there() -> None:
    closed_in: list[str] = []

    def endless() -> Iterator[int]:
        try:
            number = 0
            while True:
                yield number
                number += 1
        finally:
            closed_in.append(threading.current_thread().name)

    with Prefetcher(endless(), ahead=2, name="infer-read-test") as items:
        assert [next(items), next(items)] == [0, 1]
    assert closed_in == ["infer-read-test"] and infer_threads() == []


# ----- workers, completed in order


def test_jobs_complete_in_order_in_the_calling_thread_with_a_bounded_number_in_flight() -> None:
    completed: list[tuple[int, str]] = []

    def job(number: int) -> int:
        time.sleep(0.001 * (10 - number))  # later jobs finish sooner
        return number

    with InOrder(3) as work:
        for number in range(10):
            work.submit(lambda number=number: job(number), lambda result: completed.append((result, current())))
            assert len(work.pending) <= 6
        work.drain()
    assert completed == [(number, "MainThread") for number in range(10)]
    assert infer_threads() == []


def current() -> str:
    return threading.current_thread().name


def test_no_workers_runs_each_job_inline_and_completes_it_at_once() -> None:
    ran_in, completed = [], []
    with InOrder(0) as work:
        for number in range(3):
            work.submit(lambda: ran_in.append(current()), lambda _, number=number: completed.append(number))
            assert completed == list(range(number + 1))  # completed before the next job is given
    assert ran_in == ["MainThread"] * 3


def test_a_workers_error_is_raised_in_the_calling_thread_and_the_threads_end() -> None:
    go = threading.Event()

    def failing() -> None:
        go.wait(5)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"), InOrder(1) as work:
        work.submit(failing, lambda _: None)
        work.submit(lambda: time.sleep(0.05), lambda _: None)  # cancelled, or waited for if it started
        go.set()
        work.drain()
    assert infer_threads() == []


# ----- PNGs appear whole or not at all


def test_a_png_write_that_fails_leaves_the_earlier_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    target = tmp_path / "00002.png"
    write_png(target, image)
    earlier = target.read_bytes()

    def disk_full(source: str, destination: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frames_module.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_png(target, 255 - image)
    assert [path.name for path in tmp_path.iterdir()] == ["00002.png"] and target.read_bytes() == earlier
    monkeypatch.undo()

    write_png(target, 255 - image)
    assert np.array_equal(read_rgb(target), 255 - image) and [path.name for path in tmp_path.iterdir()] == ["00002.png"]
    (tmp_path / "plain").write_bytes(b"")
    assert target.stat().st_mode == (tmp_path / "plain").stat().st_mode  # the usual mode, not mkstemp's 0600
    if Path("/dev/null").exists():
        write_png(Path("/dev/null"), image)  # no regular file: written in place, never replaced


# ----- the pipeline on a tiny dataset


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    data = make_dataset(root / "data", {"a": 5, "b": 4}, height=36, width=48)
    return data, save_seeded_weights(root / "model.pt", seed=7)


class ThreadWatch(Report):
    """A report that notes the pipeline's threads alive at each frame."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def frame(self, *args: object) -> None:
        self.threads.update(infer_threads())
        super().frame(*args)  # type: ignore[arg-type]


def run_pipeline(
    data: Path, weights: Path, result: Path, workers: int, device_scores: bool = False
) -> tuple[ThreadWatch, float]:
    """The pipeline on every video, with --border; returns the report and the pipeline's wall time."""
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result)]
    plan = make_plan(parse_args([*argv, "--device", "cpu", "--border", "--workers", str(workers)]))
    model, report = seeded_model(7), ThreadWatch()
    with torch.inference_mode():
        started = time.perf_counter()
        with Pipeline(restorer_of(model, plan), plan, report, progress=False) as pipeline:
            pipeline.scores_on_device = device_scores
            for job in plan.jobs:
                pipeline.video(job)
        return report, time.perf_counter() - started


def test_the_device_metrics_branch_scores_like_the_numpy_metrics(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, weights = tiny_run
    numpy_scores = run_pipeline(data, weights, tmp_path / "numpy", workers=2)[0].results
    device_scores = run_pipeline(data, weights, tmp_path / "device", workers=2, device_scores=True)[0].results
    assert list(device_scores.videos) == ["a", "b"]
    for name, video in numpy_scores.videos.items():
        assert list(device_scores.videos[name].frames) == list(video.frames)
        for frame, scores in video.frames.items():
            theirs = device_scores.videos[name].frames[frame]
            assert astuple(theirs) == pytest.approx(astuple(scores), rel=1e-9)
            assert (tmp_path / "numpy" / name / f"{frame}.png").read_bytes() == (
                tmp_path / "device" / name / f"{frame}.png"
            ).read_bytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_the_totals_add_up_to_the_wall_time_and_no_workers_means_no_threads(
    tiny_run: tuple[Path, Path], tmp_path: Path, workers: int
) -> None:
    data, weights = tiny_run
    report, wall = run_pipeline(data, weights, tmp_path, workers)
    times = report.results.all_times()
    assert len(times) == 9
    assert wall - 0.05 < math.fsum(entry.total for entry in times) <= wall
    assert all(entry.forward > 0 and entry.post > 0 and entry.pre >= 0 for entry in times)
    if workers == 0:  # serial, without a thread: each output's wait, model and writing lie inside its total
        assert all(entry.total >= entry.pre + entry.forward + entry.post for entry in times)
        assert report.threads == set()
    else:
        assert any(name.startswith("infer-worker") for name in report.threads)


def test_the_next_video_starts_while_the_last_outputs_of_the_previous_are_written(
    tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pause between videos: video b is already being restored while a's slow PNG writes finish; a's frames,
    then its end, then b's frames still reach the report in order."""
    data, weights = tiny_run
    events: list[str] = []
    write = outputs_module.write_png

    def slow_write(path: Path, image: np.ndarray, direct: bool = False) -> None:
        if path.parent.name == "a":
            time.sleep(0.2)
        write(path, image, direct=direct)

    class Recording(Report):
        def frame(self, video: str, frame: str, *rest: object) -> None:
            events.append(f"frame {video}")
            super().frame(video, frame, *rest)  # type: ignore[arg-type]

        def video_finished(self, video: str) -> None:
            events.append(f"finished {video}")
            super().video_finished(video)

    monkeypatch.setattr(outputs_module, "write_png", slow_write)
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(tmp_path)]
    plan = make_plan(parse_args([*argv, "--device", "cpu", "--border", "--workers", "2"]))
    model = seeded_model(7)
    with torch.inference_mode(), Pipeline(restorer_of(model, plan), plan, Recording(), progress=False) as pipeline:
        make_runner = pipeline.restorer.new_runner

        def new_runner() -> object:
            events.append("runner")
            return make_runner()

        pipeline.restorer.new_runner = new_runner
        for job in plan.jobs:
            pipeline.video(job)
    assert events.index("finished a") > [index for index, event in enumerate(events) if event == "runner"][1]
    assert [event for event in events if event != "runner"] == ["frame a"] * 5 + ["finished a"] + ["frame b"] * 4 + [
        "finished b"
    ]
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [f"{index:05d}.png" for index in range(5)]


@pytest.mark.parametrize("workers", [2, 0])
def test_the_next_video_s_first_frames_are_read_while_the_current_one_is_restored(
    tiny_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """With workers, video b's first frames are read (in its reader thread) before video a's last model step, so
    b's first push does not wait for its reading; the serial path reads nothing ahead."""
    data, weights = tiny_run
    events: list[str] = []
    lock = threading.Lock()
    current = [""]

    def note(event: str) -> None:
        with lock:
            events.append(event)

    def slow_identity(*args: object, **kwargs: object) -> object:
        def step(previous: torch.Tensor, center: torch.Tensor, following: torch.Tensor) -> torch.Tensor:
            note(f"step {current[0]}")
            time.sleep(0.02)
            return center.clone()

        return step

    real_frames = FolderSource.frames

    def noted_frames(source: FolderSource) -> Iterator[np.ndarray]:
        for index, frame in enumerate(real_frames(source)):
            note(f"read {source.name} {index}")
            yield frame

    real_video = Pipeline.video

    def video(pipeline: Pipeline, job: object) -> None:
        current[0] = job.source.name  # type: ignore[attr-defined]
        real_video(pipeline, job)  # type: ignore[arg-type]

    monkeypatch.setattr(runners_module, "accelerated_step", slow_identity)
    monkeypatch.setattr(FolderSource, "frames", noted_frames)
    monkeypatch.setattr(Pipeline, "video", video)
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(tmp_path)]
    plan = make_plan(parse_args([*argv, "--device", "cpu", "--border", "--workers", str(workers)]))
    with (
        torch.inference_mode(),
        Pipeline(restorer_of(seeded_model(7), plan), plan, Report(), progress=False) as pipeline,
    ):
        pipeline.expect(plan.jobs)
        for job in plan.jobs:
            pipeline.video(job)
    last_step_of_a = max(index for index, event in enumerate(events) if event == "step a")
    first_read_of_b = events.index("read b 0")
    if workers:
        assert first_read_of_b < last_step_of_a
        assert events.index("read b 1") < last_step_of_a  # a few frames ahead, not only the first
    else:
        assert first_read_of_b > last_step_of_a
    assert events.count("read a 0") == events.count("read b 0") == 1  # each frame read once
    assert infer_threads() == []


def write_clip(path: Path, count: int, size: tuple[int, int]) -> Path:
    with VideoWriter(path, size, fps=10.0) as writer:
        for frame in sharp_frames(count, *size, seed=3):
            writer.write(frame)
    return path


def test_an_output_video_is_byte_for_byte_that_of_the_serial_path(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    """--input clip.mp4 --output out.mp4: the same bytes with 2 workers as with none (the PNG outputs and the
    scores: tests/test_inference.py)."""
    _, weights = tiny_run
    clip = write_clip(tmp_path / "clip.mp4", 6, (36, 48))
    outputs = {}
    for workers in ("0", "2"):
        out = tmp_path / workers / "out.mp4"
        argv = ["--input", str(clip), "--output", str(out), "--model_path", str(weights), "--device", "cpu"]
        assert main([*argv, "--workers", workers]) == 0
        outputs[workers] = out.read_bytes()
    assert len(outputs["0"]) > 0 and outputs["0"] == outputs["2"]


PADDED = {
    "release": [0, 1, 0, 1, 2, 3, 4, 3, 4],
    "replicate": [0, 0, 0, 1, 2, 3, 4, 4, 4],
    "reflect": [2, 1, 0, 1, 2, 3, 4, 3, 2],
}
"""Five frames padded for two stages, by border mode."""


@pytest.mark.parametrize("mode", list(PADDED))
def test_the_x16_backward_pass_pads_the_border_as_the_forward_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """With a step that returns the following frame, the forward pass gives the frame at p + 2 of the padded list
    for the frame at p, the backward pass the frame at p - 2: x16 writes their mean (every transform agrees on
    frames of one grey)."""
    for index in range(5):
        write_image(
            tmp_path / "data" / "blur" / "clip" / f"{index:05d}.png", np.full((8, 8, 3), 40 + 20 * index, np.uint8)
        )
    monkeypatch.setattr(runners_module, "accelerated_step", lambda *args, **kwargs: lambda *frames: frames[2])
    weights = save_seeded_weights(tmp_path / "model.pt")
    argv = ["--data_path", str(tmp_path / "data"), "--model_path", str(weights), "--result_path", str(tmp_path / "r")]
    flags = ["--device", "cpu", "--border", "--border_mode", mode, "--self_ensemble", "x16", "--workers", "0"]
    plan = make_plan(parse_args([*argv, *flags]))
    with (
        torch.inference_mode(),
        Pipeline(restorer_of(seeded_model(), plan), plan, Report(), progress=False) as pipeline,
    ):
        pipeline.video(plan.jobs[0])
    values = PADDED[mode]
    expected = [40 + 10 * (values[position + 2] + values[position - 2]) for position in range(2, 7)]
    written = [int(read_rgb(tmp_path / "r" / "clip" / f"{index:05d}.png")[0, 0, 0]) for index in range(5)]
    assert written == expected

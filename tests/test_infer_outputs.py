"""An output's way to the disk and the report: the device's part (the check for NaN and inf, conversion, metrics on
the device, copies), the worker's (the check's verdict, PNG, metrics), and a video's in-order part (report, video
file, showcase, its end or its failure)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.data.video_io import open_video
from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.outputs import NonFiniteOutput, QueuedOutput, VideoOutputs, queue_output, write_and_score
from cdvd_tsp.infer.planning import Job, Metrics
from cdvd_tsp.infer.report import FrameTimes, Report
from cdvd_tsp.infer.transfer import Transfer
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import FrameScores, score_frame
from conftest import sharp_frames

CPU = Transfer(torch.device("cpu"))
METRICS = Metrics(channel="rgb", crop_border=4)


def frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A blurred frame, its sharp frame and a model output near the sharp one, 24 x 28."""
    sharp, blurred = sharp_frames(2, 24, 28, seed=seed)
    restored = to_tensor(sharp) + 0.02 * torch.randn(1, 3, 24, 28, generator=torch.Generator().manual_seed(seed))
    return blurred, sharp, restored


def queued(
    restored: torch.Tensor, blurred: np.ndarray, sharp: np.ndarray | None, path: Path | None, on_device: bool = False
) -> QueuedOutput:
    prepare = FramePreparer((24, 28), crop=True)
    host_sharp = None if sharp is None else torch.from_numpy(sharp)
    device = queue_output(restored, prepare, torch.from_numpy(blurred), host_sharp, CPU, METRICS if on_device else None)
    return QueuedOutput(
        "v", "00007", device.image, device.finite, blurred, sharp, device.scores, device.ready, [0.5, 0.25], 0.125, path
    )


def test_the_worker_writes_the_png_and_scores_it_by_the_protocol(tmp_path: Path) -> None:
    blurred, sharp, restored = frames()
    written = write_and_score(queued(restored, blurred, sharp, tmp_path / "00007.png"), CPU, METRICS, "fp32")
    assert np.array_equal(read_rgb(tmp_path / "00007.png"), to_uint8(restored)) and written.image.dtype == np.uint8
    assert written.scores == score_frame(to_uint8(restored), blurred, sharp)
    assert written.forward == 0.75 and written.post > 0
    unsaved = write_and_score(queued(restored, blurred, None, None), CPU, METRICS, "fp32")
    assert unsaved.scores is None and sorted(tmp_path.iterdir()) == [tmp_path / "00007.png"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_an_output_with_nan_or_inf_is_neither_written_nor_scored(tmp_path: Path, value: float) -> None:
    blurred, sharp, restored = frames(seed=4)
    restored[0, 2, 23, 27] = value  # one sample, in the last pixel
    output = queued(restored, blurred, sharp, tmp_path / "00007.png", on_device=True)
    assert output.finite.dtype == torch.bool and not bool(output.finite)
    with pytest.raises(NonFiniteOutput) as stopped:
        write_and_score(output, CPU, METRICS, "fp32")
    assert str(stopped.value).startswith(
        "v: the output of frame 00007 holds NaN or inf values; nothing of it was written or scored. Likely cause: the "
        "model overflowed on this frame"
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NonFiniteOutput, match=r"Likely cause: float16 \(--precision fp16, .*65504"):
        write_and_score(output, CPU, METRICS, "fp16")
    restored[0, 2, 23, 27] = 1e30  # finite, however large: clamped to white as the protocol says
    assert bool(queued(restored, blurred, sharp, None).finite)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_check_for_nan_and_inf_is_queued_on_the_device_without_waiting_for_it() -> None:
    cuda = Transfer(torch.device("cuda"))
    blurred, sharp, restored = frames(seed=5)
    restored[0, 0, 0, 0] = float("nan")
    on_device = restored.cuda()
    prepare = FramePreparer((24, 28), crop=True)
    blurred_device = torch.from_numpy(blurred).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any wait for the GPU raises
    try:
        device = queue_output(on_device, prepare, blurred_device, None, cuda, None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    output = QueuedOutput("v", "00007", device.image, device.finite, blurred, sharp, None, device.ready, [], 0.0, None)
    with pytest.raises(NonFiniteOutput):
        write_and_score(output, cuda, METRICS, "fp16")


def test_scores_computed_on_the_device_are_the_numpy_metrics() -> None:
    blurred, sharp, restored = frames(seed=1)
    output = queued(restored, blurred, sharp, None, on_device=True)
    assert output.scores is not None and output.scores.dtype == torch.float64
    on_device = write_and_score(output, CPU, METRICS, "fp32").scores
    expected = score_frame(to_uint8(restored), blurred, sharp)
    assert on_device is not None
    for name in ("psnr", "ssim", "input_psnr", "input_ssim"):
        assert getattr(on_device, name) == pytest.approx(getattr(expected, name), rel=1e-9)


class Recorded(Report):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def frame(self, video: str, frame: str, scores: FrameScores | None, times: FrameTimes) -> None:
        self.events.append(f"{video}-{frame} total {times.total}")
        super().frame(video, frame, scores, times)

    def video_finished(self, video: str) -> None:
        self.events.append(f"finished {video}")
        super().video_finished(video)


def video_job(tmp_path: Path, count: int) -> Job:
    class Source:  # frames of a folder: no frame rate of their own
        name, size = "v", (24, 28)

    return Job(Source(), None, list(range(count)), None, tmp_path / "v.mp4")  # type: ignore[arg-type]


def test_a_video_s_outputs_go_to_the_report_the_video_file_and_the_showcase_in_order(tmp_path: Path) -> None:
    report = Recorded()
    outputs = VideoOutputs(video_job(tmp_path, 2), report, tmp_path / "showcase", progress=False)
    for seed, total in ((2, 1.5), (3, 0.5)):
        blurred, sharp, restored = frames(seed)
        output = queued(restored, blurred, sharp, None)
        outputs.add(output, write_and_score(output, CPU, METRICS, "fp32"), total)
    assert not (tmp_path / "v.mp4").exists()  # encoded into a hidden partial file until the video ends
    outputs.close()
    assert report.events == ["v-00007 total 1.5", "v-00007 total 0.5", "finished v"]
    times = report.results.videos["v"].times["00007"]
    assert (times.pre, times.forward, times.total) == (0.125, 0.75, 0.5)
    video = open_video(tmp_path / "v.mp4")
    assert (video.size, video.fps, len(video)) == ((24, 28), 25.0, 2)  # the fallback rate
    assert sorted(path.name for path in (tmp_path / "showcase").iterdir()) == ["v.gif", "v_00007.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["showcase", "v.mp4"]


def test_a_failed_video_leaves_no_video_file_and_is_not_reported_finished(tmp_path: Path) -> None:
    report = Recorded()
    outputs = VideoOutputs(video_job(tmp_path, 2), report, None, progress=False)
    blurred, sharp, restored = frames()
    output = queued(restored, blurred, sharp, None)
    outputs.add(output, write_and_score(output, CPU, METRICS, "fp32"), 1.0)
    failure = OSError("No space left on device")
    outputs.abort(OSError, failure, None)
    assert list(tmp_path.iterdir()) == [] and report.finished == []

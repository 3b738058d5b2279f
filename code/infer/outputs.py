"""An output's way from the runner to the disk and the report, in three steps:

1. `queue_output` (main thread): the restored frame's check for NaN and inf, its conversion to uint8, its metrics
   (on CUDA) and their copies to the host are queued on the device; the `QueuedOutput` holds them and the marker of
   when they are done. Nothing waits for the device here, not even the check.
2. `write_and_score` (a worker, or the main thread without workers): waits for those copies, stops the run if the
   output was not finite (`NonFiniteOutput`: nothing of it is written or scored), writes the PNG and, on the CPU,
   scores the frame: a `WrittenOutput`.
3. `VideoOutputs.add` (main thread, in order): the frame's times and scores go to the report, its image to the
   output video file and the showcase, and the progress bar moves; `VideoOutputs.close` ends the video after its
   last output (the video file closed, the showcase pictures written, the report told).

The PNGs and the output video go into the run's staging folder (infer/staging.py), which nobody reads before the
commit, so they are written directly (``direct``: no temporary file and rename of their own; a failed write
removes its partial file, and the commit moves the whole folder's files into place).
"""

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cdvd_tsp.data.frames import write_png
from cdvd_tsp.data.video_io import VideoSource, VideoWriter
from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.planning import Job, Metrics
from cdvd_tsp.infer.report import FrameTimes, Report, printable
from cdvd_tsp.infer.transfer import Ready, Transfer
from cdvd_tsp.utils.atomic import writing
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.metrics import FrameScores, score_frame
from cdvd_tsp.utils.metrics_device import score_frame_tensor
from cdvd_tsp.utils.showcase import ShowcaseWriter

FALLBACK_FPS = 25.0
"""The frame rate of an output video whose input says none."""
OVERFLOW_CAUSES = {
    "fp16": "float16 (--precision fp16, the default with --input on CUDA) holds values up to 65504 only and the model "
    "overflowed it; run again with --precision bf16, tf32 or fp32",
}
"""The likely cause of a non-finite output, by precision; `LIKELY_CAUSE` for the others."""
LIKELY_CAUSE = (
    "the model overflowed on this frame, so the weights of --model_path (finite: they were checked when loaded) are "
    "likely not of this model or damaged"
)


class NonFiniteOutput(UserError):
    """A restored frame holds NaN or inf: the run stops before anything of it is written or scored."""

    def __init__(self, video: str, frame: str, precision: str) -> None:
        cause = OVERFLOW_CAUSES.get(precision, LIKELY_CAUSE)
        super().__init__(
            f"{video}: the output of frame {frame} holds NaN or inf values; nothing of it was written or scored. "
            f"Likely cause: {cause}"
        )


@dataclass(frozen=True)
class QueuedOutput:
    """A restored frame on its way to the disk and the report; its tensors are complete once ``ready`` is."""

    video: str
    frame: str
    image: Tensor
    """H x W x 3 uint8 on the host."""
    finite: Tensor
    """Whether the restored frame is finite everywhere (a bool scalar on the host)."""
    blurred: np.ndarray
    sharp: np.ndarray | None
    scores: Tensor | None
    """The metrics computed on the device ([4] float64 on the host), or None (scored by the worker, or no ground
    truth)."""
    ready: Ready
    model_spans: list
    """The model's work for this output (read with `Transfer.seconds` once ``ready`` is)."""
    pre: float
    """Seconds the main loop waited for this output's input frames."""
    path: Path | None
    """Where the PNG goes, if anywhere."""


@dataclass(frozen=True)
class WrittenOutput:
    """An output once written and scored."""

    image: np.ndarray
    scores: FrameScores | None
    forward: float
    """The model's seconds for it."""
    post: float
    """The worker's seconds for writing and scoring it."""


@dataclass(frozen=True)
class DeviceOutput:
    """What `queue_output` queued: host tensors, complete once ``ready`` is."""

    image: Tensor
    """H x W x 3 uint8."""
    finite: Tensor
    """A bool scalar: whether the restored frame was finite everywhere."""
    scores: Tensor | None
    """[4] float64 (scored on the device), or None."""
    ready: Ready


def queue_output(
    restored: Tensor,
    prepare: FramePreparer,
    blurred: Tensor,
    sharp_host: Tensor | None,
    transfer: Transfer,
    metrics: Metrics | None,
) -> DeviceOutput:
    """Queue the output's check for NaN and inf, its conversion to uint8, its metrics (``metrics``: scored on the
    device) and their copies to the host, with the marker of those copies."""
    finite = torch.isfinite(restored).all()  # stays on the device: read by the worker, after the copy
    image = prepare.output(restored)
    scores = None
    if sharp_host is not None and metrics is not None:
        sharp = transfer.to_device(sharp_host)
        scores = transfer.to_host(
            score_frame_tensor(image, blurred, sharp, channel=metrics.channel, crop_border=metrics.crop_border)
        )
    return DeviceOutput(transfer.to_host(image), transfer.to_host(finite), scores, transfer.ready())


def write_and_score(output: QueuedOutput, transfer: Transfer, metrics: Metrics, precision: str) -> WrittenOutput:
    """A worker's part: wait for the copies, check that the output was finite (`NonFiniteOutput` if not; the run
    computed in ``precision``), write the PNG, score the frame (unless the device did)."""
    output.ready.wait()
    if not bool(output.finite):
        raise NonFiniteOutput(output.video, output.frame, precision)
    forward = transfer.seconds(output.model_spans)
    started = time.perf_counter()
    image = output.image.numpy()
    if output.path is not None:
        with writing(output.path):
            write_png(output.path, image, direct=True)  # into the staging folder: nobody reads it before the commit
    scores = None
    if output.scores is not None:
        scores = FrameScores(*output.scores.tolist())
    elif output.sharp is not None:
        scores = score_frame(
            image, output.blurred, output.sharp, channel=metrics.channel, crop_border=metrics.crop_border
        )
    return WrittenOutput(image, scores, forward, time.perf_counter() - started)


class VideoOutputs:
    """Where one video's outputs go, in order, in the main thread: the report, the output video file, the showcase
    and the progress bar. Opened when the video starts; `close` (after its last output) or `abort` ends it."""

    def __init__(self, job: Job, report: Report, showcase_dir: Path | None, progress: bool) -> None:
        self.name = job.source.name
        self.report = report
        self.showcase = ShowcaseWriter(showcase_dir) if showcase_dir is not None else None
        if job.frames_dir is not None:
            with writing(job.frames_dir):
                job.frames_dir.mkdir(parents=True, exist_ok=True)
        self.open = contextlib.ExitStack()
        """The video file and the progress bar, open until the video's last output is complete."""
        self.writer: VideoWriter | None = None
        self.targets = iter(job.targets)
        """The input frame each output restores, in order: its timestamp goes to the output video."""
        if job.video_out is not None:
            source = job.source
            fps = source.fps if isinstance(source, VideoSource) and source.fps > 0 else FALLBACK_FPS
            like = source if isinstance(source, VideoSource) else None
            with writing(job.video_out):
                writer = VideoWriter(job.video_out, source.size, fps, encoding=job.encoding, source=like)
                self.writer = self.open.enter_context(writer)
        bar = tqdm(
            total=len(job.targets), desc=printable(self.name), unit="frame", dynamic_ncols=True, disable=not progress
        )
        self.bar = self.open.enter_context(bar)

    def add(self, output: QueuedOutput, written: WrittenOutput, total: float) -> None:
        """An output, complete (``total``: the wall time since the previous output was completed)."""
        times = FrameTimes(output.pre, written.forward, written.post, total)
        self.report.frame(output.video, output.frame, written.scores, times)
        index = next(self.targets)
        if self.writer is not None:
            with writing(self.writer.path):
                self.writer.write(written.image, index)
        if self.showcase is not None:
            self.showcase.add(output.frame, output.blurred, written.image, output.sharp)
        self.bar.update()

    def close(self) -> None:
        """After the video's last output: close its video file and bar, write its showcase, tell the report."""
        with writing(self.writer.path) if self.writer is not None else contextlib.nullcontext():
            self.open.close()
        if self.showcase is not None:
            with writing(self.showcase.folder):
                self.showcase.finish_video(self.name)
        self.report.video_finished(self.name)

    def abort(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """The run failed: the video file is closed as failed (its partial file removed), the bar closed."""
        self.open.__exit__(kind, error, traceback)

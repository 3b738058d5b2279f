"""An output's way from the runner to the disk and the report, in three steps:

1. `queue_output` (main thread): the restored frame's conversion to uint8, its metrics (on CUDA) and its copies to
   the host are queued on the device; the `QueuedOutput` holds them and the marker of when they are done.
2. `write_and_score` (a worker, or the main thread without workers): waits for those copies, writes the PNG and,
   on the CPU, scores the frame: a `WrittenOutput`.
3. `VideoOutputs.add` (main thread, in order): the frame's times and scores go to the report, its image to the
   output video file and the showcase, and the progress bar moves; `VideoOutputs.close` ends the video after its
   last output (the video file renamed into place, the showcase pictures written, the report told).
"""

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
from torch import Tensor
from tqdm import tqdm

from data.frames import write_png
from data.video_io import VideoSource, VideoWriter
from infer.conversion import FramePreparer
from infer.planning import Job, Metrics
from infer.report import FrameTimes, Report
from infer.transfer import Ready, Transfer
from utils.atomic import writing
from utils.metrics import FrameScores, score_frame
from utils.metrics_device import score_frame_tensor
from utils.showcase import ShowcaseWriter

FALLBACK_FPS = 25.0
"""The frame rate of an output video whose input says none."""


@dataclass(frozen=True)
class QueuedOutput:
    """A restored frame on its way to the disk and the report; its tensors are complete once ``ready`` is."""

    video: str
    frame: str
    image: Tensor
    """H x W x 3 uint8 on the host."""
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


def queue_output(
    restored: Tensor,
    prepare: FramePreparer,
    blurred: Tensor,
    sharp_host: Tensor | None,
    transfer: Transfer,
    metrics: Metrics | None,
) -> tuple[Tensor, Tensor | None, Ready]:
    """Queue the output's conversion to uint8, its metrics (``metrics``: scored on the device) and its copies to
    the host; returns the host image, the host scores (or None) and the marker of those copies."""
    image = prepare.output(restored)
    scores = None
    if sharp_host is not None and metrics is not None:
        sharp = transfer.to_device(sharp_host)
        scores = transfer.to_host(
            score_frame_tensor(image, blurred, sharp, channel=metrics.channel, crop_border=metrics.crop_border)
        )
    return transfer.to_host(image), scores, transfer.ready()


def write_and_score(output: QueuedOutput, transfer: Transfer, metrics: Metrics) -> WrittenOutput:
    """A worker's part: wait for the copies, write the PNG, score the frame (unless the device did)."""
    output.ready.wait()
    forward = transfer.seconds(output.model_spans)
    started = time.perf_counter()
    image = output.image.numpy()
    if output.path is not None:
        with writing(output.path):
            write_png(output.path, image)
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
        if job.video_out is not None:
            source = job.source
            fps = source.fps if isinstance(source, VideoSource) and source.fps > 0 else FALLBACK_FPS
            with writing(job.video_out):
                self.writer = self.open.enter_context(VideoWriter(job.video_out, source.size, fps))
        bar = tqdm(total=len(job.targets), desc=self.name, unit="frame", dynamic_ncols=True, disable=not progress)
        self.bar = self.open.enter_context(bar)

    def add(self, output: QueuedOutput, written: WrittenOutput, total: float) -> None:
        """An output, complete (``total``: the wall time since the previous output was completed)."""
        times = FrameTimes(output.pre, written.forward, written.post, total)
        self.report.frame(output.video, output.frame, written.scores, times)
        if self.writer is not None:
            with writing(self.writer.path):
                self.writer.write(written.image)
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

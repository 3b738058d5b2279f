"""The overlapped execution of a run: frames are read ahead in background threads, the model runs in the main
thread, and workers write and score the outputs while the model goes on with the next frames.

Per video: a reader thread decodes the blurred frames (and one the sharp frames) a few frames ahead; the main
thread copies each frame to the device, pushes it through the runner and, for each output, queues on the device
its conversion to uint8, its metrics (CUDA) and its copy to the host, then hands it to a worker. The worker waits
for that copy, writes the PNG and scores the frame (CPU); what must be in order (results, log lines, progress,
showcase, the frames of an output video) is done in the main thread as outputs complete, in order. With no
workers there is no thread at all: each step runs in the main thread, in turn. The arithmetic of the frames is
that of utils/image.py, so the outputs are the same with any number of workers.

The runner of a video is the streaming runner (or the window runner), wrapped by `model.tiling.TiledRunner` for
--tile (one runner per tile) and by `model.ensemble.SelfEnsemble` for --self_ensemble (one per transform, each
tiled). With --self_ensemble x16 the video is first run backwards (`_backward`), its outputs kept on the host, and
`TimeReversal` averages each forward output with the backward one of the same frame.

Times of an output (`FrameTimes`): ``pre`` is the main loop's wait for its input frames, ``forward`` the model's
time (CUDA events on the GPU), ``post`` the worker's writing and scoring, ``total`` the wall time since the previous
output was completed. With x16 the backward pass's model time counts in the video's first output.
"""

import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from data.frames import read_rgb, write_png
from data.video_io import FolderSource, VideoSource, VideoWriter
from infer.planning import SIZE_MULTIPLE, Job, Plan
from infer.reader import read_ahead
from infer.report import FrameTimes, Report
from infer.transfer import Ready, Transfer
from infer.workers import InOrder
from model.acceleration import accelerated_step
from model.cdvd_tsp import CDVD_TSP
from model.ensemble import SelfEnsemble, TimeReversal, backward_outputs
from model.streaming import Restored, Runner, StreamingRunner, WindowRunner, with_border
from model.tiling import TiledRunner
from utils.atomic import writing
from utils.image import cropped_size
from utils.metrics import FrameScores, score_frame
from utils.metrics_device import score_frame_tensor
from utils.precision import Precision, autocast
from utils.showcase import ShowcaseWriter

logger = logging.getLogger(__name__)

FALLBACK_FPS = 25.0
READ_AHEAD = 4
"""Frames decoded ahead of the model, per stream (blurred, sharp)."""


def pad_to_multiple(tensor: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Reflect-pad the bottom and right of [B, C, H, W] up to multiples of ``multiple``."""
    height, width = tensor.shape[-2:]
    pad_bottom, pad_right = -height % multiple, -width % multiple
    if pad_bottom == 0 and pad_right == 0:
        return tensor
    return F.pad(tensor, (0, pad_right, 0, pad_bottom), mode="reflect")


class FramePreparer:
    """Frames to what the model sees and back: cropped to multiples of 4 (evaluation) or padded (--input).

    `tensor` and `output` do what utils/image.py's `to_tensor` and `to_uint8` do, on tensors of any device, so
    that the conversions can stay on the GPU.
    """

    def __init__(self, size: tuple[int, int], crop: bool) -> None:
        height, width = size
        self.crop = crop
        self.visible = cropped_size(height, width, SIZE_MULTIPLE) if crop else (height, width)

    def image(self, rgb: np.ndarray) -> np.ndarray:
        """The part of the frame that gets an output (the cropped frame, or all of it)."""
        height, width = self.visible
        return rgb[:height, :width]

    def tensor(self, frame: Tensor) -> Tensor:
        """H x W x 3 uint8 -> [1, 3, H, W] float32 in [0, 1], padded for --input."""
        tensor = frame.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        return tensor if self.crop else pad_to_multiple(tensor)

    def output(self, tensor: Tensor) -> Tensor:
        """[1, 3, H, W] model output -> H x W x 3 uint8 of the visible size: x255, clamp, round (the protocol)."""
        height, width = self.visible
        scaled = (tensor[0, :, :height, :width].detach().float() * 255.0).clamp(0, 255).round().to(torch.uint8)
        return scaled.permute(1, 2, 0)


class AutocastRunner:
    """A runner whose pushes run under a precision's autocast (the window runner calls the whole model)."""

    def __init__(self, runner: Runner, precision: Precision, device: torch.device) -> None:
        self.runner = runner
        self.precision = precision
        self.device = device

    @property
    def latency(self) -> int:
        return self.runner.latency

    def push(self, frame: Tensor, tag: object = None) -> Restored | None:
        with autocast(self.precision, self.device):
            return self.runner.push(frame, tag)


def runner_factory(model: CDVD_TSP, plan: Plan) -> Callable[[], Runner]:
    """How this run makes each video's runner: the streaming runner with the accelerated step (made once, shared
    by all videos), or the window runner under autocast; one per tile with --tile, per transform with
    --self_ensemble (time reversal is `Pipeline.video`'s, it needs a pass of its own)."""
    new_runner: Callable[[], Runner]
    if plan.window:
        new_runner = lambda: AutocastRunner(WindowRunner(model), plan.precision, plan.device)  # noqa: E731
    else:
        step = accelerated_step(model, plan.precision, plan.device, cuda_graphs=plan.cuda_graphs, compile=plan.compile)
        new_runner = lambda: StreamingRunner(model, step=step)  # noqa: E731
    if plan.tile is not None:
        untiled, tile, overlap = new_runner, plan.tile, plan.tile_overlap
        new_runner = lambda: TiledRunner(untiled, tile, overlap)  # noqa: E731
    if plan.self_ensemble is not None:
        plain = new_runner
        new_runner = lambda: SelfEnsemble(plain)  # noqa: E731
    return new_runner


def scores_on_device(device: torch.device) -> bool:
    """Whether outputs are scored on the device (CUDA) rather than by the numpy metrics in a worker."""
    return device.type == "cuda"


@dataclass
class Output:
    """A restored frame on its way to the disk and the report; its tensors are complete once ``ready`` is."""

    video: str
    frame: str
    image: Tensor
    """H x W x 3 uint8 on the host."""
    blurred: np.ndarray
    sharp: np.ndarray | None
    scores: Tensor | None
    """The metrics computed on the device ([4] float64 on the host), or None (scored here, or no ground truth)."""
    ready: Ready
    model_spans: list
    pre: float
    path: Path | None
    """Where the PNG goes, if anywhere."""


@dataclass(frozen=True)
class Finished:
    image: np.ndarray
    scores: FrameScores | None
    forward: float
    post: float


def nothing() -> None:
    """The work of a marker job: its completion is what counts."""


def finish(output: Output, transfer: Transfer, metrics: dict[str, object] | None = None) -> Finished:
    """A worker's part: wait for the copies, write the PNG, score the frame (``metrics``: channel, crop_border)."""
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
        scores = score_frame(image, output.blurred, output.sharp, **(metrics or {}))
    return Finished(image, scores, forward, time.perf_counter() - started)


class Pipeline:
    """The machinery of a run, shared by its videos: runners, device copies, workers and the completion clock.

    Use as a context manager: leaving it completes every output given so far, or, on an error or Ctrl-C, cancels
    pending work, removes unfinished video files and joins the workers.
    """

    def __init__(self, model: CDVD_TSP, plan: Plan, report: Report, progress: bool = True) -> None:
        self.model = model
        self.plan = plan
        self.report = report
        self.progress = progress
        self.transfer = Transfer(plan.device)
        self.new_runner = runner_factory(model, plan)
        self.metrics: dict = {"channel": plan.metric_channel, "crop_border": plan.crop_border}
        self.device_scores = scores_on_device(plan.device)
        self.work = InOrder(plan.workers)
        self.completed_at = time.perf_counter()
        self.open_outputs: list[contextlib.ExitStack] = []
        """Per video still being completed: its video file and progress bar."""

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            try:
                self.drain()
            except BaseException as failure:
                self._abort(type(failure), failure, failure.__traceback__)
                raise
        self._abort(kind, error, traceback)

    def _abort(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop the workers; video files still open are closed as failed (their partial files removed)."""
        self.work.close()
        while self.open_outputs:
            self.open_outputs.pop().__exit__(kind, error, traceback)

    def _on_reader_start(self) -> None:
        if self.transfer.cuda:  # pinned memory belongs to the current device, which is per thread
            torch.cuda.set_device(self.plan.device)

    def _blurred(self, source: FolderSource | VideoSource, prepare: FramePreparer) -> Iterator[tuple[int, Tensor]]:
        with contextlib.closing(source.frames()) as frames:
            for index, rgb in enumerate(frames):
                yield index, self.transfer.host_frame(prepare.image(rgb))

    def _sharp(self, paths: list[Path], targets: list[int], prepare: FramePreparer) -> Iterator[tuple[int, Tensor]]:
        for index in targets:
            yield index, self.transfer.host_frame(prepare.image(read_rgb(paths[index])))

    def _readers(
        self, stack: contextlib.ExitStack, job: Job, prepare: FramePreparer
    ) -> tuple[Iterator[tuple[int, Tensor]], Iterator[tuple[int, Tensor]] | None]:
        """The frames to push, in order (the border ones repeated), and the sharp frames of the outputs."""
        ahead = READ_AHEAD if self.plan.workers else 0  # no workers: no threads at all
        read = stack.enter_context(
            read_ahead(self._blurred(job.source, prepare), ahead, "infer-read-blurred", self._on_reader_start)
        )
        frames = with_border(read, self.model.n_stages) if self.plan.border else read
        if job.gt is None:
            return frames, None
        sharp = read_ahead(self._sharp(job.gt, job.targets, prepare), ahead, "infer-read-sharp", self._on_reader_start)
        return frames, stack.enter_context(sharp)

    def _video_writer(self, stack: contextlib.ExitStack, job: Job) -> VideoWriter | None:
        if job.video_out is None:
            return None
        source = job.source
        fps = source.fps if isinstance(source, VideoSource) and source.fps > 0 else FALLBACK_FPS
        with writing(job.video_out):
            return stack.enter_context(VideoWriter(job.video_out, source.size, fps))

    def _complete(
        self,
        output: Output,
        finished: Finished,
        writer: VideoWriter | None,
        showcase: ShowcaseWriter | None,
        bar: tqdm,
    ) -> None:
        """An output's in-order part (main thread): its times, the report, the video file, the showcase."""
        now = time.perf_counter()
        times = FrameTimes(output.pre, finished.forward, finished.post, now - self.completed_at)
        self.completed_at = now
        self.report.frame(output.video, output.frame, finished.scores, times)
        if writer is not None:
            with writing(writer.path):
                writer.write(finished.image)
        if showcase is not None:
            showcase.add(output.frame, output.blurred, finished.image, output.sharp)
        bar.update()

    def video(
        self, job: Job, showcase: ShowcaseWriter | None = None, finished: Callable[[], None] | None = None
    ) -> None:
        """Restore one video. Its outputs are written and reported in order, the last ones possibly while the next
        video already runs (no pause between videos); ``finished`` is called, in order, after its last output."""
        source, names = job.source, job.source.frame_names
        prepare = FramePreparer(source.size, self.plan.crop)
        if job.frames_dir is not None:
            with writing(job.frames_dir):
                job.frames_dir.mkdir(parents=True, exist_ok=True)
        # the video file and the progress bar stay open until the video's last output is complete
        outputs = contextlib.ExitStack()
        self.open_outputs.append(outputs)
        writer = self._video_writer(outputs, job)
        progress = tqdm(
            total=len(job.targets), desc=source.name, unit="frame", dynamic_ncols=True, disable=not self.progress
        )
        bar = outputs.enter_context(progress)
        with contextlib.ExitStack() as stack:
            frames, sharp = self._readers(stack, job, prepare)
            waited, spans = 0.0, []
            runner = self.new_runner()
            if self.plan.self_ensemble == "x16":
                with self.transfer.timed(spans):
                    backward = self._backward(job, prepare)
                runner = TimeReversal(runner, backward, key=lambda tag: tag[0])
            while True:
                self.work.poll()
                started = time.perf_counter()
                item = next(frames, None)
                if item is None:
                    break
                index, host = item
                frame = self.transfer.to_device(host)
                tensor = prepare.tensor(frame)
                waited += time.perf_counter() - started
                with self.transfer.timed(spans):
                    restored = runner.push(tensor, (index, host, frame))
                if restored is None:
                    continue
                index, blurred_host, blurred = restored.tag
                if index > job.targets[-1]:  # ffmpeg decoded more frames than it counted: those counted are done
                    logger.warning("%s: more frames than counted; the last ones are left out", source.name)
                    break
                started = time.perf_counter()
                sharp_host = self._next_sharp(sharp, index)
                waited += time.perf_counter() - started
                image, scores, ready = self._queue_output(restored.image, prepare, blurred, sharp_host)
                output = Output(
                    video=source.name,
                    frame=names[index],
                    image=image,
                    blurred=blurred_host.numpy(),
                    sharp=None if sharp_host is None else sharp_host.numpy(),
                    scores=scores,
                    ready=ready,
                    model_spans=spans,
                    pre=waited,
                    path=None if job.frames_dir is None else job.frames_dir / f"{names[index]}.png",
                )
                self.work.submit(
                    functools.partial(finish, output, self.transfer, self.metrics),
                    functools.partial(self._complete, output, writer=writer, showcase=showcase, bar=bar),
                )
                waited, spans = 0.0, []
        self.work.submit(nothing, functools.partial(self._video_complete, outputs, job.video_out, finished))

    def _video_complete(
        self, outputs: contextlib.ExitStack, video_out: Path | None, finished: Callable[[], None] | None, _: None
    ) -> None:
        """A video's last step, in order after its last output: close its video file and bar, then ``finished``."""
        self.open_outputs.remove(outputs)
        with writing(video_out or Path(self.plan.report_dir)):
            outputs.close()
        if finished is not None:
            finished()

    def _backward(self, job: Job, prepare: FramePreparer) -> dict:
        """The video played backwards through the runner (border-padded like the forward pass): each output on the
        host, by frame index. A folder's frames are read last first; a video file is decoded and kept (uint8)."""
        source = job.source
        if isinstance(source, FolderSource):
            indexed: list = [(index, None) for index in range(len(source))]
        else:
            with contextlib.closing(source.frames()) as decoded:
                indexed = list(itertools.islice(enumerate(decoded), len(source)))

        def frames() -> Iterator[tuple[Tensor, tuple[int]]]:
            for index, rgb in reversed(indexed):
                image = read_rgb(source.paths[index]) if isinstance(source, FolderSource) else rgb
                host = self.transfer.host_frame(prepare.image(image))
                yield prepare.tensor(self.transfer.to_device(host)), (index,)

        padded = with_border(frames(), self.model.n_stages) if self.plan.border else frames()
        return backward_outputs(self.new_runner(), padded, key=lambda tag: tag[0])

    def drain(self) -> None:
        """Complete everything given so far (every video's outputs and ``finished``)."""
        self.work.drain()

    @staticmethod
    def _next_sharp(sharp: Iterator[tuple[int, Tensor]] | None, index: int) -> Tensor | None:
        if sharp is None:
            return None
        sharp_index, host = next(sharp)
        if sharp_index != index:
            raise RuntimeError(f"sharp frame {sharp_index} read for output {index}")
        return host

    def _queue_output(
        self, restored: Tensor, prepare: FramePreparer, blurred: Tensor, sharp_host: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Ready]:
        """Queue the output's conversion to uint8, its metrics (on the device) and its copies to the host; returns
        the host image, the host scores (or None) and the marker of those copies."""
        image = prepare.output(restored)
        scores = None
        if sharp_host is not None and self.device_scores:
            sharp = self.transfer.to_device(sharp_host)
            scores = self.transfer.to_host(score_frame_tensor(image, blurred, sharp, **self.metrics))
        return self.transfer.to_host(image), scores, self.transfer.ready()

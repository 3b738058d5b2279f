"""The overlapped execution of a run: frames are read ahead in background threads, the model runs in the main
thread, and workers write and score the outputs while the model goes on with the next frames.

A frame's way, per video (`Pipeline.video`): `VideoInput` (infer/inputs.py) reads it ahead, prepares it and pads
the border; the main thread pushes it through the video's runner (infer/runners.py), tagged with its index; when
the runner hands back an output, `queue_output` (infer/outputs.py) queues its check for NaN and inf, conversion,
metrics and copies on the device and a worker (infer/workers.py) writes and scores it (`write_and_score`; a
non-finite output stops the run there, unwritten); in order, in the main thread,
`VideoOutputs` passes it to the report (infer/report.py), the output video file and the showcase. With no workers
there is no thread at all: each step runs in the main thread, in turn. The arithmetic of the frames is that of
utils/image.py, so the outputs are the same with any number of workers.

Every file the pipeline writes lies in the run's staging folder (infer/run.py stages every output), which nobody
reads before the commit: the writers write each file directly (`write_png` and `VideoWriter` with ``direct``),
without a temporary file and a rename of their own; a failed write removes its partial file.

Between videos nothing waits: the videos to come are announced (`Pipeline.expect`), and when a video starts, the
next one's input is opened, so its first frames are read ahead while the current video is restored; the current
video's last outputs are written while the next one runs.

With --self_ensemble x16 the video is first run backwards (`VideoInput.backwards`), its outputs kept on the host,
and `TimeReversal` averages each forward output with the backward one of the same frame.

Times of an output (`report.FrameTimes`): ``pre`` is the main loop's wait for its input frames, ``forward`` the
model's time (CUDA events on the GPU), ``post`` the worker's writing and scoring, ``total`` the wall time since the
previous output was completed. With x16 the backward pass's model time counts in the video's first output.
"""

import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from types import TracebackType

from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.inputs import VideoInput
from cdvd_tsp.infer.outputs import QueuedOutput, VideoOutputs, WrittenOutput, queue_output, write_and_score
from cdvd_tsp.infer.planning import Job, Plan
from cdvd_tsp.infer.report import Report
from cdvd_tsp.infer.restorer import Restorer
from cdvd_tsp.infer.transfer import Transfer
from cdvd_tsp.infer.workers import InOrder
from cdvd_tsp.model.streaming import Runner

logger = logging.getLogger(__name__)


def nothing() -> None:
    """The work of a marker job: its completion is what counts."""


class OpenInput:
    """A video's input, opened (its readers started) before its turn: the job, its frame preparer, and the stack
    that closes the input."""

    def __init__(self, job: Job, prepare: FramePreparer, frames: VideoInput, stack: contextlib.ExitStack) -> None:
        self.job = job
        self.prepare = prepare
        self.frames = frames
        self.stack = stack


class Pipeline:
    """The machinery of a run, shared by its videos: runners, device copies, workers and the completion clock.

    Use as a context manager: leaving it completes every output given so far, or, on an error or Ctrl-C, cancels
    pending work, stops the readers of a video opened ahead, removes unfinished video files and joins the workers.
    """

    def __init__(self, restorer: Restorer, plan: Plan, report: Report, progress: bool = True) -> None:
        self.plan = plan
        self.report = report
        self.progress = progress
        self.transfer = Transfer(plan.execution.device)
        self.restorer = restorer
        self.scores_on_device = plan.execution.device.type == "cuda"
        """Whether outputs are scored on the device (CUDA) rather than by the numpy metrics in a worker."""
        self.work = InOrder(plan.execution.workers)
        self.completed_at = time.perf_counter()
        """When the last output was completed: the clock of the outputs' total times."""
        self.open_videos: list[VideoOutputs] = []
        """The videos whose outputs are not all completed yet."""
        self.expected: list[Job] = []
        """The videos to come, in order (`expect`)."""
        self.ahead: OpenInput | None = None
        """The next video's input, opened while the current video runs."""
        self.last_closing: int | None = None
        """The number (`InOrder.submit`) of the last video's closing job: the end of the videos fully restored."""

    def expect(self, jobs: Sequence[Job]) -> None:
        """Announce the videos that `video` will be given, in that order: each one's input is opened (its first
        frames read ahead) when the one before it starts."""
        self.expected = list(jobs)

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            try:
                self.work.drain()
            except BaseException as failure:
                self._abort(type(failure), failure, failure.__traceback__)
                raise
        self._abort(kind, error, traceback)

    def _abort(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop the readers of the video opened ahead and the workers; video files still open are closed as failed
        (their partial files removed)."""
        try:
            self._close_ahead(kind, error, traceback)
        finally:
            self.work.close()
        while self.open_videos:
            self.open_videos.pop().abort(kind, error, traceback)

    def _close_ahead(
        self,
        kind: type[BaseException] | None = None,
        error: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            ahead.stack.__exit__(kind, error, traceback)

    def _open_input(self, job: Job) -> OpenInput:
        """``job``'s input, its readers started."""
        prepare = self.restorer.preparer(job.source.size)
        threads = self.plan.execution.workers > 0  # no workers: no threads at all
        frames = VideoInput(job, prepare, self.transfer, self.plan.restoration, threads)
        stack = contextlib.ExitStack()
        stack.enter_context(frames)
        return OpenInput(job, prepare, frames, stack)

    def _input(self, job: Job) -> OpenInput:
        """``job``'s input (the one opened ahead, if it is ``job``'s), and the next expected video's opened ahead."""
        if self.ahead is not None and self.ahead.job is not job:
            self._close_ahead()  # not the video announced: read again when its turn comes
        current = self.ahead or self._open_input(job)
        self.ahead = None
        try:
            following = self._following(job)
            if following is not None:
                self.ahead = self._open_input(following)
        except BaseException as failure:
            current.stack.__exit__(type(failure), failure, failure.__traceback__)
            raise
        return current

    def _following(self, job: Job) -> Job | None:
        """The video expected after ``job``, if any."""
        for position, expected in enumerate(self.expected[:-1]):
            if expected is job:
                return self.expected[position + 1]
        return None

    def _runner(self, frames: VideoInput, spans: list) -> Runner:
        """The video's runner; for x16, after the backward pass (its model time timed into ``spans``)."""
        if not self.plan.restoration.time_reversal:
            return self.restorer.runner()
        with self.transfer.timed(spans):
            return self.restorer.runner(frames.backwards())

    def video(self, job: Job) -> None:
        """Restore one video. Its outputs are written and reported in order, the last ones possibly while the next
        video already runs (no pause between videos); the report hears of its end after its last output."""
        try:
            self._video(job)
        except BaseException:
            self._finish_restored()
            raise

    def _finish_restored(self) -> None:
        """After a failure or a stop in a video: the earlier videos, fully restored, still complete (their last
        outputs written, their ends reported), unless the failure came from that work itself."""
        if self.last_closing is None:
            return
        with contextlib.suppress(Exception):  # the failure in flight is the one to report
            self.work.complete_through(self.last_closing)

    def _video(self, job: Job) -> None:
        opened = self._input(job)
        prepare, frames = opened.prepare, opened.frames
        with opened.stack:
            outputs = VideoOutputs(job, self.report, self.plan.destination.showcase_dir, self.progress)
            self.open_videos.append(outputs)
            waited, spans = 0.0, []
            runner = self._runner(frames, spans)
            while True:
                self.work.poll()
                started = time.perf_counter()
                pushed = frames.next_frame()
                waited += time.perf_counter() - started
                if pushed is None:
                    break
                index, tensor = pushed
                with self.transfer.timed(spans):
                    restored = runner.push(tensor, index)
                if restored is None:
                    continue
                index = restored.tag
                if index > job.targets[-1]:  # ffmpeg decoded more frames than it counted: those counted are done
                    logger.warning("%s: more frames than counted; the last ones are left out", job.source.name)
                    break
                started = time.perf_counter()
                sharp = frames.sharp(index)
                waited += time.perf_counter() - started
                blurred_host, blurred = frames.take(index)
                queued = queue_output(
                    restored.image,
                    prepare,
                    blurred,
                    sharp,
                    self.transfer,
                    self.plan.metrics if self.scores_on_device else None,
                )
                name = job.source.frame_names[index]
                output = QueuedOutput(
                    video=job.source.name,
                    frame=name,
                    image=queued.image,
                    finite=queued.finite,
                    blurred=blurred_host.numpy(),
                    sharp=None if sharp is None else sharp.numpy(),
                    scores=queued.scores,
                    ready=queued.ready,
                    model_spans=spans,
                    pre=waited,
                    path=None if job.frames_dir is None else job.frames_dir / f"{name}.png",
                )
                precision = self.plan.execution.precision.name
                self.work.submit(
                    functools.partial(write_and_score, output, self.transfer, self.plan.metrics, precision),
                    functools.partial(self._complete, outputs, output),
                )
                waited, spans = 0.0, []
        self.last_closing = self.work.submit(nothing, functools.partial(self._close, outputs))

    def _complete(self, outputs: VideoOutputs, output: QueuedOutput, written: WrittenOutput) -> None:
        """An output's in-order part (main thread): its total time on the run's clock, then its video's outputs."""
        now = time.perf_counter()
        total, self.completed_at = now - self.completed_at, now
        outputs.add(output, written, total)

    def _close(self, outputs: VideoOutputs, _: None) -> None:
        """A video's last step, in order after its last output."""
        self.open_videos.remove(outputs)
        outputs.close()

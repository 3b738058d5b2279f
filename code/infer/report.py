"""What an inference run reports: the log (a new file per run) and results.json.

The log's lines are the release's (csbhr/CDVD-TSP code/inference.py), byte for byte in their format: the header
(``Inference - <date>``, ``save_image: ..`` .. ``device: ..``), ``Loading model from ..``, one ``> video-frame
PSNR=.., SSIM=.. pre_time:..s, ...`` line per frame, then ``# Video:.. AVG-PSNR=.., AVG-SSIM=..`` per video and
``# Total AVG-PSNR=.., AVG-SSIM=..``. What the release does not log (the blurred input's metrics, frame counts,
speed, the settings it does not have) goes on lines of their own that start with `EXTRA` ("+ "), which no line of
the release starts with, so a parser of the release's logs skips them. Without ground truth the frame lines have no
metrics and the video and total lines give frame counts (there is no release line to follow).

Averages are taken over frames: per video, and in total over ALL frames of all videos (not the mean of the video
means), as the protocol says. An infinite PSNR (an output equal to the sharp frame) makes the averages infinite, as
in the release; JSON has no infinity, so results.json writes it as the string "inf" (``float("inf")`` reads it back).

With several processes (torchrun) each one keeps its videos' `Results`; `merge` puts them together in the plan's
order and rank 0 writes the log lines from them (`write_videos`), so the log and results.json are those of a run in
one process.

A resumed run (``--resume``, infer/progress.py) writes a new log, whose frame lines are those of the whole run: the
videos an earlier start finished are reported from their records (`Report.keep`: their scores and that start's
times), in the plan's order among the others, after one `EXTRA` line saying so (`resumed_line`).
"""

import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from cdvd_tsp.utils.atomic import writing
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.metrics import FrameScores

METRICS = ("psnr", "ssim", "input_psnr", "input_ssim")
EXTRA = "+ "
"""The start of every log line the release does not write."""
RELEASE_HEADER = (
    "save_image",
    "border",
    "model_path",
    "data_path",
    "result_path",
    "n_seq",
    "size_must_mode",
    "device",
)
"""The release's header settings, in its order; the log writes other settings after them, as `EXTRA` lines."""
LOG_PREFIX = "inference_log"
"""A log's name before its date: ``inference_log_<date>_<time>.txt`` (``<name>_inference_log_...`` beside a video)."""


@dataclass(frozen=True)
class FrameTimes:
    """Seconds for one output frame in an overlapped run (see docs/inference.md, "Times")."""

    pre: float
    """The main loop's wait for this output's input frames (read ahead in the background)."""
    forward: float
    """The model's time for this output (GPU time on CUDA)."""
    post: float
    """A worker's time for writing and scoring this output (overlapped with the model)."""
    total: float
    """Wall time since the previous output was completed: the totals of a run add up to its wall time."""


def json_number(value: float) -> float | str:
    """A float for JSON: non-finite values as the strings "inf", "-inf", "nan"."""
    return value if math.isfinite(value) else str(value)


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


@dataclass
class VideoResults:
    frames: dict[str, FrameScores | None] = field(default_factory=dict)
    times: dict[str, FrameTimes] = field(default_factory=dict)

    def averages(self) -> dict[str, float]:
        """Mean of each metric over the frames; empty without ground truth."""
        scores = [score for score in self.frames.values() if score is not None]
        if not scores:
            return {}
        return {name: mean([getattr(score, name) for score in scores]) for name in METRICS}


@dataclass
class Results:
    """Per-frame scores and times of a run, grouped by video (in the order the videos were added)."""

    videos: dict[str, VideoResults] = field(default_factory=dict)

    def video(self, name: str) -> VideoResults:
        """The results of video ``name`` (empty until its first frame is added)."""
        return self.videos.setdefault(name, VideoResults())

    def add(self, video: str, frame: str, scores: FrameScores | None, times: FrameTimes) -> None:
        results = self.video(video)
        results.frames[frame] = scores
        results.times[frame] = times

    def all_scores(self) -> list[FrameScores]:
        return [score for video in self.videos.values() for score in video.frames.values() if score is not None]

    def all_times(self) -> list[FrameTimes]:
        return [times for video in self.videos.values() for times in video.times.values()]

    @property
    def frame_count(self) -> int:
        return sum(len(video.frames) for video in self.videos.values())

    def averages(self) -> dict[str, float]:
        """Mean of each metric over ALL scored frames of all videos; empty without ground truth."""
        scores = self.all_scores()
        if not scores:
            return {}
        return {name: mean([getattr(score, name) for score in scores]) for name in METRICS}

    def seconds_per_frame(self) -> float:
        """Mean of the frames' total (wall) times."""
        times = self.all_times()
        return mean([entry.total for entry in times]) if times else 0.0

    def model_seconds_per_frame(self) -> float:
        """Mean of the frames' model times."""
        times = self.all_times()
        return mean([entry.forward for entry in times]) if times else 0.0

    def to_json(self, settings: dict[str, object] | None = None) -> dict:
        """The results.json document (metric keys only where there is ground truth; ``settings`` when given)."""
        videos = {}
        for name, video in self.videos.items():
            frames = {
                frame: {} if score is None else {key: json_number(getattr(score, key)) for key in METRICS}
                for frame, score in video.frames.items()
            }
            averages = {key: json_number(value) for key, value in video.averages().items()}
            videos[name] = {**averages, "frames": frames}
        averages = {key: json_number(value) for key, value in self.averages().items()}
        document: dict[str, object] = {
            **averages,
            "frames": self.frame_count,
            "seconds_per_frame": self.seconds_per_frame(),
            "model_seconds_per_frame": self.model_seconds_per_frame(),
        }
        if settings is not None:
            document["settings"] = settings
        document["videos"] = videos
        return document


def merge(parts: Iterable[Results], order: list[str]) -> Results:
    """The results of several processes as one run's: their videos in ``order`` (the plan's), each video's frames
    as its process recorded them. A video may be in one part only."""
    videos: dict[str, VideoResults] = {}
    for part in parts:
        for name, video in part.videos.items():
            if name in videos:
                raise ValueError(f"video {name} was restored by two processes")
            videos[name] = video
    return Results({name: videos[name] for name in order if name in videos})


def times_text(times: FrameTimes) -> str:
    return (
        f"pre_time:{times.pre:.3}s, forward_time:{times.forward:.3}s, post_time:{times.post:.3}s, "
        f"total_time:{times.total:.3}s"
    )


def frame_line(video: str, frame: str, scores: FrameScores | None, times: FrameTimes) -> str:
    """The release's per-frame line (without ground truth: no metrics)."""
    metrics = f"PSNR={scores.psnr:.5}, SSIM={scores.ssim:.4} " if scores else ""
    return f"> {video}-{frame} {metrics}{times_text(times)}"


def frame_extra_line(video: str, frame: str, scores: FrameScores) -> str:
    """The blurred input's metrics of a frame (not in the release's log)."""
    return f"{EXTRA}{video}-{frame} input PSNR={scores.input_psnr:.5}, SSIM={scores.input_ssim:.4}"


def video_lines(name: str, video: VideoResults) -> list[str]:
    """The release's average line of a video, then the input's averages and the frame count."""
    averages = video.averages()
    if not averages:
        return [f"# Video:{name} frames={len(video.frames)}"]
    return [
        f"# Video:{name} AVG-PSNR={averages['psnr']:.5}, AVG-SSIM={averages['ssim']:.4}",
        f"{EXTRA}Video:{name} input AVG-PSNR={averages['input_psnr']:.5}, AVG-SSIM={averages['input_ssim']:.4}, "
        f"frames={len(video.frames)}",
    ]


def total_lines(results: Results) -> list[str]:
    """The release's total line (over all frames), then the input's averages, frame count and speed."""
    count = f"frames={results.frame_count}, seconds_per_frame={results.seconds_per_frame():.4}"
    averages = results.averages()
    if not averages:
        return [f"# Total {count}"]
    return [
        f"# Total AVG-PSNR={averages['psnr']:.5}, AVG-SSIM={averages['ssim']:.4}",
        f"{EXTRA}Total input AVG-PSNR={averages['input_psnr']:.5}, AVG-SSIM={averages['input_ssim']:.4}, {count}",
    ]


def printable(text: str) -> str:
    """``text`` with the bytes of file names that are not UTF-8 (Python's surrogate escapes) written as ``\\xff``, so
    that the log and the terminal take any name the file system allows."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name gives
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RunLog:
    """A log file of its own for this run (``<prefix>_<date>_<time>.txt``, never an existing one), echoed to stdout.

    The name holds no ':' so it is valid on every OS; a second run within the same second gets ``_2``, ``_3``...
    Lines go through tqdm so they do not break a progress bar.
    """

    def __init__(self, folder: Path, prefix: str = LOG_PREFIX) -> None:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        self.path, self.file = self._create(folder, f"{prefix}_{stamp}")

    @staticmethod
    def _create(folder: Path, stem: str) -> tuple[Path, TextIO]:
        for attempt in range(1, 1000):
            path = folder / (f"{stem}.txt" if attempt == 1 else f"{stem}_{attempt}.txt")
            try:
                return path, open(path, "x", encoding="utf-8", buffering=1)
            except FileExistsError:
                continue
        raise FileExistsError(f"{folder}: too many logs named {stem}*")

    def write(self, line: str) -> None:
        """Write ``line`` and echo it; a failed write (a full disk) is a `UserError` naming the log."""
        line = printable(line)
        with writing(self.path):
            self.file.write(line + "\n")
        tqdm.write(line)

    def write_error(self, line: str) -> None:
        """Write the line of the error that ends the run, if the log can still be written (the error is raised
        and printed anyway)."""
        with contextlib.suppress(UserError):
            self.write(line)

    def close(self) -> None:
        with writing(self.path):
            self.file.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc_info: object) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(UserError):  # the error in flight is the one to report
            self.close()


def write_header(log: RunLog, settings: dict[str, object], model_path: Path | None = None) -> None:
    """The first lines of a log: the date, the release's settings as ``name: value`` lines in its order, the others
    as `EXTRA` lines, then ``Loading model from ..`` (the model is loaded by then)."""
    log.write(f"Inference - {time.strftime('%Y-%m-%d %H:%M:%S')}")
    for name in RELEASE_HEADER:
        if name in settings:
            log.write(f"{name}: {settings[name]}")
    for name, value in settings.items():
        if name not in RELEASE_HEADER:
            log.write(f"{EXTRA}{name}: {value}")
    if model_path is not None:
        log.write(f"Loading model from {model_path}")


def open_log(
    folder: Path, prefix: str, header: dict[str, object], model_path: Path | None, kept: int = 0, total: int = 0
) -> RunLog:
    """A run's log in ``folder`` (made if missing) with its header and, for a run resumed with ``kept`` of its
    ``total`` videos finished, the line that says so."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        log = RunLog(folder, prefix)
    write_header(log, header, model_path)
    if kept:
        log.write(resumed_line(kept, total))
    return log


def resumed_line(kept: int, total: int) -> str:
    """The log's line of a resumed run, before its frame lines."""
    return (
        f"{EXTRA}resumed: {kept} of {total} videos were finished by an earlier start of this run and are kept "
        "(their lines are that start's)"
    )


def stopped_line(kept: int, total: int, where: Path) -> str:
    """The log's line of a run that stopped before its end having finished videos (its staging folder kept)."""
    return (
        f"{EXTRA}stopped: {kept} of {total} videos are finished and kept in {where}; run the same command with "
        "--resume to continue"
    )


class Report:
    """Where completed frames go, in order: into `Results` and, when a log is given, straight into the log (the
    video averages are written at the end, as the release does: `write_summary`); each finished video is handed to
    ``recorder`` (infer/progress.py's `Recorder`: its record for ``--resume``) before it counts as finished.

    A process of a torchrun run has no log here: rank 0 writes every process's lines after the run (`write_videos`).
    """

    def __init__(self, log: RunLog | None = None, recorder: Callable[[str, VideoResults], None] | None = None) -> None:
        self.results = Results()
        self.log = log
        self.recorder = recorder
        self.finished: list[str] = []
        """The videos whose every output was reported."""

    def frame(self, video: str, frame: str, scores: FrameScores | None, times: FrameTimes) -> None:
        self.results.add(video, frame, scores, times)
        if self.log is not None:
            write_frame(self.log, video, frame, scores, times)

    def video_finished(self, video: str) -> None:
        if self.recorder is not None:
            self.recorder(video, self.results.video(video))
        self.finished.append(video)

    def keep(self, video: str, results: VideoResults) -> None:
        """A video an earlier start of the run finished (from its record): reported as if restored now."""
        for frame, scores in results.frames.items():
            self.frame(video, frame, scores, results.times[frame])
        self.finished.append(video)


def write_frame(log: RunLog, video: str, frame: str, scores: FrameScores | None, times: FrameTimes) -> None:
    log.write(frame_line(video, frame, scores, times))
    if scores is not None:
        log.write(frame_extra_line(video, frame, scores))


def write_videos(log: RunLog, results: Results) -> None:
    """Every video's frame lines, in the order of ``results`` (rank 0 of a torchrun run, after the run)."""
    for name, video in results.videos.items():
        for frame, scores in video.frames.items():
            write_frame(log, name, frame, scores, video.times[frame])


def write_summary(log: RunLog, results: Results, finished: Collection[str], complete: bool) -> None:
    """After the frames, as the release: the average lines of every finished video (in the order of ``results``),
    then, if the run is ``complete``, the total lines."""
    for name, video in results.videos.items():
        if name in finished:
            for line in video_lines(name, video):
                log.write(line)
    if complete:
        for line in total_lines(results):
            log.write(line)

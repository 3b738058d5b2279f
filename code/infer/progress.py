"""What a run keeps of its work while it works, so that a stopped run can be continued (``inference.py --resume``).

A run's staging folder (infer/staging.py) keeps, in its private folder (utils/committed.py: ``.progress/``, never
committed, gone with the staging folder):

    run.json             what the run is (`RunRecord`): its settings, the model file's SHA-256, and its videos, each
                         with the frames that get an output and the files it makes; written before any video starts
    video-<index>.json   a finished video (its index in the plan): its frames' scores and times, and each of its
                         files' size and SHA-256; written by the process that restored it, the moment the video's
                         last file is written (`Recorder`, called by report.Report)

Each record is written atomically and flushed to disk (utils.atomic: a temporary file, renamed): a record is whole
or absent; a kill while one is written leaves a temporary file, which is never read. A run is continued only where
its run.json equals the new run's (`RunRecord.differences` names what differs otherwise); then a video's record is
trusted only if it is this project's, of the video the plan has at its index, with the plan's frames, and each of
the video's files is in the staging folder with the recorded size and SHA-256 (frames are not flushed to disk one
by one, so a power cut may have cut one short: that video is done again). `keep_finished` removes everything else
the staging folder holds (the files of unfinished videos, partial files, records not trusted).

infer/staging.py asks this module what each stopped run left recorded (`stopped_runs`: which it continues, what it
warns about), then sets up the records of the run it begins (`prepare`: `start` a new one, or `keep_finished`).
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cdvd_tsp.infer.planning import Plan
from cdvd_tsp.infer.report import METRICS, FrameTimes, VideoResults, json_number
from cdvd_tsp.infer.settings import RunSettings
from cdvd_tsp.utils import atomic
from cdvd_tsp.utils.atomic import writing
from cdvd_tsp.utils.committed import PRIVATE, Stage, Unit
from cdvd_tsp.utils.metrics import FrameScores

logger = logging.getLogger(__name__)

FORMAT = "cdvd-tsp inference progress"
VERSION = 1
RUN = "run.json"
UNCHECKED = (
    "workers",
    "processes",
    "threads",
    "threads_choice",
    "openmp_wait",
    "layout_choice",
    "result_path",
    "output",
)
"""Settings a stopped run is continued with other values of (results.json and the log record the last start's): the
outputs are the same with any number of workers or processes; the threads are the machine's (a requeued job may
land on a machine of other cores, or find other load), and change at most the order of a few float sums, as the
OpenMP wait policy changes nothing computed; the layouts' reason is a comment (the layouts themselves are checked);
where the results go is where
the stopped run is found (a result folder moved whole, its staging folder with it, goes on). Every other setting is
checked, the step's layouts and batched flows, the precision, compile and deterministic included: they are how the
outputs are computed, and a run continued with others would not give the outputs of one uninterrupted run."""
TIMES = ("pre", "forward", "post", "total")
T = TypeVar("T")
R = TypeVar("R")
DIGEST_THREADS = 8
"""Threads that read back and hash files (recording a video, checking records on resume)."""


def file_digest(path: Path) -> str:
    """The SHA-256 of the file ``path``, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def video_record_name(index: int) -> str:
    return f"video-{index:06d}.json"


@dataclass(frozen=True)
class PlannedVideo:
    """A video of the plan as the records know it: its name, the frames that get an output, the files it makes
    (relative paths inside the unit's folder)."""

    name: str
    frames: tuple[str, ...]
    files: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "frames": list(self.frames), "files": list(self.files)}


def planned_videos(plan: Plan) -> tuple[PlannedVideo, ...]:
    """The plan's videos, in its order."""
    folder = plan.destination.results_path.parent
    return tuple(
        PlannedVideo(
            job.source.name,
            tuple(job.source.frame_names[index] for index in job.targets),
            tuple(path.relative_to(folder).as_posix() for path in job.files),
        )
        for job in plan.jobs
    )


@dataclass(frozen=True)
class RunRecord:
    """What a run is, as far as continuing it goes: every setting (by name), the model file's digest, the videos."""

    settings: dict[str, Any]
    model: str
    videos: tuple[PlannedVideo, ...]

    @classmethod
    def of(cls, plan: Plan, settings: RunSettings) -> "RunRecord":
        values = {setting.name: setting.value for setting in settings.settings}
        with writing(plan.restoration.model_path):  # read, not written: an OSError is still one line naming it
            model = file_digest(plan.restoration.model_path)
        return cls(json.loads(json.dumps(values)), model, planned_videos(plan))

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "settings": self.settings,
            "model_sha256": self.model,
            "videos": [video.to_json() for video in self.videos],
        }
        return (json.dumps(document, indent=1) + "\n").encode("utf-8")

    def differences(self, earlier: "RunRecord") -> list[str]:
        """What differs from the ``earlier`` run's record (empty if this run continues it), as phrases."""
        found = []
        for name in dict.fromkeys([*earlier.settings, *self.settings]):
            was, now = earlier.settings.get(name), self.settings.get(name)
            if name not in UNCHECKED and was != now:
                found.append(f"{name} {was!r} there, {now!r} now")
        if earlier.model != self.model and earlier.settings.get("model_path") == self.settings.get("model_path"):
            found.append(f"the model file {self.settings.get('model_path')} has changed since (another SHA-256)")
        elif earlier.model != self.model:
            found.append("another model file's weights")
        found += video_differences(earlier.videos, self.videos)
        return found


def video_differences(earlier: tuple[PlannedVideo, ...], now: tuple[PlannedVideo, ...]) -> list[str]:
    names, earlier_names = [video.name for video in now], [video.name for video in earlier]
    gone = [name for name in earlier_names if name not in names]
    new = [name for name in names if name not in earlier_names]
    if gone or new:
        parts = ([f"videos no longer planned: {', '.join(gone)}"] if gone else []) + (
            [f"new videos: {', '.join(new)}"] if new else []
        )
        return ["the videos differ (" + "; ".join(parts) + ")"]
    if names != earlier_names:
        return ["the videos come in another order"]
    found = []
    for was, video in zip(earlier, now, strict=True):
        if was.frames != video.frames:
            found.append(f"video {video.name} has {len(video.frames)} frames with an output, {len(was.frames)} there")
        elif was.files != video.files:
            found.append(f"video {video.name} makes other files")
    return found


def _strings(value: object) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return tuple(value)


def read_run(folder: Path) -> RunRecord | None:
    """The run record in the progress folder ``folder``; None if there is none or it is not one (never trusted)."""
    try:
        document = json.loads((folder / RUN).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or (document.get("format"), document.get("version")) != (FORMAT, VERSION):
        return None
    settings, model, entries = document.get("settings"), document.get("model_sha256"), document.get("videos")
    if not isinstance(settings, dict) or not isinstance(model, str) or not isinstance(entries, list):
        return None
    videos = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            return None
        frames, files = _strings(entry.get("frames")), _strings(entry.get("files"))
        if frames is None or files is None:
            return None
        videos.append(PlannedVideo(entry["name"], frames, files))
    return RunRecord(settings, model, tuple(videos))


def start(stage: Stage, run: RunRecord) -> None:
    """Record what the run is in a new staging folder, before any video starts."""
    atomic.make_folders(stage.private)
    atomic.atomic_write_bytes(stage.private / RUN, run.to_bytes())


def finished_count(stage: Stage) -> int:
    """How many video records the staging folder holds (not checked)."""
    if not stage.private.is_dir():
        return 0
    return sum(1 for path in stage.private.glob("video-*.json") if path.is_file())


@dataclass(frozen=True)
class Stopped:
    """An uncommitted staging folder, as its records say: the run it recorded (None if none, or not a record) and
    how many videos it finished (its records, not checked)."""

    stage: Stage
    run: RunRecord | None
    finished: int


def stopped_runs(unit: Unit) -> list[Stopped]:
    """What each of the unit's uncommitted staging folders recorded (in the order of `Unit.uncommitted`)."""
    stages = [Stage(unit, token) for token in unit.uncommitted]
    return [Stopped(stage, read_run(stage.private), finished_count(stage)) for stage in stages]


def _number(value: object) -> float | None:
    """A float of a record (non-finite ones are strings, as in results.json); None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)  # type: ignore[arg-type]
    return None


def _numbers(value: object, count: int) -> list[float] | None:
    if not isinstance(value, list) or len(value) != count:
        return None
    numbers = [_number(item) for item in value]
    return None if any(number is None for number in numbers) else numbers  # type: ignore[return-value]


def video_document(video: PlannedVideo, results: VideoResults, files: dict[str, tuple[int, str]]) -> dict:
    """A finished video's record: its frames in order, each ``[frame, scores or null, times]``, and its files."""
    frames = []
    for frame, scores in results.frames.items():
        times = results.times[frame]
        values = None if scores is None else [json_number(getattr(scores, name)) for name in METRICS]
        frames.append([frame, values, [json_number(getattr(times, name)) for name in TIMES]])
    return {
        "format": FORMAT,
        "version": VERSION,
        "video": video.name,
        "frames": frames,
        "files": {relative: {"size": size, "sha256": digest} for relative, (size, digest) in files.items()},
    }


def parse_video(document: object, video: PlannedVideo) -> tuple[VideoResults, dict[str, tuple[int, str]]] | None:
    """The results and files of a record of ``video``; None if it is not one (another video, other frames...)."""
    if not isinstance(document, dict) or (document.get("format"), document.get("version")) != (FORMAT, VERSION):
        return None
    entries, files = document.get("frames"), document.get("files")
    if document.get("video") != video.name or not isinstance(entries, list) or not isinstance(files, dict):
        return None
    results = VideoResults()
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str):
            return None
        frame, scores, times = entry[0], entry[1], _numbers(entry[2], len(TIMES))
        values = None if scores is None else _numbers(scores, len(METRICS))
        if times is None or (scores is not None and values is None) or frame in results.frames:
            return None
        results.frames[frame] = None if values is None else FrameScores(*values)
        results.times[frame] = FrameTimes(*times)
    if tuple(results.frames) != video.frames or sorted(files) != sorted(video.files):
        return None
    checked = {}
    for relative, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return None
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        checked[relative] = (size, entry["sha256"])
    return results, checked


def file_entry(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of the file ``path``; an `OSError` is a one-line `WriteError` naming it."""
    with writing(path):
        return path.stat().st_size, file_digest(path)


def in_threads(function: Callable[[T], R], items: list[T]) -> list[R]:
    """``function`` of every item, in threads (for reading and hashing files: hashlib lets go of the GIL, so a
    video's files take a fraction of the time they would one after the other)."""
    if not items:
        return []
    with ThreadPoolExecutor(min(DIGEST_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def as_recorded(path: Path, entry: tuple[int, str]) -> bool:
    """Whether ``path`` is a regular file of the recorded size and SHA-256 (a link never is)."""
    try:
        return (
            path.is_file() and not path.is_symlink() and path.stat().st_size == entry[0] and file_entry(path) == entry
        )
    except OSError:
        return False


class Recorder:
    """Records each finished video in the staging folder (report.Report calls it as the video ends)."""

    def __init__(self, stage_root: Path, videos: Iterable[PlannedVideo]) -> None:
        self.root = stage_root
        self.progress = stage_root / PRIVATE
        self.videos = {video.name: (index, video) for index, video in enumerate(videos)}

    def __call__(self, name: str, results: VideoResults) -> None:
        index, video = self.videos[name]
        files = dict(zip(video.files, in_threads(file_entry, [self.root / name for name in video.files]), strict=True))
        document = video_document(video, results, files)
        data = (json.dumps(document) + "\n").encode("utf-8")
        atomic.atomic_write_bytes(self.progress / video_record_name(index), data)


def keep_finished(stage: Stage, run: RunRecord) -> dict[str, VideoResults]:
    """The trusted records' videos (name: results, in plan order) of the staging folder ``stage`` of ``run``;
    everything else it holds is removed (see the module docstring)."""
    progress = stage.private
    recorded: list[tuple[Path, PlannedVideo, tuple[VideoResults, dict[str, tuple[int, str]]] | None]] = []
    for index, video in enumerate(run.videos):
        path = progress / video_record_name(index)
        if not path.is_file() or path.is_symlink():
            continue
        try:
            recorded.append((path, video, parse_video(json.loads(path.read_bytes().decode("utf-8")), video)))
        except (OSError, ValueError):
            recorded.append((path, video, None))
    checks = [(stage.root / name, entry) for _, _, parsed in recorded if parsed for name, entry in parsed[1].items()]
    held = dict(zip([path for path, _ in checks], in_threads(lambda check: as_recorded(*check), checks), strict=True))
    kept: dict[str, VideoResults] = {}
    kept_records, kept_files = {RUN}, set()
    for path, video, parsed in recorded:
        if parsed is None or not all(held[stage.root / relative] for relative in parsed[1]):
            logger.warning("%s: %s is not as its record says; it is restored again", stage.root, video.name)
            continue
        kept[video.name] = parsed[0]
        kept_records.add(path.name)
        kept_files.update(parsed[1])
    for path in sorted(progress.iterdir()):
        if path.name not in kept_records:
            atomic.remove_tree(path) if path.is_dir() and not path.is_symlink() else atomic.remove_file(path)
    for relative in stage.staged_files():
        if relative not in kept_files:
            atomic.remove_file(stage.path(relative))
    return kept


def prepare(stage: Stage, run: RunRecord, continued: bool) -> dict[str, VideoResults]:
    """Set up the records of ``run`` in its staging folder ``stage``: a new one records what the run is (`start`;
    nothing is kept), a continued one keeps its trusted finished videos and removes the rest (`keep_finished`)."""
    if not continued:
        start(stage, run)
        return {}
    return keep_finished(stage, run)

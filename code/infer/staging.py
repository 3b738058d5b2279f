"""A run's outputs are committed as a whole (utils/committed.py): written into a hidden staging folder beside
results.json, and moved into place only when the run has succeeded.

The unit is (the folder of results.json, its name): ``results.json`` in a result or ``--output`` folder, or in an
output video's records folder (`planning.records_folder`; the video itself is renamed into place by its writer), so
that the outputs of different videos are separate units. Its manifest (``.<results name>.manifest.json``) lists the
files the last run wrote there (frames, showcase pictures, results.json); results.json itself is one of them and
lists nothing. While a run works,
everything it makes goes to ``.<results name>.staging-<token>/``, under the same relative paths; `Staging.commit`
writes results.json there and commits: the earlier run's files are replaced as a whole, those the new run does not
make are removed, results.json lands last.

Before anything is written, `Staging.begin` refuses (one line naming the file and the option to change) an output
that would replace anything the manifest does not list: a results.json that this project did not write, or wrote
before it kept manifests; a photo with a frame's name; another method's frames; a folder or a link where a file
goes. The unit is locked while a run lives, so a second run into the same place is refused.

A run that does not end (an error, Ctrl-C) keeps its staging folder if it has finished a video (`Staging.stop`),
else removes it; a killed run leaves it. The next run into the place finishes a committed one (rolls it forward);
an uncommitted one it continues with ``--resume`` where the settings are the same (infer/progress.py: the finished
videos are kept, the rest is removed; other settings are refused in one line naming them), and removes otherwise,
with a warning that says how many finished videos ``--resume`` would have kept.
"""

import contextlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cdvd_tsp.infer import progress
from cdvd_tsp.infer.progress import RunRecord, Stopped
from cdvd_tsp.infer.report import VideoResults
from cdvd_tsp.utils import atomic, committed, manifest
from cdvd_tsp.utils.committed import Stage, Unit
from cdvd_tsp.utils.errors import UserError

logger = logging.getLogger(__name__)

TOOL = "inference.py"


def describe_foreign_results(path: Path) -> str:
    """What a results.json without a manifest is, for the refusal."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("files"), list) and "videos" in document:
        return "was written by an earlier version of this project, which kept no manifest of the files a run wrote"
    return "exists and was not written by this project (it has no manifest beside it)"


class Staging:
    """Where one run's outputs go until they are committed (see the module's docstring)."""

    def __init__(
        self, folder: Path, results_name: str, token: str, unit: Unit | None = None, meta: dict | None = None
    ) -> None:
        self.folder = folder
        self.results_name = results_name
        self.token = token
        self.root = manifest.staging_path(folder, results_name, token)
        self.unit = unit
        """The open (locked) unit: in the process that began the run; None in the others of a torchrun run."""
        self.meta = {"tool": TOOL, **(meta or {})}
        self.made: list[Path] = []
        """The folders `begin` made, removed again by `discard` if they are left empty."""
        self.kept: dict[str, VideoResults] = {}
        """With ``--resume``: the videos an earlier start of this run finished (in the plan's order)."""
        self.total_videos = 0
        """How many videos the run records (`begin`'s ``run``)."""

    @classmethod
    def begin(
        cls,
        results_path: Path,
        planned: Iterable[Path],
        option: str,
        meta: dict[str, Any] | None = None,
        run: RunRecord | None = None,
        resume: bool = False,
    ) -> "Staging":
        """Make the staging folder of a new run writing ``results_path`` and the files ``planned``; ``meta`` goes
        into the manifest of its commit (with ``"tool": "inference.py"``); ``run`` is recorded in it
        (infer/progress.py), so that ``--resume`` can continue it.

        Leftovers of killed runs into the place are finished or removed first; with ``resume`` a stopped run of
        ``run`` is continued instead (`kept`: its finished videos). A live run into the place, a planned file that
        exists and is no output of the earlier run (``option`` names the flag to change), or, with ``resume``, a
        stopped run of other settings is refused.
        """
        folder, results_name = results_path.parent, results_path.name
        made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
        atomic.make_folders(folder)
        try:
            unit = Unit.open(folder, results_name, keep_uncommitted=True)
        except committed.Busy:
            remove_empty(made)
            raise UserError(
                f"another inference run is writing into {folder} (its {results_name}); wait until it ends or choose "
                f"another {option}"
            ) from None
        except BaseException:
            remove_empty(made)
            raise
        try:
            if unit.finished:
                logger.warning("%s: finished the commit of an earlier run that was stopped while committing", folder)
            check_outputs(unit, [results_path, *planned], option)
            stopped = progress.stopped_runs(unit)
            token = continued(unit.folder, stopped, run) if resume and run is not None else None
            for other in stopped:
                if other.stage.token != token:
                    warn_removal(other, run, resume)
                    unit.discard(other.stage.token)
            stage = unit.begin(token)
            kept = {} if run is None else progress.prepare(stage, run, continued=token is not None)
        except BaseException:
            unit.close()
            remove_empty(made)
            raise
        staging = cls(folder, results_name, stage.token, unit, meta)
        staging.made = made
        staging.kept = kept
        staging.total_videos = 0 if run is None else len(run.videos)
        return staging

    @classmethod
    def join(cls, results_path: Path, token: str) -> "Staging":
        """The staging folder made by rank 0 of a torchrun run (``token`` from `begin`)."""
        return cls(results_path.parent, results_path.name, token)

    def stage(self, target: Path) -> Path:
        """Where the run writes ``target`` (a path inside the folder) until it is committed."""
        return self.root / target.relative_to(self.folder)

    def _stage(self) -> Stage:
        if self.unit is None:
            raise RuntimeError("only the process that began the run commits or discards it")
        return Stage(self.unit, self.token)

    def commit(self, document: dict) -> None:
        """Write ``document`` as results.json and commit the run's outputs into place."""
        stage = self._stage()
        atomic.write_file(stage.path(self.results_name), (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        stage.commit(self.meta)  # from its commit point on the run is committed, even if killed
        self.close()

    def discard(self) -> None:
        """Remove the staging folder of a run that failed (its earlier results stay as they were)."""
        if self.unit is not None:
            with contextlib.suppress(OSError):
                self._stage().discard()
        self.close()
        remove_empty(self.made)

    def stop(self) -> int:
        """End a run that did not succeed: its staging folder is kept for ``--resume`` if it holds finished videos
        (returns how many), else removed (`discard`). Only the process that began the run stops it."""
        if self.unit is None:
            return 0
        stage = self._stage()
        finished = 0 if stage.committed else progress.finished_count(stage)
        if finished:
            self.close()
        else:
            self.discard()
        return finished

    def close(self) -> None:
        if self.unit is not None:
            self.unit.close()
            self.unit = None


def continued(folder: Path, stopped: list[Stopped], run: RunRecord) -> str | None:
    """The token of the stopped run in ``folder`` that ``run`` continues (the one with the most finished videos, of
    those that recorded what they run), None if there is none; a `UserError` if its settings differ (unless it
    finished no video: then there is nothing to keep, and it is removed as without ``--resume``)."""
    candidates = [(other.finished, other.stage.token, other.run) for other in stopped if other.run is not None]
    if not candidates:
        return None
    finished, token, earlier = max(candidates, key=lambda candidate: candidate[0])
    differences = run.differences(earlier)
    if differences and not finished:
        return None
    if differences:
        raise UserError(
            f"--resume: {folder} holds a run that was stopped with {finished} of its {len(earlier.videos)} "
            f"videos finished, with other settings: {'; '.join(differences)}; run with its settings to continue it, "
            "or without --resume to start again (which removes it)"
        )
    return token


def warn_removal(stopped: Stopped, run: RunRecord | None, resume: bool) -> None:
    """Say that the uncommitted staging folder of ``stopped`` goes, and what ``--resume`` would have kept of it."""
    root, earlier, finished = stopped.stage.root, stopped.run, stopped.finished
    if earlier is None or not finished:
        logger.warning("%s: removed the outputs of an earlier run that was stopped before it ended", root)
        return
    same = run is not None and not run.differences(earlier)
    hint = "; --resume would have kept them" if same and not resume else ""
    logger.warning(
        "%s: removed the outputs of an earlier run that was stopped before it ended, with %d of its %d videos "
        "finished%s",
        root,
        finished,
        len(earlier.videos),
        hint,
    )


def check_outputs(unit: Unit, paths: list[Path], option: str) -> None:
    """Refuse outputs that would replace anything the unit's last commit does not own (see the module docstring)."""
    results_path = unit.folder / unit.name
    for path in paths:
        obstacle = unit.obstacle(path.relative_to(unit.folder).as_posix())
        if obstacle is None:
            continue
        if obstacle.unowned and obstacle.path == results_path:
            raise UserError(
                f"{option}: {results_path} {describe_foreign_results(results_path)}; move it away, with the results "
                f"it describes, or choose another {option}"
            )
        if obstacle.unowned:
            raise UserError(
                f"{option}: {obstacle.path} exists and is no output of an earlier run (not listed by "
                f"{unit.manifest_path.name}); move it away or choose another {option}"
            )
        raise UserError(
            f"{option}: {obstacle.path} {obstacle.problem}, where an output goes; move it away or choose "
            f"another {option}"
        )


def remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, as `Staging.begin` lists them) where they are empty."""
    for folder in folders:
        if not atomic.remove_folder(folder):
            return

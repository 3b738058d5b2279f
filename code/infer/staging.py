"""A run's outputs are committed as a whole: written into a hidden staging folder beside results.json, and moved
into place only when the run has succeeded.

A run owns the files its results.json lists under ``files`` (paths relative to results.json's folder: frames,
showcase pictures, an output video). While a run works, everything it makes goes to
``.<results name>.staging-<token>/`` in that folder, under the same relative paths; an earlier run's results
stay untouched. When the run succeeds (`Staging.commit`):

1. the list of the earlier run's files is saved in the staging folder, then the new results.json is written there
   whole: from this instant the run is committed and is finished even if killed (rolled forward);
2. the earlier results.json is removed (no results.json describes a mix of runs), the earlier run's files that
   the new run does not make are removed, the new files are renamed into place (each rename replaces a file
   atomically), and the new results.json is renamed into place last;
3. the staging folder is removed.

A run that fails removes its staging folder; a run that is killed leaves it, and the next run into the folder
finishes it (committed: rolled forward) or removes it (not committed). The staging folder of a live run is locked
(``fcntl.flock`` on ``.lock`` inside it, released by the kernel when its process dies), so a second run started
into the same folder meanwhile is refused instead of taking it for a leftover. Files in the folder that no
results.json lists are never replaced: a new output that would replace one is refused before anything is written.
"""

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO

from data.video_io import VIDEO_CODECS
from utils.atomic import atomic_write_json
from utils.errors import UserError
from utils.locking import try_lock

logger = logging.getLogger(__name__)

FILES_KEY = "files"
OLD_FILES = ".replaced.json"
"""In a committed staging folder: the files of the earlier run, to remove when rolling forward."""
LOCK = ".lock"


def staging_prefix(results_name: str) -> str:
    return f".{results_name}.staging-"


def relative(path: Path, folder: Path) -> str:
    return PurePosixPath(path.relative_to(folder)).as_posix()


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or None if it is missing or is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def owned_files(folder: Path, results_name: str) -> set[str]:
    """The files of the run whose results.json is ``folder/results_name`` (relative paths; empty without one).

    A results.json written before runs listed their files is read the way those runs wrote: frames as
    ``<video>/<frame>.png`` (or ``<frame>.png`` for one video), showcase pictures, or the output video beside it.
    """
    document = read_json(folder / results_name)
    if document is None:
        return set()
    if isinstance(document.get(FILES_KEY), list):
        return {name for name in document[FILES_KEY] if isinstance(name, str)}
    owned: set[str] = set()
    videos = document.get("videos") if isinstance(document.get("videos"), dict) else {}
    for video, entry in videos.items():
        frames = entry.get("frames", {}) if isinstance(entry, dict) else {}
        owned.add(f"showcase/{video}.gif")
        for frame in frames:
            owned |= {f"{video}/{frame}.png", f"showcase/{video}_{frame}.png"}
            if len(videos) == 1 and not (folder / video).is_dir():
                owned.add(f"{frame}.png")
    stem = results_name.removesuffix("_results.json")
    if stem != results_name:
        owned |= {f"{stem}{suffix}" for suffix in VIDEO_CODECS}
    return {name for name in owned if (folder / name).is_file()}


def lock(path: Path) -> IO[bytes] | None:
    """Lock ``path`` (created if missing) for this process; None if another live process holds it."""
    handle = open(path, "ab")  # noqa: SIM115 (held open, and so locked, for the run's life)
    try:
        if try_lock(handle.fileno()):
            return handle
    except OSError:
        handle.close()
        raise
    handle.close()
    return None


def remove_empty_parents(path: Path, folder: Path) -> None:
    """Remove the folders above ``path`` that are empty, up to (not including) ``folder``."""
    for parent in path.parents:
        if parent == folder or folder not in parent.parents:
            return
        try:
            parent.rmdir()
        except OSError:
            return


def roll_forward(root: Path, folder: Path, results_name: str) -> None:
    """Finish the commit of the staging folder ``root`` (its results.json written); safe to repeat after a kill."""
    new = read_json(root / results_name)
    if new is None:
        raise UserError(f"cannot read {root / results_name}: the staged results of an earlier run")
    old = read_json(root / OLD_FILES) or {}
    (folder / results_name).unlink(missing_ok=True)
    new_files = [name for name in new.get(FILES_KEY, []) if isinstance(name, str)]
    for name in sorted(set(old.get(FILES_KEY, [])) - set(new_files)):
        (folder / name).unlink(missing_ok=True)
        remove_empty_parents(folder / name, folder)
    for name in new_files:
        staged = root / name
        if staged.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, folder / name)
    os.replace(root / results_name, folder / results_name)
    shutil.rmtree(root)


class Staging:
    """Where one run's outputs go until they are committed (see the module's docstring)."""

    def __init__(self, folder: Path, results_name: str, token: str, handle: IO[bytes] | None = None) -> None:
        self.folder = folder
        self.results_name = results_name
        self.root = folder / f"{staging_prefix(results_name)}{token}"
        self.token = token
        self.handle = handle
        self.made: list[Path] = []
        """The folders `begin` made, removed again by `discard` if they are left empty."""

    @classmethod
    def begin(cls, results_path: Path, planned: Iterable[Path], option: str) -> "Staging":
        """Make the staging folder of a new run writing ``results_path`` and the files ``planned``.

        Leftovers of killed runs into the folder are finished or removed first; a live run into it, or a planned
        file that exists and is no output of the earlier run, is refused (``option`` names the flag to change).
        """
        folder, results_name = results_path.parent, results_path.name
        made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in sorted(folder.glob(f"{staging_prefix(results_name)}*")):
            cls._clean(leftover, folder, results_name)
        owned = owned_files(folder, results_name)
        for path in planned:
            name = relative(path, folder)
            if (path.exists() or path.is_symlink()) and name not in owned:
                raise UserError(
                    f"{option}: {path} exists and is no output of an earlier run (not listed by {results_path}); "
                    f"move it away or choose another {option}"
                )
        token = uuid.uuid4().hex[:12]
        starting = folder / f".{results_name}.starting-{token}"
        starting.mkdir()
        handle = lock(starting / LOCK)
        staging = cls(folder, results_name, token, handle)
        staging.made = made
        os.replace(starting, staging.root)  # the staging folder never exists unlocked while its run lives
        return staging

    @classmethod
    def join(cls, results_path: Path, token: str) -> "Staging":
        """The staging folder made by rank 0 of a torchrun run (``token`` from `begin`)."""
        return cls(results_path.parent, results_path.name, token)

    @staticmethod
    def _clean(root: Path, folder: Path, results_name: str) -> None:
        handle = lock(root / LOCK) if root.is_dir() else None
        if root.is_dir() and handle is None:
            raise UserError(
                f"another inference run is writing into {folder} (its outputs are in {root.name}); "
                "wait until it ends or choose another folder"
            )
        with contextlib.closing(handle) if handle is not None else contextlib.nullcontext():
            if (root / results_name).is_file():
                logger.warning("%s: finishing the commit of an earlier run that was stopped while committing", root)
                roll_forward(root, folder, results_name)
            else:
                logger.warning("%s: removing the outputs of an earlier run that was stopped before it ended", root)
                shutil.rmtree(root) if root.is_dir() else root.unlink()

    def stage(self, target: Path) -> Path:
        """Where the run writes ``target`` (a path inside the folder) until it is committed."""
        return self.root / target.relative_to(self.folder)

    def staged_files(self) -> list[str]:
        """The files the run has written (relative paths), in order."""
        return sorted(
            relative(path, self.root)
            for path in self.root.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.root).parts)
        )

    def commit(self, document: dict) -> None:
        """Write ``document`` (results.json, with the list of files added) and move the run's outputs into place."""
        atomic_write_json(self.root / OLD_FILES, {FILES_KEY: sorted(owned_files(self.folder, self.results_name))})
        atomic_write_json(self.root / self.results_name, {**document, FILES_KEY: self.staged_files()})
        roll_forward(self.root, self.folder, self.results_name)  # from here on the run is committed
        self.close()

    def discard(self) -> None:
        """Remove the staging folder of a run that failed (its earlier results stay as they were)."""
        self.close()
        if (self.root / self.results_name).is_file():
            logger.warning("%s: the run was committed but not moved into place; the next run finishes it", self.root)
            return
        shutil.rmtree(self.root, ignore_errors=True)
        for folder in self.made:
            with contextlib.suppress(OSError):
                folder.rmdir()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

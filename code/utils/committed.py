"""A unit: files in a folder committed as a whole, staged in a hidden folder, listed by a manifest, committed by one
rename. Training commits each epoch this way (logger/experiment.py), inference each run (infer/staging.py).

A unit is known by ``(folder, name)``: ``name`` is its key file, the one readers look at. Beside its files::

    .<name>.manifest.json    the last commit: which files the unit owns (utils/manifest.py)
    .<name>.staging-<token>/ a commit being made: its files under the paths they will have in the folder
    .<name>.lock             flocked while a process has the unit open (utils/locking.py `LockFile`)

A commit acts only on the files its manifest lists, and refuses a staged file that would replace anything else
(`Unit.obstacle`, `CommitError`). `Stage.commit`: (1) every staged file is checked against the folder; (2) the last
commit's files it neither writes nor keeps are listed in the staging folder's ``.replaces.json``, the new manifest
is written there, both flushed; (3) that manifest is renamed over the unit's: **the commit point**; (4)
`Stage.roll_forward`: the old key file is removed, the staged files moved into place, the replaced ones removed
with the folders they leave empty, the new key file renamed in last; (5) the staging folder is removed. Rolling
forward is idempotent: repeated after a kill at any instant it ends in the same folder.

`Unit.adopt` records files already in place as a unit's first commit (a folder written before manifests).
`Unit.open` locks the unit and rolls forward a committed staging folder a killed process left; the others are
removed, or with ``keep_uncommitted`` handed to the caller (`Unit.uncommitted`) to continue or discard. A staging
folder's private folder (``.progress/``, `Stage.private`) holds what its writer keeps about the work in progress:
never committed, gone with the staging folder. Files are staged without temporary files: nobody reads them before
the commit. Every write, rename and removal goes through the functions of `utils.atomic` named in `WRITE_POINTS`
(its steps `move_into_place` and `remove_file_and_empty_folders` call them too), so that tests stop a process at
each of them.
"""

import contextlib
import json
import logging
import os
import stat
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdvd_tsp.utils import atomic
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.locking import LockFile
from cdvd_tsp.utils.manifest import (
    PRIVATE,
    REPLACES,
    STAGED_MANIFEST,
    TOKEN,
    Manifest,
    disk_problem,
    manifest_path,
    name_problem,
    read_manifest,
    read_replaced,
    replaces_bytes,
    staging_path,
)

logger = logging.getLogger(__name__)

WRITE_POINTS = ("write_file", "rename", "remove_file", "remove_tree", "make_folders", "remove_folder")
"""The functions of utils.atomic that every write, rename and removal of this module goes through."""


class CommitError(UserError):
    """A commit that cannot be made or finished as it stands (a folder or a foreign file in the way)."""


class Busy(UserError):
    """The unit is open in another live process."""


def lock_path(folder: Path, name: str) -> Path:
    return Path(folder) / f".{name}.lock"


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def is_leftover(path: Path, name: str) -> bool:
    """Whether ``path`` is what a stopped process leaves of the unit ``name``: its lock file or a staging folder."""
    if path.is_symlink():
        return False
    if path.name == lock_path(path.parent, name).name:
        return path.is_file()
    prefix = f".{name}.staging-"
    return path.name.startswith(prefix) and TOKEN.fullmatch(path.name[len(prefix) :]) is not None and path.is_dir()


def staging_tokens(folder: Path, name: str) -> list[str]:
    """The tokens of the unit's staging folders in ``folder``, sorted."""
    prefix = f".{name}.staging-"
    entries = Path(folder).iterdir()
    return sorted(
        entry.name[len(prefix) :] for entry in entries if entry.name.startswith(prefix) and is_leftover(entry, name)
    )


def _check_free(folder: Path, relative: str, root: Path) -> None:
    in_the_way = disk_problem(folder, relative)
    if in_the_way is not None:
        raise CommitError(f"cannot finish the commit in {root}: {in_the_way[0]} {in_the_way[1]}; move it away")


@dataclass(frozen=True)
class Obstacle:
    """What stands where a unit would write one of its files: ``path``, a phrase saying what it is, and whether it
    is a file that the last commit does not list (rather than a folder or link in the way)."""

    path: Path
    problem: str
    unowned: bool


class Unit:
    """One unit, open (locked) in this process: its last commit and what `open` found."""

    def __init__(self, folder: Path, name: str, lock: LockFile, manifest: Manifest | None) -> None:
        self.folder, self.name, self.lock, self.manifest = Path(folder), name, lock, manifest
        self.finished = False
        """Whether `open` rolled forward a commit that a killed process had left unfinished."""
        self.discarded: list[str] = []
        """The tokens of the uncommitted staging folders removed."""
        self.uncommitted: list[str] = []
        """With ``keep_uncommitted``: the tokens of the uncommitted staging folders, to `begin` again or `discard`."""

    @classmethod
    def open(cls, folder: Path, name: str, keep_uncommitted: bool = False) -> "Unit":
        """Lock the unit (its folder exists) and finish or remove (or keep) what a killed process left. `Busy` if
        another live process has it open; `ManifestError` (nothing changed) if its manifest is not valid."""
        folder = Path(folder)
        lock = LockFile.acquire(lock_path(folder, name))
        if lock is None:
            raise Busy(f"{folder}: {name} and its files are being written by another process")
        try:
            unit = cls(folder, name, lock, read_manifest(folder, name))
            unit.uncommitted = staging_tokens(folder, name)
            if unit.manifest is not None and unit.manifest.commit in unit.uncommitted:  # killed past its commit point
                unfinished = Stage(unit, unit.manifest.commit)
                unfinished.roll_forward()
                unit.uncommitted.remove(unfinished.token)
                unit.finished = True
            if not keep_uncommitted:
                for token in list(unit.uncommitted):
                    unit.discard(token)
        except BaseException:
            lock.release()
            raise
        return unit

    @property
    def manifest_path(self) -> Path:
        """Where the unit's manifest is (``.<name>.manifest.json`` in its folder)."""
        return manifest_path(self.folder, self.name)

    @property
    def files(self) -> frozenset[str]:
        """The files of the last commit (relative paths; empty without one)."""
        return frozenset() if self.manifest is None else self.manifest.files

    def obstacle(self, relative: str) -> Obstacle | None:
        """What a commit writing ``relative`` would replace that is not a file of the last commit; None if nothing."""
        problem = name_problem(relative, self.name)
        if problem is not None:
            return Obstacle(self.folder / relative, f"is {problem}", unowned=False)
        in_the_way = disk_problem(self.folder, relative)
        if in_the_way is not None:
            return Obstacle(*in_the_way, unowned=False)
        target = self.folder / relative
        if os.path.lexists(target) and relative not in self.files:
            return Obstacle(target, f"exists and is not listed by {self.manifest_path}", True)
        return None

    def adopt(self, files: Collection[str], meta: dict[str, Any]) -> Manifest:
        """Record ``files``, already in place, as the first commit of this unit (it has no manifest yet): a folder
        written before manifests."""
        if self.manifest is not None:
            raise ValueError(f"{self.folder}: {self.name} has a manifest already")
        if self.name not in files:
            raise CommitError(f"cannot adopt {self.folder}: no {self.name}")
        for relative in files:
            obstacle = self.obstacle(relative)
            if (obstacle is not None and not obstacle.unowned) or not (self.folder / relative).is_file():
                raise CommitError(f"cannot adopt {self.folder}: {relative} is not a regular file inside it")
        first = Manifest(self.name, new_token(), frozenset(files), dict(meta))
        atomic.atomic_write_bytes(self.manifest_path, first.to_bytes())
        self.manifest = first
        return first

    def discard(self, token: str) -> None:
        """Remove one of the uncommitted staging folders."""
        if token not in self.uncommitted:
            raise ValueError(f"no uncommitted staging folder {token} of {self.name} in {self.folder}")
        atomic.remove_tree(staging_path(self.folder, self.name, token))
        self.uncommitted.remove(token)
        self.discarded.append(token)

    def begin(self, token: str | None = None) -> "Stage":
        """A new staging folder (the uncommitted ones are removed), or, with ``token``, the uncommitted one."""
        if token is not None:
            if token not in self.uncommitted:
                raise ValueError(f"no uncommitted staging folder {token} of {self.name} in {self.folder}")
            self.uncommitted.remove(token)
            return Stage(self, token)
        for other in list(self.uncommitted):
            self.discard(other)
        stage = Stage(self, new_token())
        atomic.make_folders(stage.root)
        return stage

    def close(self) -> None:
        """Release the unit (the end of the process does the same, but leaves the lock file behind)."""
        self.lock.release()

    def __enter__(self) -> "Unit":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


class Stage:
    """A staging folder of an open unit: write the commit's files under `path`, then `commit` (which rolls it
    forward) or `discard`."""

    def __init__(self, unit: Unit, token: str) -> None:
        self.unit, self.token = unit, token
        self.root = staging_path(unit.folder, unit.name, token)
        self.private = self.root / PRIVATE
        """The writer's private folder (not made here; never committed)."""

    def path(self, relative: str) -> Path:
        """Where the file that will be ``folder/relative`` is written until it is committed."""
        return self.root / relative

    def write(self, relative: str, data: bytes) -> None:
        """Write a file of the commit (flushed; no temporary file: the staging folder is committed whole)."""
        target = self.path(relative)
        if not target.parent.is_dir():
            atomic.make_folders(target.parent)
        atomic.write_file(target, data)

    def staged_files(self) -> list[str]:
        """The files written into the staging folder (relative paths, sorted), without its own entries."""
        names = []
        for directory, folders, files in os.walk(self.root):
            if Path(directory) == self.root and PRIVATE in folders:
                folders.remove(PRIVATE)  # not walked into: never committed
            for entry in [*folders, *files]:
                path = Path(directory, entry)
                relative = path.relative_to(self.root).as_posix()
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise CommitError(f"{path}: not a regular file; a staging folder holds only files")
                if stat.S_ISREG(mode) and relative not in (STAGED_MANIFEST, REPLACES, PRIVATE):
                    names.append(relative)
        return sorted(names)

    @property
    def committed(self) -> bool:
        """Whether this staging folder's commit point has passed (its manifest is the folder's)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            document = json.loads(self.unit.manifest_path.read_bytes())
            return document.get("commit") == self.token
        return False

    def commit(self, meta: dict[str, Any] | None = None, keep: Collection[str] = ()) -> Manifest:
        """Commit the staged files with ``meta``; the last commit's files in ``keep`` that are not staged again stay,
        its others are removed. `CommitError` (nothing changed) if a staged file may not take its place."""
        unit, folder, name = self.unit, self.unit.folder, self.unit.name
        staged = self.staged_files()
        if name not in staged:
            raise CommitError(f"{self.root}: nothing to commit without {name}")
        for relative in staged:
            obstacle = unit.obstacle(relative)
            if obstacle is not None:
                raise CommitError(f"cannot commit into {folder}: {obstacle.path} {obstacle.problem}; nothing changed")
        manifest = Manifest(name, self.token, frozenset(staged) | (frozenset(keep) & unit.files), dict(meta or {}))
        replaced = unit.files - manifest.files
        if replaced:
            atomic.write_file(self.root / REPLACES, replaces_bytes(replaced))
        atomic.write_file(self.root / STAGED_MANIFEST, manifest.to_bytes())
        for staged_folder in {self.root, *(self.path(relative).parent for relative in staged)}:
            atomic.sync_folder(staged_folder)
        atomic.rename(self.root / STAGED_MANIFEST, unit.manifest_path)  # the commit point
        atomic.sync_folder(folder)
        unit.manifest = manifest
        self.roll_forward()
        return manifest

    def roll_forward(self) -> None:
        """Finish this staging folder's commit (its commit point passed: the unit's manifest is its own); idempotent."""
        folder, name, manifest, root = self.unit.folder, self.unit.name, self.unit.manifest, self.root
        if manifest is None or manifest.commit != self.token:
            raise RuntimeError(f"{root}: not committed; nothing to roll forward")
        replaced = read_replaced(root, folder, name) - manifest.files
        staged_key = root / name
        if os.path.lexists(staged_key) and os.path.lexists(folder / name):
            _check_free(folder, name, root)
            atomic.remove_file(folder / name)  # the old key file first: none describes a mix of two commits
        moved = [relative for relative in sorted(manifest.files - {name}) if os.path.lexists(root / relative)]
        for relative in moved:  # the others are moved already (or never staged: kept from the last commit)
            _check_free(folder, relative, root)
            atomic.move_into_place(root / relative, folder / relative)
        for relative in sorted(replaced):
            if disk_problem(folder, relative) is None:  # never through a link, never a folder
                atomic.remove_file_and_empty_folders(folder / relative, folder)  # and the folders a kill left empty
        if os.path.lexists(staged_key):
            atomic.rename(staged_key, folder / name)  # last: its presence says the commit is in place
        for parent in {folder, *((folder / relative).parent for relative in moved)}:
            atomic.sync_folder(parent)
        if replaced:
            atomic.remove_file(root / REPLACES)  # from here on nothing more is removed, however often this is repeated
        atomic.remove_tree(root)

    def discard(self) -> None:
        """Remove the staging folder, unless it is committed (the next `Unit.open` finishes that one)."""
        if self.committed:
            logger.warning("%s: committed but not all moved into place; the next run finishes it", self.root)
            return
        atomic.remove_tree(self.root)

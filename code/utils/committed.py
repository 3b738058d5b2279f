"""Files committed as a whole: staged in a hidden folder, listed by a manifest, committed by one rename.

Both tools write their results this way: training commits each epoch's checkpoint into the experiment folder
(logger/experiment.py), inference each run's frames, pictures, video and results.json (infer/staging.py).

**A unit** is the set of files one tool owns in a folder, known by ``(folder, name)``: ``name`` is its key file,
the one readers look at (``state.pt``, ``results.json``, ``clip_deblurred_results.json``). Several units can share
a folder (video outputs beside each other in ``infer_results/``): what a unit keeps beside its files is named
after it, so two names never meet::

    .<name>.manifest.json         the last commit: which files the unit owns (the format below)
    .<name>.staging-<token>/      a commit being made: its files under the paths they will have in the folder
    .<name>.lock                  while a process has the unit open (`Unit.open`): locked, removed by `Unit.close`

**The manifest** is this project's own, recognised by its format tag and version::

    {"format": "cdvd-tsp committed folder", "version": 1, "unit": "<name>", "commit": "<token>",
     "meta": {...}, "files": ["<name>", "v/00002.png", ...]}

``files`` are relative POSIX paths that stay inside the folder: no absolute path, no ``..``, ``.`` or empty part,
no backslash, nothing of the unit's own hidden names, and on disk each is a regular file (or missing) reached
through real folders, never through a symbolic link; the key file is one of them. `read_manifest` checks all of it
and refuses anything else (`ManifestError`, one line), before anything is changed. A commit acts only on the
files its manifest lists; whatever else the folder holds is never touched, and a staged file that would replace
something the manifest does not list is refused (`Unit.obstacle`, `CommitError`). ``meta`` is a small JSON object
that the tool records with each commit (which tool, from which input, which epoch); a later run reads it with
`read_manifest` without opening the unit, e.g. to tell whether a folder holds results of the same input.

**A commit** (`Stage.commit`) takes every regular file in the staging folder (but the folder's own two records
below, and its progress folder), the key file among them. The files are written there directly (`Stage.write`,
or a writer's own ``direct`` mode): they need no temporary file and rename of their own, since nobody reads them
before the commit and an uncommitted staging folder is removed whole. They are as durable as their writer makes
them (`Stage.write` flushes each file; the PNG frames are not flushed); the commit flushes the staging folder's
entries and the manifest.

1. every staged file is checked against the folder (`Unit.obstacle`): nothing but files of the last commit may be
   replaced, no folder or link stands in the way; a failure is a `CommitError` and changes nothing;
2. the last commit's files that the new one neither writes nor keeps (``keep``) are listed in ``.replaces.json``
   (only if there are any), then the new manifest is written, both into the staging folder and flushed to disk
   with the staging folder's entries;
3. the staged manifest is renamed over ``.<name>.manifest.json``: **the commit point**. From here on the folder's
   manifest describes the new commit, whole; before it, the old one, whole;
4. roll forward (`roll_forward`): the old key file is removed (until the new one lands, no key file is in place to
   describe a mix of two commits), the other staged files are renamed into place (folders made as needed), the
   replaced files are removed (and the folders that leaves empty), and the new key file is renamed in last;
5. ``.replaces.json`` is removed, then the staging folder.

Roll forward is idempotent: it moves only files still in the staging folder, removes the old key only while the
new one is still staged, and removes replaced files only while ``.replaces.json`` exists; repeated after a kill at
any instant it ends in the same folder.

**The progress folder** of a staging folder, ``.progress/``, holds what its writer keeps about the work in progress
(`Stage.progress`: inference records there each video it has finished, so that a killed run can be continued). It
is never committed: `Stage.staged_files` leaves it out, no unit may own a file under that name, and it goes with
the staging folder (removed at the end of the roll forward, or with an uncommitted staging folder).

**Opening** a unit (`Unit.open`) locks it, then reads its manifest and cleans up what a killed process left: a
staging folder whose token is the manifest's ``commit`` was committed and is rolled forward; any other staging
folder was never committed and is removed, or, with ``keep_uncommitted``, handed to the caller
(`Unit.uncommitted`, continued with `Unit.begin` ``(token)``, whose `Stage.staged_files` says what is there, or
removed with `Unit.discard`): that is how a killed run can be continued instead of started again. `Unit.begin`
makes a new staging folder; `Stage.discard` removes one that is not committed (a failed run; a committed one is
left for the next open to finish). A unit may commit as often as it likes while open (training: once an epoch;
``keep`` keeps the files a commit does not rewrite), so a commit can also save work in progress.

**The lock** is ``flock`` on ``.<name>.lock`` (utils/locking.py), held from `Unit.open` to `Unit.close`: the
kernel releases it when a process dies, so a killed holder never leaves a stale lock, and a second live process is
refused (`Busy`). `Unit.close` removes the file while still holding the lock; a process that locked the file just
as it went notices that the name no longer leads to what it locked and locks the new file instead. A lock file
left by a killed process, and uncommitted staging folders, are leftovers (`is_leftover`). Processes that write
into a staging folder another one opened (torchrun's ranks) take no lock: the opener holds it for them.

Readers that do not open the unit find the last commit's files with `find` and `open_file`, which look in the
staging folder first while a commit is being rolled forward.

Every write, rename and removal goes through `utils.atomic` (`WRITE_POINTS`), so that tests stop a process at
each of them. The lock file's creation and removal do not: a kill there leaves a leftover lock file, nothing else.
"""

import contextlib
import json
import logging
import os
import re
import stat
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from utils import atomic, locking
from utils.atomic import WriteError, writing
from utils.errors import UserError

logger = logging.getLogger(__name__)

FORMAT = "cdvd-tsp committed folder"
VERSION = 1
STAGED_MANIFEST = ".manifest.json"
"""In a staging folder: the manifest of the commit being made, renamed over the folder's manifest to commit."""
REPLACES = ".replaces.json"
"""In a staging folder: the last commit's files that the commit removes (only while rolling forward)."""
PROGRESS = ".progress"
"""In a staging folder: the writer's records of its work in progress, never committed (see the module docstring)."""
TOKEN = re.compile(r"[0-9a-f]{12}")
WRITE_POINTS = ("write_file", "rename", "remove_file", "remove_tree", "make_folders", "remove_folder")
"""The functions of utils.atomic that every write, rename and removal of this module goes through."""


class ManifestError(UserError):
    """A manifest (or a staging folder's list of files to remove) that is not this project's, or not valid."""


class CommitError(UserError):
    """A commit that cannot be made or finished as it stands (a folder or a foreign file in the way)."""


class Busy(UserError):
    """The unit is open in another live process."""


def manifest_path(folder: Path, name: str) -> Path:
    return Path(folder) / f".{name}.manifest.json"


def lock_path(folder: Path, name: str) -> Path:
    return Path(folder) / f".{name}.lock"


def staging_path(folder: Path, name: str, token: str) -> Path:
    return Path(folder) / f".{name}.staging-{token}"


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
    return sorted(
        entry.name[len(prefix) :]
        for entry in Path(folder).iterdir()
        if entry.name.startswith(prefix) and is_leftover(entry, name)
    )


def name_problem(relative: object, name: str) -> str | None:
    """Why ``relative`` cannot be a file of the unit ``name`` (None if it can): it must be a plain relative POSIX
    path inside the folder, and none of the unit's own hidden names."""
    if not isinstance(relative, str) or not relative:
        return "an empty or non-text name"
    if "\\" in relative or "\0" in relative:
        return "a name with a backslash or a NUL"
    if relative.startswith("/"):
        return "an absolute path"
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "not a plain relative path inside the folder"
    if parts[0].startswith(f".{name}.") or relative in (STAGED_MANIFEST, REPLACES) or parts[0] == PROGRESS:
        return "a name this project keeps for its own records"
    return None


def disk_problem(folder: Path, relative: str) -> tuple[Path, str] | None:
    """What stands on disk where ``relative`` (a checked name) would be a regular file in ``folder``: None if it is
    one, or missing, reached through real folders; else the path in the way and what it is ("is a folder")."""
    path = Path(folder)
    parts = relative.split("/")
    for index, part in enumerate(parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None
        except OSError as error:
            return path, f"cannot be checked ({error.strerror})"
        last = index == len(parts) - 1
        if stat.S_ISLNK(mode):
            return path, "is a symbolic link"
        if last and stat.S_ISDIR(mode):
            return path, "is a folder"
        if last and not stat.S_ISREG(mode):
            return path, "is not a regular file"
        if not last and not stat.S_ISDIR(mode):
            return path, "is not a folder"
    return None


@dataclass(frozen=True)
class Manifest:
    """One commit of a unit: its files (relative paths), its token (the name of its staging folder) and ``meta``."""

    name: str
    commit: str
    files: frozenset[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "unit": self.name,
            "commit": self.commit,
            "meta": self.meta,
            "files": sorted(self.files),
        }
        return (json.dumps(document, indent=1) + "\n").encode("utf-8")


def _load_json(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (None if there is no such file), checked to be this project's format."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise ManifestError(f"{path}: {what} is a symbolic link; {what} is never one")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ManifestError(f"{path}: cannot read this {what} ({error.strerror})") from None
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ManifestError(f"{path}: not a {what} of this project (not JSON); {REFUSED_HINT}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a {what} of this project (no format tag {FORMAT!r}); {REFUSED_HINT}")
    if document.get("version") != VERSION:
        raise ManifestError(
            f"{path}: a {what} of version {document.get('version')!r}; this version of the project reads version "
            f"{VERSION} only; {REFUSED_HINT}"
        )
    return document


REFUSED_HINT = "nothing was changed; move it away with the files it describes, or choose another folder"


def _checked_names(path: Path, folder: Path, name: str, names: object, on_disk: bool, what: str) -> frozenset[str]:
    if not isinstance(names, list):
        raise ManifestError(f"{path}: its {what} is not a list; {REFUSED_HINT}")
    for relative in names:
        problem = name_problem(relative, name)
        if problem is not None:
            raise ManifestError(f"{path}: lists {relative!r}, which is {problem}; {REFUSED_HINT}")
        in_the_way = disk_problem(folder, relative) if on_disk else None
        if in_the_way is not None:
            raise ManifestError(f"{path}: lists {relative!r}, but {in_the_way[0]} {in_the_way[1]}; {REFUSED_HINT}")
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: lists a file twice; {REFUSED_HINT}")
    return frozenset(names)


def read_manifest(folder: Path, name: str) -> Manifest | None:
    """The last commit of the unit ``(folder, name)``, checked (see the module docstring); None if it has none.
    Read-only: safe without the lock (the manifest is only ever replaced whole)."""
    folder = Path(folder)
    path = manifest_path(folder, name)
    document = _load_json(path, "manifest")
    if document is None:
        return None
    if document.get("unit") != name:
        raise ManifestError(f"{path}: the manifest of {document.get('unit')!r}, not of {name!r}; {REFUSED_HINT}")
    commit = document.get("commit")
    if not isinstance(commit, str) or TOKEN.fullmatch(commit) is None:
        raise ManifestError(f"{path}: its commit token {commit!r} is not one this project makes; {REFUSED_HINT}")
    meta = document.get("meta", {})
    if not isinstance(meta, dict):
        raise ManifestError(f"{path}: its meta is not a JSON object; {REFUSED_HINT}")
    files = _checked_names(path, folder, name, document.get("files"), on_disk=True, what="list of files")
    if name not in files:
        raise ManifestError(f"{path}: does not list {name}, the file it is named after; {REFUSED_HINT}")
    return Manifest(name, commit, files, meta)


def _read_replaces(folder: Path, name: str, root: Path) -> frozenset[str]:
    path = root / REPLACES
    document = _load_json(path, "list of replaced files")
    if document is None:
        return frozenset()
    return _checked_names(path, folder, name, document.get("replaces"), on_disk=False, what="list of replaced files")


def find(folder: Path, name: str, relative: str) -> Path | None:
    """Where the last commit's ``relative`` is now: in the staging folder while the commit is being rolled forward,
    else in the folder; None if the unit has no commit or no such file."""
    manifest = read_manifest(folder, name)
    if manifest is None or relative not in manifest.files:
        return None
    for path in (staging_path(folder, name, manifest.commit) / relative, Path(folder) / relative):
        if path.is_file():
            return path
    return None


def open_file(folder: Path, name: str, relative: str) -> IO[bytes]:
    """The last commit's ``relative``, open for reading; works while another process rolls the commit forward (the
    staged file is opened first: renamed meanwhile, it is in place). FileNotFoundError if there is none."""
    manifest = read_manifest(folder, name)
    if manifest is None or relative not in manifest.files:
        raise FileNotFoundError(f"{folder}: the unit {name} has no committed {relative}")
    try:
        return open(staging_path(folder, name, manifest.commit) / relative, "rb")
    except FileNotFoundError:
        return open(Path(folder) / relative, "rb")


def _remove_empty_parents(path: Path, folder: Path) -> None:
    """Remove the folders above ``path`` that are empty, up to (not including) ``folder``."""
    for parent in path.parents:
        if parent == folder or folder not in parent.parents or not parent.is_dir() or any(parent.iterdir()):
            return
        if not atomic.remove_folder(parent):
            return


def _check_free(folder: Path, relative: str, root: Path) -> None:
    """Nothing but a regular file (or nothing) where roll forward puts ``relative``: never through a link."""
    in_the_way = disk_problem(folder, relative)
    if in_the_way is not None:
        raise CommitError(f"cannot finish the commit in {root}: {in_the_way[0]} {in_the_way[1]}; move it away")


def roll_forward(folder: Path, name: str, manifest: Manifest) -> None:
    """Finish the commit ``manifest`` (renamed into place, its staging folder still there); safe to repeat after a
    kill at any instant (see the module docstring)."""
    folder = Path(folder)
    root = staging_path(folder, name, manifest.commit)
    replaced = _read_replaces(folder, name, root) - manifest.files
    staged_key = root / name
    if os.path.lexists(staged_key) and os.path.lexists(folder / name):
        _check_free(folder, name, root)
        atomic.remove_file(folder / name)  # the old key file first: none describes a mix of two commits
    parents = {folder}
    for relative in sorted(manifest.files - {name}):
        source = root / relative
        if not os.path.lexists(source):
            continue  # moved already (or never staged: kept from the last commit)
        _check_free(folder, relative, root)
        target = folder / relative
        if not target.parent.is_dir():
            atomic.make_folders(target.parent)
        atomic.rename(source, target)
        parents.add(target.parent)
    for relative in sorted(replaced):
        if disk_problem(folder, relative) is not None:
            continue  # never through a link, never a folder
        if os.path.lexists(folder / relative):
            atomic.remove_file(folder / relative)
        _remove_empty_parents(folder / relative, folder)  # also those a kill left after removing their last file
    if os.path.lexists(staged_key):
        atomic.rename(staged_key, folder / name)  # last: its presence says the commit is in place
    for parent in parents:
        atomic.sync_folder(parent)
    if replaced:
        atomic.remove_file(root / REPLACES)  # from here on nothing more is removed, however often this is repeated
    atomic.remove_tree(root)


class _Lock:
    """An flock on a lock file, held until `release` removes the file and closes it."""

    def __init__(self, path: Path, descriptor: int) -> None:
        self.path = path
        self.descriptor = descriptor

    @classmethod
    def acquire(cls, path: Path) -> "_Lock | None":
        """Lock ``path`` (created if missing); None if another live process holds it."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        while True:
            with writing(path):
                descriptor = os.open(path, flags, 0o666)
            try:
                locked = locking.try_lock(descriptor)
            except OSError as error:
                os.close(descriptor)
                raise WriteError(path, error) from None
            if not locked:
                os.close(descriptor)
                return None
            try:
                same = os.path.samestat(os.stat(path, follow_symlinks=False), os.fstat(descriptor))
            except FileNotFoundError:
                same = False
            if same:
                return cls(path, descriptor)
            os.close(descriptor)  # its holder removed it as it closed: lock the file that is there now

    def release(self) -> None:
        if self.descriptor < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: whoever locks the removed file sees that it is gone
        os.close(self.descriptor)
        self.descriptor = -1


@dataclass(frozen=True)
class Obstacle:
    """What stands where a unit would write one of its files: ``path`` and a phrase saying what it is."""

    path: Path
    problem: str
    unowned: bool
    """A file that the last commit does not list (rather than a folder or link in the way)."""


class Unit:
    """One unit, open in this process (locked): its last commit and what `open` found (see the module docstring)."""

    def __init__(self, folder: Path, name: str, lock: _Lock, manifest: Manifest | None) -> None:
        self.folder = Path(folder)
        self.name = name
        self.lock = lock
        self.manifest = manifest
        self.finished = False
        """Whether `open` rolled forward a commit that a killed process had left unfinished."""
        self.discarded: list[str] = []
        """The tokens of the uncommitted staging folders `open` removed."""
        self.uncommitted: list[str] = []
        """With ``keep_uncommitted``: the tokens of the uncommitted staging folders, for `begin` to continue."""

    @classmethod
    def open(cls, folder: Path, name: str, keep_uncommitted: bool = False) -> "Unit":
        """Lock the unit ``(folder, name)`` (the folder must exist) and clean up what a killed process left: finish
        its committed staging folder, remove (or, with ``keep_uncommitted``, keep) the others. `Busy` if another
        live process has it open; `ManifestError` if its manifest is not valid (nothing is changed then)."""
        folder = Path(folder)
        lock = _Lock.acquire(lock_path(folder, name))
        if lock is None:
            raise Busy(f"{folder}: {name} and its files are being written by another process")
        try:
            unit = cls(folder, name, lock, read_manifest(folder, name))
            tokens = staging_tokens(folder, name)
            if unit.manifest is not None and unit.manifest.commit in tokens:
                roll_forward(folder, name, unit.manifest)
                tokens.remove(unit.manifest.commit)
                unit.finished = True
            if keep_uncommitted:
                unit.uncommitted = tokens
            else:
                for token in tokens:
                    atomic.remove_tree(staging_path(folder, name, token))
                unit.discarded = tokens
        except BaseException:
            lock.release()
            raise
        return unit

    @property
    def files(self) -> frozenset[str]:
        """The files of the last commit (relative paths; empty without one)."""
        return frozenset() if self.manifest is None else self.manifest.files

    def obstacle(self, relative: str) -> Obstacle | None:
        """What a commit writing ``relative`` would replace that is not a file of the last commit: a file the
        manifest does not list, a folder, a link, a file where a folder must be; None if nothing."""
        problem = name_problem(relative, self.name)
        if problem is not None:
            return Obstacle(self.folder / relative, f"is {problem}", unowned=False)
        in_the_way = disk_problem(self.folder, relative)
        if in_the_way is not None:
            return Obstacle(*in_the_way, unowned=False)
        target = self.folder / relative
        if os.path.lexists(target) and relative not in self.files:
            return Obstacle(target, f"exists and is not listed by {manifest_path(self.folder, self.name)}", True)
        return None

    def discard(self, token: str) -> None:
        """Remove one of the uncommitted staging folders kept by `open`."""
        if token not in self.uncommitted:
            raise ValueError(f"no uncommitted staging folder {token} of {self.name} in {self.folder}")
        atomic.remove_tree(staging_path(self.folder, self.name, token))
        self.uncommitted.remove(token)
        self.discarded.append(token)

    def begin(self, token: str | None = None) -> "Stage":
        """A new staging folder (the uncommitted ones kept by `open` are removed), or, with ``token``, the kept
        uncommitted one to continue."""
        if token is not None:
            if token not in self.uncommitted:
                raise ValueError(f"no uncommitted staging folder {token} of {self.name} in {self.folder}")
            self.uncommitted.remove(token)
            return Stage(self, token)
        for token in self.uncommitted:
            atomic.remove_tree(staging_path(self.folder, self.name, token))
        self.discarded += self.uncommitted
        self.uncommitted = []
        stage = Stage(self, new_token())
        atomic.make_folders(stage.root)
        return stage

    def adopt(self, files: Collection[str], meta: dict[str, Any]) -> Manifest:
        """Record ``files``, already in place, as the unit's first commit (a folder written before manifests)."""
        if self.manifest is not None:
            raise ValueError(f"{self.folder}: {self.name} has a manifest already")
        if self.name not in files:
            raise CommitError(f"cannot adopt {self.folder}: no {self.name}")
        for relative in files:
            obstacle = self.obstacle(relative)
            if (obstacle is not None and not obstacle.unowned) or not (self.folder / relative).is_file():
                raise CommitError(f"cannot adopt {self.folder}: {relative} is not a regular file inside it")
        manifest = Manifest(self.name, new_token(), frozenset(files), dict(meta))
        atomic.atomic_write_bytes(manifest_path(self.folder, self.name), manifest.to_bytes())
        self.manifest = manifest
        return manifest

    def close(self) -> None:
        """Release the unit (the end of the process does the same, but leaves the lock file behind)."""
        self.lock.release()

    def __enter__(self) -> "Unit":
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()


class Stage:
    """A staging folder of an open unit: write the commit's files under `path`, then `commit` or `discard`."""

    def __init__(self, unit: Unit, token: str) -> None:
        self.unit = unit
        self.token = token
        self.root = staging_path(unit.folder, unit.name, token)

    def path(self, relative: str) -> Path:
        """Where the file that will be ``folder/relative`` is written until it is committed."""
        return self.root / relative

    def write(self, relative: str, data: bytes) -> None:
        """Write a file of the commit (flushed to disk; no temporary file: the staging folder is committed whole)."""
        target = self.path(relative)
        if not target.parent.is_dir():
            atomic.make_folders(target.parent)
        atomic.write_file(target, data)

    @property
    def progress(self) -> Path:
        """The staging folder's progress folder (not made here; never committed)."""
        return self.root / PROGRESS

    def staged_files(self) -> list[str]:
        """The files written into the staging folder (relative paths, sorted); its own records and its progress
        folder left out."""
        names = []
        for directory, folders, files in os.walk(self.root):
            if Path(directory) == self.root and PROGRESS in folders:
                folders.remove(PROGRESS)  # not walked into: never committed
            for entry in [*folders, *files]:
                path = Path(directory, entry)
                relative = path.relative_to(self.root).as_posix()
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    raise CommitError(f"{path}: not a regular file; a staging folder holds only files")
                if stat.S_ISREG(mode) and relative not in (STAGED_MANIFEST, REPLACES, PROGRESS):
                    names.append(relative)
        return sorted(names)

    @property
    def committed(self) -> bool:
        """Whether this staging folder's commit point has passed (its manifest is the folder's)."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            document = json.loads(manifest_path(self.unit.folder, self.unit.name).read_bytes())
            return document.get("commit") == self.token
        return False

    def commit(self, meta: dict[str, Any] | None = None, keep: Collection[str] = ()) -> Manifest:
        """Commit the staged files, with ``meta``; the last commit's files in ``keep`` that are not staged again
        stay in the unit, its other files are removed. Needs the unit open in this process (see the module
        docstring for the steps). `CommitError` (nothing changed) if a staged file may not take its place."""
        unit, folder, name = self.unit, self.unit.folder, self.unit.name
        staged = self.staged_files()
        if name not in staged:
            raise CommitError(f"{self.root}: nothing to commit without {name}")
        for relative in staged:
            obstacle = unit.obstacle(relative)
            if obstacle is not None:
                raise CommitError(f"cannot commit into {folder}: {obstacle.path} {obstacle.problem}; nothing changed")
        files = frozenset(staged) | (frozenset(keep) & unit.files)
        manifest = Manifest(name, self.token, files, dict(meta or {}))
        replaced = sorted(unit.files - files)
        if replaced:
            document = {"format": FORMAT, "version": VERSION, "replaces": replaced}
            atomic.write_file(self.root / REPLACES, (json.dumps(document) + "\n").encode("utf-8"))
        atomic.write_file(self.root / STAGED_MANIFEST, manifest.to_bytes())
        for staged_folder in {self.root, *(self.path(relative).parent for relative in staged)}:
            atomic.sync_folder(staged_folder)
        atomic.rename(self.root / STAGED_MANIFEST, manifest_path(folder, name))  # the commit point
        atomic.sync_folder(folder)
        unit.manifest = manifest
        roll_forward(folder, name, manifest)
        return manifest

    def discard(self) -> None:
        """Remove the staging folder, unless it is committed (the next `Unit.open` finishes that one)."""
        if self.committed:
            logger.warning("%s: committed but not all moved into place; the next run finishes it", self.root)
            return
        atomic.remove_tree(self.root)

"""The manifest of a committed folder (utils/committed.py): its format, the names a unit may own, reading it checked,
and finding the last commit's files without opening the unit (safe while another process rolls it forward); and a
staging folder's list of replaced files, written and read back checked.

``.<name>.manifest.json`` is ``{"format": FORMAT, "version": 1, "unit": name, "commit": token, "meta": {...},
"files": [...]}``: ``meta`` is the caller's JSON object; ``files`` are relative POSIX paths that stay inside the
folder (no absolute path, ``..``, ``.``, empty part, backslash, or name of the unit's own records), each a regular
file (or missing) reached through real folders, the key file ``name`` among them. `read_manifest` refuses anything
else (`ManifestError`, one line) before anything is changed. A staging folder's ``.replaces.json`` is ``{"format":
FORMAT, "version": 1, "replaces": [...]}``, the last commit's files that its commit removes (`replaces_bytes`);
`read_replaced` checks its names as a manifest's (not on disk: removing them skips what is in the way).
"""

import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cdvd_tsp.utils.errors import UserError

FORMAT = "cdvd-tsp committed folder"
VERSION = 1
STAGED_MANIFEST = ".manifest.json"
REPLACES = ".replaces.json"
PRIVATE = ".progress"
"""A staging folder's own entries: the staged manifest, the list of replaced files, the writer's private folder."""
TOKEN = re.compile(r"[0-9a-f]{12}")
REFUSED_HINT = "nothing was changed; move it away with the files it describes, or choose another folder"


class ManifestError(UserError):
    """A manifest (or a staging folder's list of replaced files) that is not this project's, or not valid."""


def manifest_path(folder: Path, name: str) -> Path:
    return Path(folder) / f".{name}.manifest.json"


def staging_path(folder: Path, name: str, token: str) -> Path:
    return Path(folder) / f".{name}.staging-{token}"


def name_problem(relative: object, name: str) -> str | None:
    """Why ``relative`` cannot be a file of the unit ``name`` (None if it can)."""
    if not isinstance(relative, str) or not relative:
        return "an empty or non-text name"
    if "\\" in relative or "\0" in relative:
        return "a name with a backslash or a NUL"
    if relative.startswith("/"):
        return "an absolute path"
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "not a plain relative path inside the folder"
    if parts[0].startswith(f".{name}.") or parts[0] in (STAGED_MANIFEST, REPLACES, PRIVATE):
        return "a name this project keeps for its own records"
    return None


def disk_problem(folder: Path, relative: str) -> tuple[Path, str] | None:
    """What stands where ``relative`` (a checked name) would be a regular file in ``folder``: None if it is one, or
    missing, reached through real folders; else the path in the way and what it is ("is a folder")."""
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
        document = {"format": FORMAT, "version": VERSION, "unit": self.name, "commit": self.commit, "meta": self.meta}
        return (json.dumps({**document, "files": sorted(self.files)}, indent=1) + "\n").encode("utf-8")


def load_json(path: Path, what: str) -> dict[str, Any] | None:
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


def checked_names(path: Path, folder: Path, name: str, names: object, on_disk: bool, what: str) -> frozenset[str]:
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
    """The last commit of the unit ``(folder, name)``, checked; None if it has none. Safe without the lock."""
    folder = Path(folder)
    path = manifest_path(folder, name)
    document = load_json(path, "manifest")
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
    files = checked_names(path, folder, name, document.get("files"), on_disk=True, what="list of files")
    if name not in files:
        raise ManifestError(f"{path}: does not list {name}, the file it is named after; {REFUSED_HINT}")
    return Manifest(name, commit, files, meta)


def replaces_bytes(replaced: Iterable[str]) -> bytes:
    """A staging folder's list of replaced files (``.replaces.json``): the last commit's files that its commit
    removes."""
    document = {"format": FORMAT, "version": VERSION, "replaces": sorted(replaced)}
    return (json.dumps(document) + "\n").encode("utf-8")


def read_replaced(root: Path, folder: Path, name: str) -> frozenset[str]:
    """The files that the commit staged in ``root`` (of the unit ``(folder, name)``) replaces, checked as a
    manifest's are; empty if its staging folder has no list of replaced files."""
    path = Path(root) / REPLACES
    document = load_json(path, "list of replaced files")
    if document is None:
        return frozenset()
    return checked_names(path, folder, name, document.get("replaces"), on_disk=False, what="list of replaced files")


def find(folder: Path, name: str, relative: str) -> Path | None:
    """Where the last commit's ``relative`` is now (in the staging folder while it is rolled forward, else in the
    folder); None if the unit has no commit or no such file."""
    manifest = read_manifest(folder, name)
    if manifest is not None and relative in manifest.files:
        for path in (staging_path(folder, name, manifest.commit) / relative, Path(folder) / relative):
            if path.is_file():
                return path
    return None


def open_file(folder: Path, name: str, relative: str) -> IO[bytes]:
    """The last commit's ``relative``, open for reading, even while another process rolls it forward (the staged
    file is tried first: renamed meanwhile, it is in place). FileNotFoundError if there is none."""
    manifest = read_manifest(folder, name)
    if manifest is None or relative not in manifest.files:
        raise FileNotFoundError(f"{folder}: the unit {name} has no committed {relative}")
    try:
        return open(staging_path(folder, name, manifest.commit) / relative, "rb")
    except FileNotFoundError:
        return open(Path(folder) / relative, "rb")

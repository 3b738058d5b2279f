"""File writes that a kill cannot leave half-done, and the file operations they and utils/committed.py are made of.

`atomic_write_bytes` (and its text, JSON and torch forms) writes a temporary file beside the target, flushes it to
disk, then renames it over the target: a process killed at any moment leaves either the old file or the new one,
never a partial file; it may leave a hidden temporary file (``.<name>.<random>.tmp``, see `is_temporary`), which
`remove_temporaries` deletes. It is for single files read in place (training's log.txt and config.txt); a file
inside a staging folder that is committed whole (utils/committed.py) is written with `write_file` alone. An
`OSError` (a full disk, a read-only folder...) becomes a one-line `WriteError` naming the file, and the old file
stays as it was.

The atomic writes and the committed-folder mechanism (utils/committed.py) make every write, rename and removal
through `write_file`, `rename`, `remove_file`, `remove_tree`, `make_folders` and `remove_folder`, looked up on
this module at each call, so that tests can stop a process at each of them (tests/test_main_crash.py,
tests/test_utils_committed.py); the steps made of several call them too: `move_into_place` (a file renamed into
its folder, made if need be) and `remove_file_and_empty_folders` (a file removed with the folders it leaves empty).
Other writers do their own writing: the PNG frames (`data.frames.write_png`), the output video
(`data.video_io.VideoWriter`), the showcase pictures (`utils.showcase`), the log lines of inference
(`infer.report.RunLog`) and the demo data set (`data.demo`).
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cdvd_tsp.utils.errors import UserError, first_line

TEMPORARY_SUFFIX = ".tmp"


class WriteError(UserError, OSError):
    """Writing a file failed (``OSError``); the message is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error), os.fspath(path))
        self.message = f"cannot write {os.fspath(path)}: {error.strerror or first_line(error)}"

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into a `WriteError` about ``path`` (one already made passes unchanged)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(path, error) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_CREATE_MODE = 0o666 & ~_umask()
"""The mode a plain ``open(path, "w")`` would give a new file."""


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk; not atomic by itself (for files nobody reads until renamed)."""
    with writing(path), open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def rename(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.replace``: atomic on one file system."""
    with writing(target):
        os.replace(source, target)


def sync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (the names renames made) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_tree(folder: str | os.PathLike) -> None:
    """Delete ``folder`` and everything in it, if it exists."""
    if Path(folder).is_dir():
        with writing(folder):
            shutil.rmtree(folder)


def remove_file(path: str | os.PathLike) -> None:
    """Delete the file (or symbolic link: never what it points to) ``path``, if it exists."""
    with writing(path):
        Path(path).unlink(missing_ok=True)


def make_folders(folder: str | os.PathLike) -> None:
    """Create ``folder`` and the folders above it that are missing."""
    with writing(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


def remove_folder(folder: str | os.PathLike) -> bool:
    """Remove ``folder`` if it is empty; whether it was removed (a folder that is not empty, or gone, stays)."""
    try:
        os.rmdir(folder)
    except OSError:
        return False
    return True


def move_into_place(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename ``source`` to ``target``, making ``target``'s folder (and the folders above it) first if it is missing."""
    parent = Path(target).parent
    if not parent.is_dir():
        make_folders(parent)
    rename(source, target)


def remove_file_and_empty_folders(path: str | os.PathLike, top: str | os.PathLike) -> None:
    """Delete the file ``path`` if it exists, then the folders above it, up to ``top`` (kept), that are empty (that
    it leaves empty, or that were so already: a kill may leave them)."""
    path, top = Path(path), Path(top)
    if os.path.lexists(path):
        remove_file(path)
    for parent in path.parents:
        if parent == top or top not in parent.parents or not parent.is_dir() or any(parent.iterdir()):
            return
        if not remove_folder(parent):
            return


def is_temporary(path: Path) -> bool:
    """A temporary file of `atomic_write_bytes` (or of the PNG writer), left behind by a process that was killed."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX) and path.is_file()


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files left anywhere under ``folder`` (only while no process writes there)."""
    found = [path for path in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}") if is_temporary(path)]
    for path in found:
        with writing(path):
            path.unlink(missing_ok=True)
    return found


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (the folder must exist); a `WriteError` leaves ``path`` unchanged."""
    path = Path(path)
    with writing(path):
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    try:
        try:
            os.close(descriptor)
            os.chmod(temporary, _CREATE_MODE)  # mkstemp makes owner-only files; give the usual mode instead
            write_file(temporary, data)
            rename(temporary, path)
        except OSError as error:  # named after the file being replaced, not the temporary one
            raise WriteError(path, error) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def torch_bytes(value: Any) -> bytes:
    """What ``torch.save`` would write for ``value``."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def atomic_torch_save(value: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file behind."""
    atomic_write_bytes(path, torch_bytes(value))

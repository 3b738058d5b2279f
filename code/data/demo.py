"""The embedded demo data: synthetic camera blur over sample photos installed with the requirements.

Three splits, made on first use and cached under ``dataset/DEMO/<split>``; nothing is downloaded:

* ``train``: the training photos, many short clips (what `main.py --template DEMO` trains on);
* ``val``: other clips of the training photos (validation during training: scenes seen, motions not);
* ``test``: the held-out photos (what `inference.py --default_data DEMO` measures: scenes never seen).
"""

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cdvd_tsp.data.camera_blur import make_photo_dataset
from cdvd_tsp.data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS
from cdvd_tsp.utils.locking import wait_lock
from cdvd_tsp.utils.paths import from_repo

logger = logging.getLogger(__name__)

DEMO_ROOT = "dataset/DEMO"
RECORD = "synthesis.json"


@dataclass(frozen=True)
class DemoSplit:
    photos: tuple[str, ...]
    videos_per_photo: int
    frames: int
    size: tuple[int, int]
    seed: int


SPLITS = {
    "train": DemoSplit(TRAIN_PHOTOS, videos_per_photo=12, frames=14, size=(128, 128), seed=1),
    "val": DemoSplit(TRAIN_PHOTOS[::2], videos_per_photo=1, frames=5, size=(128, 128), seed=2),
    "test": DemoSplit(HELD_OUT_PHOTOS, videos_per_photo=2, frames=10, size=(192, 256), seed=0),
}


def is_demo_split(folder: Path) -> bool:
    """Whether ``folder`` is ``dataset/DEMO/<split>`` (of this repository) for a known split."""
    folder = Path(folder).resolve()
    return folder.parent == from_repo(DEMO_ROOT).resolve() and folder.name in SPLITS


@contextlib.contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (no lock file to leave behind), waiting for another holder."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        wait_lock(descriptor)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def partial_folders(folder: Path) -> list[Path]:
    """The temporary folders in which splits named like ``folder`` are, or were, being made."""
    return sorted(folder.parent.glob(f".{folder.name}.partial-*"))


def ensure_demo_split(folder: Path) -> bool:
    """Make the demo split at ``folder`` unless it is already there; returns whether it was made now.

    The split is written to a temporary folder beside it and renamed into place when complete, so an interrupted
    run never leaves a half-made cache behind. Processes making it at once take turns (a lock on the parent folder):
    the first makes it, the others find it made; the temporary folders of a process killed while making it are
    removed by the next one.
    """
    folder = Path(folder)
    if folder.exists():
        return False
    split = SPLITS[folder.name]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder_locked(folder.parent):
        if folder.exists():  # made by the process that held the lock before us
            return False
        for stale in partial_folders(folder):  # no live process makes one while we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
        try:
            make_photo_dataset(partial, split.photos, split.videos_per_photo, split.frames, split.size, split.seed)
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return True


def make_demo_data(folders: Iterable[Path]) -> None:
    """Make each of ``folders`` that is a demo split (``dataset/DEMO/<split>``) and not there yet, saying so; other
    folders are left alone. The one demo-data maker of both commands (under torchrun rank 0 calls it while the
    others wait)."""
    for folder in folders:
        if is_demo_split(folder) and ensure_demo_split(folder):
            logger.warning("made the demo data set %s (synthetic camera blur over sample photos)", folder)

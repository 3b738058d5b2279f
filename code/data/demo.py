"""The embedded demo data: synthetic camera blur over sample photos installed with the requirements.

Three splits, made on first use and cached under ``dataset/DEMO/<split>``; nothing is downloaded:

* ``train``: the training photos, many short clips (what `main.py --template DEMO` trains on);
* ``val``: other clips of the training photos (validation during training: scenes seen, motions not);
* ``test``: the held-out photos (what `inference.py --default_data DEMO` measures: scenes never seen).
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from data.camera_blur import make_photo_dataset
from data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS
from utils.paths import from_repo

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


def ensure_demo_split(folder: Path) -> bool:
    """Make the demo split at ``folder`` unless it is already there; returns whether it was made now.

    The split is written to a temporary folder beside it and renamed into place when complete, so an interrupted
    run never leaves a half-made cache behind.
    """
    folder = Path(folder)
    if folder.exists():
        return False
    split = SPLITS[folder.name]
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.parent / f".{folder.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        make_photo_dataset(partial, split.photos, split.videos_per_photo, split.frames, split.size, split.seed)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return True

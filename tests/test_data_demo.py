"""The demo splits are made once, in the dataset form, from disjoint photo sets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cdvd_tsp.data import demo
from cdvd_tsp.data.frames import read_rgb, scan_dataset
from cdvd_tsp.utils.paths import REPO_ROOT


@pytest.fixture
def tiny_splits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Small splits (2 photos, 6 frames, 24x32) under a temporary repository root."""
    root = tmp_path / "dataset" / "DEMO"
    monkeypatch.setattr(demo, "from_repo", lambda path: tmp_path / path)
    splits = {name: demo.DemoSplit(split.photos[:2], 1, 6, (24, 32), split.seed) for name, split in demo.SPLITS.items()}
    monkeypatch.setattr(demo, "SPLITS", splits)
    return root


def test_split_is_made_once_and_cached(tiny_splits: Path) -> None:
    folder = tiny_splits / "test"
    assert demo.is_demo_split(folder)
    assert demo.ensure_demo_split(folder)
    videos = scan_dataset(folder, require_gt=True)
    assert [video.name for video in videos] == ["chelsea_00", "coffee_00"]
    assert read_rgb(videos[0].blur[0]).shape == (24, 32, 3)
    stamp = videos[0].blur[0].stat().st_mtime_ns
    assert not demo.ensure_demo_split(folder)
    assert videos[0].blur[0].stat().st_mtime_ns == stamp
    assert [path.name for path in tiny_splits.iterdir()] == ["test"]  # no partial folder left behind


def test_only_the_demo_folders_are_demo_splits(tmp_path: Path) -> None:
    assert demo.is_demo_split(REPO_ROOT / "dataset" / "DEMO" / "train")
    assert not demo.is_demo_split(REPO_ROOT / "dataset" / "DEMO" / "other")
    assert not demo.is_demo_split(tmp_path / "dataset" / "DEMO" / "train")


def test_test_split_never_shows_a_training_photo() -> None:
    assert not set(demo.SPLITS["test"].photos) & set(demo.SPLITS["train"].photos)
    assert set(demo.SPLITS["val"].photos) <= set(demo.SPLITS["train"].photos)


MAKER = """
import os, sys
from pathlib import Path
from cdvd_tsp.data import demo

root = Path(sys.argv[1])
demo.from_repo = lambda path: root / path
demo.SPLITS = {{
    name: demo.DemoSplit(split.photos[:2], 1, 6, (24, 32), split.seed) for name, split in demo.SPLITS.items()
}}
if {kill}:
    def killed(folder, *args):
        (Path(folder) / "blur").mkdir(parents=True)
        os._exit(9)  # killed half-way through making the split
    demo.make_photo_dataset = killed
print("made" if demo.ensure_demo_split(root / "dataset" / "DEMO" / "test") else "found")
"""


def run_maker(root: Path, kill: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "code")}
    return subprocess.Popen(
        [sys.executable, "-c", MAKER.format(kill=kill), str(root)], env=env, stdout=subprocess.PIPE, text=True
    )


def test_a_maker_killed_half_way_leaves_nothing_the_next_start_does_not_clean(tiny_splits: Path) -> None:
    killed = run_maker(tiny_splits.parent.parent, kill=True)
    assert killed.wait(timeout=120) == 9
    assert [path.name for path in tiny_splits.iterdir()] == [f".test.partial-{killed.pid}"]  # what the kill left
    assert demo.ensure_demo_split(tiny_splits / "test")
    assert [path.name for path in tiny_splits.iterdir()] == ["test"]
    assert len(scan_dataset(tiny_splits / "test", require_gt=True)) == 2


def test_a_second_maker_waits_for_the_first_and_finds_the_split(tiny_splits: Path) -> None:
    tiny_splits.mkdir(parents=True)
    with demo.folder_locked(tiny_splits):  # another process is making the split
        waiting = run_maker(tiny_splits.parent.parent)
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(timeout=3)  # it waits for the lock instead of making a second copy
        (tiny_splits / ".test.partial-1").mkdir()
        demo.make_photo_dataset(tiny_splits / ".test.partial-1", *made_split_arguments())
        (tiny_splits / ".test.partial-1").rename(tiny_splits / "test")
    output, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0 and output.strip() == "found"
    assert [path.name for path in tiny_splits.iterdir()] == ["test"]


def made_split_arguments() -> tuple:
    split = demo.SPLITS["test"]
    return split.photos, split.videos_per_photo, split.frames, split.size, split.seed

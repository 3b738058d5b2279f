"""The demo splits are made once, in the dataset form, from disjoint photo sets."""

from pathlib import Path

import pytest

from data import demo
from data.frames import read_rgb, scan_dataset
from utils.paths import REPO_ROOT


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

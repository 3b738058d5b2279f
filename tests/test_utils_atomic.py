"""Atomic writes (utils/atomic.py): a write replaces the file whole or not at all."""

from pathlib import Path

import pytest
import torch

from cdvd_tsp.utils import atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "log.txt"
    target.write_text("old")
    atomic.atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["log.txt"]


def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    atomic.atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.pt"
    atomic.atomic_torch_save({"w": torch.ones(2)}, target)

    def crash(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_torch_save({"w": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt"]


def test_removing_a_link_never_touches_what_it_points_to_and_only_empty_folders_go(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not mine")
    (tmp_path / "link").symlink_to(outside)
    atomic.remove_file(tmp_path / "link")
    atomic.remove_file(tmp_path / "gone")  # missing: nothing to do
    assert outside.read_text() == "not mine" and not (tmp_path / "link").is_symlink()
    atomic.make_folders(tmp_path / "a" / "b")
    (tmp_path / "a" / "b" / "f").write_text("x")
    assert atomic.remove_folder(tmp_path / "a" / "b") is False  # not empty: stays
    (tmp_path / "a" / "b" / "f").unlink()
    assert atomic.remove_folder(tmp_path / "a" / "b") is True and not (tmp_path / "a" / "b").exists()
    with pytest.raises(atomic.WriteError, match=r"cannot write .*outside\.txt[/\\]x: "):
        atomic.make_folders(outside / "x")  # a file where a folder must be: one line naming it


def recorded_write_points(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> list[str]:
    """The write points called from now on (looked up on the module, as the kill tests hook them)."""
    calls: list[str] = []
    for name in names:
        real = getattr(atomic, name)
        monkeypatch.setattr(atomic, name, lambda *args, _real=real, _name=name: calls.append(_name) or _real(*args))
    return calls


def test_moving_into_place_makes_the_missing_folders_through_the_write_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = recorded_write_points(monkeypatch, ("make_folders", "rename"))
    for index, target in enumerate([tmp_path / "out" / "c" / "d" / "1.png", tmp_path / "out" / "c" / "d" / "2.png"]):
        source = tmp_path / f"staged{index}"
        source.write_text(f"frame {index}")
        atomic.move_into_place(source, target)
        assert target.read_text() == f"frame {index}" and not source.exists()
    assert calls == ["make_folders", "rename", "rename"]  # the folder made once: a kill point only where it is made


def test_removing_a_file_removes_the_folders_it_leaves_empty_up_to_the_top_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "unit"
    (top / "a" / "b" / "c").mkdir(parents=True)
    (top / "a" / "kept.png").write_text("another file")
    (top / "a" / "b" / "c" / "1.png").write_text("replaced")
    (top / "e" / "f").mkdir(parents=True)  # a kill left these empty, their file removed already
    calls = recorded_write_points(monkeypatch, ("remove_file", "remove_folder"))
    atomic.remove_file_and_empty_folders(top / "a" / "b" / "c" / "1.png", top)
    assert calls == ["remove_file", "remove_folder", "remove_folder"]
    assert sorted(path.relative_to(top).as_posix() for path in top.rglob("*")) == ["a", "a/kept.png", "e", "e/f"]
    atomic.remove_file_and_empty_folders(top / "e" / "f" / "1.png", top)
    assert calls[3:] == ["remove_folder", "remove_folder"] and top.is_dir()  # never the top
    assert sorted(path.relative_to(top).as_posix() for path in top.rglob("*")) == ["a", "a/kept.png"]
    (tmp_path / "outside").mkdir()
    atomic.remove_file_and_empty_folders(tmp_path / "outside" / "1.png", top)
    assert (tmp_path / "outside").is_dir() and calls[5:] == []  # nothing above or beside the top

"""utils/paths.py: relative defaults resolve against the repository, whatever the working directory."""

from pathlib import Path

import pytest

from cdvd_tsp.utils.paths import REPO_ROOT, from_repo


def test_relative_paths_resolve_against_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # away from the repository: a path resolved against the working directory is wrong
    repository = Path(__file__).resolve().parents[1]  # found from this file, not from utils.paths
    assert repository == REPO_ROOT
    assert from_repo("dataset/DVD") == repository / "dataset" / "DVD"
    assert from_repo(Path("dataset") / "DVD") == repository / "dataset" / "DVD"
    assert from_repo(tmp_path / "mine") == tmp_path / "mine"  # absolute: itself
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert from_repo("~/clips") == tmp_path / "home" / "clips"

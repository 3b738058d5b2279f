"""Repository locations, so relative defaults do not depend on the working directory."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def from_repo(path: str | Path) -> Path:
    """``path`` itself when absolute, else resolved against the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path

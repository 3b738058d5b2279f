"""docs/api.md: every Python example runs as written (from a folder of its own that has the demo model)."""

import re
import sys
from pathlib import Path

import pytest

from cdvd_tsp.utils.paths import from_repo

API_DOC = from_repo("docs/api.md")
EXAMPLES = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), flags=re.DOTALL)


def test_the_page_has_its_examples() -> None:
    assert len(EXAMPLES) == 6


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{index}" for index in range(len(EXAMPLES))])
def test_each_example_runs(example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pretrain_models").symlink_to(from_repo("pretrain_models"))
    monkeypatch.chdir(tmp_path)
    code = from_repo("code").resolve()
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if Path(entry).resolve() != code])  # cdvd_tsp's only
    exec(compile(example, str(API_DOC), "exec"), {"__name__": "example"})

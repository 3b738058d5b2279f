"""utils/determinism.py: every deterministic switch on, warn-only or strict, and cuBLAS's workspace set only where
the environment sets none. (Inference's scoped use: tests/test_infer_switches.py.)"""

import os
from collections.abc import Iterator

import pytest
import torch

from cdvd_tsp.utils.determinism import CUBLAS_DETERMINISTIC, CUBLAS_VARIABLE, use_deterministic_algorithms


@pytest.fixture
def switches_put_back() -> Iterator[None]:
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    flags = cudnn.deterministic, cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    cudnn.deterministic, cudnn.benchmark = flags


@pytest.mark.usefixtures("switches_put_back")
@pytest.mark.parametrize("warn_only", [True, False])
def test_every_switch_is_set(monkeypatch: pytest.MonkeyPatch, warn_only: bool) -> None:
    monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
    torch.backends.cudnn.benchmark = True
    use_deterministic_algorithms(warn_only=warn_only)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled() == warn_only
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert CUBLAS_DETERMINISTIC[0] == ":4096:8"

    assert os.environ[CUBLAS_VARIABLE] == ":4096:8"


@pytest.mark.usefixtures("switches_put_back")
def test_a_workspace_the_environment_sets_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUBLAS_VARIABLE, ":16:8")
    use_deterministic_algorithms(warn_only=True)

    assert os.environ[CUBLAS_VARIABLE] == ":16:8"

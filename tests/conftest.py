"""Shared test helpers: the reference fixture and models with the fixture's recipe weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.cdvd_tsp import CDVD_TSP

DATA_DIR = Path(__file__).parent / "data"
REFERENCE_JSON = DATA_DIR / "cdvd_tsp_reference.json"
REFERENCE_NPZ = DATA_DIR / "cdvd_tsp_reference.npz"

torch.set_num_threads(min(2, torch.get_num_threads()))


def recipe_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights made by the fixture's recipe (docs/faithfulness.md §10); test-only, not a feature of the project."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in sorted(model.state_dict().items()):
        values = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        scale = (tensor.shape[0] / values.numel()) ** 0.5 if values.dim() > 1 else 0.01
        state[name] = values * scale
    return state


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (both moved to float64 on the CPU)."""
    actual = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return ((actual - expected).abs().max() / expected.abs().max()).item()


class Reference:
    """The fixture: arrays as float64 tensors, plus its metadata."""

    def __init__(self) -> None:
        self.meta = json.loads(REFERENCE_JSON.read_text())
        with np.load(REFERENCE_NPZ) as arrays:
            self.arrays = {name: torch.from_numpy(arrays[name]) for name in arrays.files}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.arrays[name]

    @property
    def seed(self) -> int:
        return self.meta["meta"]["seed"]

    def model(self, dtype: torch.dtype = torch.float64, device: str = "cpu") -> CDVD_TSP:
        model = CDVD_TSP().to(device=device, dtype=dtype)  # cast before loading: float32 would round the weights
        model.load_state_dict(recipe_state_dict(model, self.seed))
        return model


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="session")
def recipe_weights(reference: Reference) -> dict[str, torch.Tensor]:
    return recipe_state_dict(CDVD_TSP(), reference.seed)

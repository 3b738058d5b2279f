"""The demo model committed to pretrain_models/: float16, small, and loadable by the strict loader."""

import torch

from cdvd_tsp.infer.planning import PRESETS
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.utils.paths import from_repo

SHIPPED = from_repo(PRESETS["DEMO"].model_path)  # the file `inference.py --default_data DEMO` loads
MAX_BYTES = 35 * 1024 * 1024


def test_demo_model_is_half_precision_small_and_fits_the_model() -> None:
    assert SHIPPED.stat().st_size <= MAX_BYTES
    stored = torch.load(SHIPPED, weights_only=True)
    assert {value.dtype for value in stored.values()} == {torch.float16}
    model = CDVD_TSP()
    load_weights(model, SHIPPED)
    assert all(value.dtype == torch.float32 and torch.isfinite(value).all() for value in model.state_dict().values())

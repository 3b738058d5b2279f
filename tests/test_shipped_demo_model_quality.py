"""The shipped demo model deblurs clips it never saw: held-out photos under camera paths from seeds no demo split
uses, small enough to run in a few seconds on a CPU."""

import numpy as np
import pytest
import torch

from cdvd_tsp.data.camera_blur import synthesize_photo_clip
from cdvd_tsp.data.demo import SPLITS
from cdvd_tsp.data.sample_photos import HELD_OUT_PHOTOS, TRAIN_PHOTOS, load_photo
from cdvd_tsp.infer.planning import PRESETS
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import psnr
from cdvd_tsp.utils.paths import from_repo

SEEDS = (5, 6)
SIZE = (64, 64)
MIN_MEAN_GAIN_DB = 0.5
"""The model gave +1.34 dB on average over these six clips (+0.25 to +4.6 dB each) when the test was written."""


def test_the_clips_are_held_out() -> None:
    assert not set(HELD_OUT_PHOTOS) & set(TRAIN_PHOTOS)
    assert not set(SEEDS) & {split.seed for split in SPLITS.values()}


@pytest.fixture(scope="module")
def demo_model() -> CDVD_TSP:
    model = CDVD_TSP().eval()
    load_weights(model, from_repo(PRESETS["DEMO"].model_path))
    return model


def test_the_demo_model_raises_psnr_on_held_out_clips(demo_model: CDVD_TSP) -> None:
    gains = []
    for photo in HELD_OUT_PHOTOS:
        for seed in SEEDS:
            pairs = synthesize_photo_clip(load_photo(photo), 5, SIZE, np.random.default_rng([seed]))
            window = torch.stack([to_tensor(blurred) for blurred, _ in pairs], dim=1)  # [1, 5, 3, H, W]
            with torch.no_grad():
                out = demo_model(window)[3]  # the center frame, restored by both stages
            blurred, sharp = pairs[2]
            output_psnr, input_psnr = psnr(to_uint8(out), sharp), psnr(blurred, sharp)
            assert output_psnr > input_psnr, f"{photo} seed {seed}: {output_psnr:.2f} dB <= input {input_psnr:.2f}"
            gains.append(output_psnr - input_psnr)
    assert np.mean(gains) > MIN_MEAN_GAIN_DB

"""Named training recipes: each template is a set of option defaults that flags given on the command line override.

To add a recipe, add one entry to `TEMPLATES`; its keys are option names (the ``dest`` of a flag in
`option.parser.build_parser`), checked when the options are parsed.
"""

from typing import Any

import torch

TEMPLATES: dict[str, dict[str, Any]] = {
    # The released recipe (docs/faithfulness.md §8): five-frame windows (two stages) from the first 100 frames of each
    # DVD training video, 256 x 256 crops, batch 8, 1*L1 + 2*HEM, Adam at 1e-4 halved every 200 epochs, 500 epochs.
    "CDVD_TSP": {
        "model": "CDVD_TSP",
        "n_stages": 2,
        "n_frames_per_video": 100,
        "n_feat": 32,
        "n_resblock": 3,
        "size_must_mode": 4,
        "loss": "1*L1+2*HEM",
        "lr": 1e-4,
        "lr_decay": 200,
        "gamma": 0.5,
        "data_train": "DVD",
        "data_test": "DVD",
        "epochs": 500,
        "batch_size": 8,
        "patch_size": 256,
    },
    # The embedded demo (no download): the released architecture trained from scratch on synthetic camera blur over
    # sample photos installed with the requirements (data/demo.py makes dataset/DEMO/{train,val} on first use).
    # No PWC-Net initialisation is available offline, so the flow net learns from scratch at a real learning rate.
    "DEMO": {
        "model": "CDVD_TSP",
        "n_stages": 2,
        "n_frames_per_video": 14,
        "n_feat": 32,
        "n_resblock": 3,
        "size_must_mode": 4,
        "loss": "1*L1",
        "lr": 4e-4,
        "flow_lr": 1e-4,
        "lr_decay": 20,
        "gamma": 0.5,
        "data_train": "DEMO",
        "data_test": "DEMO",
        "dir_data_test": "dataset/DEMO/val",
        "epochs": 200,
        "batch_size": 4,
        "patch_size": 64,
        "test_every": 80,
        "no_flow_pretrain": True,
        "process": True,
        "n_threads": 0,
        "save": "CDVD_TSP_DEMO",
        "cpu": not torch.cuda.is_available(),
    },
}
# The demo recipe made short: the whole pipeline (the demo data made, training, validation after each epoch, the
# checkpoints) in minutes on a 2-core CPU; a demonstration, not a useful model. One stage (three-frame windows, about
# 4x cheaper a step than two), one window per training clip (the first 3 of its 14 frames: 192 windows, 48 steps of
# 4 an epoch), two epochs; PWC-Net from scratch as in DEMO.
TEMPLATES["DEMO_SHORT"] = TEMPLATES["DEMO"] | {
    "n_stages": 1,
    "n_frames_per_video": 3,
    "epochs": 2,
    "save": "CDVD_TSP_DEMO_SHORT",
}

DEFAULT_TEMPLATE = "CDVD_TSP"


def template_defaults(name: str) -> dict[str, Any]:
    """The option defaults of template ``name``; `KeyError` if there is none."""
    return dict(TEMPLATES[name])

"""data/loaders.py: an epoch continued after its first batches gives the rest of the same order, unread before."""

from pathlib import Path

import pytest
import torch

from cdvd_tsp.data.loaders import batches_per_epoch, start_epoch, train_loader, validation_loader
from cdvd_tsp.data.videodata import SamplingOptions, VideoData
from conftest import make_dataset


class CountingData(VideoData):
    """A training set that records which samples were read."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.read: list[int] = []

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        self.read.append(index)
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), {"a": 4, "b": 4}, height=16, width=16)


def batches(loader: torch.utils.data.DataLoader) -> list[list[int]]:
    return [indices.tolist() for _, _, indices in loader]


@pytest.mark.parametrize("world_size", [1, 2])
def test_an_epoch_continued_after_k_batches_gives_the_rest_unread_before(dataset: Path, world_size: int) -> None:
    options = SamplingOptions(n_sequence=3, patch_size=8, test_every=14, batch_size=2)
    data = CountingData(dataset, options, train=True)
    assert len(data) == 28  # 4 windows repeated 7 times
    for rank in range(world_size):
        loader = train_loader(data, 2, 0, rank, world_size, pin=False)
        start_epoch(loader, 3, 0, worker_seed=5)
        whole = batches(loader)
        assert len(whole) == batches_per_epoch(loader) == 14 // world_size
        data.read.clear()
        start_epoch(loader, 3, 4, worker_seed=5)
        assert batches(loader) == whole[4:]
        assert data.read == [index for batch in whole[4:] for index in batch]  # the first 4 batches never read
        start_epoch(loader, 3, len(whole), worker_seed=5)
        assert batches(loader) == []  # stopped after the last step: nothing left of the epoch
        start_epoch(loader, 4, 0, worker_seed=5)
        assert batches(loader) != whole  # another epoch, another order


def test_iterating_the_loaders_draws_nothing_from_the_global_generator(dataset: Path) -> None:
    options = SamplingOptions(n_sequence=3, patch_size=8, test_every=2, batch_size=2)
    data = VideoData(dataset, options, train=True)
    training = train_loader(data, 2, 0, 0, 1, pin=False)
    validation = validation_loader(VideoData(dataset, options, train=False), 0, 0, 1, pin=False)
    start_epoch(training, 1, 0, worker_seed=1)
    state = torch.get_rng_state()
    next(iter(training))
    next(iter(validation))
    assert torch.equal(torch.get_rng_state(), state)  # what a checkpoint records is what training left

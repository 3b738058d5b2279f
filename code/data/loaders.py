"""Data loaders for training (shuffled, sharded over processes) and validation (whole frames, one window a batch).

The loaders draw nothing from the global random generators: each has its own ``generator`` (the seed of its worker
processes), so that the global states a checkpoint records are those training leaves, wherever it stops. A training
epoch can start after its first batches (`start_epoch`): the order is still the DistributedSampler's for (seed,
epoch), the batches before the start are neither read nor decoded.
"""

import argparse
import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from cdvd_tsp.data.videodata import SamplingOptions, VideoData


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    return SamplingOptions(
        n_sequence=args.n_sequence,
        size_must_mode=args.size_must_mode,
        rgb_range=args.rgb_range,
        patch_size=args.patch_size,
        n_frames_per_video=args.n_frames_per_video,
        augment=not args.no_augment,
        test_every=args.test_every,
        batch_size=args.batch_size,
        seed=args.seed,
        preload=args.process,
    )


class EpochSampler(DistributedSampler):
    """This process's share of an epoch in DistributedSampler's order for (seed, epoch), from its ``start``-th
    sample on (the samples before it are skipped without being read)."""

    def __init__(self, dataset: VideoData, rank: int, world_size: int) -> None:
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=dataset.options.seed, drop_last=False
        )
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


def train_loader(
    dataset: VideoData, batch_size: int, workers: int, rank: int, world_size: int, pin: bool
) -> DataLoader:
    """Batches of ``batch_size`` (per process) in an order set by (seed, epoch): call `start_epoch` first."""
    sampler = EpochSampler(dataset, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator(),
    )


def batches_per_epoch(loader: DataLoader) -> int:
    """How many batches a training loader gives this process in a whole epoch."""
    return -(-loader.sampler.num_samples // loader.batch_size)


def start_epoch(loader: DataLoader, epoch: int, batches_done: int, worker_seed: int) -> None:
    """Make the next iteration of a training loader give ``epoch``'s batches after the first ``batches_done``
    (the same batches as the epoch's, those before skipped unread); its worker processes are seeded from
    ``worker_seed``."""
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch, start=batches_done * loader.batch_size)
    loader.generator.manual_seed(worker_seed)


def validation_loader(dataset: VideoData, workers: int, rank: int, world_size: int, pin: bool) -> DataLoader:
    """This process's share of the validation windows (every ``world_size``-th from ``rank``), one per batch."""
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(
        Subset(dataset, indices),
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        generator=torch.Generator(),
    )


def build_datasets(args: argparse.Namespace, train: bool) -> tuple[VideoData | None, VideoData]:
    """The training set (None with --test_only) and the validation set."""
    options = sampling_options(args)
    train_set = None if not train else VideoData(args.train_dir, options, train=True, name=args.data_train)
    test_set = VideoData(args.test_dir, options, train=False, name=args.data_test)
    return train_set, test_set

"""Data loaders for training (shuffled, sharded over processes) and validation (whole frames, one window a batch)."""

import argparse

from torch.utils.data import DataLoader, DistributedSampler, Subset

from data.videodata import SamplingOptions, VideoData


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


def train_loader(
    dataset: VideoData, batch_size: int, workers: int, rank: int, world_size: int, pin: bool
) -> DataLoader:
    """Batches of ``batch_size`` (per process) in an order set by (seed, epoch): call ``sampler.set_epoch``."""
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=dataset.options.seed, drop_last=False
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin)


def validation_loader(dataset: VideoData, workers: int, rank: int, world_size: int, pin: bool) -> DataLoader:
    """This process's share of the validation windows (every ``world_size``-th from ``rank``), one per batch."""
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(Subset(dataset, indices), batch_size=1, shuffle=False, num_workers=workers, pin_memory=pin)


def build_datasets(args: argparse.Namespace, train: bool) -> tuple[VideoData | None, VideoData]:
    """The training set (None with --test_only) and the validation set."""
    options = sampling_options(args)
    train_set = None if not train else VideoData(args.train_dir, options, train=True, name=args.data_train)
    test_set = VideoData(args.test_dir, options, train=False, name=args.data_test)
    return train_set, test_set

"""Training and validation samples: windows of consecutive frames from the videos of a dataset.

Sampling follows the release (docs/faithfulness.md §8): training keeps the first ``n_frames_per_video`` frames of each
video; a sample is a window of ``n_sequence`` consecutive frames; the windows of all videos are repeated
``max(test_every // max(windows // batch_size, 1), 1)`` times so that an epoch is about ``test_every`` batches.
A training sample is a random ``patch_size`` square crop at the same place in every frame, then a horizontal flip,
a vertical flip and a 90-degree rotation, each with probability 0.5 and the same for every frame and its ground
truth. Validation samples are whole frames. Frames are cropped (bottom and right) to multiples of
``size_must_mode``.

The random choices of a sample depend only on (seed, epoch, sample index), never on worker processes or on what
ran before, so a run resumed at an epoch boundary draws exactly what the uninterrupted run would have drawn.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cdvd_tsp.data.frames import VideoFrames, check_same_size, read_rgb, reset_warnings, scan_dataset
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.image import cropped_size, to_tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingOptions:
    """How samples are drawn from a dataset (the data options of `main.py`)."""

    n_sequence: int
    size_must_mode: int = 1
    rgb_range: float = 1.0
    patch_size: int = 256
    n_frames_per_video: int = 100
    augment: bool = True
    test_every: int = 1000
    batch_size: int = 8
    seed: int = 1
    preload: bool = False


def repeat_count(n_windows: int, batch_size: int, test_every: int) -> int:
    """The release's repeat rule: how many times the training windows are repeated to make one epoch."""
    return max(test_every // max(n_windows // batch_size, 1), 1)


class VideoData(Dataset):
    """Windows of ``n_sequence`` frames from a dataset in the dataset form, for training or validation.

    An item is ``(blur, gt, index)``: two [n_sequence, 3, H, W] float tensors in [0, rgb_range] and the item's
    index (see `center_frame`).
    """

    def __init__(self, root: str | Path, options: SamplingOptions, train: bool, name: str = "") -> None:
        self.root = Path(root)
        self.options = options
        self.train = train
        self.name = name or self.root.name
        self.epoch = 1
        reset_warnings()  # each set warns of what its frames lose as 8-bit RGB, from the headers, here
        self.videos = [self._checked(video) for video in scan_dataset(self.root, require_gt=True)]
        self.windows = [
            (video_index, start)
            for video_index, video in enumerate(self.videos)
            for start in range(len(video.blur) - options.n_sequence + 1)
        ]
        self.repeat = repeat_count(len(self.windows), options.batch_size, options.test_every) if train else 1
        self.frames: list[tuple[np.ndarray, np.ndarray]] | None = None
        if options.preload:
            self.frames = [(self._read_all(video.blur), self._read_all(video.gt)) for video in self.videos]
        logger.info(
            "%s set %s: %d videos, %d windows of %d frames, repeated %d times",
            "training" if train else "validation",
            self.root,
            len(self.videos),
            len(self.windows),
            options.n_sequence,
            self.repeat,
        )

    def _checked(self, video: VideoFrames) -> VideoFrames:
        """Keep the frames this set uses and check their count and sizes."""
        options = self.options
        keep = options.n_frames_per_video if self.train else len(video.blur)
        blur, gt = video.blur[:keep], video.gt[:keep]
        what = f"{self.root}: video '{video.name}'"
        if len(blur) < options.n_sequence:
            kept = f" (the first {keep} are used)" if self.train and len(video.blur) > keep else ""
            raise UserError(f"{what} has {len(blur)} frames{kept}, fewer than a window of {options.n_sequence}")
        height, width = check_same_size(blur + gt, what)
        if self.train and min(height, width) < options.patch_size:
            raise UserError(f"{what}: frames are {width}x{height}, smaller than --patch_size {options.patch_size}")
        if not self.train and min(height, width) < options.size_must_mode:
            raise UserError(f"{what}: frames are {width}x{height}, smaller than --size_must_mode")
        return VideoFrames(video.name, blur, gt)

    @staticmethod
    def _read_all(paths: list[Path]) -> np.ndarray:
        return np.stack([read_rgb(path) for path in paths])

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose crops and flips the next iteration draws (call before iterating a loader)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.windows) * self.repeat

    def center_frame(self, index: int) -> tuple[str, str]:
        """(video name, file stem) of the middle frame of item ``index``."""
        video_index, start = self.windows[index % len(self.windows)]
        video = self.videos[video_index]
        return video.name, video.blur[start + self.options.n_sequence // 2].stem

    def _window(self, index: int) -> np.ndarray:
        """The blurred frames, then the sharp frames, of item ``index``: [2 * n_sequence, H, W, 3] uint8."""
        video_index, start = self.windows[index % len(self.windows)]
        stop = start + self.options.n_sequence
        if self.frames is not None:
            blur, gt = self.frames[video_index]
            return np.concatenate([blur[start:stop], gt[start:stop]])
        video = self.videos[video_index]
        return np.stack([read_rgb(path) for path in video.blur[start:stop] + video.gt[start:stop]])

    def _crop_and_augment(self, frames: np.ndarray, index: int) -> np.ndarray:
        options = self.options
        random = np.random.default_rng([options.seed, self.epoch, index])
        _, height, width, _ = frames.shape
        size = options.patch_size
        left = int(random.integers(0, width - size + 1))
        top = int(random.integers(0, height - size + 1))
        frames = frames[:, top : top + size, left : left + size]
        frames = _crop_to_multiple(frames, options.size_must_mode)
        if options.augment:
            horizontal, vertical, rotate = random.random(3) < 0.5
            if horizontal:
                frames = frames[:, :, ::-1]
            if vertical:
                frames = frames[:, ::-1]
            if rotate:
                frames = np.rot90(frames, axes=(1, 2))
        return frames

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        frames = self._window(index)
        if self.train:
            frames = self._crop_and_augment(frames, index)
        else:
            frames = _crop_to_multiple(frames, self.options.size_must_mode)
        tensors = torch.cat([to_tensor(frame) for frame in frames]) * self.options.rgb_range
        n = self.options.n_sequence
        return tensors[:n], tensors[n:], index


def _crop_to_multiple(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Drop bottom rows and right columns so that height and width are multiples of ``multiple``."""
    height, width = cropped_size(*frames.shape[1:3], multiple)
    return frames[:, :height, :width]

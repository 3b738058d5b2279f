"""One video's frames as the pipeline pushes them: in order, border-padded by mode, tagged with their index, kept by
index until their output takes them; the sharp frames in step; the frames backwards for the x16 pass."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.data.video_io import VideoWriter, folder_source, open_video
from cdvd_tsp.infer.conversion import FramePreparer
from cdvd_tsp.infer.inputs import VideoInput
from cdvd_tsp.infer.planning import Job, Restoration
from cdvd_tsp.infer.transfer import Transfer
from cdvd_tsp.utils.image import to_tensor
from conftest import make_dataset

CPU = torch.device("cpu")

PUSHED = {
    None: [0, 1, 2, 3],
    "release": [0, 1, 0, 1, 2, 3, 2, 3],
    "replicate": [0, 0, 0, 1, 2, 3, 3, 3],
    "reflect": [2, 1, 0, 1, 2, 3, 2, 1],
}
"""The indices a 4-frame video pushes with 2 stages, by border mode (None: no border)."""


def restoration(mode: str | None, stages: int = 2) -> Restoration:
    return Restoration(
        model_path=Path("model.pt"),
        n_stages=stages,
        border_mode=mode,
        crop=True,
        window=False,
        self_ensemble=None,
        tile=None,
        tile_overlap=None,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("inputs"), {"clip": 4}, height=10, width=14)


def folder_job(data: Path, targets: list[int], gt: bool = False) -> Job:
    paths = sorted((data / "blur" / "clip").iterdir())
    sharp = sorted((data / "gt" / "clip").iterdir()) if gt else None
    return Job(folder_source("clip", paths), sharp, targets, None, None)


def pushed(frames: VideoInput) -> list[tuple[int, torch.Tensor]]:
    items = []
    while (item := frames.next_frame()) is not None:
        items.append(item)
    return items


@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("mode", list(PUSHED))
def test_frames_are_pushed_padded_by_mode_and_tagged_with_their_index(
    data: Path, mode: str | None, threads: bool
) -> None:
    job = folder_job(data, [0, 1, 2, 3] if mode else [2, 3])
    prepare = FramePreparer(job.source.size, crop=True)
    images = [read_rgb(path)[:8, :12] for path in job.source.paths]  # cropped to multiples of 4
    with VideoInput(job, prepare, Transfer(CPU), restoration(mode), threads) as frames:
        items = pushed(frames)
        assert [index for index, _ in items] == PUSHED[mode]
        for index, tensor in items:
            assert torch.equal(tensor, to_tensor(images[index]))
        assert sorted(frames.kept) == [0, 1, 2, 3]
        host, device = frames.take(2)
        assert np.array_equal(host.numpy(), images[2]) and torch.equal(device, host)
        assert sorted(frames.kept) == [3]  # the frames before an output are let go with it


def test_the_sharp_frames_come_in_step_with_the_outputs(data: Path) -> None:
    job = folder_job(data, [2, 3], gt=True)
    with VideoInput(job, FramePreparer(job.source.size, crop=True), Transfer(CPU), restoration(None)) as frames:
        sharp = frames.sharp(2)
        assert sharp is not None
        assert np.array_equal(sharp.numpy(), read_rgb(data / "gt" / "clip" / "00002.png")[:8, :12])
        with pytest.raises(RuntimeError, match="sharp frame 3 read for output 2"):
            frames.sharp(2)
    without = folder_job(data, [2, 3])
    with VideoInput(without, FramePreparer(without.source.size, crop=True), Transfer(CPU), restoration(None)) as frames:
        assert frames.sharp(2) is None


@pytest.mark.parametrize("mode", ["release", "replicate", "reflect"])
def test_the_backward_pass_gets_the_frames_last_first_padded_alike(data: Path, tmp_path: Path, mode: str) -> None:
    job = folder_job(data, [0, 1, 2, 3])
    prepare = FramePreparer(job.source.size, crop=True)
    with VideoInput(job, prepare, Transfer(CPU), restoration(mode), threads=False) as frames:
        backwards = list(frames.backwards())
    assert [index for _, index in backwards] == PUSHED[mode][::-1]
    images = [read_rgb(path)[:8, :12] for path in job.source.paths]
    assert all(torch.equal(tensor, to_tensor(images[index])) for tensor, index in backwards)

    clip = tmp_path / "clip.mp4"  # a video file is decoded once and fed backwards from memory
    with VideoWriter(clip, (8, 12), fps=5) as writer:
        for image in images:
            writer.write(image)
    video = open_video(clip)
    video_job = Job(video, None, [0, 1, 2, 3], None, None)
    with VideoInput(video_job, FramePreparer(video.size, crop=True), Transfer(CPU), restoration(mode)) as frames:
        forwards = pushed(frames)
        backwards = list(frames.backwards())
    assert [index for _, index in backwards] == PUSHED[mode][::-1]
    decoded = dict(forwards)
    assert all(torch.equal(tensor, decoded[index]) for tensor, index in backwards)

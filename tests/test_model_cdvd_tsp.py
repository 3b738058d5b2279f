"""The cascade for T stages, its outputs by stage, and dtype/device following."""

import pytest
import torch

from model.cdvd_tsp import CDVD_TSP
from model.stages import CascadeOutputs


def small_clip(frames: int, dtype: torch.dtype = torch.float32, height: int = 32, width: int = 48) -> torch.Tensor:
    return torch.rand(1, frames, 3, height, width, generator=torch.Generator().manual_seed(frames), dtype=dtype)


@pytest.mark.parametrize("n_stages", [1, 3])
def test_t_stages_take_2t_plus_1_frames_and_give_right_shapes(n_stages: int) -> None:
    n_sequence = 2 * n_stages + 1
    model = CDVD_TSP(n_sequence=n_sequence).eval()
    clip = small_clip(n_sequence)
    with torch.no_grad():
        stages = model.forward_stages(clip)
        outputs = model(clip)
    assert [len(stage) for stage in stages] == list(range(n_sequence - 2, 0, -2))
    for stage in stages:
        for frame in stage:
            assert frame.shape == (1, 3, 32, 48)
    # forward: every output of the stages before the last, the final output, then None
    assert len(outputs) == sum(len(stage) for stage in stages) + 1
    assert outputs[-1] is None
    assert torch.equal(outputs[-2], stages[-1][0])


@pytest.mark.parametrize(("n_stages", "targets"), [(1, [1]), (2, [1, 2, 3, 2]), (3, [1, 2, 3, 4, 5, 2, 3, 4, 3])])
def test_split_outputs_is_the_inverse_of_forward_and_names_the_targets(n_stages: int, targets: list[int]) -> None:
    model = CDVD_TSP(n_sequence=2 * n_stages + 1, n_feat=4, n_resblock=1).eval()
    clip = small_clip(2 * n_stages + 1, height=16, width=16)
    with torch.no_grad():
        split = model.split_outputs(model(clip))
        stages = model.forward_stages(clip)
    assert [len(stage) for stage in split.stages] == [len(stage) for stage in stages]
    for ours, theirs in zip(split.flat(), [frame for stage in stages for frame in stage], strict=True):
        assert torch.equal(ours, theirs)
    assert torch.equal(split.final, stages[-1][0])
    assert torch.equal(split.stage1_center, stages[0][n_stages - 1])  # the centre frame's stage-1 output
    assert split.target_frames() == targets  # T = 2: the release's cat([gt1, gt2, gt3, gt2])
    window = torch.arange(2 * n_stages + 1).view(1, -1, 1, 1, 1)
    assert [int(frame) for frame in split.targets(window)] == targets
    with pytest.raises(ValueError, match="not the output of a"):
        CascadeOutputs.from_forward(model(clip)[1:], n_stages)


def test_stages_share_weights_so_one_stage_repeated_is_the_cascade() -> None:
    model = CDVD_TSP(n_sequence=5).eval()
    clip = small_clip(5)
    with torch.no_grad():
        recons_1, recons_2, recons_3, out, mid_loss = model(clip)
        frames = list(clip.unbind(1))
        first = [model.restore_center(*frames[index - 1 : index + 2]) for index in (1, 2, 3)]
        second = model.restore_center(*first)
    assert mid_loss is None
    for ours, theirs in zip((recons_1, recons_2, recons_3, out), (*first, second), strict=True):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("n_sequence", [1, 4, 6])
def test_n_sequence_must_be_odd_and_at_least_three(n_sequence: int) -> None:
    with pytest.raises(ValueError, match="n_sequence"):
        CDVD_TSP(n_sequence=n_sequence)


def test_wrong_number_of_frames_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, 5, C, H, W\]"):
        CDVD_TSP()(small_clip(3))


def test_double_precision_follows_the_model() -> None:
    model = CDVD_TSP(n_sequence=3).double().eval()
    with torch.no_grad():
        out, _ = model(small_clip(3, torch.float64))
    assert out.dtype == torch.float64

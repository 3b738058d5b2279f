"""Self-ensemble: the transforms, exactness with stand-in models, the real model against its individual runs, and the
streaming contract (same outputs at the same pushes with the same tags as the plain runner)."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.ensemble import DIHEDRAL, IDENTITY, SelfEnsemble, TimeReversal, Transform, backward_outputs, mean
from cdvd_tsp.model.streaming import StreamingRunner, with_border
from conftest import ensemble_video, seeded_model

pytestmark = pytest.mark.usefixtures("single_thread")


class StandIn:
    """What a runner needs of a model: the number of stages and a per-stage step."""

    def __init__(self, step: Callable[[Tensor, Tensor, Tensor], Tensor], n_stages: int = 2) -> None:
        self.n_stages = n_stages
        self.restore_center = step


def factory(model: StandIn) -> Callable[[], StreamingRunner]:
    return lambda: StreamingRunner(model)


def clip(count: int, height: int = 32, width: int = 48, seed: int = 0) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, height, width, generator=generator) for _ in range(count)]


def test_the_eight_transforms_are_distinct_and_each_is_undone_by_its_inverse() -> None:
    image = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    assert DIHEDRAL[0] == IDENTITY and len(set(DIHEDRAL)) == 8
    results = []
    for transform in DIHEDRAL:
        moved = transform.apply(image)
        assert moved.shape == ((2, 3, 6, 4) if transform.transpose else (2, 3, 4, 6))
        assert torch.equal(transform.invert(moved), image)
        results.append(tuple(moved.flatten().tolist()) + tuple(moved.shape))
    assert len(set(results)) == 8
    assert sorted(transform.name for transform in DIHEDRAL)[:2] == ["hflip", "identity"]


def test_pairwise_mean_of_equal_images_is_exact() -> None:
    image = torch.rand(1, 3, 8, 8) * 0.3 + 0.1
    for count in (1, 2, 8, 16):
        assert torch.equal(mean([image] * count), image)
    assert torch.allclose(mean([torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)]), torch.ones(1))


@pytest.mark.parametrize("time_reversal", [False, True])
def test_an_identity_model_gives_back_the_input_exactly(time_reversal: bool) -> None:
    frames = clip(5)
    model = StandIn(lambda previous, center, following: center)
    with torch.no_grad():
        outputs = ensemble_video(factory(model), frames, time_reversal=time_reversal)
    assert len(outputs) == len(frames)
    for output, frame in zip(outputs, frames, strict=True):
        assert torch.equal(output, frame)


def test_a_model_with_the_symmetries_is_unchanged_by_the_ensemble() -> None:
    """A step that is pointwise in space and symmetric in time commutes with every transform."""
    frames = clip(6)
    model = StandIn(lambda previous, center, following: (previous + following) * 0.25 + center * 0.5)
    with torch.no_grad():
        plain = ensemble_video(factory(model), frames, transforms=(IDENTITY,))
        ensembled = ensemble_video(factory(model), frames, time_reversal=True)
    for first, second in zip(plain, ensembled, strict=True):
        assert (first - second).abs().max().item() < 1e-6


PADDED = {
    "release": [0, 1, 0, 1, 2, 3, 4, 5, 6, 5, 6],
    "replicate": [0, 0, 0, 1, 2, 3, 4, 5, 6, 6, 6],
    "reflect": [2, 1, 0, 1, 2, 3, 4, 5, 6, 5, 4],
}
"""Seven frames padded for two stages, by border mode."""


@pytest.mark.parametrize("mode", list(PADDED))
def test_time_reversal_pairs_each_frame_with_its_own_backward_output(mode: str) -> None:
    """A step that returns the following frame: two stages give, for the frame at position p of the padded list,
    the frame at p + 2 forwards and at p - 2 backwards, so the time ensemble is their mean."""
    frames = [torch.full((1, 3, 4, 4), float(index)) for index in range(7)]
    model = StandIn(lambda previous, center, following: following)
    with torch.no_grad():
        outputs = ensemble_video(factory(model), frames, transforms=(IDENTITY,), time_reversal=True, border=mode)
    values = PADDED[mode]
    expected = [(values[position + 2] + values[position - 2]) / 2 for position in range(2, 9)]
    assert [output.flatten()[0].item() for output in outputs] == expected
    assert expected != [float(index) for index in range(7)]  # the stand-in is not symmetric in time


@pytest.mark.parametrize("mode", list(PADDED))
@pytest.mark.parametrize("half", [1, 2, 3])
@pytest.mark.parametrize("count", [1, 2, 4, 5, 6])
def test_border_padding_commutes_with_time_reversal(mode: str, half: int, count: int) -> None:
    """What the backward pass relies on: padding the reversed frames gives the padded frames reversed."""
    if mode == "reflect" and count <= half:
        return  # refused (too short to reflect)
    items = list(range(count))
    assert list(with_border(reversed(items), half, mode)) == list(reversed(list(with_border(items, half, mode))))


@pytest.fixture(scope="module")
def model() -> CDVD_TSP:
    return seeded_model(seed=1)


def individual_runs(model: CDVD_TSP, frames: list[Tensor], transform: Transform, backwards: bool) -> list[Tensor]:
    """One plain streamed run on transformed (and possibly reversed) frames, transformed back, in frame order."""
    padded = list(with_border(frames, model.n_stages))
    if backwards:
        padded.reverse()
    runner = StreamingRunner(model)
    outputs = [runner.push(transform.apply(frame)) for frame in padded]
    images = [transform.invert(output.image) for output in outputs if output is not None]
    return images[::-1] if backwards else images


SOME = (DIHEDRAL[0], DIHEDRAL[3], DIHEDRAL[5], DIHEDRAL[6])
"""Four of the transforms (two with a transposition): the mean is checked on these to keep the test short."""


def test_the_real_model_ensemble_is_the_mean_of_the_individual_runs(model: CDVD_TSP) -> None:
    frames = clip(3, 16, 24)
    with torch.no_grad():
        ensembled = ensemble_video(lambda: StreamingRunner(model), frames, SOME)
        runs = [individual_runs(model, frames, transform, False) for transform in SOME]
    assert len(ensembled) == len(frames)
    for index, output in enumerate(ensembled):
        expected = torch.stack([run[index] for run in runs]).mean(dim=0)
        assert (output - expected).abs().max().item() < 1e-6
        # the transformed runs differ: the model has none of the symmetries, so the ensemble is not the plain run
        assert min((runs[0][index] - run[index]).abs().max().item() for run in runs[1:]) > 1e-3


def test_the_real_model_time_ensemble_is_the_mean_of_forward_and_backward_runs(model: CDVD_TSP) -> None:
    frames = clip(3, 16, 24, seed=3)
    transforms = (IDENTITY, Transform(transpose=True, flip_horizontal=True))
    with torch.no_grad():
        ensembled = ensemble_video(lambda: StreamingRunner(model), frames, transforms, time_reversal=True)
        runs = [
            individual_runs(model, frames, transform, backwards) for transform in transforms for backwards in (0, 1)
        ]
    for index, output in enumerate(ensembled):
        expected = torch.stack([run[index] for run in runs]).mean(dim=0)
        assert (output - expected).abs().max().item() < 1e-6


def test_the_ensembled_stream_gives_the_plain_runner_s_outputs_and_tags(model: CDVD_TSP) -> None:
    frames = list(with_border(clip(3, 16, 24, seed=4), model.n_stages))
    plain, ensemble = StreamingRunner(model), SelfEnsemble(lambda: StreamingRunner(model), DIHEDRAL[5:7])
    assert ensemble.latency == plain.latency
    with torch.no_grad():
        for index, frame in enumerate(frames):
            tag = ("frame", index)
            expected, actual = plain.push(frame, tag), ensemble.push(frame, tag)
            assert (expected is None) == (actual is None)
            if expected is not None:
                assert actual.tag == expected.tag
                assert actual.image.shape == expected.image.shape and actual.image.dtype == expected.image.dtype


def test_time_reversal_streams_with_the_pipeline_s_frame_index_tags() -> None:
    """The wiring the inference pipeline needs: each frame tagged with its index, in both passes."""
    frames = clip(5, seed=5)
    model = StandIn(lambda previous, center, following: center)
    tagged = [(frame, index) for index, frame in enumerate(frames)]
    with torch.no_grad():
        backward = backward_outputs(StreamingRunner(model), with_border(reversed(tagged), 2), keep_on="cpu")
        assert sorted(backward) == list(range(5))
        runner = TimeReversal(StreamingRunner(model), backward)
        outputs = [runner.push(frame, tag) for frame, tag in with_border(tagged, 2)]
    restored = [output for output in outputs if output is not None]
    assert [output.tag for output in restored] == [tag for _, tag in tagged]
    assert all(torch.equal(output.image, frame) for output, frame in zip(restored, frames, strict=True))
    assert runner.backward == {}  # every stored output was used and released
    with pytest.raises(KeyError, match="no backward output for frame 0"):
        empty = TimeReversal(StreamingRunner(model), {})
        for frame, tag in with_border(tagged, 2):
            empty.push(frame, tag)

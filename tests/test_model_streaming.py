"""The streaming runner against the release's window-by-window evaluation, and the border padding rule."""

import itertools

import pytest
import torch

from conftest import relative_error, run_frames, seeded_model
from model.cdvd_tsp import CDVD_TSP
from model.streaming import StreamingRunner, WindowRunner, with_border

pytestmark = pytest.mark.usefixtures("single_thread")


def release_border(frames: list, half: int) -> list:
    """The release's padding, written as its list arithmetic."""
    return frames[:half] + frames + frames[-half:]


def release_outputs(model: CDVD_TSP, frames: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every window of n_sequence consecutive frames through CDVD_TSP.forward, as the release evaluated."""
    size = model.n_sequence
    return [model(torch.stack(frames[start : start + size], dim=1))[-2] for start in range(len(frames) - size + 1)]


def clip(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, 32, 48, generator=generator) for _ in range(count)]


class CallCounter:
    """Wraps restore_center to count the per-stage steps the runners ask for."""

    def __init__(self, model: CDVD_TSP, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        step = model.restore_center

        def counted(*frames: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return step(*frames)

        monkeypatch.setattr(model, "restore_center", counted)

    def take(self) -> int:
        calls, self.calls = self.calls, 0
        return calls


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6])
def test_with_border_is_the_release_rule(count: int) -> None:
    frames = [f"f{index}" for index in range(count)]
    assert list(with_border(frames, 2)) == release_border(frames, 2)


def test_with_border_is_lazy() -> None:
    assert list(itertools.islice(with_border(itertools.count(), 2), 6)) == [0, 1, 0, 1, 2, 3]


@pytest.fixture(scope="module")
def model() -> CDVD_TSP:
    return seeded_model(seed=1)


def test_streaming_equals_the_release_windows_with_half_the_steps(
    model: CDVD_TSP, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = clip(6)
    counter = CallCounter(model, monkeypatch)
    runner = StreamingRunner(model)
    streamed = []
    with torch.no_grad():
        expected = release_outputs(model, frames)
        assert counter.take() == 4 * len(expected)
        for frame in frames:
            restored = runner.push(frame, tag=len(streamed))
            streamed.append(None if restored is None else restored.image)
            # the tag that comes back is the one pushed with the frame this output restores (latency 2)
            assert restored is None or restored.tag == len(streamed) - 1 - runner.latency
            assert all(len(inputs) <= 3 for inputs in runner.stage_inputs)
        # each frame is restored once per stage: n - 2 stage-1 steps and n - 4 stage-2 steps
        assert counter.take() == (6 - 2) + (6 - 4)
        windowed = run_frames(WindowRunner(model), frames)
        assert counter.take() == 4 * len(expected)
    assert [output is None for output in streamed] == [True] * 4 + [False] * 2
    assert runner.latency == 2
    for ours, window, theirs in zip(streamed[4:], windowed, expected, strict=True):
        assert relative_error(ours, theirs) < 1e-5
        assert torch.equal(window, theirs)


def test_streaming_with_border_gives_every_frame_as_the_release(model: CDVD_TSP) -> None:
    frames = clip(2, seed=2)
    with torch.no_grad():
        expected = release_outputs(model, release_border(frames, 2))
        streamed = run_frames(StreamingRunner(model), with_border(frames, 2))
    assert len(streamed) == len(expected) == 2
    for ours, theirs in zip(streamed, expected, strict=True):
        assert relative_error(ours, theirs) < 1e-5


def test_streaming_works_for_any_number_of_stages() -> None:
    model = seeded_model(seed=4, n_sequence=3)
    frames = clip(4, seed=4)
    with torch.no_grad():
        streamed = run_frames(StreamingRunner(model), frames)
        expected = release_outputs(model, frames)
    assert len(streamed) == len(expected) == 2
    for ours, theirs in zip(streamed, expected, strict=True):
        assert relative_error(ours, theirs) < 1e-5

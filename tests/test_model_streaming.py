"""The streaming runner against the release's window-by-window evaluation, the border padding modes, and the fan-out
runner's contract."""

import itertools

import pytest
import torch

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.streaming import FanOut, Restored, StreamingRunner, WindowRunner, frames_needed, with_border
from conftest import relative_error, run_frames, seeded_model

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
    for mode in ("replicate", "reflect"):
        assert len(list(itertools.islice(with_border(itertools.count(), 3, mode), 8))) == 8


@pytest.mark.parametrize(
    ("mode", "half", "count", "expected"),
    [
        ("release", 1, 3, [0, 0, 1, 2, 2]),
        ("release", 3, 4, [0, 1, 2, 0, 1, 2, 3, 1, 2, 3]),
        ("replicate", 1, 3, [0, 0, 1, 2, 2]),
        ("replicate", 2, 4, [0, 0, 0, 1, 2, 3, 3, 3]),
        ("replicate", 3, 1, [0, 0, 0, 0, 0, 0, 0]),
        ("reflect", 1, 2, [1, 0, 1, 0]),
        ("reflect", 2, 4, [2, 1, 0, 1, 2, 3, 2, 1]),
        ("reflect", 2, 6, [2, 1, 0, 1, 2, 3, 4, 5, 4, 3]),
        ("reflect", 3, 4, [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]),
    ],
)
def test_each_border_mode_pads_as_written(mode: str, half: int, count: int, expected: list[int]) -> None:
    assert list(with_border(range(count), half, mode)) == expected


def test_reflection_needs_one_frame_more_than_the_padding_and_unknown_modes_are_refused() -> None:
    with pytest.raises(ValueError, match="reflect padding of 2 needs at least 3 frames, got 2"):
        list(with_border(range(2), 2, "reflect"))
    with pytest.raises(ValueError, match="border mode must be one of release, replicate, reflect"):
        list(with_border(range(5), 2, "mirror"))


@pytest.mark.parametrize(
    ("half", "mode", "expected"),
    [
        (2, None, 5),
        (1, None, 3),
        (3, None, 7),
        (2, "release", 2),
        (3, "release", 3),
        (2, "replicate", 1),
        (1, "reflect", 2),
        (2, "reflect", 3),
        (3, "reflect", 4),
    ],
)
def test_the_fewest_frames_of_a_video(half: int, mode: str | None, expected: int) -> None:
    assert frames_needed(half, mode) == expected
    if mode is not None:  # that many frames give every frame an output
        outputs = len(list(with_border(range(expected), half, mode))) - 2 * half
        assert outputs == expected


class Parts(FanOut):
    """A fan-out into two halves of the channels, joined by concatenation."""

    parts_name = "halves"

    def split(self, frame: torch.Tensor) -> list[torch.Tensor]:
        return [frame[:, :1], frame[:, 1:]]

    def join(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(images, dim=1)


class Delay:
    """A runner that gives back each frame ``latency`` pushes later, with its tag."""

    def __init__(self, latency: int) -> None:
        self.latency, self.frames = latency, []

    def push(self, frame: torch.Tensor, tag: object = None) -> Restored | None:
        self.frames.append((tag, frame))
        if len(self.frames) <= self.latency:
            return None
        tag, frame = self.frames.pop(0)
        return Restored(tag, frame)


def test_a_fan_out_runs_one_runner_per_part_and_joins_their_outputs_with_the_tag() -> None:
    made: list[Delay] = []

    def new_runner() -> Delay:
        made.append(Delay(2))
        return made[-1]

    runner = Parts(new_runner)
    assert runner.latency == 2 and len(made) == 1  # asked before the first push: a runner is made to answer
    frames = [torch.full((1, 2, 2, 2), float(index)) for index in range(4)]
    outputs = [runner.push(frame, f"frame {index}") for index, frame in enumerate(frames)]
    assert len(made) == 3 and runner.runners == made[1:]  # one per part, made at the first push
    assert outputs[:2] == [None, None]
    assert [output.tag for output in outputs[2:]] == ["frame 0", "frame 1"]
    assert all(torch.equal(output.image, frames[index]) for index, output in enumerate(outputs[2:]))

    uneven = iter([Delay(1), Delay(2)])
    broken = Parts(lambda: next(uneven))
    broken.push(frames[0])
    with pytest.raises(RuntimeError, match="the halves' runners went out of step"):
        broken.push(frames[1])


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


@pytest.mark.parametrize("mode", ["release", "replicate", "reflect"])
def test_streaming_with_each_border_mode_equals_the_windows_of_the_padded_list(model: CDVD_TSP, mode: str) -> None:
    frames = clip(3, seed=3)
    padded = {
        "release": [0, 1, 0, 1, 2, 1, 2],
        "replicate": [0, 0, 0, 1, 2, 2, 2],
        "reflect": [2, 1, 0, 1, 2, 1, 0],
    }[mode]
    with torch.no_grad():
        expected = release_outputs(model, [frames[index] for index in padded])
        streamed = run_frames(StreamingRunner(model), with_border(frames, 2, mode))
        windowed = run_frames(WindowRunner(model), with_border(frames, 2, mode))
    assert len(streamed) == len(windowed) == 3
    for ours, window, theirs in zip(streamed, windowed, expected, strict=True):
        assert relative_error(ours, theirs) < 1e-5
        assert torch.equal(window, theirs)


def test_streaming_works_for_any_number_of_stages() -> None:
    model = seeded_model(seed=4, n_sequence=3)
    frames = clip(4, seed=4)
    with torch.no_grad():
        streamed = run_frames(StreamingRunner(model), frames)
        expected = release_outputs(model, frames)
    assert len(streamed) == len(expected) == 2
    for ours, theirs in zip(streamed, expected, strict=True):
        assert relative_error(ours, theirs) < 1e-5

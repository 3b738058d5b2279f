"""The Python API (code/cdvd_tsp): the same bytes as inference.py --input, streaming, and misuse in one line."""

import importlib.metadata
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_cdvd_tsp_names import TOP_LEVEL

from cdvd_tsp import DeblurError, Deblurrer
from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.data.video_io import VideoWriter, open_video
from cdvd_tsp.infer.planning import PRESETS
from cdvd_tsp.inference import main
from cdvd_tsp.utils.paths import from_repo
from conftest import save_seeded_weights, sharp_frames, write_image

DEMO = from_repo(PRESETS["DEMO"].model_path)
HEIGHT, WIDTH = 30, 42
"""Not multiples of 4: the frames are padded for the model and its outputs cropped back."""

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def deblurrer() -> Deblurrer:
    return Deblurrer.from_checkpoint("DEMO", device="cpu")


def video(count: int = 6) -> list[np.ndarray]:
    return sharp_frames(count, HEIGHT, WIDTH, seed=3)


def command_outputs(tmp_path: Path, frames: list[np.ndarray], *flags: str) -> list[np.ndarray]:
    """What ``inference.py --input`` writes for ``frames`` (a folder of PNGs) with the demo model and ``flags``."""
    folder, output = tmp_path / "frames", tmp_path / "command"
    for index, frame in enumerate(frames):
        write_image(folder / f"{index:05d}.png", frame)
    argv = ["--input", str(folder), "--output", str(output), "--model_path", str(DEMO), "--device", "cpu"]
    assert main([*argv, "--threads", str(torch.get_num_threads()), "--workers", "0", *flags]) == 0
    return [read_rgb(output / f"{index:05d}.png") for index in range(len(frames))]


def test_a_preset_name_loads_the_shipped_file_with_the_commands_defaults(deblurrer: Deblurrer) -> None:
    assert deblurrer.restorer.restoration.model_path == DEMO
    assert (deblurrer.n_stages, deblurrer.device.type, deblurrer.restorer.restoration.border_mode) == (
        2,
        "cpu",
        "release",
    )
    assert deblurrer.restorer.restoration.crop is False  # padded like --input, never cropped


def test_every_output_is_the_png_that_inference_writes_with_the_default_precision(
    deblurrer: Deblurrer, tmp_path: Path
) -> None:
    """The default precision is --input's (bf16 on native-bf16 CPUs, else fp32), for both."""
    frames = video()
    ours = list(deblurrer.deblur(frames))
    assert [image.shape for image in ours] == [(HEIGHT, WIDTH, 3)] * len(frames)
    assert all(image.dtype == np.uint8 for image in ours)
    theirs = command_outputs(tmp_path, frames)
    assert all(np.array_equal(mine, command) for mine, command in zip(ours, theirs, strict=True))
    assert not all(np.array_equal(output, frame) for output, frame in zip(ours, frames, strict=True))


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ({"precision": "fp32", "border_mode": "replicate"}, ["--precision", "fp32", "--border_mode", "replicate"]),
        (
            {"precision": "fp32", "tile": 24, "tile_overlap": 4},
            ["--precision", "fp32", "--tile", "24", "--tile_overlap", "4"],
        ),
    ],
    ids=["replicate", "tiles"],
)
def test_the_commands_options_give_the_commands_bytes(tmp_path: Path, options: dict, flags: list[str]) -> None:
    frames = video(3)
    ours = list(Deblurrer.from_checkpoint(DEMO, device="cpu", **options).deblur(iter(frames)))
    theirs = command_outputs(tmp_path, frames, *flags)
    assert all(np.array_equal(mine, command) for mine, command in zip(ours, theirs, strict=True))


def test_without_a_border_only_the_frames_with_a_full_window_get_an_output(tmp_path: Path) -> None:
    frames = video(6)
    ours = list(Deblurrer.from_checkpoint(DEMO, device="cpu", precision="fp32", border_mode=None).deblur(frames))
    assert len(ours) == 2  # frames 2 and 3 of six, for two stages
    theirs = command_outputs(tmp_path, frames, "--precision", "fp32")  # frames 2 and 3 are inner frames
    assert np.array_equal(ours[0], theirs[2]) and np.array_equal(ours[1], theirs[3])


def test_frames_are_read_as_the_outputs_are_taken_so_memory_does_not_grow_with_the_video(
    deblurrer: Deblurrer,
) -> None:
    taken: list[int] = []

    def frames() -> Iterator[np.ndarray]:
        for index, frame in enumerate(video(8)):
            taken.append(index)
            yield frame

    outputs = deblurrer.deblur(frames())
    read_before = []
    for _ in range(8):
        next(outputs)
        read_before.append(len(taken))
    assert read_before == [3, 4, 5, 6, 7, 8, 8, 8]  # output i once frame i + T is in (T = 2; release border)
    assert next(outputs, None) is None


def test_between_outputs_the_callers_code_runs_outside_inference_mode(deblurrer: Deblurrer) -> None:
    for _ in deblurrer.deblur(video(3)):
        assert not torch.is_inference_mode_enabled()
        assert torch.ones(1, requires_grad=True).requires_grad


def test_frames_as_other_libraries_hand_them_give_the_same_bytes(deblurrer: Deblurrer) -> None:
    """Views (flipped, cropped, Fortran order) and read-only arrays (a decoder's or a VapourSynth frame's) are
    restored as their contiguous copies are, without a warning."""
    frames = video(5)
    expected = list(deblurrer.deblur(frames))
    read_only = frames[3].copy()
    read_only.flags.writeable = False
    given = [
        frames[0][::-1, :, ::-1][::-1, :, ::-1],  # negative strides, undone
        np.pad(frames[1], ((1, 1), (2, 2), (0, 0)))[1:-1, 2:-2],  # a crop of a larger array
        np.asfortranarray(frames[2]),
        read_only,
        frames[4],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored = list(deblurrer.deblur(given))
    assert all(np.array_equal(ours, theirs) for ours, theirs in zip(restored, expected, strict=True))
    assert not read_only.flags.writeable


def test_videos_restored_interleaved_give_what_each_gives_alone(deblurrer: Deblurrer) -> None:
    """Each `deblur` call has its own state: two videos (of different sizes) taken in turns from one deblurrer."""
    first, second = video(4), sharp_frames(4, 28, 36, seed=5)
    alone = list(deblurrer.deblur(first)), list(deblurrer.deblur(second))
    interleaved: tuple[list, list] = ([], [])
    for one, other in zip(deblurrer.deblur(first), deblurrer.deblur(second), strict=True):
        interleaved[0].append(one)
        interleaved[1].append(other)
    for ours, theirs in zip(interleaved, alone, strict=True):
        assert len(ours) == 4 and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_folder_in_and_out_is_inference_s_input_and_output(deblurrer: Deblurrer, tmp_path: Path) -> None:
    frames = video(4)
    theirs = command_outputs(tmp_path, frames)
    output = deblurrer.deblur_path(tmp_path / "frames", tmp_path / "api")
    assert output == tmp_path / "api"
    assert sorted(path.name for path in output.glob("*.png")) == [f"{index:05d}.png" for index in range(4)]
    assert all(np.array_equal(read_rgb(output / f"{i:05d}.png"), theirs[i]) for i in range(4))
    assert (output / "results.json").is_file()


def test_a_video_file_in_and_out(deblurrer: Deblurrer, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, (32, 48), fps=10) as writer:
        for frame in sharp_frames(4, 32, 48):
            writer.write(frame)
    output = deblurrer.deblur_path(clip, tmp_path / "out.mkv", codec="vp9", quality=40)
    assert output.is_file() and len(open_video(output)) == 4
    with av.open(str(output)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
    with pytest.raises(DeblurError, match=r"^quality 99: h264 takes 0 \(best\) to 51"):
        deblurrer.deblur_path(clip, tmp_path / "other.mp4", quality=99)
    assert not (tmp_path / "other.mp4").exists()


def one_line_error(call: object) -> DeblurError:
    with pytest.raises(DeblurError) as raised:
        call()  # type: ignore[operator]
    message = str(raised.value)
    assert message and "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert len(traceback.extract_tb(raised.tb)) <= 5  # the test's call and the API's boundary: no deep traceback
    return raised.value


def test_misused_frames_raise_one_error_naming_the_argument(deblurrer: Deblurrer) -> None:
    good = video(3)
    bad_size = [good[0], good[1][:-2]]
    cases = {
        "frames[1]: 42x28, but frames[0] is 42x30; every frame of a video must have one size": bad_size,
        "frames[0]: dtype float32, not uint8 (H x W x 3 RGB, 0-255)": [good[0].astype(np.float32)],
        "frames[0]: shape (30, 42, 4), not H x W x 3 (RGB)": [np.dstack([good[0], good[0][..., :1]])],
        "frames[0]: shape (30, 42), not H x W x 3 (RGB)": [good[0][..., 0]],
        "frames[0]: a list, not a numpy array (H x W x 3 uint8 RGB)": [good[0].tolist()],
        "frames: empty; give at least one H x W x 3 uint8 frame": [],
        "frames: one frame, not an iterable of frames; pass [frame] for a video of one": good[0],
    }
    for message, frames in cases.items():
        assert str(one_line_error(lambda frames=frames: list(deblurrer.deblur(frames)))) == message


def test_too_small_or_too_short_a_video_is_refused(deblurrer: Deblurrer) -> None:
    tiny = [np.zeros((3, 8, 3), np.uint8)] * 5
    assert "frames[0]: frames of 8x3 are too small" in str(one_line_error(lambda: list(deblurrer.deblur(tiny))))
    one = video(1)
    error = one_line_error(lambda: list(deblurrer.deblur(one)))
    assert str(error) == "frames: has 1 frame(s); border_mode release needs at least 2 (2 stages)"
    unbordered = Deblurrer.from_checkpoint(DEMO, device="cpu", border_mode=None)
    error = one_line_error(lambda: list(unbordered.deblur(video(3))))
    assert str(error) == (
        "frames: has 3 frame(s); without border_mode a video needs at least 5 "
        "(2 stages; or pass border_mode to restore every frame)"
    )


def test_a_missing_or_unfit_checkpoint_or_a_bad_option_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.pt"
    error = one_line_error(lambda: Deblurrer.from_checkpoint(missing))
    assert str(error).startswith(f"model not found: {missing}; put the released nothing.pt there or pass checkpoint ")
    error = one_line_error(lambda: Deblurrer.from_checkpoint(tmp_path, device="cpu"))
    assert str(error).startswith(f"checkpoint {tmp_path}: is a folder, not a checkpoint file")
    unfit = tmp_path / "unfit.pt"
    torch.save({"conv.weight": torch.zeros(1)}, unfit)
    assert str(one_line_error(lambda: Deblurrer.from_checkpoint(unfit, device="cpu"))).startswith(f"{unfit}")
    poisoned = save_seeded_weights(tmp_path / "nan.pt")
    state = torch.load(poisoned, weights_only=True)
    state[next(iter(state))][0] = float("nan")
    torch.save(state, poisoned)
    assert "NaN" in str(one_line_error(lambda: Deblurrer.from_checkpoint(poisoned, device="cpu")))
    error = one_line_error(lambda: Deblurrer.from_checkpoint(DEMO, device="cpu", border_mode="mirror"))
    assert str(error).startswith("border_mode mirror: unknown; use one of release, replicate, reflect")
    error = one_line_error(lambda: Deblurrer.from_checkpoint(DEMO, device="cpu", tile=6))
    assert str(error).startswith("tile 6:")
    error = one_line_error(lambda: Deblurrer.from_checkpoint(DEMO, device="cpu", precision="fp32", flow_bf16="on"))
    assert str(error).startswith("flow_bf16 on: runs PWC-Net in bfloat16 under precision bf16")


def test_what_the_commands_parser_refuses_is_refused_naming_the_argument(deblurrer: Deblurrer, tmp_path: Path) -> None:
    """The API passes its options by the command's parser: its choices and types are checked all the same."""
    cases = {
        "device gpu: unknown; use one of auto, cpu, cuda": {"device": "gpu"},
        "self_ensemble x4: unknown; use one of x8, x16": {"self_ensemble": "x4"},
        "backend foo: unknown; use one of pytorch, onnxruntime": {"backend": "foo"},
        "batched_flows yes: unknown; use one of auto, on, off": {"batched_flows": "yes"},
        "window 'yes': give True or False": {"window": "yes"},
        "tile 6.5: not a whole number": {"tile": 6.5},
        "tile True: not a whole number": {"tile": True},
        "checkpoint 3: not a path (a string or a pathlib.Path)": {"checkpoint": 3},
    }
    for message, options in cases.items():
        given = {"checkpoint": DEMO, "device": "cpu"} | options
        assert str(one_line_error(lambda given=given: Deblurrer.from_checkpoint(**given))) == message
    folder = tmp_path / "frames"
    cases = {
        "input 3: not a path (a string or a pathlib.Path)": (3, tmp_path / "out", {}),
        "output 4: not a path (a string or a pathlib.Path)": (folder, 4, {}),
        "codec h266: unknown; use one of h264, vp9": (folder, tmp_path / "out.mp4", {"codec": "h266"}),
        "quality 'high': not a whole number": (folder, tmp_path / "out", {"quality": "high"}),
    }
    for message, (source, target, options) in cases.items():
        call = lambda source=source, target=target, options=options: deblurrer.deblur_path(source, target, **options)  # noqa: E731
        assert str(one_line_error(call)) == message
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_an_output_that_turns_non_finite_stops_the_video_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_inference_errors import poisoned_at

    from cdvd_tsp.infer import restorer

    monkeypatch.setattr(restorer, "runner_factory", poisoned_at(1, float("nan")))
    deblurrer = Deblurrer.from_checkpoint(DEMO, device="cpu", precision="fp32")
    outputs = deblurrer.deblur(video(4))
    assert next(outputs).shape == (HEIGHT, WIDTH, 3)  # frame 0
    error = one_line_error(lambda: next(outputs))
    assert str(error).startswith("frames: the output of frame 1 holds NaN or inf values; nothing of it was written")


def test_the_api_s_error_is_the_commands_user_error() -> None:
    from cdvd_tsp.utils.errors import UserError

    assert issubclass(DeblurError, UserError)


def installed_by_pip() -> bool:
    """Whether pip installed this project here (its record, not the egg-info an install leaves in the clone)."""
    found = [dist for dist in importlib.metadata.distributions() if dist.metadata["Name"] == "cdvd-tsp"]
    return any(dist.read_text("direct_url.json") is not None for dist in found)


@pytest.mark.skipif(not installed_by_pip(), reason="the project is not installed (python -m pip install -e .)")
def test_the_installed_package_imports_from_any_folder_and_installs_both_commands(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    code = (
        "import importlib.util\n"
        "from cdvd_tsp import Deblurrer, inference, main\n"
        "print(Deblurrer.__module__)\n"
        f"print([name for name in {TOP_LEVEL!r} if importlib.util.find_spec(name) is not None])\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines() == ["cdvd_tsp.deblurrer", "[]"]  # one top-level name installed: cdvd_tsp
    scripts = Path(sys.executable).parent
    for command, first in (("cdvd-tsp-infer", "usage: cdvd-tsp-infer"), ("cdvd-tsp-train", "usage: cdvd-tsp-train")):
        shown = subprocess.run(
            [scripts / command, "--help"], cwd=tmp_path, env=environment, capture_output=True, text=True
        )
        assert shown.returncode == 0 and shown.stdout.startswith(first), shown.stderr
    refused = subprocess.run(
        [scripts / "cdvd-tsp-infer", "--input", str(tmp_path / "none")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith("error: ")

"""inference.py with a model of any number of stages T: checkpoints of T = 1 and T = 3 written by main.py evaluate
and deblur with their own window of 2T + 1 frames (streaming equal to the window runner, equal to the library's
runner), the smallest video and the log follow T, and --n_stages says T for files that do not record it."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.infer.restorer import load_model
from cdvd_tsp.inference import main
from cdvd_tsp.model.checkpoint import read_checkpoint
from cdvd_tsp.model.streaming import StreamingRunner, with_border
from cdvd_tsp.utils.cpu import bf16_support
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.image import to_tensor, to_uint8
from conftest import evaluation_argv, make_dataset, run_frames, sharp_frames, train_tiny_checkpoint, write_image

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = (24, 28)
"""Frames of the evaluated clips: multiples of 4 (no crop), enough for the metrics' 19 x 19."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """model_latest.pt of a T = 1 and a T = 3 training run (recording n_sequence 3 and 7)."""
    root = tmp_path_factory.mktemp("stages")
    return {stages: train_tiny_checkpoint(root / f"t{stages}", stages) for stages in (1, 3)}


BF16_BOUND, BF16_MEAN_BOUND = 8, 1.0
"""bf16 against float32 on these tiny trained models: at most 8 grey levels at any pixel, 1 on average (seen: 4 at
most, 0.23 on average; bfloat16 keeps 8 bits of mantissa: a few grey levels at the brightest pixels)."""


def evaluate(data: Path, weights: Path, result: Path, *flags: str) -> dict:
    assert main([*evaluation_argv(data, weights, result), "--workers", "0", *flags]) == 0
    return json.loads((result / "results.json").read_text())


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {path.stem: read_rgb(path) for path in sorted(folder.glob("*.png"))}


def library_outputs(weights: Path, stages: int, frames: list[np.ndarray], border: bool) -> list[np.ndarray]:
    """What the library's streaming runner gives with the model of ``stages`` stages."""
    model = load_model(weights, torch.device("cpu"), stages)
    tensors = [to_tensor(frame) for frame in frames]
    with torch.inference_mode():
        outputs = run_frames(StreamingRunner(model), with_border(tensors, stages) if border else tensors)
    return [to_uint8(output) for output in outputs]


def assert_same_images(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs) > 0
    for mine, other in zip(ours, theirs, strict=True):
        assert np.abs(mine.astype(int) - other.astype(int)).max() <= 1  # float32 paths: a rounding step at most


@pytest.mark.parametrize("stages", [1, 3])
def test_a_checkpoint_of_any_stages_evaluates_with_its_own_window(
    tmp_path: Path, checkpoints: dict[int, Path], stages: int
) -> None:
    weights = checkpoints[stages]
    assert read_checkpoint(weights)[1] == 2 * stages + 1
    count = 2 * stages + 3  # three frames with a full window
    data = make_dataset(tmp_path / "data", {"clip": count}, *SIZE)
    streamed = evaluate(data, weights, tmp_path / "streamed")
    windowed = evaluate(data, weights, tmp_path / "windowed", "--window")
    names = [f"{index:05d}" for index in range(stages, count - stages)]
    assert list(streamed["videos"]["clip"]["frames"]) == names == list(pngs(tmp_path / "streamed" / "clip"))
    assert streamed["settings"]["n_seq"] == windowed["settings"]["n_seq"] == 2 * stages + 1
    ours = list(pngs(tmp_path / "streamed" / "clip").values())
    assert_same_images(list(pngs(tmp_path / "windowed" / "clip").values()), ours)
    frames = [read_rgb(path) for path in sorted((data / "blur" / "clip").iterdir())]
    assert_same_images(ours, library_outputs(weights, stages, frames, border=False))
    (log,) = (tmp_path / "streamed").glob("inference_log_*.txt")
    assert f"n_seq: {2 * stages + 1}" in log.read_text().splitlines()


@pytest.mark.parametrize("stages", [1, 3])
def test_a_checkpoint_of_any_stages_deblurs_every_frame(
    tmp_path: Path, checkpoints: dict[int, Path], stages: int
) -> None:
    data = make_dataset(tmp_path / "data", {"clip": stages + 1}, *SIZE, gt=False)
    folder, output = data / "blur" / "clip", tmp_path / "out"
    argv = ["--input", str(folder), "--output", str(output), "--model_path", str(checkpoints[stages])]
    # float32, as the library's outputs (--input's default is bf16 on CPUs with native bfloat16: see below)
    assert main([*argv, "--device", "cpu", "--workers", "0", "--precision", "fp32"]) == 0
    ours = pngs(output)
    assert list(ours) == [f"{index:05d}" for index in range(stages + 1)]
    frames = [read_rgb(path) for path in sorted(folder.iterdir())]
    assert_same_images(list(ours.values()), library_outputs(checkpoints[stages], stages, frames, border=True))
    report = json.loads((output / "results.json").read_text())
    assert (report["settings"]["n_seq"], report["settings"]["border_mode"]) == (2 * stages + 1, "release")


@pytest.mark.skipif(not bf16_support().native, reason="needs a CPU with native bfloat16 (AVX512-BF16, AMX-BF16)")
@pytest.mark.parametrize("stages", [1, 3])
def test_the_bf16_default_of_a_native_bf16_cpu_stays_near_float32(
    tmp_path: Path, checkpoints: dict[int, Path], stages: int
) -> None:
    """--input's default on such a CPU is bf16 (recorded as such); its frames are bf16's, within BF16_BOUND grey
    levels of the float32 library's, and not all equal to them."""
    frames = sharp_frames(stages + 2, *SIZE, seed=5)
    folder, output = tmp_path / "clip", tmp_path / "out"
    for index, frame in enumerate(frames):
        write_image(folder / f"{index:05d}.png", frame)
    argv = ["--input", str(folder), "--output", str(output), "--model_path", str(checkpoints[stages])]
    assert main([*argv, "--device", "cpu", "--workers", "0"]) == 0
    assert json.loads((output / "results.json").read_text())["settings"]["precision"] == "bf16"
    ours = list(pngs(output).values())
    reference = library_outputs(checkpoints[stages], stages, frames, border=True)
    differences = [np.abs(mine.astype(int) - other.astype(int)) for mine, other in zip(ours, reference, strict=True)]
    assert max(int(difference.max()) for difference in differences) <= BF16_BOUND
    assert max(float(difference.mean()) for difference in differences) <= BF16_MEAN_BOUND
    assert any(difference.any() for difference in differences)  # bf16 indeed, not float32


def test_n_stages_names_the_window_of_a_file_without_a_record_and_may_not_contradict_one(
    tmp_path: Path, checkpoints: dict[int, Path]
) -> None:
    weights = checkpoints[1]
    data = make_dataset(tmp_path / "data", {"clip": 5}, *SIZE)
    with pytest.raises(UserError) as refused:
        main([*evaluation_argv(data, weights, tmp_path / "refused"), "--n_stages", "3"])
    assert str(refused.value) == f"--n_stages 3: {weights} records n_sequence 3 (--n_stages 1); leave --n_stages out"
    assert not (tmp_path / "refused").exists()
    recorded = evaluate(data, weights, tmp_path / "recorded", "--n_stages", "1")  # agreeing with the record
    assert recorded["settings"]["n_seq"] == 3
    plain = tmp_path / "plain.pt"
    torch.save(dict(read_checkpoint(weights)[0]), plain)  # the same weights without the record, as released
    assert read_checkpoint(plain)[1] is None
    given = evaluate(data, plain, tmp_path / "given", "--n_stages", "1")
    default = evaluate(data, plain, tmp_path / "default")  # the released window: five frames
    assert (given["settings"]["n_seq"], default["settings"]["n_seq"]) == (3, 5)
    assert list(given["videos"]["clip"]["frames"]) == ["00001", "00002", "00003"]
    assert list(default["videos"]["clip"]["frames"]) == ["00002"]
    for frame in given["videos"]["clip"]["frames"]:
        assert np.array_equal(
            read_rgb(tmp_path / "given" / "clip" / f"{frame}.png"),
            read_rgb(tmp_path / "recorded" / "clip" / f"{frame}.png"),
        )
    with pytest.raises(UserError, match=r"^--n_stages 0: give 1 or more"):
        main([*evaluation_argv(data, plain, tmp_path / "zero"), "--n_stages", "0"])


@pytest.mark.parametrize(
    ("flags", "count", "message"),
    [
        ([], 6, "clip: has 6 frame(s); without --border a video needs at least 7 (3 stages"),
        (["--border"], 2, "clip: has 2 frame(s); --border_mode release needs at least 3 (3 stages)"),
        (["--border", "--border_mode", "reflect"], 3, "clip: has 3 frame(s); --border_mode reflect needs at least 4"),
    ],
)
def test_the_smallest_video_follows_the_stages(
    tmp_path: Path, checkpoints: dict[int, Path], flags: list[str], count: int, message: str
) -> None:
    data = make_dataset(tmp_path / "data", {"clip": count}, *SIZE)
    with pytest.raises(UserError, match="^" + re.escape(f"{data / 'blur'}/{message}")):  # the folder, named
        main([*evaluation_argv(data, checkpoints[3], tmp_path / "result"), *flags])
    assert not (tmp_path / "result").exists()

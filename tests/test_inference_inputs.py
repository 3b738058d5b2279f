"""inference.py end to end on inputs that are not what they seem: sharp frames named unlike the blurred ones,
weights with NaN, frames whose pixels a viewer shows otherwise than they are stored."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.inference import main
from cdvd_tsp.model.checkpoint import CheckpointError
from cdvd_tsp.utils.errors import UserError
from conftest import evaluation_argv, make_dataset, save_seeded_weights, sharp_frames

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=3)


def test_sharp_frames_of_other_names_are_refused_before_anything_is_written(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    gt = data / "gt" / "v"
    (gt / "00002.png").rename(gt / "00009.png")  # one sharp frame gone and another there: paired by position,
    # blurred frames 2 to 4 would be scored against the sharp frames of 3, 4 and 2
    with pytest.raises(UserError) as caught:
        main(evaluation_argv(data, weights, tmp_path / "result"))
    assert str(caught.value) == (
        f"{data}: video 'v' has 5 blurred and 5 sharp frames, but not of the same names: no sharp frame for "
        "blur/v/00002.png; no blurred frame for gt/v/00009.png (sharp and blurred frames pair by "
        "name, without the extension)"
    )
    assert not (tmp_path / "result").exists()


def test_weights_with_nan_are_refused_naming_the_tensor(tmp_path: Path, weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state["recons_net.outBlock.3.weight"].view(-1)[7] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(CheckpointError, match=r"diverged\.pt: tensor recons_net\.outBlock\.3\.weight holds 1 NaN"):
        main(evaluation_argv(data, tmp_path / "diverged.pt", tmp_path / "result"))
    assert not (tmp_path / "result").exists()


def exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_a_phone_s_portrait_frames_come_out_upright_and_each_run_warns_once(
    tmp_path: Path, weights: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    shown = sharp_frames(3, 24, 20)  # portrait: 24 rows, 20 columns
    for index in (0, 1):  # stored landscape, turned upright by their EXIF orientation (6: rotate clockwise)
        stored = np.ascontiguousarray(np.rot90(shown[index], 1))
        Image.fromarray(stored).save(frames / f"{index}.jpg", exif=exif_orientation(6), quality=98)
    rgba = np.concatenate([shown[2], np.full((24, 20, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba).save(frames / "2.png")
    for run in ("first", "second"):  # two runs in one process: each is told
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            main(
                [
                    "--input",
                    str(frames),
                    "--output",
                    str(tmp_path / run),
                    "--model_path",
                    str(weights),
                    "--device",
                    "cpu",
                ]
            )
        alpha = [message for message in caplog.messages if "alpha channel" in message]
        assert alpha == [
            f"{frames}: 1 of 3 frames have an alpha channel, which is dropped (the stored colours are kept, "
            f"transparent pixels included); first: {frames / '2.png'} (said once per run)"
        ]
        for index in range(3):
            assert read_rgb(tmp_path / run / f"{index}.png").shape == (24, 20, 3)
    assert np.abs(read_rgb(frames / "0.jpg").astype(int) - shown[0]).mean() < 2  # upright, as the scene was

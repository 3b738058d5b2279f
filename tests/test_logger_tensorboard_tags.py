"""--tensorboard, what tests/test_logger_tensorboard.py leaves open: the exact tags, steps and values `Curves` writes
for any loss terms and learning-rate groups; in a training run, each loss term's own values (every step, against the
epoch means of the run's history), and the validation images: the first three windows of the validation set, each
blurred | restored | sharp of that window's center frame.

Read back with TensorBoard's own reader, as tests/test_logger_tensorboard.py does.
"""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.data.videodata import SamplingOptions, VideoData
from cdvd_tsp.logger.tensorboard import TENSORBOARD_DIR, Curves
from conftest import TINY_TRAINING, make_dataset

pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")


def events(folder: Path) -> dict[str, list]:
    """(step, value) of every scalar and (step, decoded RGB image) of every image."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    found: dict[str, list] = {
        tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]
    }
    for tag in reader.Tags()["images"]:
        found[tag] = [
            (event.step, cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[..., ::-1])
            for event in reader.Images(tag)
        ]
    return found


def test_curves_write_each_term_group_and_step_under_its_own_tag(tmp_path: Path) -> None:
    curves = Curves(tmp_path, first_step=4)
    curves.training_steps(
        4, ["L1", "HEM", "Total"], [[0.5, 0.25, 1.0], [0.125, 0.75, 1.625]], {"a": 1e-3, "b": 2e-6}, [0.5, 1.5]
    )
    curves.training_steps(6, ["L1", "HEM", "Total"], [[0.0625, 2.0, 4.0625]], {"a": 1e-3, "b": 2e-6}, [2.5])
    images = [torch.full((3, 2, 6), 0.0), torch.full((3, 2, 6), 1.0)]
    curves.validation(6, 27.5, 30.25, images)
    curves.close()
    found = events(tmp_path)
    assert found.keys() == {
        *("loss/L1", "loss/HEM", "loss/Total", "learning_rate/a", "learning_rate/b", "time/step_seconds"),
        *("validation/psnr_stage1", "validation/psnr_final", "validation/window_0", "validation/window_1"),
    }
    assert found["loss/L1"] == [(4, 0.5), (5, 0.125), (6, 0.0625)]
    assert found["loss/HEM"] == [(4, 0.25), (5, 0.75), (6, 2.0)]
    assert found["loss/Total"] == [(4, 1.0), (5, 1.625), (6, 4.0625)]
    assert found["learning_rate/a"] == [(step, pytest.approx(1e-3)) for step in (4, 5, 6)]
    assert found["learning_rate/b"] == [(step, pytest.approx(2e-6)) for step in (4, 5, 6)]
    assert found["time/step_seconds"] == [(4, 0.5), (5, 1.5), (6, 2.5)]
    assert found["validation/psnr_stage1"] == [(6, 27.5)] and found["validation/psnr_final"] == [(6, 30.25)]
    for index, value in enumerate((0, 255)):
        ((step, image),) = found[f"validation/window_{index}"]
        assert step == 6 and image.shape == (2, 6, 3) and np.all(image == value)


def test_only_the_terms_and_groups_given_are_logged(tmp_path: Path) -> None:
    curves = Curves(tmp_path, first_step=1)
    curves.training_steps(1, ["L1"], [[0.5]], {"restoration_net": 1e-4}, [0.5])
    curves.close()
    assert sorted(events(tmp_path)) == ["learning_rate/restoration_net", "loss/L1", "time/step_seconds"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny run of one epoch of two steps (a log line each), validated on two videos of 4 frames: 4 windows."""
    root = tmp_path_factory.mktemp("tags")
    make_dataset(root / "train", {"video0": 3, "video1": 3}, height=32, width=40)
    validation = make_dataset(root / "test", {"video0": 4, "video1": 4}, height=24, width=32, seed=7)
    argv = [*TINY_TRAINING, "--test_every", "2", "--epochs", "1", "--tensorboard", "--flow_lr", "0"]
    argv += ["--dir_data", str(root / "train"), "--dir_data_test", str(validation)]
    assert train_main.main([*argv, "--experiment_dir", str(root / "runs"), "--save", "tags"]) == 0
    return root / "runs" / "tags", validation


def test_each_loss_term_logs_its_own_values_every_step(run: tuple[Path, Path]) -> None:
    folder, _ = run
    found = events(folder / TENSORBOARD_DIR)
    history = torch.load(folder / "state.pt", weights_only=True)["history"]
    assert history["loss_names"] == ["L1", "HEM", "Total"]
    ((l1, hem, total),) = history["loss"]
    for tag, mean in (("loss/L1", l1), ("loss/HEM", hem), ("loss/Total", total)):
        assert [step for step, _ in found[tag]] == [1, 2], tag
        assert sum(value for _, value in found[tag]) / 2 == pytest.approx(mean, rel=1e-6), tag
    # the terms are different numbers: a term logged under another's name shows
    assert len({round(mean, 6) for mean in (l1, hem, total)}) == 3


def test_the_first_three_validation_windows_are_shown_blurred_restored_sharp(run: tuple[Path, Path]) -> None:
    folder, validation = run
    found = events(folder / TENSORBOARD_DIR)
    windows = sorted(tag for tag in found if tag.startswith("validation/window_"))
    assert windows == ["validation/window_0", "validation/window_1", "validation/window_2"]  # of 4
    history = torch.load(folder / "state.pt", weights_only=True)["history"]
    assert found["validation/psnr_final"] == [(2, pytest.approx(history["psnr"][0], abs=1e-5))]
    assert found["validation/psnr_stage1"] == [(2, pytest.approx(history["psnr_stage1"][0], abs=1e-5))]
    windows_set = VideoData(validation, SamplingOptions(n_sequence=3, size_must_mode=4), train=False)
    for index, tag in enumerate(windows):
        ((step, image),) = found[tag]
        blur, gt, _ = windows_set[index]
        assert step == 2 and image.shape == (24, 96, 3)
        for third, frame in ((0, blur[1]), (2, gt[1])):  # the center frame of the window
            expected = np.round(frame.permute(1, 2, 0).numpy() * 255)
            assert np.abs(image[:, 32 * third : 32 * (third + 1)] - expected).max() <= 1, (tag, third)
        restored = image[:, 32:64].astype(np.int64)
        assert not np.array_equal(restored, image[:, :32]) and not np.array_equal(restored, image[:, 64:])

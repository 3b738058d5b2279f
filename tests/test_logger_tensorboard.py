"""--tensorboard: the curves of a tiny run, read back with TensorBoard's own reader; a run stopped by SIGTERM, then
killed while committing (its event files holding steps after its last commit), then resumed, shows each step once
with the values of an uninterrupted run.

Tiny runs as in tests/test_main_preemption.py: a one-stage model, 32 x 32 crops, two epochs of three steps; a log
line every second step, so that the curves are written from the steps gathered between reads.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.logger.tensorboard import TENSORBOARD_DIR
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.utils import atomic
from cdvd_tsp.utils.errors import Stopped
from cdvd_tsp.utils.paths import REPO_ROOT
from conftest import assert_same_training, run_folder, tiny_training_argv

pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")

STEPS = ["--test_every", "3", "--epochs", "2", "--flow_lr", "0", "--print_every", "2", "--tensorboard"]
LOSS_TAGS = ("loss/L1", "loss/HEM", "loss/Total")
OTHER_TAGS = ("learning_rate/restoration_net", "learning_rate/flow_net", "time/step_seconds")
VALIDATION_TAGS = ("validation/psnr_stage1", "validation/psnr_final")


class Killed(BaseException):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return tiny_training_argv(tmp_path_factory.mktemp("tensorboard"), *STEPS)


def train(argv: list[str], save: str) -> int:
    return train_main.main([*argv, "--save", save, "--resume"])


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every scalar, and (step, height, width) of every image, as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    tags = reader.Tags()
    found: dict[str, list] = {
        tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in tags["scalars"]
    }
    for tag in tags["images"]:
        found[tag] = [(event.step, event.height, event.width) for event in reader.Images(tag)]
    return found


@pytest.fixture(scope="module")
def reference(argv: list[str]) -> Path:
    assert train(argv, "reference") == 0
    return run_folder(argv, "reference")


def test_an_uninterrupted_run_logs_every_step_and_each_validation(reference: Path) -> None:
    found = curves(reference)
    assert sorted(found) == sorted([*LOSS_TAGS, *OTHER_TAGS, *VALIDATION_TAGS, "validation/window_0"])
    for tag in (*LOSS_TAGS, *OTHER_TAGS):
        assert [step for step, _ in found[tag]] == [1, 2, 3, 4, 5, 6], tag
    assert [rate for _, rate in found["learning_rate/restoration_net"]] == pytest.approx([1e-3] * 3 + [5e-4] * 3)
    assert [rate for _, rate in found["learning_rate/flow_net"]] == [0.0] * 6
    assert all(seconds > 0 for _, seconds in found["time/step_seconds"])
    history = torch.load(reference / "state.pt", weights_only=True)["history"]
    assert [step for step, _ in found["validation/psnr_final"]] == [3, 6]
    assert [value for _, value in found["validation/psnr_final"]] == pytest.approx(history["psnr"], abs=1e-5)
    assert [value for _, value in found["validation/psnr_stage1"]] == pytest.approx(history["psnr_stage1"], abs=1e-5)
    # one validation window of 32 x 32 (the set has one): blurred | restored | sharp side by side
    assert found["validation/window_0"] == [(3, 32, 96), (6, 32, 96)]
    # the epoch's mean loss is the mean of its steps' curve
    means = [sum(value for step, value in found["loss/Total"] if first <= step < first + 3) / 3 for first in (1, 4)]
    assert means == pytest.approx([losses[-1] for losses in history["loss"]], rel=1e-6)


def test_stopped_killed_while_committing_and_resumed_each_step_is_there_once(argv: list[str], reference: Path) -> None:
    """SIGTERM after step 2 (committed there); resumed, SIGTERM after step 5 and a kill during that commit: the
    event files hold steps 3 to 5 and the validation after step 3, past the last commit (step 3 and epoch 1);
    resumed again, the run ends with each step once and the uninterrupted run's values."""
    run = run_folder(argv, "stopped")
    steps = []
    real_optimise, real_rename = TrainStep.optimise, atomic.rename

    def optimise(self: TrainStep, total: torch.Tensor) -> None:
        real_optimise(self, total)
        steps.append(1)
        if len(steps) in (2, 5):
            signal.raise_signal(signal.SIGTERM)

    def rename(source: Path, target: Path) -> None:
        if Path(target).name == ".state.pt.manifest.json" and len(steps) == 5:
            assert "inside" in json.loads(Path(source).read_text())["meta"]
            raise Killed
        real_rename(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainStep, "optimise", optimise)
        patch.setattr(atomic, "rename", rename)
        with pytest.raises(Stopped):
            train(argv, "stopped")
        assert [step for step, _ in curves(run)["loss/Total"]] == [1, 2]
        with pytest.raises(Killed):
            train(argv, "stopped")
    before = curves(run)
    assert [step for step, _ in before["loss/Total"]] == [1, 2, 3, 4, 5]
    assert torch.load(run / "state.pt", weights_only=True)["epoch"] == 1  # the commit at step 5 did not happen
    assert train(argv, "stopped") == 0
    assert_same_training(run, reference)
    assert len(list((run / TENSORBOARD_DIR).iterdir())) == 3  # one event file per start
    found, expected = curves(run), curves(reference)
    assert sorted(found) == sorted(expected)
    for tag in (*LOSS_TAGS, *VALIDATION_TAGS, "learning_rate/restoration_net", "validation/window_0"):
        assert found[tag] == expected[tag], tag  # the same steps, once each, with the same values


def test_tensorboard_is_imported_only_for_the_flag() -> None:
    code = (
        "import sys; sys.path.insert(0, 'code')\n"
        "import cdvd_tsp.main, cdvd_tsp.trainer.trainer, cdvd_tsp.logger.tensorboard\n"
        "print(sorted(name for name in sys.modules if 'tensorboard' in name and not name.startswith('cdvd_tsp.')))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"

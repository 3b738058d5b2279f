"""The training step's speed options: --channels_last, --optimizer_impl, --compile's checks, --amp fp16's loss scaler
in the resumable state; each one keeps a stopped and resumed run equal to an uninterrupted one.

Tiny runs as in tests/test_main_preemption.py: a one-stage model, 32 x 32 crops, two epochs of three steps.
"""

import argparse
import signal
from pathlib import Path

import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.data.loaders import build_datasets
from cdvd_tsp.logger.experiment import Experiment
from cdvd_tsp.loss import Loss
from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.option import parse_args
from cdvd_tsp.trainer.model_setup import build_model, make_optimizer, set_optimizer_implementation, step_options
from cdvd_tsp.trainer.step import TrainStep
from cdvd_tsp.trainer.trainer import Trainer
from cdvd_tsp.utils.errors import Stopped, UserError
from cdvd_tsp.utils.runtime import Runtime
from conftest import TINY_TRAINING, assert_same_training, run_folder, tiny_training_argv

pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")

STEPS = ["--test_every", "3", "--epochs", "2", "--flow_lr", "0"]
FAST = ["--channels_last", "all", "--optimizer_impl", "fused"]


@pytest.fixture(scope="module")
def argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return tiny_training_argv(tmp_path_factory.mktemp("options"), *STEPS)


def train(argv: list[str], save: str, *flags: str) -> int:
    return train_main.main([*argv, *flags, "--save", save, "--resume"])


def test_bad_values_are_one_line_errors_naming_the_flag(capsys: pytest.CaptureFixture) -> None:
    for flag, value in (("--channels_last", "nhwc"), ("--optimizer_impl", "apex")):
        with pytest.raises(SystemExit) as exit_status:
            parse_args(["--cpu", flag, value])
        assert exit_status.value.code == 2
        assert f"argument {flag}: invalid choice: '{value}'" in capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(UserError, match=r"^--compile and --n_GPUs 2 exclude each other"):
        parse_args(["--compile", "--n_GPUs", "2"])


def test_tensorboard_without_its_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "tensorboard" else real(name))
    with pytest.raises(UserError, match=r"^--tensorboard: the tensorboard package is not installed"):
        parse_args(["--cpu", "--tensorboard"])
    parse_args(["--cpu"])  # without the flag nothing needs it


def test_channels_last_modes_lay_out_the_nets() -> None:
    assert step_options("off") == StepOptions()
    assert step_options("restoration") == StepOptions(channels_last_restoration=True)
    assert step_options("flow") == StepOptions(channels_last_flow=True)
    assert step_options("all") == StepOptions(channels_last_flow=True, channels_last_restoration=True)


def options(*flags: str) -> argparse.Namespace:
    return parse_args([*TINY_TRAINING, *flags])


def test_optimizer_implementations_and_a_resume_that_changes_it() -> None:
    model = build_model(options(), weights_follow=True)
    for implementation, foreach, fused in (("default", None, None), ("for", False, None), ("foreach", True, None)):
        group = make_optimizer(model, options("--optimizer_impl", implementation)).param_groups[0]
        assert (group["foreach"], group["fused"]) == (foreach, fused), implementation
    saved = make_optimizer(model, options("--optimizer_impl", "for"))
    model(torch.rand(1, 3, 3, 32, 32)).__getitem__(0).mean().backward()
    saved.step()
    resumed = make_optimizer(model, options("--optimizer_impl", "fused"))
    resumed.load_state_dict(saved.state_dict())
    assert resumed.param_groups[0]["fused"] is None  # load_state_dict took the saved run's switches
    set_optimizer_implementation(resumed, "fused")
    assert all(group["fused"] is True and group["foreach"] is None for group in resumed.param_groups)
    first = next(model.recons_net.parameters())
    assert resumed.state[first]["step"].dtype == torch.float32 and float(resumed.state[first]["step"]) == 1.0
    resumed.step()  # the fused kernel takes the loaded state
    assert float(resumed.state[first]["step"]) == 2.0


@pytest.fixture(scope="module")
def fast_reference(argv: list[str]) -> Path:
    """The uninterrupted run with channels_last everywhere and the fused Adam; it checks they are in use."""
    layouts: list[bool] = []
    with pytest.MonkeyPatch.context() as patch:
        real = TrainStep.compute_loss

        def compute_loss(self: TrainStep, blur: torch.Tensor, gt: torch.Tensor) -> tuple:
            model = self.model
            hook = model.recons_net.register_forward_pre_hook(
                lambda _, inputs: layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
            )
            assert all(group["fused"] for group in self.optimizer.param_groups)
            try:
                return real(self, blur, gt)
            finally:
                hook.remove()

        patch.setattr(TrainStep, "compute_loss", compute_loss)
        assert train(argv, "fast", *FAST) == 0
    assert layouts and all(layouts)
    return run_folder(argv, "fast")


def test_a_run_with_the_fast_options_stopped_by_sigterm_resumes_exactly(argv: list[str], fast_reference: Path) -> None:
    real, done = TrainStep.optimise, []

    def optimise(self: TrainStep, total: torch.Tensor) -> None:
        real(self, total)
        done.append(1)
        if len(done) == 4:  # the first step of epoch 2
            signal.raise_signal(signal.SIGTERM)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainStep, "optimise", optimise)
        with pytest.raises(Stopped):
            train(argv, "fast_stopped", *FAST)
    assert torch.load(run_folder(argv, "fast_stopped") / "state.pt", weights_only=True)["inside"]["batches"] == 1
    assert train(argv, "fast_stopped") == 0  # the options come back from the checkpoint
    assert_same_training(run_folder(argv, "fast_stopped"), fast_reference)


def test_the_fp16_loss_scaler_is_saved_and_restored(argv: list[str], tmp_path: Path) -> None:
    """GradScaler's state (the scale and its growth tracker) goes into the resumable state and comes back. Built
    directly: --amp fp16 is refused on the CPU by the options, but its scaler works there."""
    args = parse_args(argv[: argv.index("--experiment_dir")])
    args.amp = "fp16"
    train_set, test_set = build_datasets(args, train=True)

    def trainer() -> Trainer:
        return Trainer(
            args, Runtime(device=torch.device("cpu")), build_model(args, True), Loss(args.loss), train_set, test_set,
            Experiment(tmp_path / "unused", writes=False),
        )  # fmt: skip

    first = trainer()
    assert first.step.scaler.is_enabled()
    first.step.scaler.scale(torch.ones(()))  # the scaler's state is made at its first use
    first.step.scaler.update(new_scale=512.0)  # as after seven overflows
    saved = first.state(1)
    scaler = first.step.scaler.state_dict()
    assert saved["scaler"] == scaler and scaler != torch.amp.GradScaler("cpu").state_dict()  # it moved
    second = trainer()
    second.restore(saved)
    assert second.step.scaler.state_dict() == scaler

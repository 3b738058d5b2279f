"""End-to-end training runs of main.py on tiny generated clips (CPU, a one-stage model, one step per epoch)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cdvd_tsp import main as train_main
from cdvd_tsp.loss import Loss
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import CheckpointError, load_weights, read_checkpoint
from cdvd_tsp.trainer.model_setup import model_summary
from cdvd_tsp.trainer.trainer import TrainingDiverged
from cdvd_tsp.utils import atomic
from cdvd_tsp.utils.errors import UserError
from conftest import TINY_TRAINING, make_dataset

LOSS_NAMES = ["L1", "HEM", "Total"]


pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")


def tiny_model() -> CDVD_TSP:
    return CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("data")
    make_dataset(root / "train", {"video0": 3, "video1": 3}, height=32, width=40)
    make_dataset(root / "test", {"video0": 4}, height=32, width=32, seed=7)
    return ["--dir_data", str(root / "train"), "--dir_data_test", str(root / "test")]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiment")


def train(data: list[str], experiments: Path, save: str, *flags: str) -> int:
    return train_main.main([*TINY_TRAINING, *data, "--experiment_dir", str(experiments), "--save", save, *flags])


def resume(experiments: Path, save: str, *flags: str) -> int:
    """Continue a run naming only the run: every other option (device, data, epochs...) comes from its checkpoint."""
    return train_main.main(["--experiment_dir", str(experiments), "--save", save, "--resume", *flags])


@pytest.fixture(scope="module")
def uninterrupted(data: list[str], experiments: Path) -> Path:
    """Two epochs in one go, with every optional output."""
    assert train(data, experiments, "full", "--epochs", "2", "--save_images", "--save_middle_models") == 0
    return experiments / "full"


class Killed(BaseException):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def killed_run(data: list[str], experiments: Path) -> Path:
    """A two-epoch run killed while saving its second epoch: every file of the epoch was staged, the commit (the
    rename of its manifest, utils/committed.py) had not happened. The folder is left as the kill left it; tests
    continue copies of it. (tests/test_main_crash.py kills runs at every write.)"""
    real_rename = atomic.rename

    def die_on_commit(source: Path, target: Path) -> None:
        commits = Path(target).name == ".state.pt.manifest.json"
        if commits and json.loads(Path(source).read_text())["meta"]["epoch"] == 2:
            raise Killed
        real_rename(source, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "rename", die_on_commit)
        with pytest.raises(Killed):
            train(data, experiments, "killed", "--epochs", "2", "--save_middle_models")
    return experiments / "killed"


def copy_run(source: Path, name: str) -> Path:
    return Path(shutil.copytree(source, source.parent / name))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)[0]


def assert_same_weights(first: Path, second: Path) -> None:
    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_a_short_run_writes_every_expected_file(uninterrupted: Path) -> None:
    files = {str(path.relative_to(uninterrupted)) for path in uninterrupted.rglob("*") if path.is_file()}
    stems = ("psnr", *(f"loss_loss_{name}" for name in LOSS_NAMES))
    plots = {f"{stem}.{extension}" for stem in stems for extension in ("png", "pdf")}
    images = {
        f"result/DVD/video0/{frame}_{kind}.png"
        for frame in ("00001", "00002")  # the centres of the two validation windows
        for kind in ("gt", "blur", "deblur_iter1", "deblur_iter2")
    }
    models = {f"model/model_{name}.pt" for name in ("latest", "best", "1", "2")}
    logs = {"state.pt", "optimizer.pt", "loss_log.pt", "psnr_log.pt", "log.txt", "config.txt"}
    manifest = {".state.pt.manifest.json"}  # the checkpoint's files (utils/committed.py)
    assert files == plots | images | models | logs | manifest  # nothing else: no temporary files left behind
    state = torch.load(uninterrupted / "state.pt", weights_only=True)  # the weights are written once per commit:
    assert state["files"] == {"model": "model/model_latest.pt", "optimizer": "optimizer.pt"}  # state.pt names them
    assert "model" not in state and "optimizer" not in state and (uninterrupted / "state.pt").stat().st_size < 100_000

    for name in ("latest", "best", "1", "2"):
        load_weights(tiny_model(), uninterrupted / "model" / f"model_{name}.pt")  # strict: every name and shape
    assert_same_weights(uninterrupted / "model" / "model_latest.pt", uninterrupted / "model" / "model_2.pt")
    psnr = torch.load(uninterrupted / "psnr_log.pt", weights_only=True)
    best_epoch = int(torch.argmax(psnr)) + 1
    assert_same_weights(uninterrupted / "model" / "model_best.pt", uninterrupted / "model" / f"model_{best_epoch}.pt")
    assert torch.load(uninterrupted / "loss_log.pt", weights_only=True).shape == (2, 3)
    assert psnr.shape == (2,) and torch.all(psnr > 0)

    log = (uninterrupted / "log.txt").read_text()
    # the model's structure first, as the release's log.txt began, then its parameter count
    assert log.startswith("CDVD_TSP(\n  (flow_net): Flow_PWC(\n")
    summary = "CDVD_TSP: 9,414,769 parameters (flow net 9,374,274, restoration net 40,495), windows of 3 frames (T = 1)"
    assert log.count(summary) == 1 and log.index(summary) < log.index("Epoch   1 with")
    assert epoch_learning_rates(uninterrupted) == [(1, "1.00e-3"), (2, "5.00e-4")]  # StepLR, halved per epoch
    assert "[2/2]\tLoss : [total: " in log and "[L1: " in log and "[HEM: " in log and "[mid: 0.0000]" in log
    assert log.count("average PSNR_iter1: ") == 2 and f"(Best: {psnr.max():.3f} @epoch {best_epoch})" in log
    assert (uninterrupted / "config.txt").read_text().startswith("From epoch 0...\n\n")
    groups = torch.load(uninterrupted / "optimizer.pt", weights_only=True)["param_groups"]
    assert [group["lr"] for group in groups] == pytest.approx([1e-3 / 4, 1e-6 / 4])  # both groups decay

    assert Image.open(uninterrupted / "result/DVD/video0/00001_deblur_iter2.png").size == (32, 32)
    assert Image.open(uninterrupted / "psnr.png").size[0] > 100
    assert (uninterrupted / "psnr.pdf").read_bytes().startswith(b"%PDF")


def epoch_learning_rates(run: Path) -> list[tuple[int, str]]:
    """(epoch, learning rate) from each "Epoch   3 with Lr 5.00e-4" line of the run's log.txt, as written."""
    lines = re.findall(r"^Epoch +(\d+) with Lr (\S+)$", (run / "log.txt").read_text(), flags=re.MULTILINE)
    return [(int(epoch), rate) for epoch, rate in lines]


def test_the_summary_line_counts_the_released_model() -> None:
    assert model_summary(CDVD_TSP()) == (
        "CDVD_TSP: 16,187,045 parameters (flow net 9,374,274, restoration net 6,812,771), windows of 5 frames (T = 2)"
    )


def test_a_resumed_run_keeps_the_learning_rate_schedule_across_a_decay(data: list[str], experiments: Path) -> None:
    """--lr_decay 2 halves the rate after epochs 2 and 4; the resumed run stops on the boundary (after epoch 2), so
    a scheduler restored one epoch off shows in epoch 3 or 4."""
    schedule = [(1, "1.00e-3"), (2, "1.00e-3"), (3, "5.00e-4"), (4, "5.00e-4")]
    assert train(data, experiments, "decay_full", "--lr_decay", "2", "--epochs", "4") == 0
    assert train(data, experiments, "decay_resumed", "--lr_decay", "2", "--epochs", "2") == 0
    assert epoch_learning_rates(experiments / "decay_resumed") == schedule[:2]
    assert resume(experiments, "decay_resumed", "--epochs", "4") == 0
    for name in ("decay_full", "decay_resumed"):
        run = experiments / name
        assert epoch_learning_rates(run) == schedule, name
        groups = torch.load(run / "optimizer.pt", weights_only=True)["param_groups"]
        assert [group["lr"] for group in groups] == pytest.approx([2.5e-4, 2.5e-7], rel=1e-12)  # after epoch 4
        assert not (run / "result").exists()  # without --save_images, no validation images (unlike the release)


def test_an_existing_run_is_never_overwritten(data: list[str], experiments: Path, uninterrupted: Path) -> None:
    before = (uninterrupted / "state.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run; continue it with --resume"):
        train(data, experiments, "full", "--epochs", "1")
    foreign = experiments / "foreign"
    (foreign / "model").mkdir(parents=True)
    (foreign / "model" / "notes.txt").write_text("someone else's")
    # --resume starts a run only where nothing is in the way
    with pytest.raises(UserError, match=r"foreign already holds results \(and no state\.pt to resume\)"):
        train(data, experiments, "foreign", "--resume", "--epochs", "1")
    assert (uninterrupted / "state.pt").read_bytes() == before
    assert sorted(path.name for path in foreign.rglob("*")) == ["model", "notes.txt"]


def test_a_writer_killed_while_saving_leaves_the_last_checkpoint(uninterrupted: Path, killed_run: Path) -> None:
    assert torch.load(killed_run / "state.pt", weights_only=True)["epoch"] == 1
    assert_same_weights(killed_run / "model" / "model_latest.pt", uninterrupted / "model" / "model_1.pt")
    load_weights(tiny_model(), killed_run / "model" / "model_latest.pt")
    assert not (killed_run / "model" / "model_2.pt").exists()
    assert "Epoch   2 with" in (killed_run / "log.txt").read_text()  # epoch 2 ran; its checkpoint never landed


def test_resume_equals_an_uninterrupted_run(
    data: list[str], experiments: Path, uninterrupted: Path, killed_run: Path
) -> None:
    run = copy_run(killed_run, "resumed")
    (run / ".state.pt.leftover.tmp").write_bytes(b"half a file, as a real kill leaves it")
    assert resume(experiments, "resumed") == 0  # --epochs 2 and every other run option: from the checkpoint
    assert_same_weights(run / "model" / "model_latest.pt", uninterrupted / "model" / "model_latest.pt")
    for log in ("loss_log.pt", "psnr_log.pt"):
        assert torch.equal(torch.load(run / log, weights_only=True), torch.load(uninterrupted / log, weights_only=True))
    resumed_optimizer = torch.load(run / "optimizer.pt", weights_only=True)
    full_optimizer = torch.load(uninterrupted / "optimizer.pt", weights_only=True)
    assert resumed_optimizer["param_groups"] == full_optimizer["param_groups"]
    for key, state in full_optimizer["state"].items():
        assert all(torch.equal(value, resumed_optimizer["state"][key][name]) for name, value in state.items())
    log = (run / "log.txt").read_text()
    assert "Continue from epoch 1..." in log and "Epoch   2 with Lr 5.00e-4" in log
    # nothing left to do: the run says so and changes nothing; more epochs can be asked for
    state = (run / "state.pt").read_bytes()
    assert resume(experiments, "resumed") == 0
    assert (run / "state.pt").read_bytes() == state and "has finished its 2 epochs" in (run / "log.txt").read_text()
    with pytest.raises(UserError, match=r"--patch_size 64 differs from the run being resumed \(32\)"):
        resume(experiments, "resumed", "--patch_size", "64", "--epochs", "3")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_checkpoint(
    data: list[str], experiments: Path, killed_run: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = copy_run(killed_run, "diverged")
    latest = (run / "model" / "model_latest.pt").read_bytes()
    real_forward = Loss.forward

    def nan_loss(self: Loss, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, values = real_forward(self, output, target)
        return total * float("nan"), values * float("nan")

    monkeypatch.setattr(Loss, "forward", nan_loss)
    argv = [*TINY_TRAINING, *data, "--experiment_dir", str(experiments), "--save", "diverged", "--resume"]
    with pytest.raises(SystemExit) as exit_status:
        train_main.run_cli(lambda: train_main.main(argv))
    assert exit_status.value.code == 2
    message = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # not the bar
    assert len(message) == 1 and message[0].startswith("error: the loss is not finite at epoch 2, batch 1 (L1 nan")
    assert message[0].endswith(f"{run} keeps the last good checkpoint (epoch 1)")
    assert (run / "model" / "model_latest.pt").read_bytes() == latest
    assert torch.load(run / "state.pt", weights_only=True)["epoch"] == 1
    assert "the loss is not finite at epoch 2" in (run / "log.txt").read_text()
    assert issubclass(TrainingDiverged, UserError)


def test_a_non_finite_loss_between_log_lines_names_its_batch(
    data: list[str], experiments: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss terms are read at the log lines (every third step here), not at every step: a loss that is not
    finite in the second step is found at the third and reported as the second's, before any line is logged."""
    real_forward, calls = Loss.forward, []

    def nan_in_the_second_step(self: Loss, output: torch.Tensor, target: torch.Tensor) -> tuple:
        total, values = real_forward(self, output, target)
        calls.append(1)
        return (total * float("nan"), values * float("nan")) if len(calls) == 2 else (total, values)

    monkeypatch.setattr(Loss, "forward", nan_in_the_second_step)
    with pytest.raises(TrainingDiverged, match=r"^the loss is not finite at epoch 1, batch 2 \(L1 nan, HEM nan"):
        train(data, experiments, "diverged_late", "--test_every", "3", "--print_every", "3", "--loss", "1*L1+1*HEM")
    assert len(calls) == 3
    log = (experiments / "diverged_late" / "log.txt").read_text()
    assert "Loss :" not in log and "the loss is not finite at epoch 1, batch 2" in log


def test_a_collapsed_validation_is_flagged_and_a_normal_one_is_not(
    data: list[str], experiments: Path, uninterrupted: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Validation outputs that are the blurred input itself (epoch 3) draw no warning; outputs 50 times too large
    (epoch 4: PSNR about -28 dB, as a resumed DEMO run once validated) one line in log.txt and on stderr naming the
    epoch and the numbers, and model_best.pt stays the best earlier epoch. (The tiny nets of these tests, a few
    steps old, score about 35 dB below their nearly sharp input: flagged too, rightly.)"""
    run = copy_run(uninterrupted, "collapsed")
    factor = [1.0]
    real_forward = CDVD_TSP.forward

    def validated(self: CDVD_TSP, frames: torch.Tensor) -> tuple:
        outputs = real_forward(self, frames)
        if self.training:
            return outputs
        blurred = frames[:, frames.shape[1] // 2]  # the input's centre frame, times factor
        return tuple(None if out is None else blurred * factor[0] for out in outputs)

    monkeypatch.setattr(CDVD_TSP, "forward", validated)

    def warnings_of(epoch: int) -> list[str]:
        lines = (run / "log.txt").read_text().splitlines()
        return [line for line in lines if line.startswith(f"warning: validation after epoch {epoch} ")]

    assert resume(experiments, "collapsed", "--epochs", "3") == 0
    assert warnings_of(3) == []
    best = (run / "model" / "model_best.pt").read_bytes()
    factor[0] = 50.0
    capsys.readouterr()
    assert resume(experiments, "collapsed", "--epochs", "4") == 0
    [warning] = warnings_of(4)
    assert re.fullmatch(
        r"warning: validation after epoch 4 collapsed: PSNR_iter1 (-\d+\.\d{3}) dB, PSNR_iter2 \1 dB, the blurred "
        r"input (\d+\.\d{3}) dB \(PSNR_iter1 and PSNR_iter2 not finite or more than 10 dB below the blurred "
        r"input's\); the weights are unusable, model_best.pt keeps epoch 3",
        warning,
    ), warning
    assert capsys.readouterr().err.count(warning) == 1
    assert (run / "model" / "model_best.pt").read_bytes() == best


def test_only_validation_with_a_checkpoint(data: list[str], experiments: Path, uninterrupted: Path) -> None:
    checkpoint = uninterrupted / "model" / "model_latest.pt"
    assert train(data, experiments, "evaluation", "--test_only", "--pre_train", str(checkpoint)) == 0
    last_line = [line for line in (uninterrupted / "log.txt").read_text().splitlines() if "average PSNR" in line][-1]
    expected = last_line.split(" (Best")[0]  # the same model on the same data gives the same PSNRs
    lines = (experiments / "evaluation" / "log.txt").read_text().strip().splitlines()
    assert lines[-2] == expected
    assert lines[-1].startswith("warning: validation of the weights given collapsed: ")  # a tiny net, 2 steps old
    assert not (experiments / "evaluation" / "state.pt").exists()


def test_only_validates_the_best_model_of_the_run_in_the_folder(
    data: list[str], experiments: Path, uninterrupted: Path
) -> None:
    run = experiments / "validate_best"
    shutil.copytree(uninterrupted, run)
    assert train(data, experiments, "validate_best", "--test_only") == 0
    scored = [line for line in (uninterrupted / "log.txt").read_text().splitlines() if "average PSNR" in line]
    best_epoch = int(re.search(r"@epoch (\d+)\)$", scored[-1]).group(1))
    validated = [line for line in (run / "log.txt").read_text().splitlines() if "average PSNR" in line][-1]
    assert validated == scored[best_epoch - 1].split(" (Best")[0]  # model_best.pt, the same data: the same PSNRs
    (run / "model" / "model_best.pt").unlink()
    with pytest.raises(UserError, match=r"^--test_only: .*model_best\.pt not found; pass --pre_train <checkpoint>"):
        train(data, experiments, "validate_best", "--test_only")


def test_pre_train_is_loaded_strictly(data: list[str], experiments: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save(CDVD_TSP(n_sequence=3, n_feat=8, n_resblock=1).state_dict(), wrong)
    with pytest.raises(CheckpointError, match=r"does not fit CDVD_TSP: .* with another shape"):
        train(data, experiments, "wrong_pre_train", "--pre_train", str(wrong))


def test_missing_flow_weights_say_where_they_come_from(data: list[str], experiments: Path, tmp_path: Path) -> None:
    flags = [flag for flag in TINY_TRAINING if flag != "--no_flow_pretrain"]
    argv = [*flags, *data, "--experiment_dir", str(experiments), "--pretrain_models_dir", str(tmp_path)]
    with pytest.raises(UserError, match=r"network-default\.pytorch not found: .* pretrain_models/README\.md"):
        train_main.main([*argv, "--save", "no_flow"])


def test_flow_lr_0_trains_the_restoration_net_and_freezes_the_flow_net(
    data: list[str], experiments: Path, tmp_path: Path
) -> None:
    start = tmp_path / "start.pt"
    torch.save(tiny_model().state_dict(), start)
    assert train(data, experiments, "frozen_flow", "--epochs", "1", "--pre_train", str(start), "--flow_lr", "0") == 0
    before, after = weights(start), weights(experiments / "frozen_flow" / "model" / "model_latest.pt")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("recons_net.") for name in changed), sorted(changed)[:3]


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = tiny_model()
    clip = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gradients = []
    for checkpointed in (False, True):
        model.zero_grad()
        model.checkpoint_steps = checkpointed
        model(clip)[0].square().mean().backward()
        gradients.append([parameter.grad.clone() for parameter in model.parameters()])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(*gradients, strict=True))


def test_loss_falls_when_fitting_a_fixed_batch(data: list[str], tmp_path: Path) -> None:
    from cdvd_tsp.data.loaders import build_datasets
    from cdvd_tsp.logger.experiment import Experiment
    from cdvd_tsp.option import parse_args
    from cdvd_tsp.trainer.model_setup import build_model
    from cdvd_tsp.trainer.trainer import Trainer
    from cdvd_tsp.utils.runtime import Runtime

    args = parse_args([*TINY_TRAINING, *data, "--no_augment", "--save", "fit"])
    train_set, test_set = build_datasets(args, train=True)
    torch.manual_seed(0)
    trainer = Trainer(
        args, Runtime(device=torch.device("cpu")), build_model(args, False), Loss(args.loss), train_set, test_set,
        Experiment(tmp_path / "unused", writes=False),
    )  # fmt: skip
    blur, gt, _ = next(iter(trainer.train_batches))
    blur, gt = blur[:1], gt[:1]
    losses = []
    for _ in range(6):
        total, values = trainer.step.compute_loss(blur, gt)
        trainer.step.optimise(total)
        losses.append(float(values[-1]))
    assert losses[-1] < 0.6 * losses[0], losses
    assert not (tmp_path / "unused").exists()  # a process that is not rank 0 writes nothing


def test_a_process_that_is_not_rank_0_writes_nothing(tmp_path: Path) -> None:
    from cdvd_tsp.logger.experiment import Experiment, History

    experiment = Experiment(tmp_path / "run", writes=False)
    experiment.open()
    experiment.write_log("line")
    history = History(["L1"], [[1.0]], [20.0], [21.0])
    experiment.save_checkpoint({"epoch": 1}, {}, {}, history, epoch=1, is_best=True, keep_epoch=True)
    experiment.save_images("DVD", "v", "0", {kind: np.zeros((4, 4, 3), np.uint8) for kind in ("gt", "blur")})
    assert not (tmp_path / "run").exists()


def test_a_data_error_is_one_line(experiments: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    short = make_dataset(tmp_path / "short", {"video0": 2}, height=32, width=32)
    argv = [
        *TINY_TRAINING,
        "--dir_data",
        str(short),
        "--dir_data_test",
        str(short),
        "--experiment_dir",
        str(experiments),
    ]
    with pytest.raises(SystemExit) as exit_status:
        train_main.run_cli(lambda: train_main.main([*argv, "--save", "short_data"]))
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {short}: video 'video0' has 2 frames, fewer than a window of 3"
    ]
    assert not (experiments / "short_data").exists()  # nothing was written

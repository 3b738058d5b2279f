"""export_model.py: a training checkpoint becomes a float16 file that the strict loader reads back as float32."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdvd_tsp.export_model import export_weights
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import CheckpointError, load_weights, read_checkpoint, with_n_sequence
from cdvd_tsp.utils.errors import UserError

CODE = Path(__file__).resolve().parents[1] / "code"


@pytest.fixture
def trained_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model_best.pt"
    torch.save({"module." + name: value for name, value in CDVD_TSP().state_dict().items()}, path)
    return path


def test_half_export_loads_back_as_float32(tmp_path: Path, trained_file: Path) -> None:
    source = {name.removeprefix("module."): value for name, value in torch.load(trained_file).items()}
    destination = tmp_path / "out" / "demo.pt"
    export_weights(trained_file, destination, half=True)

    stored = torch.load(destination, weights_only=True)
    assert set(stored) == set(source)
    assert {value.dtype for value in stored.values()} == {torch.float16}
    assert destination.stat().st_size < 0.6 * trained_file.stat().st_size

    model = CDVD_TSP()
    load_weights(model, destination)
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, source[name].half().float()), name


@pytest.mark.parametrize("half", [False, True])
def test_export_keeps_the_recorded_n_sequence(tmp_path: Path, half: bool) -> None:
    source = tmp_path / "model_latest.pt"
    torch.save(with_n_sequence(CDVD_TSP(n_sequence=3).state_dict(), 3), source)  # as training writes it
    destination = tmp_path / "exported.pt"
    export_weights(source, destination, half=half)
    assert read_checkpoint(destination)[1] == 3
    load_weights(CDVD_TSP(n_sequence=3), destination)
    with pytest.raises(CheckpointError, match="was trained with n_sequence 3"):
        load_weights(CDVD_TSP(n_sequence=5), destination)


def test_export_adds_no_record_to_a_file_without_one(tmp_path: Path, trained_file: Path) -> None:
    destination = tmp_path / "exported.pt"
    export_weights(trained_file, destination, half=False)
    assert read_checkpoint(destination)[1] is None


def test_export_never_overwrites(tmp_path: Path, trained_file: Path) -> None:
    destination = tmp_path / "demo.pt"
    destination.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        export_weights(trained_file, destination, half=True)
    assert destination.read_bytes() == b"precious"


def test_export_refuses_a_file_that_does_not_fit(tmp_path: Path, trained_file: Path) -> None:
    state = torch.load(trained_file)
    state.pop(next(iter(state)))
    torch.save(state, trained_file)
    with pytest.raises(CheckpointError, match="missing"):
        export_weights(trained_file, tmp_path / "demo.pt", half=True)
    assert not (tmp_path / "demo.pt").exists()


def test_cli_reports_a_user_error_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.pt"
    result = subprocess.run(
        [sys.executable, str(CODE / "export_model.py"), str(missing), str(tmp_path / "demo.pt"), "--half"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: checkpoint not found: {missing}"]


def test_export_refuses_nan_naming_the_tensor(tmp_path: Path, trained_file: Path) -> None:
    state = torch.load(trained_file)
    state["module.recons_net.outBlock.3.bias"][0] = float("nan")
    torch.save(state, trained_file)
    with pytest.raises(CheckpointError, match=r"tensor recons_net\.outBlock\.3\.bias holds 1 NaN of its 3 values"):
        export_weights(trained_file, tmp_path / "demo.pt", half=False)
    assert not (tmp_path / "demo.pt").exists()


def test_half_export_refuses_values_float16_cannot_hold(tmp_path: Path, trained_file: Path) -> None:
    state = torch.load(trained_file)
    name = "recons_net.inBlock.0.0.weight"
    state["module." + name].view(-1)[:3] = torch.tensor([65519.0, -70000.0, 123456.0])  # 65519 rounds to 65504
    torch.save(state, trained_file)
    result = subprocess.run(
        [sys.executable, str(CODE / "export_model.py"), str(trained_file), str(tmp_path / "demo.pt"), "--half"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and not (tmp_path / "demo.pt").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: {trained_file}: tensor {name} holds values up to 123456 in magnitude, beyond float16's range "
        "(+-65504): with --half they would become inf; export it without --half"
    ]
    stored = export_weights(trained_file, tmp_path / "full.pt", half=False)  # float32 holds them
    assert stored[name].view(-1)[2].item() == 123456.0
    state["module." + name].view(-1)[1:3] = 0.0
    torch.save(state, trained_file)
    assert export_weights(trained_file, tmp_path / "half.pt", half=True)[name].view(-1)[0].item() == 65504.0

"""model/onnx_export.py and model/onnx_step.py, with export_model.py --format onnx and inference.py --backend
onnxruntime: the step exported once for the module (the export is the slow part), then its checks, its parity with
the PyTorch step at two sizes, the backend end to end, and the refusals. Skipped without onnx, onnxscript and
onnxruntime (the README's test command installs them)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import evaluation_argv, inference_refused, make_dataset, save_seeded_weights

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from cdvd_tsp import inference  # noqa: E402
from cdvd_tsp.data.frames import read_rgb  # noqa: E402
from cdvd_tsp.export_model import export_onnx_file  # noqa: E402
from cdvd_tsp.model import onnx_export, onnx_step  # noqa: E402
from cdvd_tsp.model.cdvd_tsp import CDVD_TSP  # noqa: E402
from cdvd_tsp.model.checkpoint import load_weights, with_n_sequence  # noqa: E402
from cdvd_tsp.utils.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

CODE = Path(__file__).resolve().parents[1] / "code"
STANDARD_DOMAINS = {"", "ai.onnx"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, single_thread: None) -> tuple[Path, Path]:
    """(the checkpoint, its step exported at the default opset, float32); the export checks itself."""
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = save_seeded_weights(folder / "model.pt")
    destination = folder / "step.onnx"
    report = export_onnx_file(checkpoint, destination, half=False)
    assert report.path == destination and destination.is_file()
    assert set(report.differences) == set(onnx_export.CHECK_SIZES)
    assert max(report.differences.values()) <= 1e-4
    return checkpoint, destination


def pytorch_model(checkpoint: Path) -> CDVD_TSP:
    model = CDVD_TSP()
    load_weights(model, checkpoint)
    return model.eval()


def test_the_file_is_standard_onnx_at_opset_18_recording_its_stages(exported: tuple[Path, Path]) -> None:
    proto = onnx.load(str(exported[1]))
    onnx.checker.check_model(proto)
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 18
    assert {node.domain for node in proto.graph.node} <= STANDARD_DOMAINS  # no custom operator
    assert not proto.functions or {function.domain for function in proto.functions} <= STANDARD_DOMAINS
    assert {entry.key: entry.value for entry in proto.metadata_props}[onnx_step.N_STAGES_KEY] == "2"
    assert [node.name for node in proto.graph.input] == ["previous", "center", "following"]
    shape = proto.graph.input[1].type.tensor_type.shape.dim
    assert shape[0].dim_value == 1 and shape[1].dim_value == 3
    assert shape[2].dim_param and shape[3].dim_param  # H and W dynamic
    assert onnx_step.read_n_stages(exported[1]) == 2


@pytest.mark.parametrize("size", [(40, 56), (96, 68)])
def test_onnxruntime_matches_the_pytorch_step_at_two_sizes(exported: tuple[Path, Path], size: tuple[int, int]) -> None:
    checkpoint, path = exported
    model, step = pytorch_model(checkpoint), onnx_step.OnnxModel(path)
    assert step.n_stages == 2 and step.n_sequence == 5
    frames = onnx_export.sample_frames(size, seed=3)
    with torch.no_grad():
        expected = model.restore_center(*frames)
    actual = step.step(*frames)
    assert actual.shape == expected.shape == (1, 3, *size)
    assert (actual - expected).abs().max().item() <= 1e-4
    moved = step.step(frames[1], frames[0], frames[2])  # the step depends on which frame is the center
    assert (moved - expected).abs().max().item() > 1e-2


def test_backend_end_to_end_matches_pytorch(exported: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, path = exported
    data = make_dataset(tmp_path / "data", {"clip": 6}, height=44, width=60)
    results = {}
    for backend, weights in (("pytorch", checkpoint), ("onnxruntime", path)):
        result = tmp_path / backend
        assert inference.main([*evaluation_argv(data, weights, result), "--border", "--backend", backend]) == 0
        results[backend] = result
    frames = sorted((results["pytorch"] / "clip").glob("*.png"))
    assert [frame.name for frame in frames] == [f"{index:05d}.png" for index in range(6)]
    for frame in frames:
        reference = read_rgb(frame).astype(int)
        difference = np.abs(read_rgb(results["onnxruntime"] / "clip" / frame.name).astype(int) - reference)
        assert difference.max() <= 1, frame.name
    reports = {backend: json.loads((result / "results.json").read_text()) for backend, result in results.items()}
    assert reports["onnxruntime"]["settings"]["backend"] == "onnxruntime"
    assert reports["pytorch"]["settings"]["backend"] == "pytorch"
    psnr = {backend: report["psnr"] for backend, report in reports.items()}
    assert psnr["onnxruntime"] == pytest.approx(psnr["pytorch"], abs=0.01)


def test_backend_with_tiles_matches_untiled(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, path = exported
    data = make_dataset(tmp_path / "data", {"clip": 5}, height=40, width=64)
    outputs = {}
    for name, flags in (("plain", []), ("tiled", ["--tile", "40", "--tile_overlap", "16"])):
        argv = [*evaluation_argv(data, path, tmp_path / name), "--backend", "onnxruntime", *flags]
        assert inference.main(argv) == 0
        outputs[name] = read_rgb(tmp_path / name / "clip" / "00002.png").astype(int)
    assert outputs["tiled"].shape == outputs["plain"].shape == (40, 64, 3)
    assert np.abs(outputs["tiled"] - outputs["plain"]).mean() < 8  # tiles change the flow near seams, not the frame


def test_a_failed_check_deletes_the_file(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint, path = exported

    def copied(model: CDVD_TSP, destination: Path, opset: int, half: bool) -> float:
        destination.write_bytes(path.read_bytes())
        return 0.0

    monkeypatch.setattr("cdvd_tsp.export_model.export_step", copied)
    monkeypatch.setattr("cdvd_tsp.export_model.check_export", lambda *args: {(48, 64): 0.0, (72, 96): 3e-4})
    destination = tmp_path / "bad.onnx"
    with pytest.raises(UserError, match=r"differs from PyTorch's by more than 0\.0001 \(64x48: 0, 96x72: 0\.0003\)"):
        export_onnx_file(checkpoint, destination, half=False)
    assert not destination.exists()


def test_refusals_keep_the_destination(exported: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, _ = exported
    destination = tmp_path / "step.onnx"
    destination.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        export_onnx_file(checkpoint, destination, half=False)
    assert destination.read_bytes() == b"precious"
    state = torch.load(checkpoint)
    state["recons_net.outBlock.3.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(UserError, match=r"recons_net\.outBlock\.3\.bias holds 1 NaN"):
        export_onnx_file(tmp_path / "nan.pt", tmp_path / "nan.onnx", half=False)
    state.pop("recons_net.outBlock.3.bias")
    torch.save(with_n_sequence(state, 5), tmp_path / "unfit.pt")
    with pytest.raises(UserError, match="missing"):
        export_onnx_file(tmp_path / "unfit.pt", tmp_path / "unfit.onnx", half=False)
    assert not (tmp_path / "nan.onnx").exists() and not (tmp_path / "unfit.onnx").exists()


def test_half_refuses_values_float16_cannot_hold_before_anything_is_written(tmp_path: Path) -> None:
    state = torch.load(save_seeded_weights(tmp_path / "model.pt"), weights_only=True)
    state["recons_net.outBlock.3.bias"][0] = 1e6
    torch.save(state, tmp_path / "large.pt")
    with pytest.raises(
        UserError, match=r"recons_net\.outBlock\.3\.bias holds values up to 1e\+06 in magnitude, beyond"
    ):
        export_onnx_file(tmp_path / "large.pt", tmp_path / "a.onnx", half=True)
    assert not (tmp_path / "a.onnx").exists()


def test_half_exports_float16_and_checks_it_with_the_half_bound(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The float16 export's way through export_model.py (the export itself is the float32 one's, made once): the
    step exported in float16, checked against the float32 step with `HALF_CHECK_TOLERANCE`."""
    checkpoint, path = exported
    asked = []

    def copied(model: CDVD_TSP, destination: Path, opset: int, half: bool) -> float:
        asked.append(half)
        destination.write_bytes(path.read_bytes())
        return 0.0

    monkeypatch.setattr("cdvd_tsp.export_model.export_step", copied)
    monkeypatch.setattr("cdvd_tsp.export_model.check_export", lambda *args: {(48, 64): 4e-4, (72, 96): 1e-3})
    report = export_onnx_file(checkpoint, tmp_path / "half.onnx", half=True)
    assert asked == [True] and report.half and report.dtype_name == "float16"
    assert report.tolerance == onnx_export.HALF_CHECK_TOLERANCE and (tmp_path / "half.onnx").is_file()
    with pytest.raises(UserError, match=r"differs from PyTorch's by more than 0\.0001"):
        export_onnx_file(checkpoint, tmp_path / "float.onnx", half=False)  # the same differences: too far for float32
    assert asked == [True, False] and not (tmp_path / "float.onnx").exists()


def test_cli_refuses_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.pt"
    result = subprocess.run(
        [sys.executable, str(CODE / "export_model.py"), "--format", "onnx", str(missing), str(tmp_path / "a.onnx")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: checkpoint not found: {missing}"]


def test_backend_refusals(exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoint, path = exported
    data = make_dataset(tmp_path / "data", {"clip": 5})
    argv = [*evaluation_argv(data, path, tmp_path / "out"), "--backend", "onnxruntime"]
    assert "--window applies to the PyTorch backend" in inference_refused([*argv, "--window"], capsys)
    assert "--precision applies to the PyTorch backend" in inference_refused([*argv, "--precision", "fp32"], capsys)
    assert "--n_stages 3: " in inference_refused([*argv, "--n_stages", "3"], capsys)
    pt_argv = [*evaluation_argv(data, checkpoint, tmp_path / "out"), "--backend", "onnxruntime"]
    assert inference_refused(pt_argv, capsys).startswith(f"--model_path {checkpoint}: not an ONNX file")


def test_backend_without_onnxruntime_is_refused_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    data = make_dataset(tmp_path / "data", {"clip": 5})
    weights = save_seeded_weights(tmp_path / "model.pt")
    line = inference_refused([*evaluation_argv(data, weights, tmp_path / "out"), "--backend", "onnxruntime"], capsys)
    assert line.startswith("--backend onnxruntime needs the package onnxruntime, which is not installed here")
    assert "pip install onnxruntime" in line


def test_gpu_execution_providers_match_the_cpu(exported: tuple[Path, Path]) -> None:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        pytest.skip("onnxruntime has no CUDA execution provider here")
    _, path = exported
    frames = onnx_export.sample_frames((72, 96), seed=5)
    expected = onnx_step.OnnxModel(path).step(*frames)
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider in available:
            step = onnx_step.OnnxModel(path, providers=[provider, "CPUExecutionProvider"])
            assert (step.step(*frames) - expected).abs().max().item() <= 1e-3, provider

"""inference.py refuses bad input with one line naming the problem, before writing anything."""

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import torch

from conftest import INFERENCE, evaluation_argv, make_dataset, save_seeded_weights, sharp_frames, write_image
from data import frames as frames_module
from infer.report import Report
from inference import main
from model.checkpoint import CheckpointError
from utils.errors import UserError
from utils.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=3)


def drop_frame(root: Path) -> None:
    (root / "gt" / "v" / "00004.png").unlink()


def add_video(root: Path) -> None:
    make_dataset(root, {"w": 5}, gt=False)


def garbage_frame(root: Path) -> None:
    (root / "blur" / "v" / "00003.png").write_bytes(b"this is not a PNG")


def resized_frame(root: Path) -> None:
    write_image(root / "blur" / "v" / "00001.png", sharp_frames(1, 40, 50)[0])


def resized_gt(root: Path) -> None:
    for path in (root / "gt" / "v").iterdir():
        write_image(path, sharp_frames(1, 40, 52)[0])


def short_video(root: Path) -> None:
    for name in ("blur", "gt"):
        (root / name / "v" / "00004.png").unlink()


def tiny_frames(root: Path) -> None:
    for path in [*(root / "blur" / "v").iterdir(), *(root / "gt" / "v").iterdir()]:
        write_image(path, sharp_frames(1, 18, 30)[0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (drop_frame, "video 'v' has 5 blurred frames but 4 sharp frames"),
        (add_video, r"blur and gt videos differ \(only in blur/: w\)"),
        (garbage_frame, r"cannot read image .*00003\.png"),
        (resized_frame, "v: frames differ in size: 00000.png is 50x38, 00001.png is 50x40"),
        (resized_gt, "v: blurred frames are 50x38, sharp frames 52x40"),
        (short_video, "v: has 4 frame.* without --border a video needs at least 5"),
        (tiny_frames, "v: frames of 30x18 are too small"),
    ],
)
def test_bad_datasets_are_refused_before_anything_is_written(
    tmp_path: Path, weights: Path, damage: Callable[[Path], None], message: str
) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    damage(data)
    with pytest.raises(UserError, match=message):
        main(evaluation_argv(data, weights, tmp_path / "result"))
    assert not (tmp_path / "result").exists()


def test_missing_model_says_where_the_released_files_go(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError) as error:
        main(evaluation_argv(data, tmp_path / "CDVD_TSP_GOPRO.pt", tmp_path / "result"))
    message = str(error.value)
    assert "model not found" in message and "CDVD_TSP_GOPRO.pt" in message
    assert 'README.md, section "Released weights and datasets"' in message and "pretrain_models/README.md" in message
    assert not (tmp_path / "result").exists()


def test_an_error_leaves_an_earlier_run_untouched(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 4})
    result = tmp_path / "result"
    result.mkdir()
    (result / "results.json").write_text('{"earlier": true}')
    with pytest.raises(UserError, match="at least 5"):
        main(evaluation_argv(data, weights, result))
    assert [path.name for path in result.iterdir()] == ["results.json"]
    assert (result / "results.json").read_text() == '{"earlier": true}'


@pytest.mark.parametrize("workers", ["0", "4"])  # read in the main thread, or in a background thread
def test_a_frame_that_fails_to_decode_during_the_run_is_named(tmp_path: Path, weights: Path, workers: str) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    frame = data / "blur" / "v" / "00002.png"
    frame.write_bytes(frame.read_bytes()[:200])  # the header (and size) reads, the pixels do not
    with pytest.raises(UserError, match=r"cannot read image .*00002\.png"):
        main([*evaluation_argv(data, weights, tmp_path / "result"), "--workers", workers])
    assert not (tmp_path / "result" / "results.json").exists()
    (log,) = (tmp_path / "result").glob("inference_log_*.txt")
    assert log.read_text().splitlines()[-1].startswith("error: cannot read image")
    assert infer_threads() == []


def infer_threads() -> list[str]:
    """The pipeline's reader and worker threads still alive."""
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("infer-")]


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*"))


class FullDiskFile:
    """A file on a full disk: half of the first write lands, then ENOSPC."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def __enter__(self) -> "FullDiskFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def full_after(count: int, real_open: Callable = open) -> Callable:
    """An `open` for data.frames whose new files hold ``count`` PNGs, after which the disk is full."""
    opened: list[Path] = []

    def fake_open(path: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(path, mode, *args, **kwargs)
        if "x" in mode:
            opened.append(Path(path))
            if len(opened) > count:
                return FullDiskFile(handle)
        return handle

    return fake_open


def outputs(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the logs, with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith("inference_log_")
    }


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_full_disk_stops_the_run_with_one_line_and_leaves_the_earlier_run_untouched(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    data = make_dataset(tmp_path / "data", {"v": 7})
    result = tmp_path / "result"
    assert main([*evaluation_argv(data, weights, result), "--no_border"]) == 0
    earlier = outputs(result)
    monkeypatch.setattr(frames_module, "open", full_after(2), raising=False)
    with pytest.raises(UserError, match=r"^cannot write .*[/\\]v[/\\]0000\d\.png: No space left on device$"):
        main([*evaluation_argv(data, weights, result), "--border", "--workers", workers])
    assert outputs(result) == earlier  # not one frame of the earlier run replaced, no partial or staged file
    assert hidden_files(result) == [".results.json.manifest.json"]  # the earlier run's, as it was
    logs = sorted(result.glob("inference_log_*.txt"))
    assert len(logs) == 2 and logs[-1].read_text().splitlines()[-1].startswith("error: cannot write")
    assert infer_threads() == []


def test_a_full_disk_under_the_log_stops_the_run_with_one_line(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infer import report as report_module

    data = make_dataset(tmp_path / "data", {"v": 6})
    result = tmp_path / "result"
    assert main(evaluation_argv(data, weights, result)) == 0
    earlier = outputs(result)
    real_open = open

    class FullLog:
        """The disk fills once the header and the first frame's line are written (the run is under way)."""

        def __init__(self, handle: IO[str]) -> None:
            self.handle, self.full = handle, False

        def write(self, text: str) -> int:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.full = text.startswith("> ")
            return self.handle.write(text)

        def close(self) -> None:
            self.handle.close()

    monkeypatch.setattr(
        report_module, "open", lambda *args, **kwargs: FullLog(real_open(*args, **kwargs)), raising=False
    )
    with pytest.raises(UserError, match=r"^cannot write .*inference_log_.*\.txt: No space left on device$"):
        main(evaluation_argv(data, weights, result))
    assert outputs(result) == earlier and hidden_files(result) == [".results.json.manifest.json"]
    assert infer_threads() == []


def test_a_full_disk_exits_with_status_2_and_one_line(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    result = tmp_path / "result"
    script = (
        "import sys, errno; sys.path.insert(0, 'code'); sys.path.insert(0, 'tests')\n"
        "from data import frames\n"
        "from test_inference_errors import full_after\n"
        "frames.open = full_after(0)\n"
        "from inference import main\n"
        "from utils.errors import run_cli\n"
        f"run_cli(lambda: main({evaluation_argv(data, weights, result)!r}))\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=environment
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].endswith("00002.png: No space left on device")
    assert not (result / "results.json").exists() and hidden_files(result) == []


def test_ctrl_c_stops_the_threads_and_writes_no_results(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "data", {"v": 7})
    result = tmp_path / "result"
    frame = Report.frame

    def interrupted_at_the_second(report: Report, *args: object) -> None:
        if report.results.frame_count == 1:
            raise KeyboardInterrupt
        frame(report, *args)

    monkeypatch.setattr(Report, "frame", interrupted_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        main([*evaluation_argv(data, weights, result), "--workers", "2"])
    assert infer_threads() == []
    assert hidden_files(result) == [] and not (result / "results.json").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "fp16"], "--precision fp16: needs a CUDA device; on the CPU use --precision fp32"),
        (["--cuda_graphs"], "--cuda_graphs: needs a CUDA device"),
        (["--window", "--compile"], "--compile applies to the streaming runner's step; leave it out with --window"),
        (["--window", "--cuda_graphs"], "--cuda_graphs applies to the streaming runner's step"),
        (["--workers", "-1"], "--workers -1: give 0"),
    ],
)
def test_speed_settings_that_cannot_apply_are_refused(
    tmp_path: Path, weights: Path, flags: list[str], message: str
) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError, match=f"^{message}"):
        main([*evaluation_argv(data, weights, tmp_path / "result"), *flags])
    assert not (tmp_path / "result").exists()


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path: Path, weights: Path) -> None:
    state = torch.load(weights, weights_only=True)
    state.pop(sorted(state)[0])
    torch.save(state, tmp_path / "partial.pt")
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(CheckpointError, match=r"partial\.pt does not fit CDVD_TSP: 1 missing"):
        main(evaluation_argv(data, tmp_path / "partial.pt", tmp_path / "result"))
    assert not (tmp_path / "result").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_refused(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError, match="--device cuda: PyTorch sees no CUDA device"):
        main([*evaluation_argv(data, weights, tmp_path / "result")[:-2], "--device", "cuda"])


def test_input_mode_refuses_to_overwrite_its_input_and_conflicting_flags(tmp_path: Path, weights: Path) -> None:
    folder = tmp_path / "frames"
    for index, frame in enumerate(sharp_frames(3, 24, 32)):
        write_image(folder / f"{index}.png", frame)
    common = ["--input", str(folder), "--model_path", str(weights), "--device", "cpu"]
    cases = [
        (["--output", str(folder)], "would overwrite an input frame"),
        (["--output", str(tmp_path / "out.mp4")], "a video file, but the input is a folder of frames"),
        (["--no_save_image"], "--no_save_image"),
        (["--data_path", str(folder)], "leave out --data_path"),
        (["--no_border"], "without --border a video needs at least 5"),
    ]
    for flags, message in cases:
        with pytest.raises(UserError, match=message):
            main([*common, *flags])
    assert sorted(path.name for path in folder.iterdir()) == ["0.png", "1.png", "2.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames"]


def test_output_goes_with_input(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5})
    with pytest.raises(UserError, match="--output goes with --input"):
        main([*evaluation_argv(data, weights, tmp_path / "result"), "--output", str(tmp_path / "out")])


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=environment
    )


def test_cli_reports_a_missing_dataset_in_one_line_from_any_directory(tmp_path: Path) -> None:
    completed = run_cli(str(INFERENCE), "--data_path", "missing", "--result_path", "result", cwd=tmp_path)
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert completed.stderr.startswith(f"error: dataset not found: {tmp_path / 'missing'}")
    assert 'README.md, section "Released weights and datasets"' in completed.stderr
    assert "dataset/README.md" in completed.stderr
    assert sorted(tmp_path.iterdir()) == []


def test_cli_reports_a_checkpoint_that_does_not_fit_in_one_line(tmp_path: Path) -> None:
    torch.save({"flow_net.unknown": torch.zeros(1)}, tmp_path / "other.pt")
    data = make_dataset(tmp_path / "data", {"v": 5})
    completed = run_cli(
        str(INFERENCE), *evaluation_argv(data, tmp_path / "other.pt", tmp_path / "result"), cwd=tmp_path
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "Traceback" not in completed.stderr
    assert "other.pt does not fit CDVD_TSP: 210 missing" in completed.stderr
    assert not (tmp_path / "result").exists()


def test_cli_runs_from_the_code_folder() -> None:
    completed = run_cli("inference.py", "--help", cwd=REPO_ROOT / "code")
    assert completed.returncode == 0
    assert "--default_data {DVD,GOPRO,DEMO}" in completed.stdout and "--no_border" in completed.stdout

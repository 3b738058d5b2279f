"""inference.py refuses bad input with one line naming the flag or file and what is wrong, before writing anything;
a run that fails on the way (a frame that does not decode, a full disk, an output that turns NaN or inf, Ctrl-C)
stops with one line and leaves the earlier results as they were; names that are not UTF-8 go through a run."""

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
import torch

from cdvd_tsp.data import frames as frames_module
from cdvd_tsp.data.video_io import VideoWriter
from cdvd_tsp.infer.report import Report
from cdvd_tsp.inference import main
from cdvd_tsp.model.checkpoint import CheckpointError
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT
from conftest import (
    INFERENCE,
    evaluation_argv,
    inference_refused,
    make_dataset,
    mirror_frame,
    save_seeded_weights,
    sharp_frames,
    write_frames,
    write_image,
)

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
        (resized_gt, r"blur/v: blurred frames are 50x38, but the sharp frames in .*gt/v are 52x40$"),
        (short_video, "v: has 4 frame.* without --border a video needs at least 5"),
        (
            tiny_frames,
            r"blur/v: frames of 30x18 are too small; at least 19x19 needed to be scored with --crop_border 4",
        ),
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


def refused_in_a_process(patch: str, argv: list[str]) -> str:
    """inference.py run with ``argv`` in a process of its own as its command line runs it, after the Python lines
    ``patch`` (run with code/ and tests/ importable): it must exit with status 2 and one ``error: ...`` line on
    stderr, and no traceback; returns that line."""
    script = (
        "import sys; sys.path.insert(0, 'code'); sys.path.insert(0, 'tests')\n"
        f"{patch}"
        "from cdvd_tsp.inference import main\n"
        "from cdvd_tsp.utils.errors import run_cli\n"
        f"run_cli(lambda: main({argv!r}))\n"
    )
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=environment
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, completed.stderr[-2000:]
    return errors[0]


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
    """An `open` for data.frames whose files opened for writing hold ``count`` PNGs, after which the disk is full.
    Every open for writing counts: a PNG written directly (``"wb"``, the pipeline's into its staging folder) or
    through a new temporary file (``"xb"``)."""
    opened: list[Path] = []

    def fake_open(path: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(path, mode, *args, **kwargs)
        if "w" in mode or "x" in mode:
            opened.append(Path(path))
            if len(opened) > count:
                return FullDiskFile(handle)
        return handle

    fake_open.opened = opened  # type: ignore[attr-defined]
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
    full = full_after(2)
    monkeypatch.setattr(frames_module, "open", full, raising=False)
    with pytest.raises(UserError, match=r"^cannot write .*[/\\]v[/\\]0000\d\.png: No space left on device$"):
        main([*evaluation_argv(data, weights, result), "--border", "--workers", workers])
    # written directly into the staging folder: no temporary file of their own
    names = sorted(path.name for path in full.opened)  # with workers, a frame after the failed one may have begun
    assert names[:3] == ["00000.png", "00001.png", "00002.png"] and all(len(name) == 9 for name in names)
    assert all(path.parent.parent.name.startswith(".results.json.staging-") for path in full.opened)
    assert outputs(result) == earlier  # not one frame of the earlier run replaced, no partial or staged file
    assert hidden_files(result) == [".results.json.manifest.json"]  # the earlier run's, as it was
    logs = sorted(result.glob("inference_log_*.txt"))
    assert len(logs) == 2 and logs[-1].read_text().splitlines()[-1].startswith("error: cannot write")
    assert infer_threads() == []


def test_a_full_disk_under_the_log_stops_the_run_with_one_line(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cdvd_tsp.infer import report as report_module

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
    patch = (
        "from cdvd_tsp.data import frames\nfrom test_inference_errors import full_after\nframes.open = full_after(0)\n"
    )
    error = refused_in_a_process(patch, evaluation_argv(data, weights, result))
    assert error.endswith("00002.png: No space left on device")
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
        (["--output", str(folder)], "is the input folder"),
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


# ----- outputs that turn non-finite


def poisoned_at(frame: int, value: float) -> Callable:
    """A `runner_factory` for infer.pipeline whose runners give an output holding ``value`` (NaN or inf) at one pixel
    for ``frame`` (an index), as a model that overflows there would; every other output is the model's own."""
    from cdvd_tsp.infer import runners
    from cdvd_tsp.model.streaming import Restored

    def factory(*args: object) -> Callable:
        new_runner = runners.runner_factory(*args)

        class Poisoned:
            def __init__(self) -> None:
                self.inner = new_runner()
                self.latency = self.inner.latency

            def push(self, tensor: torch.Tensor, tag: object = None) -> Restored | None:
                restored = self.inner.push(tensor, tag)
                if restored is None or restored.tag != frame:
                    return restored
                image = restored.image.clone()
                image[0, 1, 2, 3] = value
                return Restored(restored.tag, image)

        return Poisoned

    return factory


def clip_argv(folder: Path, weights: Path, output: Path) -> list[str]:
    return ["--input", str(folder), "--output", str(output), "--model_path", str(weights), "--device", "cpu"]


@pytest.mark.parametrize(("value", "workers"), [(float("nan"), "0"), (float("inf"), "2")])
def test_an_output_that_turns_non_finite_stops_the_run_and_the_earlier_results_stay(
    tmp_path: Path,
    weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    value: float,
    workers: str,
) -> None:
    from cdvd_tsp.infer import restorer

    frames, out = tmp_path / "clip", tmp_path / "out"
    write_frames(frames, 6)
    assert main(clip_argv(frames, weights, out)) == 0
    earlier = outputs(out)
    monkeypatch.setattr(restorer, "runner_factory", poisoned_at(3, value))
    line = inference_refused([*clip_argv(frames, weights, out), "--workers", workers], capsys)
    assert line == (
        "clip: the output of frame 000003 holds NaN or inf values; nothing of it was written or scored. Likely cause: "
        "the model overflowed on this frame, so the weights of --model_path (finite: they were checked when loaded) "
        "are likely not of this model or damaged"
    )
    assert outputs(out) == earlier  # frames 0 to 2 were staged, and went with the staging folder
    assert hidden_files(out) == [".results.json.manifest.json"]
    logs = sorted(out.glob("inference_log_*.txt"))
    assert logs[-1].read_text().splitlines()[-1] == f"error: {line}"
    assert infer_threads() == []


def test_the_command_line_stops_a_non_finite_run_with_status_2_and_one_line(tmp_path: Path, weights: Path) -> None:
    frames, out = tmp_path / "clip", tmp_path / "out"
    write_frames(frames, 5)
    assert main(clip_argv(frames, weights, out)) == 0
    earlier = outputs(out)
    patch = (
        "from cdvd_tsp.infer import restorer\nfrom test_inference_errors import poisoned_at\n"
        "restorer.runner_factory = poisoned_at(1, float('nan'))\n"
    )
    error = refused_in_a_process(patch, clip_argv(frames, weights, out))
    assert error.startswith("error: clip: the output of frame 000001 holds NaN or inf")
    assert outputs(out) == earlier and hidden_files(out) == [".results.json.manifest.json"]


def overflowing_weights(path: Path, bias: float) -> Path:
    """Finite weights (the load's check passes) whose restoration net ends in a bias of ``bias``: the model's
    outputs overflow any precision whose largest value is below it."""
    state = torch.load(save_seeded_weights(path, seed=3), weights_only=True)
    state["recons_net.outBlock.3.bias"].fill_(bias)
    torch.save(state, path)
    return path


def test_weights_that_overflow_stop_the_run_at_the_first_frame(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames, out = tmp_path / "clip", tmp_path / "out"
    write_frames(frames, 3)
    weights = overflowing_weights(tmp_path / "huge.pt", 3e38)  # float32 holds it; what the model adds to it not
    line = inference_refused(clip_argv(frames, weights, out), capsys)
    assert line.startswith("clip: the output of frame 000000 holds NaN or inf values; nothing of it was written")
    assert not (out / "results.json").exists() and hidden_files(out) == [] and not list(out.glob("*.png"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (float16 runs on the GPU only)")
def test_a_float16_overflow_on_cuda_names_the_precision(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames, out = tmp_path / "clip", tmp_path / "out"
    write_frames(frames, 3)
    weights = overflowing_weights(tmp_path / "large.pt", 1e5)  # beyond float16's 65504, well within float32
    argv = ["--input", str(frames), "--output", str(out), "--model_path", str(weights), "--device", "cuda"]
    line = inference_refused(argv, capsys)  # --input on CUDA: fp16 by default
    assert line == (
        "clip: the output of frame 000000 holds NaN or inf values; nothing of it was written or scored. Likely cause: "
        "float16 (--precision fp16, the default with --input on CUDA) holds values up to 65504 only and the model "
        "overflowed it; run again with --precision bf16, tf32 or fp32"
    )
    assert not (out / "results.json").exists()
    assert main([*argv, "--precision", "fp32"]) == 0  # the same weights in float32: white frames, but finite
    assert len(list(out.glob("*.png"))) == 3


# ----- the output folder and the input folder


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_the_input_folder_is_refused_as_output_for_every_format(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture, suffix: str
) -> None:
    frames = tmp_path / "clip"
    write_frames(frames, 3, suffix)
    before = sorted(frames.iterdir())
    line = inference_refused(clip_argv(frames, weights, frames), capsys)
    assert line == (
        f"--output {frames}: is the input folder; its outputs would lie among the frames and be read as frames by "
        "every later run on it; choose another folder (one inside it will do)"
    )
    assert sorted(frames.iterdir()) == before


def test_an_output_folder_inside_the_input_folder_or_around_it_leaves_later_runs_their_frames(
    tmp_path: Path, weights: Path
) -> None:
    frames = tmp_path / "clip"
    write_frames(frames, 3, ".jpg")
    inside, around = frames / "deblurred", tmp_path
    for output in (inside, around, inside):  # each run reads the three frames of clip/ only, whatever is around
        assert main(clip_argv(frames, weights, output)) == 0
        assert json.loads((output / "results.json").read_text())["frames"] == 3
    assert sorted(path.name for path in inside.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    assert sorted(path.name for path in around.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]


# ----- names the file system allows that are not UTF-8


def test_names_that_are_not_utf_8_go_through_a_run_from_the_frames_to_the_log_and_results(
    tmp_path: Path, weights: Path
) -> None:
    folder = tmp_path / os.fsdecode(b"\xffclip")  # Linux allows any bytes but / and NUL
    write_frames(tmp_path / "clip", 3)  # OpenCV's imwrite would crash on such a name: renamed after
    for index in range(3):
        (tmp_path / "clip" / f"{index:06d}.png").rename(tmp_path / "clip" / os.fsdecode(b"\xfe%d.png" % index))
    (tmp_path / "clip").rename(folder)
    output = tmp_path / os.fsdecode(b"out\xff")
    completed = run_cli(str(INFERENCE), *clip_argv(folder, weights, output), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr and "error" not in completed.stderr
    assert sorted(os.listdir(os.fsencode(output))) == [
        b".results.json.manifest.json",
        *sorted(os.fsencode(path.name) for path in output.glob("inference_log_*.txt")),
        b"results.json",
        b"\xfe0.png",
        b"\xfe1.png",
        b"\xfe2.png",
    ]
    (log,) = output.glob("inference_log_*.txt")
    lines = log.read_text(encoding="utf-8").splitlines()  # UTF-8 throughout: the bytes are written as \xff
    assert f"+ input: {tmp_path}/\\xffclip" in lines
    assert any(line.startswith("> \\xffclip-\\xfe1 pre_time:") for line in lines)
    document = json.loads((output / "results.json").read_text())
    (video,) = document["videos"]
    assert os.fsencode(video) == b"\xffclip"  # JSON's escapes of Python's surrogates: the very bytes, read back
    assert sorted(os.fsencode(frame) for frame in document["videos"][video]["frames"]) == [b"\xfe0", b"\xfe1", b"\xfe2"]


def test_a_dataset_s_video_named_in_bytes_that_are_not_utf_8_is_scored_and_shown(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5}, height=24, width=24)
    name = os.fsdecode(b"\xffv")
    for kind in ("blur", "gt"):
        (data / kind / "v").rename(data / kind / name)
    result = tmp_path / "result"
    assert main([*evaluation_argv(data, weights, result), "--showcase"]) == 0
    document = json.loads((result / "results.json").read_text())
    assert list(document["videos"]) == [name] and document["frames"] == 1 and document["psnr"] > 0
    assert (result / name / "00002.png").is_file()
    assert sorted(path.name for path in (result / "showcase").iterdir()) == [f"{name}.gif", f"{name}_00002.png"]


# ----- messages that name the flag or file and say what it is


def test_messages_name_the_flag_and_what_the_file_is(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    data = make_dataset(tmp_path / "data", {"v": 5}, height=24, width=32)
    frames, result = tmp_path / "clip", tmp_path / "result"
    write_frames(frames, 3)
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.pt").write_bytes(weights.read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    (tmp_path / "taken.mp4").mkdir()
    cases = [
        (
            [*clip_argv(frames, weights, tmp_path / "out"), "--tile", "4"],
            "--tile 4: not larger than the tiles' default overlap, 32 pixels; give a larger --tile, or --tile_overlap "
            "below 4 (a multiple of 4)",
        ),
        (
            [*evaluation_argv(data, weights, result), "--crop_border", "1000"],
            f"{data}/blur/v: frames of 32x24 are too small; at least 2011x2011 needed to be scored with "
            "--crop_border 1000 (the border left out on both sides and one SSIM window)",
        ),
        (
            evaluation_argv(data, models, result),
            f"--model_path {models}: is a folder, not a checkpoint file; give the .pt file itself (it holds model.pt)",
        ),
        (
            evaluation_argv(notes, weights, result),
            f"--data_path {notes}: is a file, not a dataset folder; give the folder that holds blur/<video>/ and "
            "gt/<video>/ (or GOPRO_Large, DVD or BSD as downloaded); a video file to deblur goes with --input",
        ),
        (
            evaluation_argv(data, weights, notes),
            f"--result_path {notes}: is a file, not a folder; the outputs go into a folder",
        ),
        (
            clip_argv(frames, weights, notes),
            f"--output {notes}: is a file, not a folder; the outputs go into a folder",
        ),
    ]
    for argv, message in cases:
        assert inference_refused(argv, capsys) == message
    line = inference_refused(clip_argv(notes, weights, tmp_path / "out"), capsys)
    assert line.startswith(f"--input {notes}: not a folder of frames, and FFmpeg cannot read it as a video (")
    video = tmp_path / "clip.mp4"
    with VideoWriter(video, (8, 8), fps=10.0) as writer:
        for index in range(3):
            writer.write(mirror_frame(0, index=index))
    line = inference_refused(clip_argv(video, weights, tmp_path / "taken.mp4"), capsys)
    assert line == (
        f"--output {tmp_path / 'taken.mp4'}: is a folder, and a name ending in .mp4 is written as a video file; give "
        "another name"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "clip",
        "clip.mp4",
        "data",
        "models",
        "notes.txt",
        "taken.mp4",
    ]


def test_a_missing_released_model_suggests_the_offline_demo_form_and_that_form_works(tmp_path: Path) -> None:
    if (REPO_ROOT / "pretrain_models" / "CDVD_TSP_DVD_Convergent.pt").exists():
        pytest.skip("the released DVD weights are installed here")
    frames = tmp_path / "my frames"
    for index, frame in enumerate(sharp_frames(3, 24, 32)):
        write_image(frames / f"{index:03d}.png", frame)
    output = tmp_path / "out"
    with pytest.raises(UserError) as error:
        main(["--input", str(frames), "--output", str(output)])
    message = str(error.value)
    assert message.startswith("model not found:") and "\n" not in message
    suggested = message.split("offline with the shipped demo model: python code/inference.py ")[1]
    assert suggested == f"--input {frames} --output {output} --default_data DEMO"
    assert not output.exists()
    assert main(["--input", str(frames), "--output", str(output), "--default_data", "DEMO", "--precision", "fp32"]) == 0
    assert sorted(path.name for path in output.glob("*.png")) == ["000.png", "001.png", "002.png"]


def test_a_missing_model_named_by_the_user_gets_no_demo_suggestion(tmp_path: Path) -> None:
    for index, frame in enumerate(sharp_frames(3, 24, 32)):
        write_image(tmp_path / "frames" / f"{index:03d}.png", frame)
    with pytest.raises(UserError) as error:
        main(["--input", str(tmp_path / "frames"), "--model_path", str(tmp_path / "mine.pt")])
    assert "model not found" in str(error.value) and "DEMO" not in str(error.value)

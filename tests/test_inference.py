"""inference.py end to end on tiny generated clips with seeded weights: outputs, results.json, the log."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.data.video_io import VideoWriter, open_video
from cdvd_tsp.infer.execution import channels_last_name
from cdvd_tsp.infer.options import default_workers
from cdvd_tsp.infer.planning import records_folder
from cdvd_tsp.inference import main
from cdvd_tsp.model.acceleration import recommended_choice, recommended_options
from cdvd_tsp.utils import committed
from cdvd_tsp.utils.metrics import psnr, ssim
from cdvd_tsp.utils.openmp import wait_policy
from cdvd_tsp.utils.precision import PRECISIONS
from conftest import make_dataset, save_seeded_weights, sharp_frames, write_image

pytestmark = pytest.mark.usefixtures("single_thread")

METRICS = ("psnr", "ssim", "input_psnr", "input_ssim")

# The release's format strings (csbhr/CDVD-TSP code/inference.py), as it writes its log.
RELEASE_FRAME = (
    "> {}-{} PSNR={:.5}, SSIM={:.4} pre_time:{:.3}s, forward_time:{:.3}s, post_time:{:.3}s, total_time:{:.3}s"
)
RELEASE_VIDEO = "# Video:{} AVG-PSNR={:.5}, AVG-SSIM={:.4}"
RELEASE_TOTAL = "# Total AVG-PSNR={:.5}, AVG-SSIM={:.4}"
RELEASE_HEADER = ("save_image", "border", "model_path", "data_path", "result_path", "n_seq", "size_must_mode", "device")


def release_regex(template: str) -> re.Pattern:
    """A parser of the release's log lines: its format string with every field a group (``{}`` any text, ``{:.N}``
    a number)."""
    parts = re.split(r"(\{[^}]*\})", template)
    pattern = "".join(
        (r"(.+)" if part == "{}" else r"(\S+)") if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(f"^{pattern}$")


FRAME_LINE, VIDEO_LINE, TOTAL_LINE = (release_regex(text) for text in (RELEASE_FRAME, RELEASE_VIDEO, RELEASE_TOTAL))


def release_parse(log: list[str]) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], list[tuple[str, ...]]]:
    """What a parser of the release's logs reads from ``log``: frame, video and total lines; it skips the rest."""
    parsed: tuple[list, list, list] = ([], [], [])
    for line in log:
        for found, regex in zip(parsed, (FRAME_LINE, VIDEO_LINE, TOTAL_LINE), strict=True):
            match = regex.match(line)
            if match:
                found.append(match.groups())
    return parsed


def assert_release_log(log: list[str], report: dict) -> None:
    """Every frame, video and total line parses with the release's formats and prints results.json's numbers in
    the release's precision; every other line is a release header line or an extra line ("+ ")."""
    frames, videos, totals = release_parse(log)
    expected_frames = [
        (video, frame, f"{scores['psnr']:.5}", f"{scores['ssim']:.4}")
        for video, entry in report["videos"].items()
        for frame, scores in entry["frames"].items()
    ]
    assert [groups[:4] for groups in frames] == expected_frames
    assert all(float(groups[-1]) >= 0 for groups in frames)
    assert videos == [(name, f"{entry['psnr']:.5}", f"{entry['ssim']:.4}") for name, entry in report["videos"].items()]
    assert totals == [(f"{report['psnr']:.5}", f"{report['ssim']:.4}")]
    parsed = sum(1 for line in log if any(regex.match(line) for regex in (FRAME_LINE, VIDEO_LINE, TOTAL_LINE)))
    others = [line for line in log if not any(regex.match(line) for regex in (FRAME_LINE, VIDEO_LINE, TOTAL_LINE))]
    assert parsed + len(others) == len(log)
    assert others[0].startswith("Inference - ")
    header = [line.split(": ")[0] for line in others[1 : 1 + len(RELEASE_HEADER)]]
    assert header == list(RELEASE_HEADER)  # the release's header, in its order
    assert others[1 + len(RELEASE_HEADER) :][0].startswith("+ ")
    loading = [index for index, line in enumerate(log) if line.startswith("Loading model from ")]
    assert len(loading) == 1 and log[loading[0]] == f"Loading model from {report_model_path(log)}"
    assert loading[0] < log.index(next(line for line in log if line.startswith("> ")))
    for line in others[1 + len(RELEASE_HEADER) :]:
        assert line.startswith("+ ") or line.startswith("Loading model from "), line
        assert not line.startswith(("> ", "# "))
    # the video lines come after every frame line, then the total line, as in the release
    first_average = next(index for index, line in enumerate(log) if line.startswith("# "))
    assert not [line for line in log[first_average:] if line.startswith("> ")]
    assert TOTAL_LINE.match(next(line for line in reversed(log) if not line.startswith("+ ")))


def report_model_path(log: list[str]) -> str:
    return next(line for line in log if line.startswith("model_path: ")).split(": ", 1)[1]


def extra_values(log: list[str], start: str) -> dict[str, str]:
    """The ``name=value`` pairs of the extra line that starts with ``start``."""
    line = next(line for line in log if line.startswith(start))
    return dict(pair.split("=") for pair in re.findall(r"[\w-]+=[^,\s]+", line[len(start) :]))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=7)


def evaluate(data: Path, weights: Path, result: Path, *flags: str) -> dict:
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result), "--device", "cpu"]
    assert main([*argv, *flags]) == 0
    return json.loads((result / "results.json").read_text())


def pngs(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.png"))


def only_log(folder: Path, pattern: str = "inference_log_*.txt") -> list[str]:
    logs = list(folder.glob(pattern))
    assert len(logs) == 1 and ":" not in logs[0].name
    return logs[0].read_text().splitlines()


def assert_close_to_printed(value: float, printed: str, digits: int) -> None:
    """``printed`` is ``value`` in the release's format (``digits`` significant digits)."""
    assert printed == f"{value:.{digits}}"


def test_evaluation_scores_every_full_window_and_reports_consistently(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"v1": 6, "v2": 5}, height=38, width=50)
    result = tmp_path / "result"
    report = evaluate(data, weights, result)

    # without --border the first and last two frames get no output; frames are cropped to multiples of 4
    assert pngs(result / "v1") == ["00002.png", "00003.png"]
    assert pngs(result / "v2") == ["00002.png"]
    assert read_rgb(result / "v1" / "00002.png").shape == (36, 48, 3)

    assert set(report) == {
        *METRICS,
        "frames",
        "seconds_per_frame",
        "model_seconds_per_frame",
        "settings",
        "videos",
    }
    manifest = committed.read_manifest(result, "results.json")  # what the run wrote, for a re-run to replace
    assert manifest is not None
    assert sorted(manifest.files) == ["results.json", "v1/00002.png", "v1/00003.png", "v2/00002.png"]
    assert report["frames"] == 3 and report["seconds_per_frame"] > 0 and report["model_seconds_per_frame"] > 0
    assert report["settings"] == {
        "n_seq": 5,
        "border": False,
        "border_mode": None,
        "precision": "fp32",
        "channels_last": channels_last_name(recommended_options(torch.device("cpu"), PRECISIONS["fp32"])),
        "batched_flows": False,
        "flow_bf16": False,
        "backend": "pytorch",
        "layout_choice": recommended_choice(torch.device("cpu"), PRECISIONS["fp32"]).reason,
        "cuda_graphs": False,
        "compile": False,
        "deterministic": False,
        "threads": 1,
        "threads_choice": "OMP_NUM_THREADS 1",  # tests/conftest.py's single_thread
        "openmp_wait": wait_policy(),
        "workers": default_workers(),
        "runner": "streaming",
        "device": "cpu",
        "processes": 1,
        "layout": "release",
        "split": None,
        "gopro_blur": "blur",
        "videos": None,
        "metric_channel": "rgb",
        "crop_border": 4,
        "self_ensemble": None,
        "tile": None,
        "tile_overlap": None,
        "cost_volume": "PyTorch, tiled products",
    }
    assert list(report["videos"]) == ["v1", "v2"]
    every_frame = []
    for video, frames in (("v1", ["00002", "00003"]), ("v2", ["00002"])):
        entry = report["videos"][video]
        assert set(entry) == {*METRICS, "frames"} and list(entry["frames"]) == frames
        for frame in frames:
            output = read_rgb(result / video / f"{frame}.png")
            sharp = read_rgb(data / "gt" / video / f"{frame}.png")[:36, :48]
            blurry = read_rgb(data / "blur" / video / f"{frame}.png")[:36, :48]
            expected = [psnr(output, sharp), ssim(output, sharp), psnr(blurry, sharp), ssim(blurry, sharp)]
            assert [entry["frames"][frame][name] for name in METRICS] == pytest.approx(expected, rel=1e-12)
            every_frame.append(expected)
        for position, name in enumerate(METRICS):
            video_mean = math.fsum(values[position] for values in every_frame[-len(frames) :]) / len(frames)
            assert entry[name] == pytest.approx(video_mean, rel=1e-12)
    for position, name in enumerate(METRICS):  # the total is over ALL frames, not the mean of the video means
        assert report[name] == pytest.approx(math.fsum(values[position] for values in every_frame) / 3, rel=1e-12)

    log = only_log(result)
    assert_release_log(log, report)
    # our extra figures: the input's metrics per frame, per video and in total, frame counts and speed
    for video, entry in report["videos"].items():
        for frame, scores in entry["frames"].items():
            extra = extra_values(log, f"+ {video}-{frame} input ")
            assert extra == {"PSNR": f"{scores['input_psnr']:.5}", "SSIM": f"{scores['input_ssim']:.4}"}
        extra = extra_values(log, f"+ Video:{video} input ")
        assert extra == {
            "AVG-PSNR": f"{entry['input_psnr']:.5}",
            "AVG-SSIM": f"{entry['input_ssim']:.4}",
            "frames": str(len(entry["frames"])),
        }
    extra = extra_values(log, "+ Total input ")
    assert extra["AVG-PSNR"] == f"{report['input_psnr']:.5}" and extra["frames"] == "3"
    assert extra["seconds_per_frame"] == f"{report['seconds_per_frame']:.4}"
    for line in ("+ layout: release", "+ metric_channel: rgb", "+ crop_border: 4", "+ self_ensemble: off"):
        assert line in log


def test_border_gives_every_frame_and_streaming_equals_window(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=36, width=48)
    streamed = evaluate(data, weights, tmp_path / "streamed", "--border")
    windowed = evaluate(data, weights, tmp_path / "windowed", "--border", "--window")
    assert pngs(tmp_path / "streamed" / "clip") == ["00000.png", "00001.png", "00002.png"]
    assert pngs(tmp_path / "windowed" / "clip") == pngs(tmp_path / "streamed" / "clip")
    for name in pngs(tmp_path / "streamed" / "clip"):
        ours = read_rgb(tmp_path / "streamed" / "clip" / name).astype(int)
        theirs = read_rgb(tmp_path / "windowed" / "clip" / name).astype(int)
        assert np.abs(ours - theirs).max() <= 1  # float32 paths equal to 1e-5: at most a rounding step apart
    assert streamed["psnr"] == pytest.approx(windowed["psnr"], rel=1e-3)
    assert "+ runner: window (every window from scratch)" in only_log(tmp_path / "windowed")


def test_dataset_without_ground_truth_deblurs_without_metrics(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 5}, height=36, width=48, gt=False)
    report = evaluate(data, weights, tmp_path / "result")
    assert pngs(tmp_path / "result" / "clip") == ["00002.png"]
    assert set(report) == {"frames", "seconds_per_frame", "model_seconds_per_frame", "settings", "videos"}
    assert report["videos"] == {"clip": {"frames": {"00002": {}}}}
    log = only_log(tmp_path / "result")
    assert [line.split(" pre_time")[0] for line in log if line.startswith("> ")] == ["> clip-00002"]
    assert log[-2].startswith("# Total frames=1, seconds_per_frame=")
    assert log[-1] == f"+ outputs: the frames, the log and results.json in {tmp_path / 'result'}"


def test_input_folder_keeps_size_and_names_and_restores_every_frame(tmp_path: Path, weights: Path) -> None:
    frames = sharp_frames(3, 30, 45)
    folder = tmp_path / "my frames"
    write_image(folder / "shot1.jpg", frames[0])
    write_image(folder / "shot2.png", frames[1][..., 0])  # gray
    write_image(folder / "shot10.png", frames[2])
    output = tmp_path / "out"
    argv = ["--input", str(folder), "--output", str(output), "--model_path", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    assert pngs(output) == ["shot1.png", "shot10.png", "shot2.png"]
    assert all(read_rgb(output / name).shape == (30, 45, 3) for name in pngs(output))
    report = json.loads((output / "results.json").read_text())
    assert report["frames"] == 3 and list(report["videos"]["my frames"]["frames"]) == ["shot1", "shot2", "shot10"]
    assert "psnr" not in report
    assert len([line for line in only_log(output) if line.startswith("> ")]) == 3


def test_input_video_round_trip_gives_a_video_of_the_same_rate_and_size(tmp_path: Path, weights: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, (36, 50), fps=12.5) as writer:
        for frame in sharp_frames(3, 36, 50):
            writer.write(frame)
    output = tmp_path / "out" / "deblurred.mp4"
    argv = ["--input", str(clip), "--output", str(output), "--model_path", str(weights), "--device", "cpu"]
    assert main(argv) == 0
    video = open_video(output)
    assert (video.size, video.fps, len(video)) == ((36, 50), 12.5, 3)
    assert len(list(video.frames())) == 3
    records = records_folder(output)
    report = json.loads((records / "results.json").read_text())
    assert report["frames"] == 3 and list(report["videos"]["clip"]["frames"]) == ["00000", "00001", "00002"]
    log = only_log(records)
    assert [line.split(" ")[1] for line in log if line.startswith("> ")] == ["clip-00000", "clip-00001", "clip-00002"]
    assert [line for line in log if line.startswith("# ")] == [
        "# Video:clip frames=3",
        f"# Total frames=3, seconds_per_frame={report['seconds_per_frame']:.4}",
    ]
    assert log[-1] == f"+ outputs: the video {output}; the log and results.json in {records}"
    assert [path.name for path in output.parent.iterdir()] == ["deblurred.mp4"]  # nothing beside it, no partial
    hidden = sorted(path.name for path in records.iterdir() if path.name.startswith("."))
    assert hidden == [".results.json.manifest.json"]  # nothing staged, no lock


def without_times(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("seconds_per_frame", "model_seconds_per_frame")}


def log_body(folder: Path) -> list[str]:
    """The frame and average lines of the only log, without their times."""
    lines = [line for line in only_log(folder) if line.startswith(("> ", "# "))]
    return [line.split(" pre_time:")[0].split(", seconds_per_frame=")[0] for line in lines]


def test_outputs_are_the_same_with_workers_and_without(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5, "b": 4}, height=36, width=48)
    serial = evaluate(data, weights, tmp_path / "serial", "--border", "--workers", "0", "--showcase")
    overlapped = evaluate(data, weights, tmp_path / "overlapped", "--border", "--showcase")
    assert (serial["settings"]["workers"], overlapped["settings"]["workers"]) == (0, 4)
    serial["settings"]["workers"] = 4
    assert without_times(serial) == without_times(overlapped)  # every score exactly, frames in the same order
    assert serial["frames"] == 9
    files = sorted(path.relative_to(tmp_path / "serial") for path in (tmp_path / "serial").rglob("*.png"))
    assert len(files) == 9 + 2  # the frames and a showcase picture per video
    assert files == sorted(
        path.relative_to(tmp_path / "overlapped") for path in (tmp_path / "overlapped").rglob("*.png")
    )
    for name in files:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "overlapped" / name).read_bytes()
    assert log_body(tmp_path / "serial") == log_body(tmp_path / "overlapped")
    header = only_log(tmp_path / "overlapped")
    workers = f"+ workers: {default_workers()}"
    for line in ("+ precision: fp32", "+ cuda_graphs: False", "+ compile: False", workers, "device: cpu"):
        assert line in header


def test_border_modes_change_only_the_frames_whose_window_they_pad(tmp_path: Path, weights: Path) -> None:
    """Six frames, two stages: frames 2 and 3 have full windows; frame 1's window is (f1, f0, f1, f2, f3) with the
    release's padding and with reflection alike, (f0, f0, f1, f2, f3) replicated; frame 0's differs in each mode.
    The window runner pads alike (shown here for reflect; each mode's padding against the windows of its padded list
    is tests/test_model_streaming.py's)."""
    data = make_dataset(tmp_path / "data", {"clip": 6}, height=20, width=24)
    images: dict[str, dict[str, np.ndarray]] = {}
    for mode in ("release", "replicate", "reflect"):
        streamed = evaluate(data, weights, tmp_path / mode, "--border", "--border_mode", mode, "--workers", "0")
        assert streamed["settings"]["border_mode"] == mode
        assert f"+ border_mode: {mode}" in only_log(tmp_path / mode)
        images[mode] = {name: read_rgb(tmp_path / mode / "clip" / name) for name in pngs(tmp_path / mode / "clip")}
        assert list(images[mode]) == [f"{index:05d}.png" for index in range(6)]
    evaluate(data, weights, tmp_path / "window", "--border", "--border_mode", "reflect", "--window", "--workers", "0")
    for name, ours in images["reflect"].items():
        theirs = read_rgb(tmp_path / "window" / "clip" / name)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1  # float32 paths: a rounding step
    release, replicate, reflect = images["release"], images["replicate"], images["reflect"]

    def same(first: np.ndarray, second: np.ndarray) -> bool:
        return np.array_equal(first, second)

    for name in ("00002.png", "00003.png"):
        assert same(release[name], replicate[name]) and same(release[name], reflect[name])
    for name in ("00001.png", "00004.png"):
        assert same(release[name], reflect[name]) and not same(release[name], replicate[name])
    for name in ("00000.png", "00005.png"):
        assert not same(release[name], replicate[name]) and not same(release[name], reflect[name])
        assert not same(replicate[name], reflect[name])

"""The run log and results.json of inference: averages over all frames, infinity, unique log names."""

import json
import math
from pathlib import Path

from utils.inference_report import FrameTimes, Results, RunLog, frame_line, total_line
from utils.metrics import FrameScores

TIMES = FrameTimes(pre=0.5, forward=2.0, post=0.25)


def test_total_is_over_all_frames_not_the_mean_of_video_means() -> None:
    results = Results()
    results.add("a", "1", FrameScores(30.0, 0.9, 20.0, 0.5), TIMES)
    results.add("b", "1", FrameScores(20.0, 0.7, 18.0, 0.4), TIMES)
    results.add("b", "2", FrameScores(26.0, 0.8, 19.0, 0.6), TIMES)
    report = results.to_json()
    assert report["psnr"] == 76.0 / 3 and report["videos"]["b"]["psnr"] == 23.0
    assert report["input_ssim"] == (0.5 + 0.4 + 0.6) / 3
    assert report["frames"] == 3 and report["seconds_per_frame"] == 2.75
    assert report["videos"]["a"]["frames"]["1"] == {"psnr": 30.0, "ssim": 0.9, "input_psnr": 20.0, "input_ssim": 0.5}


def test_infinite_psnr_is_written_as_the_string_inf(tmp_path: Path) -> None:
    results = Results()
    results.add("a", "1", FrameScores(math.inf, 1.0, 20.0, 0.5), TIMES)
    results.write_json(tmp_path / "results.json")
    report = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no Infinity literal
    assert report["psnr"] == "inf" and float(report["videos"]["a"]["frames"]["1"]["psnr"]) == math.inf
    assert "PSNR=inf" in frame_line("a", "1", FrameScores(math.inf, 1.0, 20.0, 0.5), TIMES)


def test_without_ground_truth_there_are_no_metric_keys() -> None:
    results = Results()
    results.add("a", "1", None, TIMES)
    assert results.to_json() == {"frames": 1, "seconds_per_frame": 2.75, "videos": {"a": {"frames": {"1": {}}}}}
    assert total_line(results) == "# Total frames=1, seconds_per_frame=2.75"
    assert frame_line("a", "1", None, TIMES) == (
        "> a-1 pre_time:0.5s, forward_time:2.0s, post_time:0.25s, total_time:2.75s"
    )


def test_each_run_gets_a_new_log_with_a_portable_name(tmp_path: Path) -> None:
    (tmp_path / "inference_log_kept.txt").write_text("an earlier run")
    with RunLog(tmp_path) as first, RunLog(tmp_path) as second:
        first.write("one")
        second.write("two")
    assert first.path != second.path
    assert all(":" not in path.name for path in (first.path, second.path))
    assert (first.path.read_text(), second.path.read_text()) == ("one\n", "two\n")
    assert (tmp_path / "inference_log_kept.txt").read_text() == "an earlier run"

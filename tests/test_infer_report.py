"""The run log and results.json of inference: averages over all frames, infinity, unique log names, and the
results of several processes merged into one run's."""

import json
import math
from pathlib import Path

import pytest

from cdvd_tsp.infer.report import (
    EXTRA,
    FrameTimes,
    Report,
    Results,
    RunLog,
    frame_line,
    merge,
    resumed_line,
    stopped_line,
    total_lines,
    video_lines,
    write_header,
    write_summary,
    write_videos,
)
from cdvd_tsp.utils.metrics import FrameScores

TIMES = FrameTimes(pre=0.5, forward=2.0, post=0.25, total=2.75)


def test_total_is_over_all_frames_not_the_mean_of_video_means() -> None:
    results = Results()
    results.add("a", "1", FrameScores(30.0, 0.9, 20.0, 0.5), TIMES)
    results.add("b", "1", FrameScores(20.0, 0.7, 18.0, 0.4), TIMES)
    results.add("b", "2", FrameScores(26.0, 0.8, 19.0, 0.6), TIMES)
    report = results.to_json()
    assert report["psnr"] == 76.0 / 3 and report["videos"]["b"]["psnr"] == 23.0
    assert report["input_ssim"] == (0.5 + 0.4 + 0.6) / 3
    assert report["frames"] == 3 and report["seconds_per_frame"] == 2.75 and report["model_seconds_per_frame"] == 2.0
    assert report["videos"]["a"]["frames"]["1"] == {"psnr": 30.0, "ssim": 0.9, "input_psnr": 20.0, "input_ssim": 0.5}


def test_infinite_psnr_is_written_as_the_string_inf() -> None:
    results = Results()
    results.add("a", "1", FrameScores(math.inf, 1.0, 20.0, 0.5), TIMES)
    report = json.loads(json.dumps(results.to_json(), allow_nan=False))  # strict JSON: no Infinity literal
    assert report["psnr"] == "inf" and float(report["videos"]["a"]["frames"]["1"]["psnr"]) == math.inf
    assert "PSNR=inf" in frame_line("a", "1", FrameScores(math.inf, 1.0, 20.0, 0.5), TIMES)


def test_without_ground_truth_there_are_no_metric_keys() -> None:
    results = Results()
    results.add("a", "1", None, TIMES)
    assert results.to_json() == {
        "frames": 1,
        "seconds_per_frame": 2.75,
        "model_seconds_per_frame": 2.0,
        "videos": {"a": {"frames": {"1": {}}}},
    }
    assert list(results.to_json({"workers": 4})) == [
        "frames",
        "seconds_per_frame",
        "model_seconds_per_frame",
        "settings",
        "videos",
    ]
    assert total_lines(results) == ["# Total frames=1, seconds_per_frame=2.75"]
    assert video_lines("a", results.video("a")) == ["# Video:a frames=1"]
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


def scores(value: float) -> FrameScores:
    return FrameScores(value, value / 100, value - 1, value / 200)


def test_results_of_several_processes_merge_into_one_runs_in_plan_order(tmp_path: Path) -> None:
    one = Report()
    first, second = Report(), Report()
    for video, frames, part in (("a", 2, second), ("b", 3, first), ("c", 1, second)):  # plan order: a, b, c
        for frame in range(frames):
            times = FrameTimes(0.1, 1.0 + frame, 0.2, 1.5 + frame)
            for report in (one, part):
                report.frame(video, str(frame), scores(20.0 + frame), times)
        for report in (one, part):
            report.video_finished(video)
    merged = merge([first.results, second.results], ["a", "b", "c"])
    assert merged.to_json() == one.results.to_json()
    assert list(merged.videos) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="video b was restored by two processes"):
        merge([first.results, first.results], ["a", "b", "c"])

    # rank 0 writes the lines a one-process run writes as it goes
    with RunLog(tmp_path, "live") as live:
        report = Report(live)
        for name, video in one.results.videos.items():
            for frame, score in video.frames.items():
                report.frame(name, frame, score, video.times[frame])
            report.video_finished(name)
        write_summary(live, one.results, report.finished, complete=True)
    with RunLog(tmp_path, "merged") as log:
        write_videos(log, merged)
        write_summary(log, merged, ["a", "b", "c"], complete=True)
    assert log.path.read_text() == live.path.read_text()
    with RunLog(tmp_path, "unfinished") as log:
        write_videos(log, merged)
        write_summary(log, merged, ["a", "c"], complete=False)  # b's process failed: its frames, no average
    text = log.path.read_text()
    assert "# Video:b" not in text and "> b-2" in text and "# Video:c" in text and "# Total" not in text


def test_lines_follow_the_release_and_extras_are_marked() -> None:
    results = Results()
    results.add("a", "7", FrameScores(30.123456, 0.912345, 20.5, 0.5), TIMES)
    assert frame_line("a", "7", results.videos["a"].frames["7"], TIMES) == (
        "> a-7 PSNR=30.123, SSIM=0.9123 pre_time:0.5s, forward_time:2.0s, post_time:0.25s, total_time:2.75s"
    )
    assert video_lines("a", results.video("a")) == [
        "# Video:a AVG-PSNR=30.123, AVG-SSIM=0.9123",
        "+ Video:a input AVG-PSNR=20.5, AVG-SSIM=0.5, frames=1",
    ]
    assert total_lines(results) == [
        "# Total AVG-PSNR=30.123, AVG-SSIM=0.9123",
        "+ Total input AVG-PSNR=20.5, AVG-SSIM=0.5, frames=1, seconds_per_frame=2.75",
    ]


def test_header_puts_the_release_settings_first_in_its_order(tmp_path: Path) -> None:
    settings = {"layout": "gopro", "device": "cpu", "data_path": "d", "save_image": True, "n_seq": 5}
    with RunLog(tmp_path) as log:
        write_header(log, settings, Path("m.pt"))
    lines = log.path.read_text().splitlines()
    assert lines[0].startswith("Inference - ")
    assert lines[1:] == [
        "save_image: True",
        "data_path: d",
        "n_seq: 5",
        "device: cpu",
        f"{EXTRA}layout: gopro",
        f"Loading model from {Path('m.pt')}",
    ]


def test_a_finished_video_is_recorded_and_a_kept_one_is_reported_as_if_restored_now(tmp_path: Path) -> None:
    recorded: list[tuple[str, list[str]]] = []
    with RunLog(tmp_path, "resumed") as log:
        report = Report(log, recorder=lambda name, video: recorded.append((name, list(video.frames))))
        report.frame("a", "1", scores(21.0), TIMES)
        report.video_finished("a")
        earlier = Results()  # b, finished by an earlier start: its record's scores and times
        earlier.add("b", "1", scores(22.0), FrameTimes(9.0, 8.0, 7.0, 6.0))
        earlier.add("b", "2", scores(23.0), FrameTimes(5.0, 4.0, 3.0, 2.0))
        report.keep("b", earlier.video("b"))
        write_summary(log, report.results, report.finished, complete=True)
    assert recorded == [("a", ["1"])]  # b is not recorded again
    assert report.finished == ["a", "b"] and report.results.video("b") == earlier.video("b")
    lines = log.path.read_text().splitlines()
    assert lines[2] == "> b-1 PSNR=22.0, SSIM=0.22 pre_time:9.0s, forward_time:8.0s, post_time:7.0s, total_time:6.0s"
    assert lines[-1] == "+ Total input AVG-PSNR=21.0, AVG-SSIM=0.11, frames=3, seconds_per_frame=3.583"
    assert resumed_line(1, 3) == (
        "+ resumed: 1 of 3 videos were finished by an earlier start of this run and are kept (their lines are that "
        "start's)"
    )
    assert stopped_line(2, 5, Path("r/.results.json.staging-0123456789ab")) == (
        f"+ stopped: 2 of 5 videos are finished and kept in {Path('r/.results.json.staging-0123456789ab')}; run the "
        "same command with --resume to continue"
    )

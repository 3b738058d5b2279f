"""The plan of a run, part by part, as make_plan decides it from the flags (nothing is restored here), and how
torchrun's processes share the videos."""

import os
from pathlib import Path

import pytest
import torch

from cdvd_tsp.data.video_io import VideoWriter
from cdvd_tsp.infer.options import parse_args
from cdvd_tsp.infer.planning import Deblurring, Evaluation, Job, Plan, make_plan, shard
from cdvd_tsp.utils.errors import UserError
from conftest import evaluation_argv, make_dataset, save_seeded_weights, sharp_frames, write_image


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=2)


def plan(*argv: str) -> Plan:
    return make_plan(parse_args(list(argv)))


def test_an_evaluation_plan(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 6, "b": 5}, height=22, width=26)
    result = tmp_path / "result"
    made = plan(*evaluation_argv(data, weights, result), "--showcase", "--tile", "16", "--tile_overlap", "8")
    assert made.task == Evaluation(
        data_path=data,
        result_path=result,
        save_image=True,
        layout="release",
        split=None,
        gopro_blur="blur",
        videos=None,
    )
    assert [(job.source.name, job.targets, job.frames_dir, job.video_out) for job in made.jobs] == [
        ("a", [2, 3], result / "a", None),
        ("b", [2], result / "b", None),
    ]
    assert [len(job.gt or []) for job in made.jobs] == [6, 5]
    restoration = made.restoration
    assert (restoration.model_path, restoration.n_stages, restoration.n_sequence) == (weights, 2, 5)
    assert (restoration.border_mode, restoration.border, restoration.crop) == (None, False, True)
    assert (restoration.runner, restoration.self_ensemble, restoration.tile, restoration.tile_overlap) == (
        "streaming",
        None,
        16,
        8,
    )
    execution = made.execution
    assert (execution.device, execution.precision.name, execution.cuda_graphs, execution.compile) == (
        torch.device("cpu"),
        "fp32",
        False,
        False,
    )
    assert execution.workers == 4
    assert (made.metrics.channel, made.metrics.crop_border) == ("rgb", 4)
    destination = made.destination
    assert (destination.report_dir, destination.results_path, destination.showcase_dir) == (
        result,
        result / "results.json",
        result / "showcase",
    )
    assert (destination.log_prefix, destination.option) == ("inference_log", "--result_path")
    assert [path.relative_to(result).as_posix() for path in destination.files] == [
        "a/00002.png",
        "a/00003.png",
        "showcase/a_00003.png",
        "showcase/a.gif",
        "b/00002.png",
        "showcase/b_00002.png",
        "showcase/b.gif",
    ]


def test_an_evaluation_with_a_border_and_without_saved_frames(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 3}, height=22, width=26)
    made = plan(*evaluation_argv(data, weights, tmp_path / "result"), "--border", "--border_mode", "reflect")
    assert made.restoration.border_mode == "reflect" and made.jobs[0].targets == [0, 1, 2]
    scored_only = plan(*evaluation_argv(data, weights, tmp_path / "result"), "--border", "--no_save_image")
    assert scored_only.restoration.border_mode == "release"
    assert scored_only.jobs[0].frames_dir is None and scored_only.destination.files == ()


def test_a_folder_to_deblur_gets_every_frame_padded_and_its_own_names(tmp_path: Path, weights: Path) -> None:
    folder = tmp_path / "shots"
    for index, frame in enumerate(sharp_frames(3, 10, 13)):
        write_image(folder / f"shot{index}.jpg", frame)
    output = tmp_path / "out"
    made = plan("--input", str(folder), "--output", str(output), "--model_path", str(weights), "--device", "cpu")
    assert made.task == Deblurring(input=folder, output=output)
    assert (made.restoration.border_mode, made.restoration.crop) == ("release", False)
    assert made.jobs[0].targets == [0, 1, 2] and made.jobs[0].gt is None
    assert [path.name for path in made.destination.files] == ["shot0.png", "shot1.png", "shot2.png"]
    assert (made.destination.results_path, made.destination.option) == (output / "results.json", "--output")


def test_a_video_to_deblur_is_reported_in_its_records_folder_not_beside_it(tmp_path: Path, weights: Path) -> None:
    clip = tmp_path / "clip.mp4"
    with VideoWriter(clip, (12, 16), fps=10) as writer:
        for frame in sharp_frames(3, 12, 16):
            writer.write(frame)
    output = tmp_path / "done" / "clip_sharp.mp4"
    made = plan("--input", str(clip), "--output", str(output), "--model_path", str(weights), "--device", "cpu")
    assert (made.jobs[0].video_out, made.jobs[0].frames_dir) == (output, None)
    destination = made.destination
    assert destination.files == ()  # the video is written beside itself, not staged with the report
    records = destination.report_dir
    assert records.parent == Path(os.environ["CDVD_TSP_RECORDS"]) and records.name.startswith("clip_sharp.mp4-")
    assert destination.results_path == records / "results.json"
    assert destination.log_prefix == "inference_log"
    other = plan("--input", str(clip), "--output", str(tmp_path / "clip_sharp.mp4"), "--model_path", str(weights))
    assert other.destination.report_dir != records  # another file of the same name: other records


def test_gopro_blur_is_refused_with_another_layout_even_when_it_names_the_default(
    tmp_path: Path, weights: Path
) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    with pytest.raises(UserError, match="--gopro_blur goes with the gopro layout"):
        plan(*evaluation_argv(data, weights, tmp_path / "result"), "--gopro_blur", "blur")


def test_videos_are_shared_out_by_frame_count_the_same_way_every_time() -> None:
    class Source:
        def __init__(self, frames: int) -> None:
            self.frames = frames

        def __len__(self) -> int:
            return self.frames

    jobs = [Job(Source(frames), None, [], None, None) for frames in (6, 5, 7)]  # type: ignore[arg-type]
    assert shard(jobs, 2) == [[2], [0, 1]]
    assert shard(jobs, 1) == [[0, 1, 2]]
    assert shard(jobs, 4) == [[2], [0], [1], []]  # more processes than videos: some have none
    many = [Job(Source(frames), None, [], None, None) for frames in (9, 1, 8, 2, 7, 3, 5, 5)]  # type: ignore[arg-type]
    loads = [sum(len(many[index].source) for index in share) for share in shard(many, 3)]
    assert sorted(index for share in shard(many, 3) for index in share) == list(range(8))
    assert max(loads) - min(loads) <= 1

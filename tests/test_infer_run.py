"""The parts of a whole run that are its own (the run end to end: tests/test_inference*.py): the model built for
the plan's number of stages, the plan's outputs moved into the staging folder while the log stays, and the videos
a resumed run keeps reported where they come in the plan, the others restored."""

from pathlib import Path

import pytest
import torch

from cdvd_tsp.infer import pipeline
from cdvd_tsp.infer.options import parse_args
from cdvd_tsp.infer.planning import Job, make_plan
from cdvd_tsp.infer.report import Report, RunLog
from cdvd_tsp.infer.restorer import Restorer, load_model
from cdvd_tsp.infer.run import restore, staged
from cdvd_tsp.model.checkpoint import CheckpointError, with_n_sequence
from conftest import evaluation_argv, make_dataset, save_seeded_weights, seeded_model

CPU = torch.device("cpu")


def test_the_model_has_the_stages_asked_for_and_refuses_a_file_that_records_others(tmp_path: Path) -> None:
    plain = save_seeded_weights(tmp_path / "plain.pt", seed=1)
    assert (load_model(plain, CPU).n_sequence, load_model(plain, CPU, n_stages=3).n_sequence) == (5, 7)
    model, state = load_model(plain, CPU, n_stages=1), torch.load(plain, weights_only=True)
    assert not model.training and all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    recorded = tmp_path / "t1.pt"
    torch.save(with_n_sequence(seeded_model(1, n_sequence=3).state_dict(), 3), recorded)
    assert load_model(recorded, CPU, n_stages=1).n_stages == 1
    with pytest.raises(CheckpointError, match=r"was trained with n_sequence 3 \(--n_stages 1\)"):
        load_model(recorded, CPU)


class Staging:
    """What `staged` asks of infer/staging.py's Staging: where a path goes until the commit."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.root = folder, folder / ".staging"

    def stage(self, target: Path) -> Path:
        return self.root / target.relative_to(self.folder)


def test_every_output_is_staged_and_the_log_is_not(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", {"a": 5}, height=22, width=26)
    weights = save_seeded_weights(tmp_path / "model.pt")
    result = tmp_path / "result"
    plan = make_plan(parse_args([*evaluation_argv(data, weights, result), "--showcase"]))
    moved = staged(plan, Staging(result))  # type: ignore[arg-type]
    assert moved.jobs[0].frames_dir == result / ".staging" / "a" and moved.jobs[0].video_out is None
    assert moved.destination.showcase_dir == result / ".staging" / "showcase"
    assert moved.destination.results_path == result / ".staging" / "results.json"
    assert moved.destination.report_dir == result  # the log is never staged
    assert moved.destination.files == plan.destination.files  # where they go once committed
    assert (moved.restoration, moved.execution, moved.task) == (plan.restoration, plan.execution, plan.task)


@pytest.mark.usefixtures("single_thread")
def test_a_kept_video_is_reported_where_it_comes_and_only_the_others_are_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_dataset(tmp_path / "data", {"a": 3, "b": 3, "c": 3}, height=22, width=26)
    weights = tmp_path / "t1.pt"
    torch.save(with_n_sequence(seeded_model(1, n_sequence=3).state_dict(), 3), weights)
    argv = [*evaluation_argv(data, weights, tmp_path / "result"), "--border", "--no_save_image", "--workers", "0"]
    plan = make_plan(parse_args(argv))
    restorer = Restorer.load(plan.restoration, plan.execution)
    whole = Report()
    restore(plan, restorer, plan.jobs, whole)

    restored: list[str] = []
    real = pipeline.Pipeline.video

    def video(self: pipeline.Pipeline, job: Job) -> None:
        restored.append(job.source.name)
        real(self, job)

    monkeypatch.setattr(pipeline.Pipeline, "video", video)
    with RunLog(tmp_path, "resumed") as log:
        report = Report(log)
        restore(plan, restorer, plan.jobs, report, kept={"b": whole.results.video("b")})  # b alone finished before
    assert restored == ["a", "c"]
    assert (
        report.finished == ["a", "b", "c"] and report.results.to_json()["videos"] == whole.results.to_json()["videos"]
    )
    assert report.results.video("b") == whole.results.video("b")  # its times too: those of its start
    frames = [line.split(" ")[1] for line in log.path.read_text().splitlines() if line.startswith("> ")]
    assert frames == [f"{name}-0000{index}" for name in "abc" for index in range(3)]  # the plan's order

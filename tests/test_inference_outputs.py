"""Where inference.py's outputs go by default (``infer_results/<name>_deblurred``, a preset's result folder): a
default place holds the results of one input; a run of another input that would land there is refused in one line
naming the results in place and the flag to give, and a re-run of the same input replaces its own results."""

import json
from pathlib import Path

import pytest

from cdvd_tsp.data.video_io import VideoWriter
from cdvd_tsp.infer import planning
from cdvd_tsp.inference import main
from cdvd_tsp.utils import committed
from conftest import evaluation_argv, inference_refused, make_dataset, mirror_frame, save_seeded_weights, write_frames

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=5)


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the repository, where the default places are (infer_results/...)."""
    root = tmp_path / "repository"
    monkeypatch.setattr(planning, "from_repo", lambda path: root / path)
    return root


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the logs (each run adds one), hidden ones included, with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "inference_log_" not in path.name
    }


def deblur(folder: Path, weights: Path, *flags: str) -> list[str]:
    return ["--input", str(folder), "--model_path", str(weights), "--device", "cpu", *flags]


def test_two_folders_of_one_name_do_not_replace_each_other_s_results(
    tmp_path: Path, repository: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    first, second = tmp_path / "a" / "frames", tmp_path / "b" / "frames"
    write_frames(first, 3)
    write_frames(second, 3, value=100)
    place = repository / "infer_results" / "frames_deblurred"
    assert main(deblur(first, weights)) == 0
    manifest = committed.read_manifest(place, "results.json")
    assert manifest is not None and manifest.meta == {"tool": "inference.py", "input": str(first)}
    earlier = files(place)
    assert inference_refused(deblur(second, weights), capsys) == (
        f"{place}: the default place of this run's results holds the results of {first}, and this run's input is "
        f"{second}; give --output to put them elsewhere, or move the earlier results away"
    )
    assert files(place) == earlier
    assert main(deblur(first, weights)) == 0  # the same input again: its own results are replaced
    rerun = files(place)
    assert len(list(place.glob("inference_log_*.txt"))) == 2 and sorted(rerun) == sorted(earlier)
    assert rerun[".results.json.manifest.json"] != earlier[".results.json.manifest.json"]  # a commit of its own
    elsewhere = tmp_path / "b_deblurred"
    assert main(deblur(second, weights, "--output", str(elsewhere))) == 0
    assert files(place) == rerun
    assert json.loads((elsewhere / "results.json").read_text())["frames"] == 3


def make_clip(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, (8, 8), fps=10.0) as writer:
        for index in range(3):
            writer.write(mirror_frame(value, index=index))
    return path


def test_two_videos_of_one_name_do_not_replace_each_other_s_results(
    tmp_path: Path, repository: Path, weights: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDVD_TSP_RECORDS")  # the default place of the records: infer_results/records/
    first = make_clip(tmp_path / "a" / "clip.mp4", 0)
    second = make_clip(tmp_path / "b" / "clip.mp4", 100)
    other_type = make_clip(tmp_path / "a" / "clip.mkv", 50)  # clip_deblurred.mkv: another file
    place = repository / "infer_results"
    assert main(deblur(first, weights)) == 0
    earlier = files(place)
    (records,) = (place / "records").iterdir()
    assert records.name.startswith("clip_deblurred.mp4-")
    assert sorted(earlier) == sorted(
        [
            "clip_deblurred.mp4",
            f"records/{records.name}/.results.json.manifest.json",
            f"records/{records.name}/output.json",
            f"records/{records.name}/results.json",
        ]
    )
    output = place / "clip_deblurred.mp4"
    assert inference_refused(deblur(second, weights), capsys) == (
        f"{output}: the default place of this run's results holds the results of {first}, and this run's input "
        f"is {second}; give --output to put them elsewhere, or move the earlier results away"
    )
    assert files(place) == earlier
    assert main(deblur(other_type, weights)) == 0  # another file, with its own records
    assert set(files(place)) - set(earlier) == {
        "clip_deblurred.mkv",
        *(
            f"{path.relative_to(place).as_posix()}"
            for path in (place / "records").rglob("*")
            if path.is_file() and not path.is_relative_to(records) and "inference_log_" not in path.name
        ),
    }
    assert {name: data for name, data in files(place).items() if name in earlier} == earlier


def test_a_preset_s_result_folder_holds_the_results_of_one_dataset(
    tmp_path: Path, repository: Path, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    first = make_dataset(tmp_path / "first", {"v": 5}, height=20, width=20)
    second = make_dataset(tmp_path / "second", {"v": 5}, height=20, width=20, seed=3)
    place = repository / "infer_results" / "DVD"  # --default_data DVD's, with a --data_path of one's own

    def evaluate(data: Path) -> list[str]:
        return [*evaluation_argv(data, weights, place)[:4], "--device", "cpu"]  # no --result_path

    assert main(evaluate(first)) == 0
    earlier = files(place)
    assert inference_refused(evaluate(second), capsys) == (
        f"{place}: the default place of this run's results holds the results of {first}, and this run's input is "
        f"{second}; give --result_path to put them elsewhere, or move the earlier results away"
    )
    assert files(place) == earlier
    assert main([*evaluate(second), "--result_path", str(place)]) == 0  # a place given is the user's choice
    manifest = committed.read_manifest(place, "results.json")
    assert manifest is not None and manifest.meta["input"] == str(second)

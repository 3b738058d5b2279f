"""The process-wide switches of an inference run (infer/switches.py): torch's and OpenCV's threads from --threads or
the environment, deterministic algorithms with --deterministic; set for the run, recorded, and put back after."""

import json
import os
from pathlib import Path

import cv2
import pytest
import torch

from cdvd_tsp.infer import restorer
from cdvd_tsp.infer.switches import deterministic_algorithms, run_switches, threads_set
from cdvd_tsp.inference import main
from cdvd_tsp.utils import cpu
from cdvd_tsp.utils.determinism import CUBLAS_VARIABLE
from cdvd_tsp.utils.errors import UserError
from conftest import evaluation_argv, inference_refused, make_dataset, save_seeded_weights

pytestmark = pytest.mark.usefixtures("single_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=3)


@pytest.fixture
def no_thread_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)


def deterministic_state() -> tuple[bool, bool, bool, bool, str | None]:
    cudnn = torch.backends.cudnn
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
        os.environ.get(CUBLAS_VARIABLE),
    )


def test_threads_are_the_flag_s_then_the_environment_s_and_opencv_gets_one_until_the_block_ends(
    monkeypatch: pytest.MonkeyPatch, no_thread_variables: None
) -> None:
    before = torch.get_num_threads(), cv2.getNumThreads()
    with threads_set(3) as used:
        assert used == 3 and (torch.get_num_threads(), cv2.getNumThreads()) == (3, 1)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    with threads_set(None) as used:
        assert used == 2 == torch.get_num_threads()
    monkeypatch.delenv("MKL_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    monkeypatch.setattr(cpu, "idle_cores", lambda: 4.8)
    with threads_set(None) as used:
        assert used == 5  # every usable core: none is kept for the pipeline's workers
    monkeypatch.setattr(cpu, "idle_cores", lambda: 1.2)
    with threads_set(None) as used:
        assert used == 1  # other jobs use the others: a thread per idle core
    assert torch.get_num_threads() == before[0]


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (["--threads", "0"], {}, "--threads 0: give at least 1"),
        (["--threads", "-2"], {}, "--threads -2: give at least 1"),
        ([], {"OMP_NUM_THREADS": "many"}, "OMP_NUM_THREADS='many': give a number of threads, at least 1"),
    ],
)
def test_a_bad_number_of_threads_is_one_line_naming_the_flag_or_variable(
    argv: list[str],
    environment: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_thread_variables: None,
) -> None:
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    threads = torch.get_num_threads()
    assert inference_refused(["--input", str(tmp_path), *argv], capsys) == message
    assert torch.get_num_threads() == threads and not (tmp_path / "infer_results").exists()


def test_deterministic_algorithms_are_on_in_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # as a user's earlier code may have left it
    before = deterministic_state()
    with deterministic_algorithms(False):
        assert deterministic_state() == before
    with deterministic_algorithms(True):
        assert deterministic_state() == (True, False, True, False, ":4096:8")
    assert deterministic_state() == before
    monkeypatch.setenv(CUBLAS_VARIABLE, ":16:8")  # the user's deterministic choice is kept
    with run_switches(None, deterministic=True):
        assert deterministic_state()[0] and os.environ[CUBLAS_VARIABLE] == ":16:8"
    assert os.environ[CUBLAS_VARIABLE] == ":16:8" and deterministic_state() == (*before[:4], ":16:8")


def test_a_cublas_workspace_that_is_not_deterministic_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUBLAS_VARIABLE, ":0:0")
    before = deterministic_state()
    refused = pytest.raises(UserError, match=r"^--deterministic: CUBLAS_WORKSPACE_CONFIG=':0:0' makes cuBLAS")
    with refused, deterministic_algorithms(True):
        pass
    assert deterministic_state() == before


def deterministic_runs(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch, *flags: str
) -> tuple[list[tuple], list[Path]]:
    """Two runs of one small dataset with ``--deterministic``: the switches seen while each restored, and their
    result folders."""
    seen = []
    make_runners = restorer.runner_factory

    def runner_factory(*args: object) -> object:
        seen.append((*deterministic_state(), torch.get_num_threads()))
        return make_runners(*args)

    monkeypatch.setattr(restorer, "runner_factory", runner_factory)
    data = make_dataset(tmp_path / "data", {"a": 3, "b": 2}, height=20, width=28)
    results = [tmp_path / f"run{index}" for index in range(2)]
    for result in results:
        assert main([*evaluation_argv(data, weights, result), "--border", "--deterministic", *flags]) == 0
    return seen, results


def assert_same_runs(results: list[Path]) -> None:
    first, second = results
    files = sorted(path.relative_to(first) for path in first.rglob("*.png"))
    assert len(files) == 5 and files == sorted(path.relative_to(second) for path in second.rglob("*.png"))
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    reports = [json.loads((folder / "results.json").read_text()) for folder in results]
    for report in reports:
        del report["seconds_per_frame"], report["model_seconds_per_frame"]
        for video in report["videos"].values():
            for scores in video["frames"].values():
                scores.pop("time", None)
    assert reports[0] == reports[1]


def test_two_deterministic_runs_on_the_cpu_give_the_same_bytes_and_record_it(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = deterministic_state()
    seen, results = deterministic_runs(tmp_path, weights, monkeypatch, "--threads", "1")
    assert seen == [(True, False, True, False, ":4096:8", 1)] * 2  # on while each run restored its videos
    assert deterministic_state() == before
    assert_same_runs(results)
    settings = json.loads((results[0] / "results.json").read_text())["settings"]
    assert (settings["deterministic"], settings["threads"]) == (True, 1)


@needs_cuda
def test_two_deterministic_runs_on_cuda_are_bit_identical(
    tmp_path: Path, weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ("--device", "cuda")  # after evaluation_argv's --device cpu: the last one counts
    seen, results = deterministic_runs(tmp_path, weights, monkeypatch, *flags)
    assert all(state[:4] == (True, False, True, False) for state in seen)
    assert_same_runs(results)
    settings = json.loads((results[0] / "results.json").read_text())["settings"]
    assert settings["deterministic"] is True and settings["device"].startswith("cuda")

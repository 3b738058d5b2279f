"""The one home of what the tests share: fixtures and helpers (import helpers with ``from conftest import ...``).

- the reference fixture (``reference``, ``Reference``, ``recipe_state_dict``, ``relative_error``);
- generated clips: ``sharp_frames``, ``blurred``, ``write_image``, ``make_dataset`` (the dataset form);
- seeded models: ``seeded_model``, ``save_seeded_weights``;
- ``single_thread``: one intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("single_thread")``);
  ``plots_once``: each distinct plot of the training runs of a test module rendered once;
- ``TINY_TRAINING``: the flags of the tiny training runs of main.py.
- tiny mirrors of the downloaded dataset layouts: ``make_gopro``, ``make_dvd``, ``make_bsd`` (``write_frames``).
- runners over whole clips: ``run_frames`` (every output of a runner), ``ensemble_video`` (a self-ensembled clip).
- ``train_tiny_checkpoint``: a checkpoint of any number of stages written by main.py; ``tiny_training_argv`` and
  ``run_folder``: a tiny run's command line and its folder.
- ``inference_refused``: inference.py run as its command line runs it, refused: its one line.
- ``hooked_inference``: inference.py in a subprocess (alone or under torchrun) that says which videos each process
  restores and kills itself, or sends itself or torchrun a signal, at a chosen point (``inference_hook_environment``);
- training stopped on purpose: ``hooked_training`` (main.py with signals at chosen steps and commits),
  ``hooks_environment``; ``assert_same_training`` (a resumed run ends as the uninterrupted one).

Where tests live and how they are named: tests/README.md.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.ensemble import DIHEDRAL, SelfEnsemble, TimeReversal, Transform, backward_outputs
from cdvd_tsp.model.streaming import RELEASE_BORDER, Runner, with_border

OWN_TEMPORARY_FOLDERS: list[str] = []
"""The temporary folders this process made (below): removed when it ends."""


def temporary_folder(variable: str, prefix: str) -> str:
    """The folder in the temp dir that the environment variable ``variable`` names: the one a parent process made
    (the hooked commands, pytest-xdist's processes), or one made here and removed when this process ends."""
    if not os.environ.get(variable):
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        OWN_TEMPORARY_FOLDERS.append(os.environ[variable])
    return os.environ[variable]


def remove_own_temporary_folders() -> None:
    for folder in OWN_TEMPORARY_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_unconfigure() -> None:
    """The temporary folders go when the tests end (a process may end without running atexit's functions)."""
    remove_own_temporary_folders()


atexit.register(remove_own_temporary_folders)  # a hooked command run on its own (not under pytest)

temporary_folder("CDVD_TSP_RECORDS", "cdvd-tsp-records-")
"""The records of runs that write a video (infer/planning.py `records_folder`) go there, never into the repository:
for the tests' processes and the commands they start."""
TORCHRUN_LOGS = temporary_folder("CDVD_TSP_TEST_TORCHRUN_LOGS", "cdvd-tsp-torchrun-")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--log-dir", TORCHRUN_LOGS]
"""torchrun as the tests launch it: its per-launch folder in ``TORCHRUN_LOGS``, not a new torchelastic_* folder in
the temp dir."""

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # started as a shell's background job, which ignores Ctrl-C (and hands that on to every process it starts): the
    # tests are of commands run from a terminal, where Ctrl-C raises KeyboardInterrupt; the processes the tests start
    # get the default disposition from this handler
    signal.signal(signal.SIGINT, signal.default_int_handler)

CHECKED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


@pytest.fixture(autouse=True)
def signal_handlers_put_back(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test ends with the signal handlers it began with: one left changed (by the project's code or a
    library's) is put back, so that no later test in the process meets it, and named in a warning."""
    before = {number: signal.getsignal(number) for number in CHECKED_SIGNALS}
    yield
    for number, handler in before.items():
        if signal.getsignal(number) is not handler:
            warnings.warn(f"{request.node.nodeid} left {signal.Signals(number).name}'s handler changed", stacklevel=1)
            signal.signal(number, handler)


DATA_DIR = Path(__file__).parent / "data"
REFERENCE_JSON = DATA_DIR / "cdvd_tsp_reference.json"
REFERENCE_NPZ = DATA_DIR / "cdvd_tsp_reference.npz"


def share_the_cores() -> None:
    """Threads per test process: at most 2; under pytest-xdist the cores shared out among its workers, for torch
    here and (through OMP_NUM_THREADS, unless set) for the commands the tests start. Two workers of two threads on
    two cores would each wait on the other's busy core, many times slower than one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, min(2, (os.cpu_count() or 1) // workers))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(min(threads, torch.get_num_threads()))


share_the_cores()


def recipe_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights made by the fixture's recipe (docs/faithfulness.md §10); test-only, not a feature of the project."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in sorted(model.state_dict().items()):
        values = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        scale = (tensor.shape[0] / values.numel()) ** 0.5 if values.dim() > 1 else 0.01
        state[name] = values * scale
    return state


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (both moved to float64 on the CPU)."""
    actual = actual.detach().to("cpu", torch.float64)
    expected = expected.detach().to("cpu", torch.float64)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    return ((actual - expected).abs().max() / expected.abs().max()).item()


class Reference:
    """The fixture: arrays as float64 tensors, plus its metadata."""

    def __init__(self) -> None:
        self.meta = json.loads(REFERENCE_JSON.read_text())
        with np.load(REFERENCE_NPZ) as arrays:
            self.arrays = {name: torch.from_numpy(arrays[name]) for name in arrays.files}

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.arrays[name]

    @property
    def seed(self) -> int:
        return self.meta["meta"]["seed"]

    def model(self, dtype: torch.dtype = torch.float64, device: str = "cpu") -> CDVD_TSP:
        model = CDVD_TSP().to(device=device, dtype=dtype)  # cast before loading: float32 would round the weights
        model.load_state_dict(recipe_state_dict(model, self.seed))
        return model


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="session")
def recipe_weights(reference: Reference) -> dict[str, torch.Tensor]:
    return recipe_state_dict(CDVD_TSP(), reference.seed)


# ----- generated clips


def sharp_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth random scene panning right and down by one pixel a frame, as H x W x 3 uint8 RGB."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (height + count, width + count, 3), dtype=np.uint8)
    scene = cv2.GaussianBlur(scene, (0, 0), 2.0)
    return [np.ascontiguousarray(scene[index : index + height, index : index + width]) for index in range(count)]


def blurred(frame: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), 1.2)


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB, RGBA or gray uint8 image with OpenCV (which wants BGR order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {3: [2, 1, 0], 4: [2, 1, 0, 3]}
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., order[rgb.shape[2]]]) if rgb.ndim == 3 else rgb):
        raise OSError(f"cannot write {path}")


def make_dataset(
    root: Path, videos: dict[str, int], height: int = 38, width: int = 50, gt: bool = True, seed: int = 0
) -> Path:
    """``root/blur/<video>/<00000.png ...>`` (and ``gt/``) with ``videos[name]`` frames each; returns ``root``.
    Video number i (in the order given) is drawn from seed ``seed + i``."""
    for offset, (name, count) in enumerate(videos.items()):
        for index, sharp in enumerate(sharp_frames(count, height, width, seed + offset)):
            write_image(root / "blur" / name / f"{index:05d}.png", blurred(sharp))
            if gt:
                write_image(root / "gt" / name / f"{index:05d}.png", sharp)
    return root


# ----- seeded models


INFERENCE = Path(__file__).resolve().parents[1] / "code" / "inference.py"
"""The inference command, for tests that run it in a subprocess."""


def evaluation_argv(data: Path, weights: Path, result: Path) -> list[str]:
    """The inference command's flags for evaluating ``data`` with ``weights`` into ``result`` on the CPU."""
    return ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result), "--device", "cpu"]


def seeded_model(seed: int = 0, n_sequence: int = 5) -> CDVD_TSP:
    """A CDVD-TSP with PyTorch's default initialisation drawn from ``seed``, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CDVD_TSP(n_sequence=n_sequence).eval()


def save_seeded_weights(path: Path, seed: int = 0) -> Path:
    torch.save(seeded_model(seed).state_dict(), path)
    return path


# ----- threads


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for the whole test module, its module fixtures included: on a small shared machine, two
    threads that wait on each other's busy core run these small models many times slower than one. Runs of
    inference.py in the module get one too: it takes its threads from ``OMP_NUM_THREADS`` (infer/switches.py)."""
    threads, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if variable is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = variable


@pytest.fixture(scope="module")
def plots_once() -> Iterator[None]:
    """Each distinct plot of an experiment folder rendered once in the test module (logger/experiment.py's
    `render_series`, a pure function of its series): the training tests' many runs of the same tiny history (a
    resumed run and its uninterrupted reference) otherwise render the same PNG and PDF again at every commit, ~40%
    of a tiny run's time. Different series are rendered as usual, so comparing plots still compares histories."""
    from cdvd_tsp.logger import experiment

    real, rendered = experiment.render_series, {}

    def render_series(title: str, ylabel: str, series: dict[str, list[float]]) -> dict[str, bytes]:
        key = (title, ylabel, tuple((label, tuple(values)) for label, values in series.items()))
        if key not in rendered:
            rendered[key] = real(title, ylabel, series)
        return dict(rendered[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "render_series", render_series)
        yield


# ----- tiny training runs

# One stage (three frames), a small restoration net, 32 x 32 crops; two training windows at batch 2: one step an
# epoch. The learning rate halves every epoch so that the schedule shows in two epochs. Later flags override these.
TINY_TRAINING = [
    "--cpu",
    "--no_flow_pretrain",
    "--deterministic",
    "--n_stages", "1",
    "--n_feat", "4",
    "--n_resblock", "1",
    "--patch_size", "32",
    "--batch_size", "2",
    "--test_every", "1",
    "--n_threads", "0",
    "--print_every", "1",
    "--lr", "1e-3",
    "--lr_decay", "1",
]  # fmt: skip

# Tiny mirrors of the dataset layouts the field downloads (GOPRO_Large, DVD, BSD), for the layouts tests and the
# inference command's end-to-end tests. Frames are a gray value per kind (blurred, gamma-blurred, sharp) plus a
# fixed texture, so that a model has something to restore and the kinds can be told apart by their PSNR.

MIRROR_SIZE = (8, 8)


def mirror_frame(value: int, size: tuple[int, int] = MIRROR_SIZE, index: int = 0) -> np.ndarray:
    """An H x W x 3 uint8 frame: ``value`` plus a diagonal texture that moves with ``index``."""
    rows, cols = np.indices(size)
    texture = ((rows * 3 + cols * 5 + index) % 16).astype(np.uint8)
    return np.repeat((value + texture)[..., None], 3, axis=2)


def write_frames(
    folder: Path, count: int, suffix: str = ".png", start: int = 0, value: int = 0, size: tuple[int, int] = MIRROR_SIZE
) -> None:
    for index in range(start, start + count):
        write_image(folder / f"{index:06d}{suffix}", mirror_frame(value, size, index))


def make_gopro(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = MIRROR_SIZE) -> Path:
    """GOPRO_Large: <split>/<sequence>/{blur,blur_gamma,sharp}/<frames>.png (numbered from 47, as in the download)."""
    for split, sequences in splits.items():
        for sequence, count in sequences.items():
            for kind, value in (("blur", 10), ("blur_gamma", 20), ("sharp", 30)):
                write_frames(root / split / sequence / kind, count, start=47, value=value, size=size)
    return root


def make_dvd(root: Path, videos: dict[str, int], size: tuple[int, int] = MIRROR_SIZE) -> Path:
    """DeepVideoDeblurring_Dataset: quantitative_datasets/<video>/{input,GT}/<frames>.jpg (and the qualitative set)."""
    for video, count in videos.items():
        write_frames(root / "quantitative_datasets" / video / "input", count, ".jpg", value=10, size=size)
        write_frames(root / "quantitative_datasets" / video / "GT", count, ".jpg", value=30, size=size)
    write_frames(root / "qualitative_datasets" / "alley" / "input", 2, ".jpg", size=size)
    return root


def make_bsd(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = MIRROR_SIZE) -> Path:
    """BSD_2ms16ms: <split>/<sequence>/{Blur,Sharp}/RGB/<frames>.png."""
    for split, sequences in splits.items():
        for sequence, count in sequences.items():
            write_frames(root / split / sequence / "Blur" / "RGB", count, value=10, size=size)
            write_frames(root / split / sequence / "Sharp" / "RGB", count, value=30, size=size)
    return root


# ----- runners over whole clips


def run_frames(runner: Runner, frames: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Push every frame through ``runner`` (tagged with its position) and return the outputs in order."""
    outputs = [runner.push(frame, position) for position, frame in enumerate(frames)]
    return [output.image for output in outputs if output is not None]


def ensemble_video(
    new_runner: Callable[[], Runner],
    frames: Sequence[torch.Tensor],
    transforms: Sequence[Transform] = DIHEDRAL,
    time_reversal: bool = False,
    border: str | None = RELEASE_BORDER,
) -> list[torch.Tensor]:
    """The self-ensembled outputs of a whole clip in order, as model/ensemble.py's docstring wires it: every frame
    with a ``border`` mode, else the frames with a full window. ``new_runner`` makes a plain runner; the model runs
    len(transforms) times, twice that with ``time_reversal``. Call under torch.no_grad."""

    def runner() -> Runner:
        return SelfEnsemble(new_runner, transforms)

    tagged = [(frame, index) for index, frame in enumerate(frames)]
    padded = tagged if border is None else list(with_border(tagged, new_runner().latency, border))
    forward: Runner = runner()
    if time_reversal:
        forward = TimeReversal(forward, backward_outputs(runner(), reversed(padded), keep_on=None))
    outputs = [forward.push(frame, index) for frame, index in padded]
    return [output.image for output in outputs if output is not None]


def tiny_training_argv(root: Path, *flags: str) -> list[str]:
    """main.py's command line for a tiny run (`TINY_TRAINING`, then ``flags``) over a dataset made under ``root``
    (two training videos of 3 frames, one validation video), its runs in ``root/runs`` (`run_folder`)."""
    make_dataset(root / "train", {"video0": 3, "video1": 3}, height=32, width=40)
    make_dataset(root / "test", {"video0": 3}, height=32, width=32, seed=7)
    data = ["--dir_data", str(root / "train"), "--dir_data_test", str(root / "test")]
    return [*TINY_TRAINING, *flags, *data, "--experiment_dir", str(root / "runs")]


def run_folder(argv: list[str], save: str) -> Path:
    """The folder of run ``save`` of main.py's command line ``argv``."""
    return Path(argv[argv.index("--experiment_dir") + 1]) / save


def train_tiny_checkpoint(root: Path, n_stages: int, *flags: str) -> Path:
    """A checkpoint of ``n_stages`` stages written by main.py: one tiny epoch (`TINY_TRAINING`) with the released
    restoration net's width and depth (32 features, 3 resblocks, what inference.py builds) on 7-frame clips under
    ``root``; returns its model_latest.pt (which records its n_sequence). PWC-Net is frozen (``--flow_lr 0``): its
    backward pass is most of a step's time, and the checkpoint holds all its weights all the same."""
    from cdvd_tsp import main as train_main  # the training command, imported only by the tests that train

    make_dataset(root / "train", {"video0": 7, "video1": 7}, height=32, width=40)
    make_dataset(root / "test", {"video0": 7}, height=32, width=32, seed=7)
    argv = [*TINY_TRAINING, "--dir_data", str(root / "train"), "--dir_data_test", str(root / "test")]
    argv += ["--experiment_dir", str(root / "experiment"), "--save", f"stages_{n_stages}", "--epochs", "1"]
    argv += ["--n_stages", str(n_stages), "--n_feat", "32", "--n_resblock", "3", "--flow_lr", "0", *flags]
    assert train_main.main(argv) == 0
    return root / "experiment" / f"stages_{n_stages}" / "model" / "model_latest.pt"


# ----- the inference command refused


def inference_refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run inference.py in this process as its command line does (`utils.errors.run_cli`): it must exit with status
    2 and one line on stderr, ``error: ...``, and no traceback; returns the line without ``error: ``."""
    from cdvd_tsp.inference import main  # imported only by the tests that run it
    from cdvd_tsp.utils.errors import run_cli

    capsys.readouterr()  # what earlier runs printed
    with pytest.raises(SystemExit) as exit_status:
        run_cli(lambda: main(argv))
    assert exit_status.value.code == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0].removeprefix("error: ")


# ----- inference with test hooks: killed at a chosen point, alone or under torchrun

INFERENCE_HOOK_VARIABLE = "CDVD_TSP_TEST_INFERENCE_HOOK"


def free_port() -> int:
    """A TCP port free on localhost now (for a rendezvous of torchrun launches)."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def inference_hook_environment(hook: dict | None = None, **variables: str) -> dict[str, str]:
    """The environment for `hooked_inference` with ``hook`` (see `run_hooked_inference`), one intra-op thread."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **variables}
    if hook is not None:
        environment[INFERENCE_HOOK_VARIABLE] = json.dumps(hook)
    return environment


def hooked_inference(folder: Path) -> Path:
    """Write ``folder/hooked_inference.py`` and return its path: inference.py with the hooks of
    `run_hooked_inference`, to run instead of code/inference.py (alone or under torchrun)."""
    script = Path(folder) / "hooked_inference.py"
    paths = [str(Path(__file__).resolve().parent), str(INFERENCE.parent)]
    script.write_text(f"import sys\nsys.path[:0] = {paths!r}\nimport conftest\nconftest.run_hooked_inference()\n")
    return script


def hook_line(text: str) -> None:
    """A hooked command's ``test hook: ...`` line on stderr in one write: under torchrun another process's progress
    bar cannot land inside it (print writes the text and its newline apart, and such a line was once lost)."""
    os.write(2, f"{text}\n".encode())


def restored_videos(stderr: str, rank: int | None = None) -> list[str]:
    """The videos a hooked run says it restored (of process ``rank``, or of every process), in order."""
    found = re.findall(r"test hook: rank (\d+) restores (\S+)\n", stderr)  # a progress bar may be on the line too
    return [video for who, video in found if rank is None or int(who) == rank]


INFERENCE_HOOK_POINTS = ("record", "frame", "record_write", "commit", "roll_forward")


def run_hooked_inference() -> None:
    """inference.py's command (test code, never the project's) that prints ``test hook: rank R restores V`` as
    each video starts and ``test hook: rank R exits with S`` at its end, and, with the hook in
    `INFERENCE_HOOK_VARIABLE` (JSON), stops itself at a point: ``at`` ``"record"`` right after the ``count``-th
    video record is written (infer/progress.py), ``"frame"`` right after the ``count``-th frame is reported,
    ``"record_write"`` half-way through writing the ``count``-th record (half its bytes in the temporary file),
    ``"commit"`` just before the commit point (the rename of the staged manifest over the folder's), ``"roll_forward"``
    after it, just before the ``count``-th staged PNG is renamed into place. It SIGKILLs itself there, or, with
    ``signal`` (a name: ``"SIGTERM"``), sends that signal ``to`` this process (``"self"``, the default) or its
    parent (``"parent"``: torchrun's agent, which forwards it); with ``wait`` it then waits until a signal reaches
    this process's handler (the one torchrun forwards). ``rank`` and ``attempt`` (torchrun's restart count) limit
    it to one process and one attempt (default 0 each)."""
    import time

    from cdvd_tsp.infer import pipeline, progress, report
    from cdvd_tsp.inference import main
    from cdvd_tsp.utils import atomic, signals
    from cdvd_tsp.utils.errors import run_cli

    hook = json.loads(os.environ.get(INFERENCE_HOOK_VARIABLE, "null"))
    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    count = [0]
    received: list[int] = []

    def kill(what: str) -> None:
        name = hook.get("signal", "SIGKILL")
        to = hook.get("to", "self")
        hook_line(f"test hook: {name}{' to parent' if to == 'parent' else ''} {what}")
        seen = len(received)
        os.kill(os.getppid() if to == "parent" else os.getpid(), getattr(signal, name))
        deadline = time.monotonic() + 60
        while hook.get("wait") and len(received) == seen and time.monotonic() < deadline:
            time.sleep(0.01)

    def counted() -> bool:
        count[0] += 1
        return count[0] == hook["count"]

    real_video, real_record = pipeline.Pipeline.video, progress.Recorder.__call__
    real_frame, real_write, real_rename = report.Report.frame, atomic.write_file, atomic.rename
    real_handle = signals.StopRequests._handle

    def handle(self: signals.StopRequests, number: int, frame: object) -> None:
        received.append(number)
        real_handle(self, number, frame)  # type: ignore[arg-type]

    def video(self: pipeline.Pipeline, job: object) -> None:
        hook_line(f"test hook: rank {rank} restores {job.source.name}")
        real_video(self, job)  # type: ignore[arg-type]

    def record(self: progress.Recorder, name: str, results: object) -> None:
        real_record(self, name, results)  # type: ignore[arg-type]
        if counted():
            kill(f"after the record of {name}")

    def frame(self: report.Report, video: str, name: str, *args: object) -> None:
        real_frame(self, video, name, *args)  # type: ignore[arg-type]
        if counted():
            kill(f"after frame {video}-{name}")

    def write_file(path: Path, data: bytes) -> None:
        if Path(path).name.startswith(".video-") and counted():
            Path(path).write_bytes(data[: len(data) // 2])
            kill(f"half-way through writing {Path(path).name}")
        real_write(path, data)

    def rename(source: Path, target: Path) -> None:
        if hook["at"] == "commit" and Path(target).name == ".results.json.manifest.json" and counted():
            kill("just before the commit point")
        if hook["at"] == "roll_forward" and Path(target).suffix == ".png" and counted():
            kill(f"after the commit point, before {Path(target).name} is moved into place")
        real_rename(source, target)

    pipeline.Pipeline.video = video  # type: ignore[method-assign]
    signals.StopRequests._handle = handle  # type: ignore[method-assign]
    if hook is not None and (hook.get("rank", 0), hook.get("attempt", 0)) == (rank, attempt):
        if hook["at"] not in INFERENCE_HOOK_POINTS:
            raise ValueError(f"no hook point {hook['at']!r}")
        if hook["at"] == "record":
            progress.Recorder.__call__ = record  # type: ignore[method-assign]
        elif hook["at"] == "frame":
            report.Report.frame = frame  # type: ignore[method-assign]
        elif hook["at"] == "record_write":
            atomic.write_file = write_file
        else:
            atomic.rename = rename
    try:
        run_cli(lambda: main(sys.argv[1:]))
    except SystemExit as end:
        hook_line(f"test hook: rank {rank} exits with {end.code}")
        raise


# ----- training runs stopped on purpose (signals, kills)

HOOKS_VARIABLE = "CDVD_TSP_TEST_HOOKS"
HOOK_POINTS = ("step", "commit", "progress commit")


def hooks_environment(*hooks: dict) -> dict[str, str]:
    """The environment for `hooked_training` with ``hooks`` (see there)."""
    return {**os.environ, HOOKS_VARIABLE: json.dumps(list(hooks))}


def hooked_training(folder: Path) -> Path:
    """Write ``folder/hooked_training.py`` and return its path: main.py with the hooks of `run_hooked_training`, to
    run instead of main.py (alone or under torchrun)."""
    script = Path(folder) / "hooked_training.py"
    paths = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "code")]
    script.write_text(f"import sys\nsys.path[:0] = {paths!r}\nimport conftest\nconftest.run_hooked_training()\n")
    return script


def run_hooked_training() -> None:
    """main.py's command with test hooks read from `HOOKS_VARIABLE` (a JSON list; test code, never the project's).

    A hook sends ``signal`` (a name: ``"SIGTERM"``) ``to`` this process (``"self"``, the default) or its parent
    (``"parent"``: torchrun's agent) right after this process's ``count``-th optimisation step (``at: "step"``),
    or just before its ``count``-th commit point (``"commit"``) or its ``count``-th commit of a point inside an
    epoch (``"progress commit"``). ``rank`` and ``attempt`` (torchrun's restart count) limit it to one process or
    one attempt; with ``wait`` the process waits there until a signal reaches its handler (one torchrun forwards).
    Its last line on stderr is ``test hook: rank <rank> exits with <status>``.
    """
    import signal
    import sys
    import time

    torch.set_num_threads(1)  # as the tests' own runs (single_thread): the same sums in the same order
    from cdvd_tsp import main
    from cdvd_tsp.trainer.step import TrainStep
    from cdvd_tsp.utils import atomic, signals

    rank = int(os.environ.get("RANK", "0"))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    hooks = [
        hook
        for hook in json.loads(os.environ.get(HOOKS_VARIABLE, "[]"))
        if hook.get("rank", rank) == rank and hook.get("attempt", attempt) == attempt
    ]
    counts = dict.fromkeys(HOOK_POINTS, 0)
    received: list[int] = []
    real_handle, real_optimise, real_rename = signals.StopRequests._handle, TrainStep.optimise, atomic.rename

    def handle(self: signals.StopRequests, number: int, frame: object) -> None:
        received.append(number)
        real_handle(self, number, frame)

    def fire(point: str) -> None:
        counts[point] += 1
        for hook in hooks:
            if hook["at"] == point and hook["count"] == counts[point]:
                to = hook.get("to", "self")
                hook_line(f"test hook: {hook['signal']} to {to} at {point} {counts[point]}")
                seen = len(received)
                os.kill(os.getppid() if to == "parent" else os.getpid(), getattr(signal, hook["signal"]))
                deadline = time.monotonic() + 60
                while hook.get("wait") and len(received) == seen and time.monotonic() < deadline:
                    time.sleep(0.01)

    def optimise(self: TrainStep, total: torch.Tensor) -> None:
        real_optimise(self, total)
        fire("step")

    def rename(source: Path, target: Path) -> None:
        if Path(target).name == ".state.pt.manifest.json":
            fire("commit")
            if "inside" in json.loads(Path(source).read_text())["meta"]:
                fire("progress commit")
        real_rename(source, target)

    signals.StopRequests._handle, TrainStep.optimise, atomic.rename = handle, optimise, rename
    try:
        main.run_cli(lambda: main.main(sys.argv[1:]))
    except SystemExit as end:
        hook_line(f"test hook: rank {rank} exits with {end.code}")
        raise


RESUMED_START_LINES = ("Continue from", "options taken from", "the run has finished")
"""The log lines a resumed start adds (nothing else in log.txt tells a resumed run from an uninterrupted one)."""
TRAINING_RESULTS = ("model/model_latest.pt", "model/model_best.pt", "optimizer.pt", "loss_log.pt", "psnr_log.pt")


def assert_same_training(run: Path, reference: Path) -> None:
    """``run`` (stopped and resumed) holds what the uninterrupted ``reference`` holds: the same files, the weights,
    optimizer state and logs byte for byte, the same history, and the same log lines but for those a resumed start
    adds (`RESUMED_START_LINES`)."""

    def files(folder: Path) -> set[str]:
        # TensorBoard's event files (--tensorboard) are named after the time and process that wrote them, one per
        # start: tests/test_logger_tensorboard.py compares their contents
        paths = (path.relative_to(folder) for path in folder.rglob("*") if path.is_file())
        return {str(path) for path in paths if path.parts[0] != "tensorboard"}

    def lines(folder: Path) -> list[str]:
        text = (folder / "log.txt").read_text()
        return [line for line in text.splitlines() if not line.startswith(RESUMED_START_LINES)]

    assert files(run) == files(reference)  # nothing missing, no staging folder, lock or temporary file left
    different = [name for name in TRAINING_RESULTS if (run / name).read_bytes() != (reference / name).read_bytes()]
    assert not different, f"{different} differ from {reference}"
    state, reference_state = (torch.load(folder / "state.pt", weights_only=True) for folder in (run, reference))
    assert "inside" not in state and state["epoch"] == reference_state["epoch"]
    assert state["history"] == reference_state["history"]
    assert lines(run) == lines(reference)

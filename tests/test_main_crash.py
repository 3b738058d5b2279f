"""Training killed at every write, and writes that fail: --resume always ends with the files of an uninterrupted run.

A short run (tiny model and frames, 2 epochs, one step each) is recorded once with every write, rename and removal
of `utils.atomic` hooked (those of the epoch's commit, utils/committed.py, and of log.txt): at each of them the hook
takes a snapshot of the folder (hard links: every file is replaced by a rename, never rewritten in place, so a link
keeps the old content), with the file being written cut in half. A snapshot is what a process killed at that instant
leaves on disk. Each one is then continued with the command that started it plus --resume (which starts it again
where it had not committed yet) through the epoch it interrupted, and must then hold the files of an uninterrupted
run of that many epochs, byte for byte. (Resuming a run killed in epoch 1 through epoch 1 only, not 2, halves the test's
time; that a run resumed after epoch 1 ends as an uninterrupted one is what the kills in epoch 2 check.) One more
run is really killed (os._exit in a subprocess), a full disk is simulated (ENOSPC from the writes), and folders of
the project's previous version (no manifest) are resumed.
"""

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from cdvd_tsp import main as train_main
from cdvd_tsp.infer.restorer import load_model
from cdvd_tsp.model.checkpoint import CheckpointError, read_checkpoint
from cdvd_tsp.utils import atomic, committed
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT
from conftest import TINY_TRAINING, make_dataset

TINY = [
    *TINY_TRAINING,
    "--print_every", "100",
    "--loss", "1*L1",
    "--flow_lr", "0",  # PWC-Net frozen: no Adam state for it, so the files are 3x smaller and the runs faster
    "--epochs", "2",
]  # fmt: skip
COMPARED = ("model/model_latest.pt", "model/model_best.pt", "optimizer.pt", "loss_log.pt", "psnr_log.pt", "psnr.png")


pytestmark = pytest.mark.usefixtures("single_thread", "plots_once")


@pytest.fixture(scope="module")
def space() -> Iterator[Path]:
    """A scratch folder in memory where there is one (these runs write ~250 MB an epoch, most of it fsync'ed)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="train_crash_", dir=base))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def argv(space: Path) -> list[str]:
    make_dataset(space / "data" / "train", {"video0": 3, "video1": 3}, height=32, width=40)
    make_dataset(space / "data" / "test", {"video0": 3}, height=32, width=32, seed=7)
    (space / "runs").mkdir()
    data = ["--dir_data", str(space / "data" / "train"), "--dir_data_test", str(space / "data" / "test")]
    return [*TINY, *data, "--experiment_dir", str(space / "runs")]


def start(argv: list[str], save: str, *flags: str) -> int:
    return train_main.main([*argv, "--save", save, *flags])


def resume(argv: list[str], save: str, *flags: str) -> int:
    """Continue the run as the docs say: the command that started it, with --resume (which starts it again where it
    had not committed yet)."""
    return start(argv, save, "--resume", *flags)


@pytest.fixture(scope="module")
def full(argv: list[str], space: Path) -> Path:
    assert start(argv, "full") == 0
    return space / "runs" / "full"


@pytest.fixture(scope="module")
def full_1(argv: list[str], space: Path) -> Path:
    """The same run stopped after one epoch."""
    assert start(argv, "full_1", "--epochs", "1") == 0
    return space / "runs" / "full_1"


def files_of(run: Path) -> set[str]:
    return {str(path.relative_to(run)) for path in run.rglob("*") if path.is_file()}


def log_lines(run: Path) -> list[str]:
    """log.txt without the lines a resumed start adds."""
    added = ("Continue from", "options taken from", "the run has finished")
    return [line for line in (run / "log.txt").read_text().splitlines() if not line.startswith(added)]


def manifest_files(run: Path) -> list[str]:
    return json.loads(committed.manifest_path(run, "state.pt").read_text())["files"]


def assert_same_run(run: Path, full: Path) -> None:
    assert files_of(run) == files_of(full)  # no temporary file, no staging folder, no lock file, nothing missing
    assert manifest_files(run) == manifest_files(full)
    different = [name for name in COMPARED if (run / name).read_bytes() != (full / name).read_bytes()]
    assert not different, different
    state, full_state = (torch.load(path / "state.pt", weights_only=True) for path in (run, full))
    assert state["epoch"] == full_state["epoch"] and state["history"] == full_state["history"]
    assert log_lines(run) == log_lines(full)  # the lines of an interrupted epoch are not there twice


class Recorder:
    """Hooks `atomic`'s writes; before each, snapshots the run folder as a process killed there would leave it."""

    def __init__(self, run: Path, snapshots: Path) -> None:
        self.run, self.snapshots, self.taken = run, snapshots, []
        self.real = {name: getattr(atomic, name) for name in ("write_file", "rename", "remove_file", "remove_tree")}

    def snapshot(self, what: str, partial: tuple[Path, bytes] | None = None) -> None:
        target = self.snapshots / f"kill{len(self.taken):03d}"
        if self.run.exists():
            shutil.copytree(self.run, target, copy_function=os.link)
        else:
            target.mkdir()
        if partial is not None:
            path, data = partial
            copy = target / Path(path).relative_to(self.run)
            copy.unlink(missing_ok=True)  # a link to the file being written in place: cut the link
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data[: min(len(data) // 2, 1 << 16)])  # killed half-way through the write
        self.taken.append((target, what))

    def write_file(self, path: Path, data: bytes) -> None:
        self.snapshot(f"writing {Path(path).relative_to(self.run)}", (path, data))
        self.real["write_file"](path, data)

    def rename(self, source: Path, target: Path) -> None:
        self.snapshot(f"renaming {Path(source).relative_to(self.run)}")
        self.real["rename"](source, target)

    def remove_file(self, path: Path) -> None:
        self.snapshot(f"removing {Path(path).relative_to(self.run)}")
        self.real["remove_file"](path)

    def remove_tree(self, folder: Path) -> None:
        self.snapshot(f"removing {Path(folder).relative_to(self.run)}")
        self.real["remove_tree"](folder)


def test_killed_at_every_write_the_run_resumes_to_the_same_files(
    argv: list[str], space: Path, full: Path, full_1: Path
) -> None:
    snapshots = space / "snapshots"
    snapshots.mkdir()
    recorder = Recorder(snapshots / "recorded", snapshots)
    with pytest.MonkeyPatch.context() as patch:
        for name in recorder.real:
            patch.setattr(atomic, name, getattr(recorder, name))
        runs = argv.index("--experiment_dir") + 1
        assert start([*argv[:runs], str(snapshots), *argv[runs + 1 :]], "recorded") == 0
    assert_same_run(snapshots / "recorded", full)  # the hooks change nothing
    kinds = {what.split()[0] for _, what in recorder.taken}
    assert kinds == {"writing", "renaming", "removing"} and len(recorder.taken) > 40
    argv_here = [*argv[:runs], str(snapshots), *argv[runs + 1 :]]
    for snapshot, what in recorder.taken:
        log = snapshot / "log.txt"
        interrupted = max(1, log.read_text().count("Epoch ") if log.is_file() else 0)
        assert resume(argv_here, snapshot.name, "--epochs", str(interrupted)) == 0, what
        try:
            assert_same_run(snapshot, full if interrupted == 2 else full_1)
        except AssertionError as error:
            raise AssertionError(f"killed {what} ({snapshot.name}): {error}") from None
        shutil.rmtree(snapshot)


def test_a_real_kill_in_the_last_commit_resumes_to_the_same_files(argv: list[str], space: Path, full: Path) -> None:
    """os._exit half-way through writing the second epoch's staged model_latest.pt (a SIGKILL's effect)."""
    dying = (
        "import os, sys\n"
        "sys.path.insert(0, 'code')\n"
        "import torch\n"
        "torch.set_num_threads(1)  # as in this process: the same sums in the same order\n"
        "from cdvd_tsp.utils import atomic\n"
        "from cdvd_tsp import main\n"
        "real, seen = atomic.write_file, []\n"
        "def write_file(path, data):\n"
        "    seen.append(os.path.basename(path))\n"
        "    if seen.count('model_latest.pt') == 2:\n"
        "        open(path, 'wb').write(data[: len(data) // 2])\n"
        "        os._exit(9)\n"
        "    real(path, data)\n"
        "atomic.write_file = write_file\n"
        "main.run_cli(lambda: main.main(sys.argv[1:]))\n"
    )
    command = [sys.executable, "-c", dying, *argv, "--save", "really_killed"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 9, result.stderr[-2000:]
    run = space / "runs" / "really_killed"
    assert len(list(run.glob(".state.pt.staging-*/model/model_latest.pt"))) == 1  # the half-written file is there
    assert (run / ".state.pt.lock").is_file()  # left by the dead process, no longer locked
    assert torch.load(run / "state.pt", weights_only=True)["epoch"] == 1
    assert resume(argv, "really_killed") == 0
    assert_same_run(run, full)


class FullDisk(io.FileIO):
    """A file on a disk that fills up: half of the first write lands, then ENOSPC."""

    def write(self, data: bytes) -> int:
        super().write(bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def disk_full_for(names: Callable[[str], bool]) -> Callable[..., io.IOBase]:
    """An ``open`` for `utils.atomic` whose files named as ``names`` accepts fill up the disk."""

    def open_file(path: Path, mode: str = "r", *args: object, **kwargs: object) -> io.IOBase:
        if mode == "wb" and names(Path(path).name):
            return FullDisk(path, "wb")
        return open(path, mode, *args, **kwargs)

    return open_file


def test_a_full_disk_is_one_line_and_damages_nothing(
    argv: list[str], space: Path, full: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    runs = space / "runs"
    assert start(argv, "disk", "--epochs", "1") == 0
    run = runs / "disk"
    before = {name: (run / name).read_bytes() for name in files_of(run)}
    more = ["--experiment_dir", str(runs), "--save", "disk"]
    monkeypatch.setattr(atomic, "open", disk_full_for(lambda name: name == "model_latest.pt"), raising=False)
    with pytest.raises(SystemExit) as exit_status:
        train_main.run_cli(lambda: train_main.main([*more, "--resume", "--epochs", "2"]))
    assert exit_status.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and re.fullmatch(
        re.escape(f"error: cannot write {run}/.state.pt.staging-")
        + "[0-9a-f]{12}"
        + re.escape(
            f"/model/model_latest.pt: No space left on device (the checkpoint of epoch 2 was not written; {run} keeps "
            "epoch 1, --resume continues from it)"
        ),
        errors[0],
    ), errors
    after = files_of(run)
    assert after == set(before)  # no staging folder, no lock file, no temporary file
    changed = {name for name in after if (run / name).read_bytes() != before[name]}
    assert changed == {"log.txt", "config.txt"}  # lines added: this start's options, epoch 2's (--resume drops them)
    assert all((run / name).read_bytes().startswith(before[name]) for name in changed)

    monkeypatch.setattr(atomic, "open", disk_full_for(lambda name: name.startswith(".log.txt.")), raising=False)
    log = (run / "log.txt").read_bytes()
    with pytest.raises(SystemExit) as exit_status:
        train_main.run_cli(lambda: train_main.main([*more, "--resume", "--epochs", "2"]))
    assert exit_status.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: cannot write {run}/log.txt: No space left on device"]
    assert (run / "log.txt").read_bytes() == log and files_of(run) == set(before)

    monkeypatch.delattr(atomic, "open")  # space again: the run continues as if nothing happened
    assert resume(argv, "disk", "--epochs", "2") == 0
    assert_same_run(run, full)


def test_a_run_stopped_before_its_first_checkpoint_starts_again(argv: list[str], space: Path, full: Path) -> None:
    run = space / "runs" / "early"
    (run / "model").mkdir(parents=True)
    (run / ".state.pt.x1y2.tmp").write_bytes(b"half a file")  # what a kill inside an atomic write leaves
    (run / ".state.pt.lock").write_bytes(b"")  # a killed process's lock file (the kernel released its lock)
    (run / ".state.pt.staging-0123456789ab" / "model").mkdir(parents=True)  # its uncommitted epoch 0
    (run / ".state.pt.staging-0123456789ab" / "state.pt").write_bytes(b"half")
    (run / ".commit").mkdir()  # and what the previous version left
    shutil.copytree(run, space / "runs" / "early_resumed", copy_function=os.link)
    assert start(argv, "early") == 0
    assert_same_run(run, full)
    assert resume(argv, "early_resumed") == 0  # --resume starts it too: one command line for every start
    assert_same_run(space / "runs" / "early_resumed", full)
    (run / "state.pt").unlink()
    for flags in ((), ("--resume",)):  # a folder of results without a run is refused, with --resume too
        with pytest.raises(UserError, match=r"holds results \(and no state\.pt to resume\); choose another --save"):
            start(argv, "early", *flags)


def previous_version(run: Path, epoch_1: Path, epoch_2: Path, kill: str | None) -> None:
    """``run`` as this project's previous version left it (no manifest; each epoch staged in ``.commit/`` with its
    ``files.json`` and committed by renaming ``.commit/state.pt`` into place), after epoch 1 (``kill`` None), or
    killed in the commit of epoch 2: before state.pt's rename ("staged") or after it ("committed")."""
    shutil.copytree(epoch_1, run)
    committed.manifest_path(run, "state.pt").unlink()
    (run / "state.pt").write_bytes(format_2_state(epoch_1))  # the weights and the optimizer inside it
    if kill is None:
        return
    for name in ("log.txt", "config.txt"):  # the previous version wrote them as it went, as this one does
        shutil.copy(epoch_2 / name, run / name)
    names = [name for name in manifest_files(epoch_2) if name != "state.pt"]
    for name in names:
        (run / ".commit" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(epoch_2 / name, run / ".commit" / name)
    (run / ".commit" / "files.json").write_text(json.dumps({"epoch": 2, "files": names}))
    (run / ("state.pt" if kill == "committed" else ".commit/state.pt")).write_bytes(format_2_state(epoch_2))


def format_2_state(folder: Path) -> bytes:
    """The state.pt of ``folder`` as this project wrote it before state.pt named the files of the weights and the
    optimizer (format 2: both inside it), as the previous version did too."""
    state = torch.load(folder / "state.pt", weights_only=True)
    named = state.pop("files")
    assert named == {"model": "model/model_latest.pt", "optimizer": "optimizer.pt"}
    for key, relative in named.items():
        state[key] = dict(torch.load(folder / relative, weights_only=True))
    buffer = io.BytesIO()
    torch.save({**state, "format": 2}, buffer)
    return buffer.getvalue()


def test_a_state_with_the_weights_inside_resumes_to_the_same_files(
    argv: list[str], space: Path, full: Path, full_1: Path
) -> None:
    run = Path(shutil.copytree(full_1, space / "runs" / "state_format_2"))
    (run / "state.pt").write_bytes(format_2_state(run))
    assert resume(argv, run.name, "--epochs", "2") == 0
    assert_same_run(run, full)


@pytest.mark.parametrize("kill", [None, "staged", "committed"])
def test_a_folder_of_the_previous_version_resumes_to_the_same_files(
    argv: list[str], space: Path, full: Path, full_1: Path, kill: str | None
) -> None:
    run = space / "runs" / f"previous_{kill}"
    previous_version(run, full_1, full, kill)
    assert resume(argv, run.name, "--epochs", "2") == 0
    assert_same_run(run, full)
    assert not (run / ".commit").exists()


def test_a_folder_in_use_is_refused(argv: list[str], full: Path) -> None:
    from cdvd_tsp.logger.experiment import Experiment

    other = Experiment(full)
    other.prepare()  # holds the lock, as a running process would
    try:
        with pytest.raises(UserError, match="is in use by another process"):
            train_main.main([*argv, "--save", "full", "--resume"])
    finally:
        other.close()


def test_model_files_record_their_n_sequence_and_a_model_of_another_window_refuses_them(full: Path) -> None:
    path = full / "model" / "model_latest.pt"
    assert read_checkpoint(path)[1] == 3  # --n_stages 1
    with pytest.raises(CheckpointError) as refused:
        load_model(path, torch.device("cpu"))  # the released window, five frames (inference.py reads the record)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path} was trained with n_sequence 3 (--n_stages 1); ")

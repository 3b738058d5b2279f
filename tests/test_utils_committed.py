"""The committed-folder mechanism on its own (utils/committed.py): a kill or a full disk at every write, rename and
removal of a commit leaves the old commit or the new one, exactly, once the unit is opened again; a second live
process is refused and a killed one's lock is released; manifests that are not this project's, or that point
outside the folder, are refused before anything is changed, and files outside the folder survive.

A kill is a snapshot: before each operation of `utils.atomic` the mechanism makes (`committed.WRITE_POINTS`), the
folder is copied with hard links, as a process killed there would leave it (the file being written cut in half);
every file is replaced by a rename, never rewritten in place, so a link keeps the old content."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cdvd_tsp.utils import atomic, committed, locking, manifest
from cdvd_tsp.utils.committed import CommitError, Stage, Unit
from cdvd_tsp.utils.manifest import ManifestError
from cdvd_tsp.utils.paths import REPO_ROOT

KEY = "results.json"
OTHER = "other.json"
EARLIER = {KEY: b"earlier key", "a/1.png": b"old a1", "a/2.png": b"old a2", "b/1.png": b"old b1", "s/x.gif": b"gif"}
LATER = {KEY: b"later key", "a/2.png": b"new a2", "a/3.png": b"new a3", "c/d/1.png": b"new c1"}
THEIRS = {OTHER: b"other unit's key", "o/1.png": b"other unit's frame"}
"""Another unit in the same folder, and a file no unit owns: never touched."""


def commit(folder: Path, name: str, files: dict[str, bytes], keep: bool = False, meta: dict | None = None) -> None:
    with Unit.open(folder, name) as unit:
        stage = unit.begin()
        for relative, data in files.items():
            stage.write(relative, data)
        stage.commit(meta or {"tool": "test"}, keep=unit.files if keep else ())


def in_place(folder: Path) -> dict[str, bytes]:
    """The folder's files that are not hidden, with their bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }


def everything(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def unit_files(folder: Path) -> dict[str, bytes]:
    """The files the unit's manifest lists, with their bytes (empty without a manifest)."""
    manifest = committed.read_manifest(folder, KEY)
    return {} if manifest is None else {name: (folder / name).read_bytes() for name in manifest.files}


def prepared(folder: Path, variant: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """``folder`` with the earlier commit of ``variant`` (none for "first"), another unit and a user's file; the
    unit's files before and after the commit under test."""
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_bytes(b"mine")
    commit(folder, OTHER, THEIRS)
    if variant == "first":
        return {}, LATER
    commit(folder, KEY, EARLIER)
    return EARLIER, {**EARLIER, **LATER} if variant == "keep" else LATER


def assert_exactly(folder: Path, expected: dict[str, bytes]) -> None:
    """The unit holds exactly ``expected`` (listed, in place, nothing else of it, no empty folder of it), the other
    unit and the user's file are untouched, and nothing of a commit is left (no staging folder, no lock file)."""
    assert unit_files(folder) == expected
    assert in_place(folder) == {**expected, **THEIRS, "notes.txt": b"mine"}
    folders = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_dir()}
    assert folders == {parent for name in [*expected, *THEIRS] for parent in parents(name)}
    hidden = sorted(path.name for path in folder.iterdir() if path.name.startswith("."))
    assert hidden == sorted(
        committed.manifest_path(folder, name).name for name in (KEY, OTHER) if name != KEY or expected
    )


def parents(name: str) -> list[str]:
    parts = name.split("/")[:-1]
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


def assert_never_a_mix(folder: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    """At any instant: the manifest lists one commit's files; a key file in place comes with exactly its files."""
    manifest = committed.read_manifest(folder, KEY)
    assert (set() if manifest is None else set(manifest.files)) in (set(old), set(new))
    key = (folder / KEY).read_bytes() if (folder / KEY).exists() else None
    others = {**THEIRS, "notes.txt": b"mine"}
    if key is not None and key == old.get(KEY):
        assert in_place(folder) == {**old, **others}
    elif key is not None:
        assert key == new[KEY] and in_place(folder) == {**new, **others}


class Recorder:
    """Hooks the mechanism's write points: before each, snapshots the folder as a kill there would leave it."""

    def __init__(self, folder: Path, snapshots: Path) -> None:
        self.folder, self.snapshots = folder, snapshots
        self.taken: list[tuple[Path, str]] = []

    def hook(self, patch: pytest.MonkeyPatch) -> None:
        for name in committed.WRITE_POINTS:
            patch.setattr(atomic, name, self.hooked(name, getattr(atomic, name)))

    def hooked(self, name: str, real: Callable) -> Callable:
        def operation(path: Path, *args: object) -> object:
            self.snapshot(
                f"{name} {Path(path).relative_to(self.folder)}", (path, args[0]) if name == "write_file" else None
            )
            return real(path, *args)

        return operation

    def snapshot(self, what: str, partial: tuple[Path, bytes] | None) -> None:
        target = self.snapshots / f"kill{len(self.taken):03d}"
        shutil.copytree(self.folder, target, copy_function=os.link)
        if partial is not None:
            path, data = partial
            copy = target / Path(path).relative_to(self.folder)
            copy.unlink(missing_ok=True)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data[: len(data) // 2])  # killed half-way through the write
        self.taken.append((target, what))


VARIANTS = ["replace", "keep", "first"]
"""A commit that replaces the earlier one whole (inference), one that keeps the files it does not rewrite
(training), and the first commit of a unit."""


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_kill_at_every_write_leaves_the_old_or_the_new_commit_exactly(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / "recorded"
    old, new = prepared(folder, variant)
    recorder = Recorder(folder, tmp_path)
    with Unit.open(folder, KEY) as unit, pytest.MonkeyPatch.context() as patch:
        recorder.hook(patch)
        stage = unit.begin()
        for relative, data in LATER.items():
            stage.write(relative, data)
        stage.commit({"tool": "test"}, keep=unit.files if variant == "keep" else ())
    assert_exactly(folder, new)  # the hooks change nothing
    kinds = {what.split()[0] for _, what in recorder.taken}
    assert kinds >= {"write_file", "rename", "remove_tree", "make_folders"}
    assert variant == "first" or "remove_file" in kinds

    outcomes = []
    for snapshot, what in recorder.taken:
        try:
            assert_never_a_mix(snapshot, old, new)
            Unit.open(snapshot, KEY).close()  # the next open finishes or removes what the kill left
            outcome = "new" if unit_files(snapshot) == new else "old"
            assert_exactly(snapshot, new if outcome == "new" else old)
            Unit.open(snapshot, KEY).close()  # and opening again changes nothing
            assert_exactly(snapshot, new if outcome == "new" else old)
        except AssertionError as error:
            raise AssertionError(f"killed before {what}: {error}") from None
        outcomes.append(outcome)
    # the old commit until the manifest's rename, the new one from there on
    commit_point = next(index for index, (_, what) in enumerate(recorder.taken) if what.startswith("rename .results"))
    assert outcomes == ["old"] * (commit_point + 1) + ["new"] * (len(outcomes) - commit_point - 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_full_disk_at_every_write_is_one_line_and_leaves_the_old_or_the_new_commit(
    tmp_path: Path, variant: str
) -> None:
    operations = 0
    while True:
        folder = tmp_path / f"disk{operations}"
        old, new = prepared(folder, variant)
        calls: list[str] = []

        def failing(name: str, real: Callable, calls: list[str] = calls, failing_at: int = operations) -> Callable:
            def operation(path: Path, *args: object) -> object:
                calls.append(name)
                if len(calls) == failing_at + 1:
                    raise atomic.WriteError(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
                return real(path, *args)

            return operation

        unit = Unit.open(folder, KEY)
        stage = unit.begin()
        with pytest.MonkeyPatch.context() as patch:
            for name in committed.WRITE_POINTS:
                patch.setattr(atomic, name, failing(name, getattr(atomic, name)))
            try:
                for relative, data in LATER.items():
                    stage.write(relative, data)
                stage.commit({"tool": "test"}, keep=unit.files if variant == "keep" else ())
            except atomic.WriteError as error:
                message = str(error)
            else:
                message = None
        if message is None:  # every operation has failed once
            assert operations > 10
            return
        assert "\n" not in message and message.endswith(": No space left on device") and message.startswith("cannot")
        committed_already = stage.committed
        if not committed_already:
            stage.discard()  # what the tools do with a commit that failed before its commit point
        unit.close()
        Unit.open(folder, KEY).close()  # space again
        assert_exactly(folder, new if committed_already else old)
        operations += 1


def test_a_failed_commit_names_the_real_cause_and_leaves_a_folder_later_commits_use(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    (folder / "c" / "d" / "1.png").mkdir(parents=True)  # a folder where the commit puts a file
    (folder / "a" / "3.png").write_bytes(b"a file no commit wrote")
    before = everything(folder)
    for blocker, problem in [("a/3.png", "exists and is not listed by"), ("c/d/1.png", "is a folder")]:
        with Unit.open(folder, KEY) as unit:
            stage = unit.begin()
            for relative, data in LATER.items():
                stage.write(relative, data)
            with pytest.raises(CommitError) as refused:
                stage.commit()
            stage.discard()
        assert f"{folder / blocker} {problem}" in str(refused.value) and "nothing changed" in str(refused.value)
        assert everything(folder) == before  # the old commit, whole; nothing staged, no lock
        if blocker == "a/3.png":
            (folder / blocker).unlink()
            before = everything(folder)
    shutil.rmtree(folder / "c")
    commit(folder, KEY, LATER)  # the obstacles gone, the next commit works
    assert_exactly(folder, LATER)


def test_a_parent_that_is_a_link_or_a_file_is_refused_and_nothing_outside_is_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "unit"
    prepared(folder, "first")
    (folder / "c").symlink_to(outside, target_is_directory=True)
    for problem in ["is a symbolic link", "is not a folder"]:
        with Unit.open(folder, KEY) as unit:
            assert unit.obstacle("c/d/1.png") == committed.Obstacle(folder / "c", problem, unowned=False)
            stage = unit.begin()
            for relative, data in LATER.items():
                stage.write(relative, data)
            with pytest.raises(CommitError, match=f"{folder / 'c'} {problem}"):
                stage.commit()
            stage.discard()
        assert list(outside.iterdir()) == [] and unit_files(folder) == {}
        (folder / "c").unlink()
        (folder / "c").write_bytes(b"a file where the commit needs a folder")


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("", "an empty or non-text name"),
        ("/etc/passwd", "an absolute path"),
        ("../victim.txt", "not a plain relative path inside the folder"),
        ("a/../../victim.txt", "not a plain relative path inside the folder"),
        ("a//b.png", "not a plain relative path inside the folder"),
        ("./a.png", "not a plain relative path inside the folder"),
        ("a/", "not a plain relative path inside the folder"),
        ("a\\..\\b.png", "a name with a backslash or a NUL"),
        (".results.json.manifest.json", "a name this project keeps for its own records"),
        (".results.json.staging-0123456789ab/a.png", "a name this project keeps for its own records"),
        (".manifest.json", "a name this project keeps for its own records"),
        (".progress/video-000000.json", "a name this project keeps for its own records"),
        (".progress", "a name this project keeps for its own records"),
        ("v/.progress/a.png", None),  # only a staging folder's own progress folder is kept out
        ("a/b.png", None),
        (".clip_deblurred.mp4", None),  # hidden, but not the unit's own
        ("v/00002.png", None),
    ],
)
def test_names_a_manifest_may_list(relative: str, problem: str | None) -> None:
    assert manifest.name_problem(relative, KEY) == problem


def tamperings(folder: Path, outside: Path) -> Iterator[tuple[str, Callable[[dict], object], str]]:
    """(what, how the manifest's document is changed, the phrase of the refusal)."""
    yield "absolute", lambda doc: doc["files"].append(str(outside / "victim.txt")), "which is an absolute path"
    yield "dotdot", lambda doc: doc["files"].append("../outside/victim.txt"), "which is not a plain relative path"
    yield "link", lambda doc: doc["files"].append("link/victim.txt"), f"but {folder / 'link'} is a symbolic link"
    yield "final link", lambda doc: doc["files"].append("victim_link"), f"but {folder / 'victim_link'} is a symbolic"
    yield "folder", lambda doc: doc["files"].append("a"), f"but {folder / 'a'} is a folder"
    yield "format", lambda doc: doc.update(format="someone else's"), "not a manifest of this project (no format tag"
    yield "version", lambda doc: doc.update(version=2), "a manifest of version 2; this version of the project reads"
    yield "unit", lambda doc: doc.update(unit=OTHER), "the manifest of 'other.json', not of 'results.json'"
    yield "files", lambda doc: doc.update(files="a/1.png"), "its list of files is not a list"
    yield "twice", lambda doc: doc["files"].append("a/1.png"), "lists a file twice"
    yield "no key", lambda doc: doc["files"].remove(KEY), "does not list results.json"
    yield "token", lambda doc: doc.update(commit="../../x"), "its commit token '../../x' is not one this project"
    yield "meta", lambda doc: doc.update(meta=[1]), "its meta is not a JSON object"


@pytest.mark.parametrize("case", [what for what, _, _ in tamperings(Path("."), Path("."))])
def test_a_tampered_manifest_is_refused_and_nothing_inside_or_outside_changes(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"not the unit's")
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    (folder / "victim_link").symlink_to(outside / "victim.txt")
    ((_, change, phrase),) = [item for item in tamperings(folder, outside) if item[0] == case]
    path = committed.manifest_path(folder, KEY)
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    staging = committed.staging_path(folder, KEY, "0123456789ab")
    staging.mkdir()
    (staging / KEY).write_bytes(b"an uncommitted run's key")
    before = everything(tmp_path)
    for attempt in (lambda: Unit.open(folder, KEY), lambda: committed.read_manifest(folder, KEY)):
        with pytest.raises(ManifestError) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"{path}: ") and phrase in message and "nothing was changed" in message, message
        assert "\n" not in message
        assert everything(tmp_path) == before  # not even the uncommitted staging folder was removed, no lock file


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(b"{not json", "not a manifest of this project (not JSON)"), (b"\xff\xfe", "(not JSON)"), (b"[1, 2]", "format")],
)
def test_a_manifest_that_is_not_json_or_not_an_object_is_refused(tmp_path: Path, content: bytes, phrase: str) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    committed.manifest_path(folder, KEY).write_bytes(content)
    before = everything(folder)
    with pytest.raises(ManifestError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        Unit.open(folder, KEY)
    assert everything(folder) == before


def pending(folder: Path) -> None:
    """``folder`` holding a commit of LATER over EARLIER killed right after its commit point."""

    class Killed(BaseException):
        pass

    real = atomic.rename
    unit = Unit.open(folder, KEY)

    def rename(source: Path, target: Path) -> None:
        real(source, target)
        if Path(target).name == committed.manifest_path(folder, KEY).name:
            raise Killed

    stage = unit.begin()
    for relative, data in LATER.items():
        stage.write(relative, data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "rename", rename)
        with pytest.raises(Killed):
            stage.commit()
    os.close(unit.lock.descriptor)  # as the end of a killed process: the lock file stays
    unit.lock.descriptor = -1


def test_a_tampered_list_of_replaced_files_never_removes_anything_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"not the unit's")
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    (folder / "link").symlink_to(outside, target_is_directory=True)
    pending(folder)
    (token,) = committed.staging_tokens(folder, KEY)
    replaces = committed.staging_path(folder, KEY, token) / committed.REPLACES
    document = json.loads(replaces.read_text())
    document["replaces"].append("../outside/victim.txt")
    replaces.write_text(json.dumps(document))
    with pytest.raises(ManifestError, match=r"lists '\.\./outside/victim\.txt', which is not a plain relative path"):
        Unit.open(folder, KEY)
    document["replaces"][-1] = "link/victim.txt"  # a valid name, through a link: skipped, never followed
    replaces.write_text(json.dumps(document))
    Unit.open(folder, KEY).close()
    assert (outside / "victim.txt").read_bytes() == b"not the unit's"
    (folder / "link").unlink()
    assert_exactly(folder, LATER)


def test_the_list_of_replaced_files_reads_back_the_last_commits_files_the_commit_removes(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    pending(folder)
    (token,) = committed.staging_tokens(folder, KEY)
    root = committed.staging_path(folder, KEY, token)
    assert manifest.read_replaced(root, folder, KEY) == set(EARLIER) - set(LATER)
    assert (root / manifest.REPLACES).read_bytes() == manifest.replaces_bytes(set(EARLIER) - set(LATER))
    (root / manifest.REPLACES).unlink()
    assert manifest.read_replaced(root, folder, KEY) == frozenset()  # none: nothing to remove


def test_readers_find_the_last_commit_while_it_is_being_rolled_forward(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    pending(folder)
    (token,) = committed.staging_tokens(folder, KEY)
    assert (folder / KEY).read_bytes() == EARLIER[KEY]  # killed at the commit point: nothing moved yet
    assert manifest.find(folder, KEY, KEY) == committed.staging_path(folder, KEY, token) / KEY
    with manifest.open_file(folder, KEY, KEY) as handle:
        assert handle.read() == LATER[KEY]
    assert manifest.find(folder, KEY, "b/1.png") is None  # not of the last commit, though still in place
    with pytest.raises(FileNotFoundError):
        manifest.open_file(folder, KEY, "b/1.png")
    assert committed.read_manifest(folder, KEY).meta == {}  # type: ignore[union-attr]
    Unit.open(folder, KEY).close()
    assert manifest.find(folder, KEY, KEY) == folder / KEY
    with manifest.open_file(folder, KEY, "c/d/1.png") as handle:
        assert handle.read() == LATER["c/d/1.png"]


def test_an_uncommitted_staging_folder_is_removed_or_handed_back_to_continue(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    unit = Unit.open(folder, KEY)
    stage = unit.begin()
    stage.write("a/2.png", LATER["a/2.png"])  # a run killed half-way: this much was written
    os.close(unit.lock.descriptor)
    unit.lock.descriptor = -1

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with Unit.open(copy, KEY) as reopened:
        assert reopened.discarded == [stage.token] and reopened.uncommitted == []
    assert_exactly(copy, EARLIER)

    with Unit.open(folder, KEY, keep_uncommitted=True) as reopened:
        assert reopened.uncommitted == [stage.token] and reopened.discarded == []
        continued = reopened.begin(stage.token)
        assert continued.staged_files() == ["a/2.png"]
        for relative, data in LATER.items():
            if relative != "a/2.png":
                continued.write(relative, data)
        continued.commit({"continued": True})
    assert_exactly(folder, LATER)
    assert committed.read_manifest(folder, KEY).meta == {"continued": True}  # type: ignore[union-attr]


def test_the_progress_folder_is_kept_with_an_uncommitted_stage_and_never_committed(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    unit = Unit.open(folder, KEY)
    stage = unit.begin()
    stage.private.mkdir()
    (stage.private / "video-000000.json").write_bytes(b"what the writer keeps")
    stage.write("a/2.png", LATER["a/2.png"])
    os.close(unit.lock.descriptor)  # killed: the lock is released, the staging folder stays
    unit.lock.descriptor = -1

    with Unit.open(folder, KEY, keep_uncommitted=True) as reopened:
        continued = reopened.begin(stage.token)
        assert continued.private == stage.private
        assert (continued.private / "video-000000.json").read_bytes() == b"what the writer keeps"
        assert continued.staged_files() == ["a/2.png"]  # the progress folder is no file of the commit
        for relative, data in LATER.items():
            continued.write(relative, data)
        manifest = continued.commit()
    assert sorted(manifest.files) == sorted(LATER)
    assert_exactly(folder, LATER)  # the progress folder went with the staging folder


def test_a_kept_uncommitted_staging_folder_can_be_discarded_alone(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    tokens = []
    for _ in range(2):
        unit = Unit.open(folder, KEY, keep_uncommitted=True)
        stage = Stage(unit, committed.new_token())  # a new staging folder beside the one kept
        stage.write("a/2.png", LATER["a/2.png"])
        tokens.append(stage.token)
        os.close(unit.lock.descriptor)
        unit.lock.descriptor = -1
    with Unit.open(folder, KEY, keep_uncommitted=True) as reopened:
        assert reopened.uncommitted == sorted(tokens)
        reopened.discard(tokens[0])
        assert reopened.uncommitted == [tokens[1]] and reopened.discarded == [tokens[0]]
        assert committed.staging_tokens(folder, KEY) == [tokens[1]]
        with pytest.raises(ValueError, match="no uncommitted staging folder"):
            reopened.discard(tokens[0])
    assert_exactly(copy_of(folder, tmp_path / "copy"), EARLIER)


def copy_of(folder: Path, copy: Path) -> Path:
    """``folder`` copied, then opened once (its uncommitted staging folders removed)."""
    shutil.copytree(folder, copy)
    Unit.open(copy, KEY).close()
    return copy


def test_two_names_in_one_folder_never_meet(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    with Unit.open(folder, KEY) as mine, Unit.open(folder, OTHER) as theirs:  # both open at once: two locks
        assert mine.obstacle("o/1.png") == committed.Obstacle(
            folder / "o/1.png", f"exists and is not listed by {committed.manifest_path(folder, KEY)}", unowned=True
        )
        assert theirs.obstacle("a/1.png") is not None and theirs.obstacle("o/1.png") is None
        stage = theirs.begin()
        assert committed.staging_tokens(folder, KEY) == [] and committed.staging_tokens(folder, OTHER) == [stage.token]
        assert not committed.is_leftover(stage.root, KEY) and committed.is_leftover(stage.root, OTHER)
        stage.write(OTHER, THEIRS[OTHER])
        stage.write("o/1.png", THEIRS["o/1.png"])
        stage.commit()
        commit_stage = mine.begin()
        for relative, data in LATER.items():
            commit_stage.write(relative, data)
        commit_stage.commit()
    assert_exactly(folder, LATER)


HOLDER = """
import sys, time
sys.path.insert(0, "code")
from cdvd_tsp.utils.committed import Unit
unit = Unit.open(sys.argv[1], "results.json")
print("holding", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not locking.AVAILABLE, reason="needs flock (POSIX)")
def test_a_second_live_process_is_refused_and_a_killed_ones_lock_is_released(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    prepared(folder, "replace")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(committed.Busy, match="being written by another process"):
            Unit.open(folder, KEY)
        with Unit.open(folder, OTHER):  # another unit of the folder is free
            pass
        holder.send_signal(signal.SIGKILL)
    finally:
        holder.wait(timeout=60)
    assert committed.lock_path(folder, KEY).is_file()  # the killed process's lock file stays, unlocked
    assert committed.is_leftover(committed.lock_path(folder, KEY), KEY)
    with Unit.open(folder, KEY), pytest.raises(committed.Busy):  # in one process too: each open holds its own
        Unit.open(folder, KEY)
    assert_exactly(folder, EARLIER)  # and the lock file went with the close


@pytest.mark.skipif(not locking.AVAILABLE, reason="needs flock (POSIX)")
def test_a_lock_file_removed_as_it_is_locked_is_not_taken_for_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder closing removes its lock file; a process that opened that file just before locks a file nobody
    else can find: it must lock the file that is there now instead."""
    path = committed.lock_path(tmp_path, KEY)
    real = locking.try_lock
    replaced: list[int] = []

    def try_lock(descriptor: int) -> bool:
        if not replaced:  # the file just opened is removed and made again by another process
            path.unlink()
            replaced.append(os.open(path, os.O_RDWR | os.O_CREAT))
        return real(descriptor)

    monkeypatch.setattr(locking, "try_lock", try_lock)
    with Unit.open(tmp_path, KEY) as unit:
        assert os.path.samestat(os.fstat(unit.lock.descriptor), os.stat(path))
        other = os.open(path, os.O_RDONLY)
        try:
            assert real(other) is False  # the file in place is the one locked
        finally:
            os.close(other)
    os.close(replaced[0])


def test_a_folder_written_before_manifests_is_adopted(tmp_path: Path) -> None:
    folder = tmp_path / "unit"
    folder.mkdir()
    for relative, data in EARLIER.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    with Unit.open(folder, KEY) as unit:
        assert unit.manifest is None
        with pytest.raises(CommitError, match=r"a/9\.png is not a regular file inside it"):
            unit.adopt([*EARLIER, "a/9.png"], {})
        with pytest.raises(CommitError, match="a is not a regular file inside it"):
            unit.adopt([*EARLIER, "a"], {})
        unit.adopt(list(EARLIER), {"adopted": True})
    assert unit_files(folder) == EARLIER
    commit(folder, KEY, LATER)
    assert in_place(folder) == LATER

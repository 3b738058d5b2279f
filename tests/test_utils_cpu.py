"""utils/cpu.py: the CPU's features read at run time (native bfloat16 both ways, with made-up /proc/cpuinfo files),
and torch's intra-op threads from --threads, the environment, or the cores found idle (made-up /proc/stat files)."""

from pathlib import Path
from unittest import mock

import pytest
import torch

from cdvd_tsp.utils import cpu
from cdvd_tsp.utils.cpu import (
    Bf16Support,
    CpuInfo,
    ThreadChoice,
    bf16_support,
    choose_threads,
    configure_threads,
    detect_bf16,
    idle_cores,
    read_cpuinfo,
    requested_threads,
    thread_choice,
    threads_for_idle,
)
from cdvd_tsp.utils.errors import UserError

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
model name\t: another name, not read
flags\t\t: fpu
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2 fma
"""
GRAVITON = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd sve bf16 i8mm
CPU implementer\t: 0x41
"""


def cpuinfo(tmp_path: Path, text: str) -> CpuInfo:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return read_cpuinfo(path)


def test_the_first_processors_name_and_flags_are_read(tmp_path: Path) -> None:
    info = cpuinfo(tmp_path, XEON)
    assert info.name == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert info.flags == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpuinfo(tmp_path, GRAVITON).flags == {"fp", "asimd", "sve", "bf16", "i8mm"}
    assert read_cpuinfo(tmp_path / "missing").flags == frozenset()


@pytest.mark.parametrize(
    ("text", "onednn", "native", "reason"),
    [
        (XEON, True, True, "native bfloat16 (amx_bf16, avx512_bf16)"),
        (XEON.replace(" amx_bf16", ""), None, True, "native bfloat16 (avx512_bf16)"),
        (EPYC, False, False, "this CPU (AMD EPYC 7B13) has no native bfloat16 arithmetic (no amx_bf16 or avx512_bf16)"),
        (EPYC, True, False, "this CPU (AMD EPYC 7B13) has no native bfloat16 arithmetic (no amx_bf16 or avx512_bf16)"),
        (XEON, False, False, "PyTorch's oneDNN does not compute bfloat16 on this CPU (Intel(R) Xeon(R) Platinum"),
        ("", None, False, "this CPU's features cannot be read"),
    ],
    ids=["xeon", "avx512 bf16 only", "epyc", "epyc, oneDNN emulates", "oneDNN without bf16", "unreadable"],
)
def test_native_bf16_needs_the_flags_and_onednn(
    tmp_path: Path, text: str, onednn: bool | None, native: bool, reason: str
) -> None:
    support = detect_bf16(cpuinfo(tmp_path, text), onednn)
    assert support.native is native
    assert support.reason.startswith(reason)


def test_arm_bf16_counts_only_on_arm(tmp_path: Path) -> None:
    info = cpuinfo(tmp_path, GRAVITON)
    with mock.patch.object(cpu.platform, "machine", return_value="aarch64"):
        assert detect_bf16(info, True) == Bf16Support(True, "native bfloat16 (bf16)")
    with mock.patch.object(cpu.platform, "machine", return_value="x86_64"):
        assert not detect_bf16(info, True).native


def test_this_machine_is_read_as_its_flags_say() -> None:
    flags = read_cpuinfo().flags
    support = bf16_support()
    if not {"avx512_bf16", "amx_bf16"} & flags and "bf16" not in flags:
        assert not support.native
    if support.native:  # oneDNN must agree where it can say
        assert cpu.onednn_bf16() in (True, None)


@pytest.mark.parametrize(
    ("threads", "environ", "expected"),
    [
        (3, {"OMP_NUM_THREADS": "1"}, 3),
        (None, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "5"}, 2),
        (None, {"OMP_NUM_THREADS": " ", "MKL_NUM_THREADS": "5"}, 5),
        (None, {}, None),
    ],
)
def test_threads_come_from_the_flag_then_the_environment(
    threads: int | None, environ: dict[str, str], expected: int | None
) -> None:
    assert requested_threads(threads, environ) == expected


@pytest.mark.parametrize(
    ("threads", "environ", "message"),
    [
        (0, {}, "--threads 0: give at least 1"),
        (None, {"OMP_NUM_THREADS": "two"}, "OMP_NUM_THREADS='two': give a number of threads, at least 1"),
        (None, {"MKL_NUM_THREADS": "0"}, "MKL_NUM_THREADS='0': give a number of threads, at least 1"),
    ],
)
def test_bad_thread_counts_are_one_line(threads: int | None, environ: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=f"^{message}$"):
        requested_threads(threads, environ)


@pytest.fixture
def restored_threads() -> None:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("restored_threads")
def test_configure_threads_sets_torch_and_keeps_cores_for_other_work(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in cpu.THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(cpu, "usable_cores", lambda: 3)
    assert configure_threads() == 3 and torch.get_num_threads() == 3
    assert configure_threads(reserve=1) == 2
    assert configure_threads(reserve=5) == 1  # never below one
    assert configure_threads(threads=1, reserve=1) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads(reserve=2) == 2  # the environment decides, as --threads does


def proc_stat(idle: tuple[int, ...], busy: tuple[int, ...]) -> str:
    """A /proc/stat with one line per core: ``busy`` user ticks, ``idle`` idle and I/O-wait ticks (and the
    total line)."""
    lines = [f"cpu  {sum(busy)} 0 0 {sum(idle)} 0 0 0 0 0 0"]
    lines += [  # a quarter of the idle time waiting for I/O
        f"cpu{core} {b} 0 0 {i - i // 4} {i // 4} 0 0 0 0 0" for core, (i, b) in enumerate(zip(idle, busy, strict=True))
    ]
    return "\n".join([*lines, "intr 12345 0", "ctxt 999"]) + "\n"


def test_idle_cores_are_the_idle_share_of_the_cores_over_the_probe(tmp_path: Path) -> None:
    path = tmp_path / "stat"
    snapshots = iter([proc_stat((100, 100, 100), (50, 50, 50)), proc_stat((200, 125, 100), (50, 125, 150))])

    def sleep(seconds: float) -> None:
        assert seconds == 0.2
        path.write_text(next(snapshots))

    path.write_text(next(snapshots))
    # cores 0 and 1 of the three: 100 + 25 idle ticks of 200 + 100 -> 2 * 0.625 idle cores
    assert idle_cores(0.2, {0, 1}, path, sleep) == pytest.approx(1.25)
    path.write_text(proc_stat((100,), (50,)))
    assert idle_cores(0.2, {0}, path, lambda seconds: None) is None  # no time passed
    assert idle_cores(0.2, {0}, tmp_path / "missing", lambda seconds: None) is None


def test_this_machine_s_idle_cores_are_between_none_and_all() -> None:
    idle = idle_cores(0.05)
    assert idle is None or -0.01 <= idle <= cpu.usable_cores() + 0.01


@pytest.mark.parametrize(
    ("usable", "idle", "expected"),
    [(2, 2.0, 2), (2, 1.6, 2), (2, 1.4, 1), (2, 0.0, 1), (8, 5.5, 6), (8, 9.0, 8), (4, None, 4)],
)
def test_threads_are_the_idle_cores_rounded_at_least_one(usable: int, idle: float | None, expected: int) -> None:
    assert threads_for_idle(usable, idle) == expected


@pytest.mark.usefixtures("restored_threads")
def test_the_idle_probe_decides_only_when_nothing_is_given_and_the_choice_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in cpu.THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(cpu, "usable_cores", lambda: 2)
    assert choose_threads(probe=lambda: 0.3) == ThreadChoice(1, "2 usable cores, 0.3 idle at start-up")
    assert choose_threads(probe=lambda: 1.9) == ThreadChoice(2, "2 usable cores, 1.9 idle at start-up")
    assert choose_threads(probe=lambda: None) == ThreadChoice(2, "2 usable cores (their load unknown)")
    assert choose_threads() == ThreadChoice(2, "2 usable cores")  # no probe: every core
    assert choose_threads(2, probe=lambda: 0.0) == ThreadChoice(2, "--threads 2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    assert choose_threads(probe=lambda: 0.0) == ThreadChoice(2, "MKL_NUM_THREADS 2")
    monkeypatch.delenv("MKL_NUM_THREADS")
    monkeypatch.setattr(cpu, "idle_cores", lambda: 0.2)
    assert configure_threads(probe_idle=True) == 1 == torch.get_num_threads()
    assert thread_choice() == ThreadChoice(1, "2 usable cores, 0.2 idle at start-up")
    torch.set_num_threads(2)  # set by someone else: the record does not claim it
    assert thread_choice() == ThreadChoice(2, "torch's setting")

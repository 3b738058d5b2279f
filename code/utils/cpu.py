"""What this machine's CPU offers, detected at run time (never assumed): native bfloat16 arithmetic, PyTorch's
vector capability, and the intra-op threads torch computes with.

The project runs on CPUs with native bfloat16 (Intel Xeon with AMX-BF16 or AVX512-BF16, AMD Zen 4) and without
(AMD EPYC Zen 3, AVX2): there PyTorch computes bfloat16 convolutions in scalar code, 46 times slower than float32
in one measured step (docs/benchmarks-inference.md), so `utils.precision` refuses bf16 on such CPUs.
"""

import functools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cdvd_tsp.utils.errors import UserError

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""x86 flags (Linux /proc/cpuinfo) of instructions that compute bfloat16 products natively."""
ARM_BF16_FEATURE = "bf16"
"""The aarch64 feature (Linux /proc/cpuinfo ``Features``) of the BFloat16 extension."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that set the intra-op threads when ``--threads`` is not given (the first one set wins)."""
PROC_STAT = Path("/proc/stat")
IDLE_PROBE_SECONDS = 0.2
"""How long `idle_cores` watches the cores at start-up."""


@dataclass(frozen=True)
class CpuInfo:
    name: str
    flags: frozenset[str]
    """x86 ``flags`` or aarch64 ``Features`` of the first processor (empty where they cannot be read)."""


def read_cpuinfo(path: Path = CPUINFO) -> CpuInfo:
    """The CPU's model name and feature flags from ``path`` (Linux); no flags where it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())  # the first processor's
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return CpuInfo(name, frozenset((fields.get("flags") or fields.get("features") or "").split()))


@dataclass(frozen=True)
class Bf16Support:
    native: bool
    reason: str
    """What was found, in a few words: the flags of native support, or why it is missing."""


def detect_bf16(info: CpuInfo, onednn_bf16: bool | None) -> Bf16Support:
    """Whether the CPU of ``info`` computes bfloat16 natively and PyTorch's oneDNN uses it (``onednn_bf16``: what
    oneDNN reports, None when PyTorch cannot say)."""
    found = [flag for flag in BF16_FLAGS if flag in info.flags]
    if not found and platform.machine().lower() in ("aarch64", "arm64") and ARM_BF16_FEATURE in info.flags:
        found = [ARM_BF16_FEATURE]
    if not found:
        if not info.flags:
            return Bf16Support(
                False, f"this CPU's features cannot be read ({info.name}), so native bfloat16 is not known"
            )
        return Bf16Support(
            False, f"this CPU ({info.name}) has no native bfloat16 arithmetic (no {' or '.join(BF16_FLAGS)})"
        )
    if onednn_bf16 is False:
        return Bf16Support(False, f"PyTorch's oneDNN does not compute bfloat16 on this CPU ({info.name})")
    return Bf16Support(True, f"native bfloat16 ({', '.join(found)})")


def onednn_bf16() -> bool | None:
    """What PyTorch's oneDNN reports about bfloat16 on this CPU (None when this PyTorch cannot tell)."""
    if not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else None
    except RuntimeError:
        return None


@functools.cache
def bf16_support() -> Bf16Support:
    """`detect_bf16` for this machine (computed once per process)."""
    return detect_bf16(read_cpuinfo(), onednn_bf16())


BF16_UNITS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}
"""x86 flag -> the kind of bfloat16 unit it names, the widest first: what decides the layouts' speed in bf16
(`model.acceleration.MEASURED_OPTIONS`)."""


def bf16_unit(info: CpuInfo) -> str | None:
    """The widest bfloat16 unit of the CPU of ``info``: ``AMX-BF16`` (tile matrix units, Intel Xeon from Sapphire
    Rapids), ``AVX512-BF16`` (vector dot products only: AMD Zen 4, Intel Cooper Lake), or None."""
    return next((unit for flag, unit in BF16_UNITS.items() if flag in info.flags), None)


@functools.cache
def this_bf16_unit() -> str | None:
    """`bf16_unit` of this machine (computed once per process)."""
    return bf16_unit(read_cpuinfo())


def cpu_capability() -> str:
    """PyTorch's vector capability for this CPU: ``AVX512``, ``AVX2``, ``DEFAULT`` ... (what its kernels use)."""
    return torch.backends.cpu.get_cpu_capability()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def requested_threads(threads: int | None, environ: dict[str, str] | os._Environ = os.environ) -> int | None:
    """The intra-op threads asked for: ``threads`` (``--threads N``), else the first of `THREAD_VARIABLES` set,
    else None. A value below 1 or not a number is a `UserError` naming where it came from."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: give at least 1")
        return threads
    for variable in THREAD_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise UserError(f"{variable}={value!r}: give a number of threads, at least 1")
            return int(value)
    return None


def read_core_times(cores: set[int], path: Path = PROC_STAT) -> tuple[float, float] | None:
    """(idle, total) clock ticks so far of ``cores`` from ``path`` (Linux); None where it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    found = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        ticks = [float(field) for field in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle += ticks[3] + ticks[4]
        total += sum(ticks)
        found += 1
    return (idle, total) if found else None


def idle_cores(
    seconds: float = IDLE_PROBE_SECONDS, cores: set[int] | None = None, path: Path = PROC_STAT, sleep=time.sleep
) -> float | None:
    """How many of ``cores`` (default: those this process may use) sat idle over the next ``seconds``: the
    other jobs' load, measured while this process waits; None where the OS does not say (not Linux)."""
    if cores is None:
        try:
            cores = os.sched_getaffinity(0)
        except AttributeError:
            return None
    before = read_core_times(cores, path)
    sleep(seconds)
    after = read_core_times(cores, path)
    if before is None or after is None or after[1] <= before[1]:
        return None
    return len(cores) * (after[0] - before[0]) / (after[1] - before[1])


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    """Where the number came from, in a few words (recorded with the run's settings)."""


def threads_for_idle(usable: int, idle: float | None) -> int:
    """Every usable core on a quiet machine, only the idle ones (rounded, at least one) on a busy one: a thread
    beyond the idle cores waits for a core, and every parallel region waits for it (docs/benchmarks-inference.md,
    "Threads on a busy machine")."""
    if idle is None:
        return usable
    return max(1, min(usable, int(idle + 0.5)))


def choose_threads(
    threads: int | None = None, reserve: int = 0, probe: Callable[[], float | None] | None = None
) -> ThreadChoice:
    """The intra-op threads: ``threads`` (``--threads N``) or the environment (`THREAD_VARIABLES`) when given;
    otherwise every usable core but ``reserve`` (kept for other work in the process, e.g. the pipeline's
    writers), at least one, and with ``probe`` (`idle_cores`) no more than the cores it finds idle."""
    wanted = requested_threads(threads)
    if wanted is not None:
        set_variables = [variable for variable in THREAD_VARIABLES if os.environ.get(variable, "").strip()]
        given = "--threads" if threads is not None else set_variables[0]
        return ThreadChoice(wanted, f"{given} {wanted}")
    usable = max(1, usable_cores() - reserve)
    text = f"{usable} usable core{'s' if usable > 1 else ''}"
    if probe is None or usable == 1:
        return ThreadChoice(usable, text)
    idle = probe()
    chosen = threads_for_idle(usable, idle)
    if idle is None:
        return ThreadChoice(chosen, f"{text} (their load unknown)")
    return ThreadChoice(chosen, f"{text}, {idle:.1f} idle at start-up")


LAST_CHOICE: ThreadChoice | None = None
"""The latest `configure_threads` decision of this process (the threads are process-wide), for the run's record."""


def configure_threads(threads: int | None = None, reserve: int = 0, probe_idle: bool = False) -> int:
    """Set torch's intra-op threads to `choose_threads` (``probe_idle``: with `idle_cores` as its probe) and
    return how many it uses."""
    global LAST_CHOICE
    choice = choose_threads(threads, reserve, idle_cores if probe_idle else None)
    torch.set_num_threads(choice.threads)
    LAST_CHOICE = choice
    return torch.get_num_threads()


def thread_choice() -> ThreadChoice:
    """Torch's threads now and, if `configure_threads` set them, why."""
    threads = torch.get_num_threads()
    if LAST_CHOICE is not None and LAST_CHOICE.threads == threads:
        return LAST_CHOICE
    return ThreadChoice(threads, "torch's setting")

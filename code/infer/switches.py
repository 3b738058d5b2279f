"""The process-wide switches of a run, set before it plans (so before any CUDA work) and put back when it ends:
the threads the model computes with (``--threads``) and deterministic algorithms (``--deterministic``).

Threads: torch's intra-op threads are ``--threads N``, else ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, else every
usable core that is idle at start-up (`utils.cpu.configure_threads` with its idle probe, at least one; nothing
reserved: the pipeline's per-frame work is under 1 % of the model's on the CPU, docs/benchmarks-inference.md): on
a machine whose cores other jobs use, threads beyond the idle cores make every parallel region wait for a
descheduled thread. The threads wait for each other passively (``OMP_WAIT_POLICY=PASSIVE``, set by inference.py
before torch loads, `utils.openmp`), so a machine that gets busy during the run costs little more than one thread
would. OpenCV's own pool is one thread, so that the pipeline's workers (PNG encoding, the metrics' filters) each
use one core for their short tasks instead of a pool of every core that would compete with the model's threads.

Deterministic: every switch of utils/determinism.py, an op without a deterministic implementation raising instead
of warning (inference runs no backward pass, and its forward ops all have one, as has the CuPy cost-volume kernel:
one thread per output, no atomics); a ``CUBLAS_WORKSPACE_CONFIG`` that makes cuBLAS nondeterministic is refused.
"""

import contextlib
import os
from collections.abc import Iterator

import cv2
import torch

from cdvd_tsp.utils.cpu import configure_threads
from cdvd_tsp.utils.determinism import CUBLAS_DETERMINISTIC, CUBLAS_VARIABLE, use_deterministic_algorithms
from cdvd_tsp.utils.errors import UserError

RESERVED_CORES = 0
"""Cores kept from the model for the pipeline's workers (docs/benchmarks-inference.md, "Threads": none)."""
PIPELINE_CV2_THREADS = 1


@contextlib.contextmanager
def threads_set(threads: int | None) -> Iterator[int]:
    """Torch's intra-op threads from ``threads`` or the environment (see the module docstring) and one OpenCV
    thread, for the block; yields torch's threads. A bad value is a one-line `UserError` naming the flag or
    variable."""
    previous = torch.get_num_threads(), cv2.getNumThreads()
    try:
        used = configure_threads(threads, reserve=RESERVED_CORES, probe_idle=True)
        cv2.setNumThreads(PIPELINE_CV2_THREADS)
        yield used
    finally:
        torch.set_num_threads(previous[0])
        cv2.setNumThreads(previous[1])


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms for the block (see the module docstring); nothing changes when not ``enabled``."""
    if not enabled:
        yield
        return
    workspace = os.environ.get(CUBLAS_VARIABLE)
    if workspace is not None and workspace not in CUBLAS_DETERMINISTIC:
        raise UserError(
            f"--deterministic: {CUBLAS_VARIABLE}={workspace!r} makes cuBLAS nondeterministic; unset it or use "
            f"{' or '.join(CUBLAS_DETERMINISTIC)}"
        )
    cudnn = torch.backends.cudnn
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    use_deterministic_algorithms(warn_only=False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]
        if workspace is None:
            os.environ.pop(CUBLAS_VARIABLE, None)


@contextlib.contextmanager
def run_switches(threads: int | None, deterministic: bool) -> Iterator[None]:
    """Every switch of a run (``--threads``, ``--deterministic``) for the block."""
    with threads_set(threads), deterministic_algorithms(deterministic):
        yield

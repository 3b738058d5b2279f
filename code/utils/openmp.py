"""How torch's OpenMP threads wait for each other, chosen before torch is imported (this module imports no torch).

PyTorch's CPU build computes with GNU OpenMP (libgomp, ``torch.__config__.parallel_info()``), and oneDNN and MKL
use the same threads. By default a libgomp thread that reaches the end of a parallel region spins (about 300,000
iterations) waiting for the others before it sleeps. On a machine whose cores are shared with other jobs, one of
the model's threads is often descheduled, and the other spends its time slice spinning for it: measured on 2 vCPUs
(Intel Xeon, AMX) with the cores shared, two threads were 5 to 9 times slower than one (docs/benchmarks-inference.md,
"Threads on a busy machine"). With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once, and two threads on
a busy machine cost about as much as one.

libgomp reads the variable once, when the library is loaded (``import torch``): setting it later has no effect
(measured), so the entry points call `prefer_passive_waiting` before anything imports torch. A policy given in the
environment is kept.
"""

import os
import sys
from collections.abc import Mapping, MutableMapping

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"
OPENMP_DEFAULT = "libgomp's default (spin, then sleep)"


def prefer_passive_waiting(
    environ: MutableMapping[str, str] = os.environ, modules: Mapping[str, object] = sys.modules
) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless a policy is given or torch is already loaded (too late to matter: it
    would only mislead what records the policy); returns whether this call set it."""
    if WAIT_POLICY_VARIABLE in environ or "torch" in modules:
        return False
    environ[WAIT_POLICY_VARIABLE] = PASSIVE
    return True


def wait_policy(environ: Mapping[str, str] = os.environ) -> str:
    """The wait policy of this process's OpenMP threads as the environment gives it: ``passive``, ``active``, or
    libgomp's default when unset (what a run records)."""
    value = environ.get(WAIT_POLICY_VARIABLE, "").strip().lower()
    return value or OPENMP_DEFAULT

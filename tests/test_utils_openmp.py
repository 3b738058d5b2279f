"""utils/openmp.py: the OpenMP threads wait passively unless told otherwise, set before torch loads (libgomp reads
the policy once, when it is loaded), by inference.py first of all."""

import subprocess
import sys
from pathlib import Path

from cdvd_tsp.utils.openmp import OPENMP_DEFAULT, PASSIVE, WAIT_POLICY_VARIABLE, prefer_passive_waiting, wait_policy

CODE = Path(__file__).resolve().parents[1] / "code"


def test_passive_waiting_is_set_unless_given_or_too_late() -> None:
    environ: dict[str, str] = {}
    assert prefer_passive_waiting(environ, modules={}) and environ == {WAIT_POLICY_VARIABLE: PASSIVE}
    environ = {WAIT_POLICY_VARIABLE: "ACTIVE"}
    assert not prefer_passive_waiting(environ, modules={}) and environ[WAIT_POLICY_VARIABLE] == "ACTIVE"
    environ = {}
    assert not prefer_passive_waiting(environ, modules={"torch": object()}) and environ == {}


def test_the_policy_recorded_is_the_environment_s() -> None:
    assert wait_policy({WAIT_POLICY_VARIABLE: "PASSIVE"}) == "passive"
    assert wait_policy({WAIT_POLICY_VARIABLE: " active "}) == "active"
    assert wait_policy({}) == OPENMP_DEFAULT


def test_inference_sets_the_policy_before_torch_is_loaded() -> None:
    probe = (
        "import os, sys; os.environ.pop('OMP_WAIT_POLICY', None); from cdvd_tsp import inference; "
        "print(os.environ.get('OMP_WAIT_POLICY')); "
        "import cdvd_tsp.utils.openmp as o; print(o.prefer_passive_waiting())"  # torch is loaded by now: too late
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=CODE, capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.split() == ["PASSIVE", "False"]

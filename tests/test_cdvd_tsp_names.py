"""The project's one top-level name: code/'s packages and scripts are modules of cdvd_tsp (``cdvd_tsp.model`` is
code/model/), so a host's modules of the same names (a ``utils/`` beside a notebook, ComfyUI's ``utils`` package, its
``main.py``) can neither break nor take the place of the project's."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE = REPO_ROOT / "code"
TOP_LEVEL = sorted(
    path.stem if path.is_file() else path.name
    for path in CODE.iterdir()
    if (path.suffix == ".py" or (path / "__init__.py").is_file()) and path.name != "cdvd_tsp"
)
"""code/'s packages and scripts besides cdvd_tsp: model, data, utils, ..., inference, main."""


def test_the_top_level_names_are_the_release_s() -> None:
    release = [
        "data",
        "export_model",
        "infer",
        "inference",
        "logger",
        "loss",
        "main",
        "model",
        "option",
        "synthesize",
        "trainer",
        "utils",
    ]
    assert release == TOP_LEVEL


@pytest.mark.parametrize("folder", ["code", "tests", "bench"])
def test_every_import_of_the_project_goes_through_cdvd_tsp(folder: str) -> None:
    """``import utils``/``from model.x import`` would work in the tests (code/ is on their path) and fail in a
    host that has a module of that name, or import the host's."""
    found = []
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.relative_to(REPO_ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in TOP_LEVEL
            ]
    assert found == []


def test_a_host_with_modules_of_the_same_names_imports_and_runs_the_project(tmp_path: Path) -> None:
    """From a folder holding a module of each of code/'s top-level names, each failing when imported, with code/ on
    the path after it (a notebook beside its own utils/, a ComfyUI node): every module of the project imports, and
    the API restores frames."""
    for name in TOP_LEVEL:
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(f"raise ImportError('the host\\'s own {name}')\n")
    script = (
        "import pkgutil, sys\n"
        "import numpy as np\n"
        "import cdvd_tsp\n"
        "from cdvd_tsp import Deblurrer\n"
        "skip = {'cdvd_tsp.model.correlation_cuda', 'cdvd_tsp.cdvd_tsp'}  # CuPy's kernel; the package itself again\n"
        "modules = [info.name for info in pkgutil.walk_packages(cdvd_tsp.__path__, 'cdvd_tsp.')]\n"
        "assert len(modules) > 80 and 'cdvd_tsp.infer.run' in modules, modules\n"
        "for name in sorted(set(modules) - skip):\n"
        "    __import__(name)\n"
        "deblurrer = Deblurrer.from_checkpoint('DEMO', device='cpu', precision='fp32')\n"
        "frames = [np.full((20, 28, 3), 40 * index, np.uint8) for index in range(5)]\n"
        "restored = list(deblurrer.deblur(frames))\n"
        "print(len(restored), restored[0].shape, restored[0].dtype)\n"
        "try:\n"
        "    import utils\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(CODE)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["5 (20, 28, 3) uint8", "the host's own utils"]  # the host's, untouched


def test_the_package_without_code_beside_it_says_how_to_install(tmp_path: Path) -> None:
    """What ``pip install .`` (not editable) would put in site-packages: the package's folder alone."""
    shutil.copytree(CODE / "cdvd_tsp", tmp_path / "cdvd_tsp", ignore=shutil.ignore_patterns("__pycache__"))
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", "import cdvd_tsp"], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"ImportError: cdvd_tsp: {tmp_path.resolve()} does not hold the project's code/ (model/, data/, ...): install "
        "the project from its clone with `python -m pip install -e .` (editable), or put its code/ on sys.path"
    )

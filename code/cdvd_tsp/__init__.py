"""CDVD-TSP video deblurring as a library: ``from cdvd_tsp import Deblurrer`` (docs/api.md).

The release's packages and scripts of code/ (``model``, ``data``, ``utils``, ..., ``inference.py``, ``main.py``) are
this package's modules too (``cdvd_tsp.model``, ``cdvd_tsp.inference``, ...), where their files have always been:
every module imports the others by these names, so that no top-level name of the host's (a ``utils/`` or
``model.py`` beside a notebook, ComfyUI's ``utils`` package, a pip package called ``data``) can stand in for one of
the project's.
"""

from pathlib import Path
from typing import Any

if __name__ != "cdvd_tsp":  # this folder seen again through code/ (cdvd_tsp.cdvd_tsp): refused, or walks never end
    raise ImportError(f"{__name__}: the package cdvd_tsp is not a module of itself")
CODE = Path(__file__).resolve().parent.parent
if not (CODE / "model" / "cdvd_tsp.py").is_file():  # a copy of this folder alone, as `pip install .` would make
    raise ImportError(
        f"cdvd_tsp: {CODE} does not hold the project's code/ (model/, data/, ...): install the project from its "
        "clone with `python -m pip install -e .` (editable), or put its code/ on sys.path"
    )
__path__.append(str(CODE))

__all__ = ["DeblurError", "Deblurrer"]


def __getattr__(name: str) -> Any:
    """The API's classes, imported on first use: the commands import ``cdvd_tsp.<module>`` without the API's stack."""
    if name in __all__:
        from cdvd_tsp import deblurrer

        return getattr(deblurrer, name)
    raise AttributeError(f"module 'cdvd_tsp' has no attribute {name!r}")

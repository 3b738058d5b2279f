"""Deterministic algorithms, one switch for training (``main.py --deterministic``) and inference
(``inference.py --deterministic``, scoped to the run by infer/switches.py): torch's deterministic algorithms,
cuDNN's deterministic ones without benchmark-mode choices, and cuBLAS's deterministic workspace
(``CUBLAS_WORKSPACE_CONFIG``, read by cuBLAS when PyTorch first uses it, so set before any CUDA work)."""

import os

import torch

CUBLAS_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")
"""The values with which cuBLAS is deterministic (the first is set when the variable is not)."""


def set_cublas_workspace() -> None:
    """cuBLAS's deterministic workspace, unless the environment sets one."""
    os.environ.setdefault(CUBLAS_VARIABLE, CUBLAS_DETERMINISTIC[0])


def use_deterministic_algorithms(warn_only: bool) -> None:
    """Every deterministic switch on; with ``warn_only`` an op without a deterministic implementation warns
    instead of raising."""
    set_cublas_workspace()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False

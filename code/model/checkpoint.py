"""Strict checkpoint loading for CDVD-TSP, its flow net and its restoration net.

Every file is read with ``weights_only=True`` and must match the module's parameter names and shapes exactly;
anything else is refused with a one-line `CheckpointError` naming the file and the names that differ. Half
precision files load into a float32 (or float64) model: values are cast to the model's dtype.
"""

import os
import pickle
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from utils.errors import UserError

WRAPPER_PREFIX = "module."
"""Added to every name by DataParallel and DistributedDataParallel."""
NAMES_SHOWN = 10


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) with ``weights_only=True``; strip a DataParallel/DDP ``module.`` prefix."""
    path = os.fspath(path)
    if not path:
        raise CheckpointError("no checkpoint file given")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: refused, not a plain state dict of tensors ({first_line})") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, zipfile errors... for damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({first_line})") from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict (name -> tensor)")
    not_tensors = [name for name, value in loaded.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict of tensors; non-tensor entries: {_name_list(not_tensors)}")
    return strip_wrapper_prefix(dict(loaded))


def strip_wrapper_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove the ``module.`` prefix DataParallel/DDP put on every name, if every name has it."""
    if state and all(name.startswith(WRAPPER_PREFIX) for name in state):
        return {name[len(WRAPPER_PREFIX) :]: value for name, value in state.items()}
    return state


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown}, and {more} more" if more > 0 else shown


def mismatch_report(expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> str:
    """Describe how ``found`` differs from ``expected`` in names and shapes; empty when they match."""
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    misshaped = [
        f"{name} (file {list(found[name].shape)}, model {list(expected[name].shape)})"
        for name in expected
        if name in found and found[name].shape != expected[name].shape
    ]
    parts = [
        f"{len(names)} {label}: {_name_list(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("with another shape", misshaped))
        if names
    ]
    return "; ".join(parts)


def load_into(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``module`` after checking that names and shapes match exactly."""
    expected = module.state_dict()
    report = mismatch_report(expected, state)
    if report:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: {report}")
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(state[name])


def load_weights(module: nn.Module, path: str | os.PathLike) -> None:
    """Load a checkpoint file into ``module`` strictly.

    Works for a full model checkpoint (the released `CDVD_TSP_*.pt` or one of this project's) into `CDVD_TSP`,
    PWC-Net's `network-default.pytorch` into `Flow_PWC.moduleNetwork`, and restoration weights saved on their own
    into `RECONS_VIDEO`.
    """
    load_into(module, read_state_dict(path), os.fspath(path))

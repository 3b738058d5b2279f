"""Strict checkpoint loading for CDVD-TSP, its flow net and its restoration net.

Every file is read with ``weights_only=True`` and must match the module's parameter names and shapes exactly;
anything else is refused with a one-line `CheckpointError` naming the file and the names that differ. Half
precision files load into a float32 (or float64) model: values are cast to the model's dtype.

The weights of CDVD_TSP do not depend on its window length ``n_sequence`` (2T + 1 frames for T stages), so a file
trained with another one fits by names and shapes, yet restores badly. Files written by training record it where a
plain state dict keeps its per-module versions, the ``_metadata`` attribute of the OrderedDict
(``_metadata["cdvd_tsp"] = {"n_sequence": N}``; `with_n_sequence`): the file stays a plain state dict of tensors that
the release's ``load_state_dict`` reads unchanged, and `load_weights` refuses a recorded value that differs from
the model's unless asked to accept it (training from such a file). Files without the record (the released ones)
load as before.
"""

import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

RECORD_KEY = "cdvd_tsp"
"""The entry of a state dict's ``_metadata`` that says how the weights were trained (``{"n_sequence": N}``)."""
WRAPPER_PREFIX = "module."
"""Added to every name by DataParallel and DistributedDataParallel."""
NAMES_SHOWN = 10


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict (name -> tensor) with ``weights_only=True``; strip a DataParallel/DDP ``module.`` prefix."""
    return read_checkpoint(path)[0]


def with_n_sequence(state: Mapping[str, Tensor], n_sequence: int) -> "OrderedDict[str, Tensor]":
    """``state`` as an OrderedDict whose ``_metadata`` records the window length the weights were trained with."""
    recorded = OrderedDict(state)
    metadata = OrderedDict(getattr(state, "_metadata", None) or {})
    metadata[RECORD_KEY] = {"n_sequence": int(n_sequence)}
    recorded._metadata = metadata
    return recorded


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], int | None]:
    """`read_state_dict`, and the ``n_sequence`` the file records (None for files without the record)."""
    path = os.fspath(path)
    if not path:
        raise CheckpointError("no checkpoint file given")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = first_line(error)
        raise CheckpointError(f"{path}: refused, not a plain state dict of tensors ({reason})") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, zipfile errors... for damaged files
        reason = first_line(error)
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({reason})") from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict (name -> tensor)")
    not_tensors = [name for name, value in loaded.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: not a state dict of tensors; non-tensor entries: {_name_list(not_tensors)}")
    record = (getattr(loaded, "_metadata", None) or {}).get(RECORD_KEY)
    n_sequence = record.get("n_sequence") if isinstance(record, Mapping) else None
    return strip_wrapper_prefix(dict(loaded)), n_sequence if isinstance(n_sequence, int) else None


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


def load_weights(module: nn.Module, path: str | os.PathLike, other_n_sequence: bool = False) -> None:
    """Load a checkpoint file into ``module`` strictly.

    Works for a full model checkpoint (the released `CDVD_TSP_*.pt` or one of this project's) into `CDVD_TSP`,
    PWC-Net's `network-default.pytorch` into `Flow_PWC.moduleNetwork`, and restoration weights saved on their own
    into `RECONS_VIDEO`. A file that records another ``n_sequence`` than the CDVD_TSP model's is refused, or with
    ``other_n_sequence`` (training from it) loaded with a log line saying so.
    """
    state, trained = read_checkpoint(path)
    expected = getattr(module, "n_sequence", None) if hasattr(module, "n_stages") else None
    if trained is not None and expected is not None and trained != expected:
        difference = (
            f"{os.fspath(path)} was trained with n_sequence {trained} (--n_stages {(trained - 1) // 2}); "
            f"this model takes n_sequence {expected} (--n_stages {(expected - 1) // 2})"
        )
        if not other_n_sequence:
            raise CheckpointError(f"{difference}; use a checkpoint trained with n_sequence {expected}")
        logger.info("%s: training it with n_sequence %d from here", difference, expected)
    load_into(module, state, os.fspath(path))

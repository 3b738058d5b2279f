"""Strict checkpoint loading for CDVD-TSP, its flow net and its restoration net.

Every file is read with ``weights_only=True`` and must match the module's parameter names and shapes exactly, and
every value must be finite; anything else is refused with a one-line `CheckpointError` naming the file and what is
wrong: the names that differ, the part of the model a file holds when it holds only one (PWC-Net's weights, the
restoration net's), the tensor that holds NaN or inf, or what the file is when it is no checkpoint (a folder, an
empty file, text such as a Git LFS pointer, a pickled object that ``weights_only`` refuses). PyTorch's own advice
to load with ``weights_only=False`` is never passed on. Half precision files load into a float32 (or float64)
model: values are cast to the model's dtype.

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
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from cdvd_tsp.utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

RECORD_KEY = "cdvd_tsp"
"""The entry of a state dict's ``_metadata`` that says how the weights were trained (``{"n_sequence": N}``)."""
WRAPPER_PREFIX = "module."
"""Added to every name by DataParallel and DistributedDataParallel."""
NAMES_SHOWN = 10
ZIP_MAGIC = b"PK\x03\x04"
"""How the files torch.save writes begin (a zip archive)."""
PICKLE_MAGIC = b"\x80"
"""How a pickle of protocol 2 or later begins (torch.save's legacy format, or a plain ``pickle.dump``)."""
GIT_LFS_POINTER = b"version https://git-lfs"
HEAD_BYTES = 64
"""Bytes read to tell what a file that is no checkpoint is."""
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")
PARTS = {"flow_net.moduleNetwork.": "PWC-Net's weights", "recons_net.": "the restoration net's weights"}
"""Parts of CDVD_TSP whose weights are also saved on their own, and what such a file holds."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def with_n_sequence(state: Mapping[str, Tensor], n_sequence: int) -> "OrderedDict[str, Tensor]":
    """``state`` as an OrderedDict whose ``_metadata`` records the window length the weights were trained with."""
    recorded = OrderedDict(state)
    metadata = OrderedDict(getattr(state, "_metadata", None) or {})
    metadata[RECORD_KEY] = {"n_sequence": int(n_sequence)}
    recorded._metadata = metadata
    return recorded


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], int | None]:
    """Read a state dict (name -> tensor) with ``weights_only=True``, a DataParallel/DDP ``module.`` prefix
    stripped, and the ``n_sequence`` the file records (None for files without the record)."""
    path = os.fspath(path)
    if not path:
        raise CheckpointError("no checkpoint file given")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: is not a regular file, so not a checkpoint")
    # A zip archive (what torch.save writes) is mapped, not read: its tensors are read from the file where they are
    # used, once (a caller that wants only the record reads no tensor). The legacy format can only be read whole.
    mapped = _head(path).startswith(ZIP_MAGIC)
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol draws a warning before it is refused anyway
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, zipfile errors...
        raise CheckpointError(f"{path}: {_what_it_is(path, error)}") from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict (name -> tensor)")
    not_tensors = [name for name, value in loaded.items() if not isinstance(value, Tensor)]
    if not_tensors:
        if {"model", "optimizer"} <= set(loaded):
            raise CheckpointError(
                f"{path}: holds a training state (entries {_name_list(list(loaded))}), not a state dict of weights; "
                "the run's weights are the files in its model/ folder"
            )
        raise CheckpointError(f"{path}: not a state dict of tensors; non-tensor entries: {_name_list(not_tensors)}")
    record = (getattr(loaded, "_metadata", None) or {}).get(RECORD_KEY)
    n_sequence = record.get("n_sequence") if isinstance(record, Mapping) else None
    return strip_wrapper_prefix(dict(loaded)), n_sequence if isinstance(n_sequence, int) else None


def _plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return ANSI_ESCAPE.sub("", text)


def _head(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(HEAD_BYTES)
    except OSError:
        return b""


def _as_text(head: bytes) -> str | None:
    """The first line of ``head`` if the file starts with printable text (UTF-8), else None."""
    for cut in range(4):  # a character may be split at the end of the bytes read
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if text and all(char.isprintable() or char in "\t\r\n" for char in text):
            return text.strip().splitlines()[0] if text.strip() else text
        return None
    return None


def _what_it_is(path: str, error: Exception) -> str:
    """What a file that torch.load cannot read as weights is, in words, without PyTorch's advice to load it with
    ``weights_only=False`` (never given: it would run whatever code the file holds)."""
    head = _head(path)
    if not head:
        return "is empty (0 bytes), not a PyTorch checkpoint"
    if head.startswith(GIT_LFS_POINTER):
        return "is a Git LFS pointer, not the checkpoint itself; fetch the file (git lfs pull)"
    text = _as_text(head)
    if text is not None:
        return f"not a PyTorch checkpoint (it starts with text: {text[:40]!r})"
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return "not a PyTorch checkpoint (binary data, neither the zip archive torch.save writes nor a pickle)"
    message = _plain(str(error))
    if isinstance(error, pickle.UnpicklingError):
        refused = REFUSED_GLOBAL.search(message)
        if refused:
            return (
                f"holds a pickled Python object ({refused.group(1)}), which loading with weights_only refuses, as "
                "it could run code; a checkpoint is a state dict of tensors (save model.state_dict())"
            )
        detail = message.partition("WeightsUnpickler error:")[2].strip()
        reason = f" ({detail.splitlines()[0]})" if detail else ""
        return f"holds a pickle that is not a state dict of tensors, refused by loading with weights_only{reason}"
    reason = first_line(error) if "weights_only" not in message else type(error).__name__
    return f"cannot be read as a PyTorch checkpoint, damaged or cut short ({_plain(reason)})"


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


def _part_of(names: list[str], expected: Mapping[str, Tensor]) -> str | None:
    """The prefix under which ``names`` are exactly the names of one part of ``expected``, if they are."""
    first = names[0] if names else ""
    for full in expected:
        prefix = full[: len(full) - len(first)]
        if (
            full.endswith(first)
            and prefix.endswith(".")
            and {prefix + name for name in names} == {name for name in expected if name.startswith(prefix)}
        ):
            return prefix
    return None


def describe_part(module: nn.Module, state: Mapping[str, Tensor], source: str) -> str | None:
    """A short line for a file that holds one part of ``module`` only, or a larger model ``module`` is a part of;
    None for any other mismatch."""
    expected, model = module.state_dict(), type(module).__name__
    prefix = _part_of(list(state), expected)
    if prefix is not None:
        what = PARTS.get(prefix, f"the weights of {model}'s {prefix[:-1]}")
        return f"{source} holds {what} only ({prefix[:-1]}, {len(state)} tensors), not a whole {model} model"
    larger = _part_of(list(expected), state)
    if larger is not None:
        return (
            f"{source} holds a larger model ({len(state)} tensors), of which {larger[:-1]} has the {len(expected)} "
            f"tensors of a {model}; pass the weights of the {model} alone"
        )
    return None


def _has_non_finite(value: Tensor) -> bool:
    # A float64 sum is finite when every value is (float16 and float32 values cannot add up past its range) and one
    # reduction is several times faster than isfinite's mask, which decides only when the sum is not finite.
    if not value.is_floating_point() or bool(torch.isfinite(value.sum(dtype=torch.float64))):
        return False
    return not bool(torch.isfinite(value).all())


def check_finite(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse ``state`` if a value is NaN or infinite, naming the first such tensor (weights like these give
    meaningless outputs: all-black frames, believable-looking scores)."""
    bad = [name for name, value in state.items() if _has_non_finite(value)]
    if not bad:
        return
    value = state[bad[0]]
    nan = int(torch.isnan(value).sum())
    infinite = int(torch.isinf(value).sum())
    counts = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{infinite} inf" if infinite else "") if part)
    more = f"; so do {len(bad) - 1} more: {_name_list(bad[1:])}" if len(bad) > 1 else ""
    raise CheckpointError(
        f"{source}: tensor {bad[0]} holds {counts} of its {value.numel()} values{more}; non-finite weights are refused"
    )


def load_into(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Copy ``state`` into ``module`` after checking that names and shapes match exactly and every value is
    finite."""
    expected = module.state_dict()
    report = mismatch_report(expected, state)
    if report:
        part = describe_part(module, state, source)
        raise CheckpointError(part or f"{source} does not fit {type(module).__name__}: {report}")
    check_finite(state, source)
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(state[name])


def load_weights(module: nn.Module, path: str | os.PathLike, other_n_sequence: bool = False) -> None:
    """Load a checkpoint file into ``module`` strictly.

    Works for a full model checkpoint (the released `CDVD_TSP_*.pt` or one of this project's) into `CDVD_TSP`,
    PWC-Net's `network-default.pytorch` into `Flow_PWC.moduleNetwork`, and restoration weights saved on their own
    into `RECONS_VIDEO`. A file that records another ``n_sequence`` than the CDVD_TSP model's is refused, or with
    ``other_n_sequence`` (training from it) loaded with a log line saying so. A file with NaN or inf is refused.
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

"""Turn a training checkpoint into a file to ship: the weights only, checked against CDVD_TSP, optionally float16.

``python code/export_model.py experiment/CDVD_TSP_DEMO/model/model_best.pt pretrain_models/CDVD_TSP_DEMO.pt --half``

The strict loader (`model.checkpoint.load_weights`) casts float16 values back to the model's dtype, so a half file
loads into a float32 model like any other. The window length a training checkpoint records (``n_sequence``, see
`model.checkpoint`) is kept in the exported file. An existing destination is never overwritten. A source with NaN
or inf is refused (naming the tensor), and so, with ``--half``, is one holding values that float16 cannot hold
(beyond +-65504 they would become inf), naming the tensor and its largest value.
"""

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import load_into, read_checkpoint, with_n_sequence
from utils.atomic import atomic_torch_save
from utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)

HALF_MAX = torch.finfo(torch.float16).max
"""65504: the largest float16; larger values (from 65520 on, once rounded) become inf."""


def export_weights(source: str | os.PathLike, destination: str | os.PathLike, half: bool) -> dict[str, Tensor]:
    """Read ``source`` strictly (it must fit `CDVD_TSP`), write its weights (and its recorded ``n_sequence``, if
    any) to ``destination``; returns them."""
    destination = Path(destination)
    if destination.exists():
        raise UserError(f"{destination} already exists; remove it or choose another destination")
    state, n_sequence = read_checkpoint(source)
    load_into(CDVD_TSP(), state, os.fspath(source))  # refuses a file whose names or shapes differ, or NaN and inf
    if half:
        state = {
            name: to_half(value, name, source) if value.is_floating_point() else value for name, value in state.items()
        }
    # Copies, so that the file holds these tensors' bytes only, not whole storages they may be views of.
    state = {name: value.detach().clone().contiguous() for name, value in state.items()}
    if n_sequence is not None:
        state = with_n_sequence(state, n_sequence)
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, destination)
    return state


def to_half(value: Tensor, name: str, source: str | os.PathLike) -> Tensor:
    """``value`` as float16; a `UserError` naming the tensor and its largest value if float16 cannot hold it."""
    converted = value.half()
    overflow = torch.isinf(converted) & torch.isfinite(value)
    if bool(overflow.any()):
        largest = value[overflow].abs().max().item()
        raise UserError(
            f"{os.fspath(source)}: tensor {name} holds values up to {largest:.6g} in magnitude, beyond float16's range "
            f"(+-{HALF_MAX:.0f}): with --half they would become inf; export it without --half"
        )
    return converted


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a checkpoint: a state dict of CDVD_TSP (module. prefixes are accepted)")
    parser.add_argument("destination", help="the file to write (must not exist)")
    parser.add_argument("--half", action="store_true", help="store floating point weights as float16")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    state = export_weights(args.source, args.destination, args.half)
    size_mb = Path(args.destination).stat().st_size / 1e6
    dtypes = sorted({str(value.dtype).removeprefix("torch.") for value in state.values()})
    logger.info("wrote %s: %d tensors (%s), %.1f MB", args.destination, len(state), ", ".join(dtypes), size_mb)
    return 0


if __name__ == "__main__":
    run_cli(main)

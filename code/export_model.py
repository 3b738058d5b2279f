"""Turn a training checkpoint into a file to ship: the weights only, checked against CDVD_TSP, optionally float16.

``python code/export_model.py experiment/CDVD_TSP_DEMO/model/model_best.pt pretrain_models/CDVD_TSP_DEMO.pt --half``

``--format onnx`` writes instead the model's per-stage step as a float32 ONNX graph, or float16 with ``--half``
(model/onnx_export.py), for
``inference.py --backend onnxruntime`` and other runtimes, after the same checks of the source; the file is kept only
once onnxruntime has run it at two frame sizes and matched the PyTorch step (docs/inference.md, "ONNX export").

The strict loader (`model.checkpoint.load_weights`) casts float16 values back to the model's dtype, so a half file
loads into a float32 model like any other. The window length a training checkpoint records (``n_sequence``, see
`model.checkpoint`) is kept in the exported file. An existing destination is never overwritten. A source with NaN
or inf is refused (naming the tensor), and so, with ``--half``, is one holding values that float16 cannot hold
(beyond +-65504 they would become inf), naming the tensor and its largest value.
"""

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import load_into, read_checkpoint, with_n_sequence
from cdvd_tsp.model.onnx_export import (
    CHECK_TOLERANCE,
    DEFAULT_OPSET,
    HALF_CHECK_TOLERANCE,
    OPSETS,
    ExportReport,
    check_export,
    export_step,
)
from cdvd_tsp.utils.atomic import atomic_torch_save
from cdvd_tsp.utils.cli import CommandParser
from cdvd_tsp.utils.errors import UserError, run_cli

logger = logging.getLogger(__name__)

FORMATS = ("pt", "onnx")
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


def export_onnx_file(
    source: str | os.PathLike, destination: str | os.PathLike, half: bool, opset: int = DEFAULT_OPSET
) -> ExportReport:
    """Read ``source`` as `export_weights` does (the same refusals), export its step to ``destination`` as ONNX and
    check it (`model.onnx_export.check_export`); a file that fails the check is deleted and refused in one line."""
    destination = Path(destination)
    if destination.exists():
        raise UserError(f"{destination} already exists; remove it or choose another destination")
    state, n_sequence = read_checkpoint(source)
    model = CDVD_TSP(n_sequence=n_sequence or 5)
    load_into(model, state, os.fspath(source))  # refuses a file whose names or shapes differ, or NaN and inf
    if half:  # values float16 cannot hold are refused as for a --half weights file
        for name, value in state.items():
            if value.is_floating_point():
                to_half(value, name, source)
    model.eval()
    tolerance = HALF_CHECK_TOLERANCE if half else CHECK_TOLERANCE
    try:
        seconds = export_step(model, destination, opset, half)
        started = time.perf_counter()
        differences = check_export(model, destination)
        check_seconds = time.perf_counter() - started
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    if not max(differences.values()) <= tolerance:  # NaN fails too
        destination.unlink(missing_ok=True)
        sizes = ", ".join(f"{width}x{height}: {value:.3g}" for (height, width), value in differences.items())
        raise UserError(
            f"{destination}: the exported step differs from PyTorch's by more than {tolerance:g} ({sizes}); "
            "the file was deleted"
        )
    return ExportReport(destination, opset, seconds, check_seconds, differences, half)


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
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a checkpoint: a state dict of CDVD_TSP (module. prefixes are accepted)")
    parser.add_argument("destination", help="the file to write (must not exist)")
    parser.add_argument(
        "--half",
        action="store_true",
        help="float16: the weights (the default format), or the exported step's weights, inputs and computation (onnx)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="pt",
        help="pt (default): the weights for PyTorch; onnx: the per-stage step as an ONNX graph, checked with "
        "onnxruntime (needs onnx, onnxscript and onnxruntime)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        choices=OPSETS,
        default=DEFAULT_OPSET,
        help=f"with --format onnx: the ONNX opset (default {DEFAULT_OPSET}; not 20, TensorRT's GridSample is wrong)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.format == "onnx":
        report = export_onnx_file(args.source, args.destination, args.half, args.opset)
        sizes = ", ".join(f"{width}x{height} {value:.2g}" for (height, width), value in report.differences.items())
        logger.info(
            "wrote %s: the per-stage step as ONNX, opset %d, %s, H and W dynamic (multiples of 4), %.1f MB, "
            "exported in %.0f s; onnxruntime (CPU) matches PyTorch's float32 step within %g (largest differences: %s)",
            args.destination,
            report.opset,
            report.dtype_name,
            report.size_mb,
            report.seconds,
            report.tolerance,
            sizes,
        )
        return 0
    if args.opset != DEFAULT_OPSET:
        raise UserError("--opset goes with --format onnx")
    state = export_weights(args.source, args.destination, args.half)
    size_mb = Path(args.destination).stat().st_size / 1e6
    dtypes = sorted({str(value.dtype).removeprefix("torch.") for value in state.values()})
    logger.info("wrote %s: %d tensors (%s), %.1f MB", args.destination, len(state), ", ".join(dtypes), size_mb)
    return 0


if __name__ == "__main__":
    run_cli(main)

"""The per-stage step exported to ONNX, run by onnxruntime: the ``onnxruntime`` inference backend.

An exported file (``export_model.py --format onnx``, `model.onnx_export`) holds the step of `CDVD_TSP.restore_center`
(previous, center, following [1, 3, H, W] -> restored center) with H and W dynamic, and records in its metadata the
number of stages T of the model it came from (`N_STAGES_KEY`): `OnnxModel` stands in for the model where the runners
only need that number (`model.streaming.StreamingRunner` takes ``model.n_stages``) and `OnnxModel.step` is the step
they call. onnx and onnxruntime are optional: they are imported here only when a file is opened
(`import_onnxruntime`), and their absence is one `UserError` naming the package to install.
"""

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.utils.errors import UserError

EXPORTED_OPTIONS = StepOptions(batch_flows=True)
"""How the exported step lays out its work: both flows in one call of the flow net (half the graph of two calls;
the same numbers to float rounding, tests/test_model_cdvd_tsp.py), NCHW throughout."""
N_STAGES_KEY = "cdvd_tsp.n_stages"
"""The metadata key (ONNX metadata_props) holding the number of stages T of the exported model."""
INPUT_NAMES = ("previous", "center", "following")
OUTPUT_NAME = "restored"
INSTALL_HINT = "pip install onnxruntime (and onnx onnxscript to export)"


def import_optional(name: str, purpose: str) -> ModuleType:
    """The optional package ``name``, or a one-line `UserError` saying what needs it and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise UserError(
            f"{purpose} needs the package {name}, which is not installed here ({error}); {INSTALL_HINT}"
        ) from None


def import_onnxruntime(purpose: str = "--backend onnxruntime") -> ModuleType:
    return import_optional("onnxruntime", purpose)


def session_options(ort: ModuleType, threads: int | None) -> object:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


class OnnxModel:
    """An exported step opened with onnxruntime (CPU by default): ``n_stages`` and ``n_sequence`` as `CDVD_TSP`
    has them, and `step`, a `model.streaming.Step` on torch tensors."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(
                os.fspath(path), session_options(ort, threads), providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own types for an unreadable or invalid file
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"--model_path {path}: onnxruntime cannot open it as an ONNX model ({first})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        inputs = [node.name for node in self.session.get_inputs()]
        if tuple(inputs) != INPUT_NAMES or N_STAGES_KEY not in metadata:
            raise UserError(
                f"--model_path {path}: not an exported CDVD-TSP step (inputs {', '.join(inputs)}; "
                f"{N_STAGES_KEY} {'recorded' if N_STAGES_KEY in metadata else 'not recorded'}); "
                "export one with export_model.py --format onnx"
            )
        self.n_stages = int(metadata[N_STAGES_KEY])
        self.n_sequence = 2 * self.n_stages + 1
        input_type = self.session.get_inputs()[0].type  # "tensor(float)" or "tensor(float16)"
        self.dtype = np.float16 if "float16" in input_type else np.float32

    def step(self, previous: Tensor, center: Tensor, following: Tensor) -> Tensor:
        """The exported step on torch tensors [B, 3, H, W] (H and W multiples of 4), one frame of the batch at a
        time; the result is float32 on ``center``'s device."""
        outputs = []
        for index in range(center.shape[0]):
            feed = {
                name: frame[index : index + 1].detach().to("cpu", torch.float32).numpy().astype(self.dtype, copy=False)
                for name, frame in zip(INPUT_NAMES, (previous, center, following), strict=True)
            }
            outputs.append(torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0].astype(np.float32, copy=False)))
        return torch.cat(outputs).to(center.device)

    def eval(self) -> "OnnxModel":
        return self


def read_n_stages(path: str | os.PathLike) -> int:
    """The number of stages an exported file records: read with onnx where it is installed (the weights' data are
    not kept), else from an onnxruntime session; a `UserError` naming the file when it records none."""
    try:
        import onnx
    except ImportError:
        return OnnxModel(path).n_stages
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as error:  # a protobuf decode error, or an unreadable file
        raise UserError(f"--model_path {path}: not an ONNX file ({type(error).__name__})") from None
    recorded = {entry.key: entry.value for entry in model.metadata_props}
    if N_STAGES_KEY not in recorded:
        raise UserError(
            f"--model_path {path}: records no {N_STAGES_KEY}: not an exported CDVD-TSP step; "
            "export one with export_model.py --format onnx"
        )
    return int(recorded[N_STAGES_KEY])

"""What each numeric precision setting means, in one table shared by inference (``--precision``) and training
(``--amp``), so the two cannot drift apart.

On CUDA a setting is two switches: whether float32 convolutions and matrix products may use TF32 tensor cores,
and which dtype (if any) autocast runs the model in. Steps that are numerically fragile decide their own dtype
inside the model (see `model.flow_pwc`: PWC-Net runs in float32 under bf16 autocast; sampling grids and validity
masks are never built in 16 bits). On the CPU ``fp32`` is offered, and ``bf16`` where the CPU computes bfloat16
natively (detected at run time, `utils.cpu.bf16_support`; elsewhere PyTorch emulates it, many times slower than
float32); there is no TF32 on the CPU, and float16 autocast is not offered there.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cdvd_tsp.utils.cpu import bf16_support
from cdvd_tsp.utils.errors import UserError


@dataclass(frozen=True)
class Precision:
    name: str
    autocast_dtype: torch.dtype | None
    """None: no autocast, the model runs in float32."""
    tf32: bool
    """float32 convolutions and matrix products may round their inputs to TF32 (10-bit mantissas) on CUDA."""
    summary: str


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", None, False, "float32, TF32 off: the reference numbers (slowest on CUDA)"),
    "tf32": Precision("tf32", None, True, "float32 with TF32 convolutions and matrix products (PyTorch's default)"),
    "fp16": Precision("fp16", torch.float16, True, "autocast to float16"),
    "bf16": Precision("bf16", torch.bfloat16, True, "autocast to bfloat16; PWC-Net stays in float32"),
}
CPU_PRECISIONS = ("fp32", "bf16")
"""Settings a CPU may run; bf16 only where `cpu_refusal` finds native bfloat16."""
NEEDS_CUDA = "needs a CUDA device"


def cpu_refusal(name: str) -> str | None:
    """Why the CPU cannot run the setting ``name`` (a known name), in a few words; None when it can."""
    if name not in CPU_PRECISIONS:
        return NEEDS_CUDA
    if name == "bf16":
        support = bf16_support()
        if not support.native:
            return f"{support.reason}, and emulated bfloat16 is many times slower than float32"
    return None


def get_precision(name: str, device: torch.device) -> Precision:
    """The setting ``name`` for ``device``; a `UserError` for an unknown name or one the device cannot run."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: unknown; use one of {', '.join(PRECISIONS)}")
    reason = None if device.type == "cuda" else cpu_refusal(name)
    if reason is not None:
        raise UserError(f"--precision {name}: {reason}; on the CPU use --precision fp32")
    return PRECISIONS[name]


def set_tf32(enabled: bool) -> None:
    """Allow or forbid TF32 for float32 cuDNN convolutions and cuBLAS matrix products (process-wide).

    Only the ``fp32_precision`` switches are used: PyTorch refuses to read its legacy ``allow_tf32`` flags once
    the two APIs have been mixed.
    """
    mode = "tf32" if enabled else "ieee"
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cuda.matmul.fp32_precision = mode


@contextlib.contextmanager
def tf32_switched(enabled: bool) -> Iterator[None]:
    """`set_tf32` for the duration of a block; the previous switches are restored afterwards."""
    previous = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = previous


def autocast(precision: Precision, device: torch.device, cache: bool = True) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` (a no-op without autocast).

    ``cache=False`` is needed while a CUDA graph is captured: autocast's cache of cast weights would otherwise
    keep tensors that belong to the capture.
    """
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype, cache_enabled=cache)

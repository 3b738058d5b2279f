"""PWC-Net's cost volume (correlation layer), and the choice of the code that computes it.

`cost_volume` is the single entry point the flow net calls. `cost_volume_torch` is its definition in PyTorch
operations (81 shifted products, any device); `cost_volume_tiled` computes the same numbers (to float rounding) as
nine batched matrix products over tiles of a row, which is 1.6 times faster forward and about 3 times faster forward
and backward on the CPU (bench/bench_cost_volume.py); for CUDA tensors the CuPy kernels of `model.correlation_cuda`
are used, but only once they have proved themselves: the first call for each device, dtype and radius runs the kernel
and the PyTorch path on a small random input, forward and backward, and compares them. A mismatch, or any error from
CuPy or NVRTC (then or later), logs one warning and sends every later call of the process to the PyTorch path. So the
kernel can make training and inference faster, never wrong, and never crash them.

The environment variable ``CDVD_COST_VOLUME`` chooses: ``auto`` (the default: the kernel for CUDA tensors when CuPy
imports, the tiled products on the CPU, the shifted products elsewhere), ``torch`` (the shifted products of
`cost_volume_torch` everywhere: the reference), ``tiled`` (the tiled products everywhere) or ``cupy`` (the kernel,
still checked; a warning when it cannot be used). Under ``torch.compile`` the shifted products are used (the compiler
fuses them), under ONNX export the same products stacked (`cost_volume_stacked`: fewer operators); during CUDA graph
capture an unchecked kernel is not used (the check must synchronize), so a runner warms up before it captures.
"""

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from cdvd_tsp.model.layout import in_layout_of
from cdvd_tsp.utils.errors import UserError, first_line

logger = logging.getLogger(__name__)

MAX_DISPLACEMENT = 4
"""Search radius in pixels: displacements -4..4 in each axis give 81 channels."""
BACKEND_VARIABLE = "CDVD_COST_VOLUME"
BACKEND_CHOICES = ("auto", "torch", "tiled", "cupy")
CHECK_SHAPE = (2, 5, 7, 10)
"""The self-check's input [B, C, H, W]: a batch, odd sizes, and a height below the 9-pixel search window, so every
border case is exercised."""
CHECK_BOUNDS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3}
"""Largest relative difference (max |kernel - reference| / max |reference|) the check accepts, per dtype. The
reference is the PyTorch path in float64 on the same inputs; float16 results carry one rounding to 11 bits."""
TILE = 8
"""Columns per tile in `cost_volume_tiled` (8 measured fastest on the CPU at PWC-Net's shapes, 16 and 24 close)."""


def cost_volume_torch(first: Tensor, second: Tensor, max_displacement: int = MAX_DISPLACEMENT) -> Tensor:
    """The cost volume with PyTorch operations: any device and float dtype, differentiable.

    It loops over the (2r + 1)^2 displacements (a product and a channel sum each), never over pixels.
    """
    channels, height, width = first.shape[1:]
    padded = F.pad(second, [max_displacement] * 4)
    span = 2 * max_displacement + 1
    products = [
        (first * padded[:, :, dy : dy + height, dx : dx + width]).sum(dim=1) for dy in range(span) for dx in range(span)
    ]
    return torch.stack(products, dim=1) / channels


def cost_volume_tiled(first: Tensor, second: Tensor, max_displacement: int = MAX_DISPLACEMENT) -> Tensor:
    """`cost_volume_torch` computed as batched matrix products: the same numbers up to the order of the channel sums.

    Each row of ``first`` is cut into tiles of `TILE` pixels. For a vertical displacement dy, a tile's pixels
    [TILE, C] times the band of ``second``'s row y + dy that they can reach [C, TILE + 2r] gives every product of
    the tile's pixels with that band; the 2r + 1 diagonals of that [TILE, TILE + 2r] block are the horizontal
    displacements. So 2r + 1 batched products replace (2r + 1)^2 shifted products and channel sums; they compute
    (TILE + 2r) / (2r + 1) times the multiply-adds, at matrix-product speed. Differentiable; the output has
    ``first``'s memory format.
    """
    batch, channels, height, width = first.shape
    dtype = torch.promote_types(first.dtype, second.dtype)  # as the shifted products' elementwise products promote
    first, second = first.to(dtype), second.to(dtype)
    radius, span = max_displacement, 2 * max_displacement + 1
    tiles = -(-width // TILE)
    padded_width, band = tiles * TILE, TILE + 2 * radius
    pixels = F.pad(first.permute(0, 2, 3, 1), [0, 0, 0, padded_width - width])
    pixels = pixels.reshape(batch * height * tiles, TILE, channels)  # [N, TILE, C], N = B * H * tiles
    rows = F.pad(second.permute(0, 2, 3, 1), [0, 0, radius, radius + padded_width - width, radius, radius])
    bands = rows.unfold(2, band, TILE).contiguous()  # [B, H + 2r, tiles, C, band]: each tile's reach, per row
    diagonals = []
    for dy in range(span):
        reach = bands[:, dy : dy + height].reshape(batch * height * tiles, channels, band)
        products = torch.baddbmm(  # alpha: the mean over channels inside the product
            reach.new_zeros(()).expand(reach.shape[0], TILE, band), pixels, reach, beta=0, alpha=1.0 / channels
        )
        # [N, TILE, span]: element (i, dx) of the block is products[i, i + dx]
        diagonals.append(products.as_strided((reach.shape[0], TILE, span), (TILE * band, band + 1, 1)))
    volume = torch.stack(diagonals, dim=2).view(batch, height, padded_width, span * span)[:, :, :width]
    return in_layout_of(volume.permute(0, 3, 1, 2), first)


def cost_volume_stacked(first: Tensor, second: Tensor, max_displacement: int = MAX_DISPLACEMENT) -> Tensor:
    """`cost_volume_torch` as 2r + 1 products of larger tensors: the form the ONNX export traces.

    The 2r + 1 horizontal shifts of ``second`` are stacked once [B, C, 2r + 1, H + 2r, W]; each vertical shift of
    that stack times ``first`` summed over channels is one row of displacements. The same products and channel sums
    as the shifted products with 2(2r + 1) slices instead of (2r + 1)^2, which the exporter's symbolic shapes make
    2.3 to 3 times faster to export (model/onnx_export.py); it holds 2r + 1 copies of ``second``, so it is not used for
    training.
    """
    channels, height, width = first.shape[1:]
    padded = F.pad(second, [max_displacement] * 4)
    span = 2 * max_displacement + 1
    shifted = torch.stack([padded[:, :, :, dx : dx + width] for dx in range(span)], dim=2)
    center = first.unsqueeze(2)
    rows = [(center * shifted[:, :, :, dy : dy + height]).sum(dim=1) for dy in range(span)]
    return torch.cat(rows, dim=1) / channels


class FastKernel(Protocol):
    """A faster cost volume: forward and backward on contiguous tensors of one dtype and device."""

    name: str

    def supports(self, first: Tensor, second: Tensor) -> bool: ...

    def forward(self, first: Tensor, second: Tensor, radius: int) -> Tensor: ...

    def backward(
        self, grad_out: Tensor, first: Tensor, second: Tensor, radius: int, need: tuple[bool, bool]
    ) -> tuple[Tensor | None, Tensor | None]: ...


def relative_difference(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected| in float64 (NaN when anything is NaN)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return ((actual - expected).abs().max() / scale).item()


def torch_gradients(
    grad_out: Tensor, first: Tensor, second: Tensor, radius: int, need: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of `cost_volume_torch` (the fallback when a kernel's backward fails)."""
    with torch.enable_grad():
        leaves = [first.detach().requires_grad_(need[0]), second.detach().requires_grad_(need[1])]
        output = cost_volume_torch(leaves[0], leaves[1], radius)
        wanted = [leaf for leaf, needed in zip(leaves, need, strict=True) if needed]
        grads = iter(torch.autograd.grad(output, wanted, grad_out))
    return tuple(next(grads) if needed else None for needed in need)  # type: ignore[return-value]


class KernelCostVolume(torch.autograd.Function):
    """Autograd around a `FastKernel`; a backward that fails falls back to the PyTorch gradients."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, selector: "KernelSelector", kernel: FastKernel, first: Tensor, second: Tensor, radius: int
    ) -> Tensor:
        ctx.selector, ctx.kernel, ctx.radius = selector, kernel, radius
        ctx.save_for_backward(first, second)
        return kernel.forward(first, second, radius)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[None, None, Tensor | None, Tensor | None, None]:
        first, second = ctx.saved_tensors
        need = (ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        grad_out = grad_out.contiguous()
        try:
            grads = ctx.kernel.backward(grad_out, first, second, ctx.radius, need)
        except Exception as error:  # a CuPy/CUDA error of any type: never let it stop training
            ctx.selector.disable(f"its backward pass failed ({first_line(error, with_type=True)})")
            grads = torch_gradients(grad_out, first, second, ctx.radius, need)
        return None, None, *grads, None


def backend_choice() -> str:
    """The value of ``CDVD_COST_VOLUME`` (``auto`` when unset)."""
    choice = os.environ.get(BACKEND_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise UserError(f"{BACKEND_VARIABLE}={choice!r}: use one of {', '.join(BACKEND_CHOICES)}")
    return choice


def torch_formulation(first: Tensor) -> Callable[[Tensor, Tensor, int], Tensor]:
    """The PyTorch code for a cost volume of ``first`` when no kernel computes it: `cost_volume_stacked` under
    export, `cost_volume_tiled` on the CPU (and wherever ``CDVD_COST_VOLUME=tiled``), `cost_volume_torch` under
    torch.compile, with ``torch`` and on other devices (on CUDA the tiled products have not been measured yet)."""
    if torch.compiler.is_exporting():
        return cost_volume_stacked
    choice = backend_choice()
    if torch.compiler.is_compiling() or choice == "torch":
        return cost_volume_torch
    return cost_volume_tiled if choice == "tiled" or first.device.type == "cpu" else cost_volume_torch


class KernelSelector:
    """Decides, call by call, whether a fast kernel or the PyTorch path computes the cost volume.

    ``load`` returns the kernel (it may raise, e.g. ImportError without CuPy); it is called once, at the first call
    on a device of ``device_types``. Each (device, dtype, radius) is checked once before the kernel is used for it.
    """

    def __init__(self, load: Callable[[], FastKernel], device_types: tuple[str, ...] = ("cuda",)) -> None:
        self.load = load
        self.device_types = device_types
        self.kernel: FastKernel | None = None
        self.load_error: str | None = None
        self.disabled: str | None = None
        """Why the kernel is no longer used in this process (None while it may be)."""
        self.checked: set[tuple[torch.device, torch.dtype, int]] = set()
        self.lock = threading.RLock()

    def disable(self, reason: str) -> None:
        with self.lock:
            if self.disabled is None:
                self.disabled = reason
                logger.warning("the cost-volume kernel is off for this process: %s; using the PyTorch path", reason)

    def _loaded(self, choice: str) -> FastKernel | None:
        with self.lock:
            if self.kernel is None and self.load_error is None:
                try:
                    self.kernel = self.load()
                except Exception as error:  # ImportError without CuPy; anything else CuPy raises on import
                    self.load_error = first_line(error, with_type=True)
                    log = logger.warning if choice == "cupy" else logger.info
                    log("cost-volume kernel unavailable (%s); using the PyTorch path", self.load_error)
            return self.kernel

    def select(self, first: Tensor, second: Tensor, radius: int) -> FastKernel | None:
        """The kernel to use for these inputs, or None for the PyTorch path."""
        if torch.compiler.is_compiling():
            return None
        choice = backend_choice()
        if first.device.type not in self.device_types or choice in ("torch", "tiled") or self.disabled is not None:
            return None
        kernel = self._loaded(choice)
        if kernel is None or not kernel.supports(first, second):
            return None
        key = (first.device, torch.promote_types(first.dtype, second.dtype), radius)
        if key not in self.checked:
            if first.is_cuda and torch.cuda.is_current_stream_capturing():
                return None  # the check synchronizes, which a capture forbids
            self.check(kernel, *key)
        return kernel if self.disabled is None else None

    def check(self, kernel: FastKernel, device: torch.device, dtype: torch.dtype, radius: int) -> None:
        """Compare ``kernel`` with the PyTorch path, forward and backward, on a small random input."""
        with self.lock:
            if (device, dtype, radius) in self.checked or self.disabled is not None:
                return
            try:
                worst = self._worst_difference(kernel, device, dtype, radius)
            except Exception as error:  # compilation (NVRTC), launch or any other CuPy error
                self.disable(f"its check on {device} {dtype} failed ({first_line(error, with_type=True)})")
                return
            bound = CHECK_BOUNDS.get(dtype, CHECK_BOUNDS[torch.float16])
            if not worst <= bound:  # also catches NaN
                self.disable(f"it differs from the PyTorch path on {device} {dtype} by {worst:.3g} (bound {bound:g})")
                return
            self.checked.add((device, dtype, radius))
            logger.info("cost-volume kernel %s checked on %s %s (difference %.2g)", kernel.name, device, dtype, worst)

    @staticmethod
    def _worst_difference(kernel: FastKernel, device: torch.device, dtype: torch.dtype, radius: int) -> float:
        generator = torch.Generator().manual_seed(0)  # private: the check must not move the global random state
        span = 2 * radius + 1
        batch, _, height, width = CHECK_SHAPE
        inputs = [torch.randn(CHECK_SHAPE, generator=generator, dtype=torch.float64) for _ in range(2)]
        grad_out = torch.randn((batch, span * span, height, width), generator=generator, dtype=torch.float64)
        first, second, grad_out = (tensor.to(device=device, dtype=dtype) for tensor in (*inputs, grad_out))
        with torch.inference_mode(False), torch.autocast(device.type, enabled=False):
            result = kernel.forward(first, second, radius)
            grads = kernel.backward(grad_out, first, second, radius, (True, True))
            as_double = [tensor.double() for tensor in (first, second, grad_out)]
            expected = cost_volume_torch(as_double[0], as_double[1], radius)
            expected_grads = torch_gradients(as_double[2], as_double[0], as_double[1], radius, (True, True))
        return max(
            relative_difference(actual, reference)
            for actual, reference in zip((result, *grads), (expected, *expected_grads), strict=True)
        )

    def describe(self) -> str:
        """Which code computes CUDA cost volumes in this process, in a few words (for logs)."""
        choice = backend_choice()
        if choice in ("torch", "tiled"):
            return f"PyTorch, {'shifted' if choice == 'torch' else 'tiled'} products ({BACKEND_VARIABLE}={choice})"
        if self.disabled is not None:
            return f"PyTorch (kernel off: {self.disabled})"
        if self.load_error is not None:
            return f"PyTorch (kernel unavailable: {self.load_error})"
        if self.checked:
            checked = ", ".join(sorted(f"{device} {dtype}".replace("torch.", "") for device, dtype, _ in self.checked))
            return f"{self.kernel.name if self.kernel else 'kernel'} (checked: {checked})"
        return "not chosen yet (no CUDA cost volume computed)"

    def compute(self, first: Tensor, second: Tensor, radius: int) -> Tensor:
        kernel = self.select(first, second, radius)
        if kernel is None:
            return torch_formulation(first)(first, second, radius)
        dtype = torch.promote_types(first.dtype, second.dtype)  # autocast hands over float16 and float32 together
        first, second = first.to(dtype).contiguous(), second.to(dtype).contiguous()
        try:
            return KernelCostVolume.apply(self, kernel, first, second, radius)
        except Exception as error:  # a CuPy/CUDA error of any type
            self.disable(f"it failed ({first_line(error, with_type=True)})")
            return torch_formulation(first)(first, second, radius)


def _load_cupy_kernel() -> FastKernel:
    from cdvd_tsp.model.correlation_cuda import load_kernel  # imports CuPy: only when a kernel could be used

    return load_kernel()


SELECTOR = KernelSelector(_load_cupy_kernel)
"""The process's choice for the flow net's cost volumes."""


def cost_volume(first: Tensor, second: Tensor, max_displacement: int = MAX_DISPLACEMENT) -> Tensor:
    """Correlate two feature maps over a square neighbourhood.

    ``out[b, (dy + r) * (2r + 1) + (dx + r), y, x] = mean_c first[b, c, y, x] * second[b, c, y + dy, x + dx]``
    for dy, dx in -r..r, zero where the displaced position falls outside ``second``. No activation is applied.
    Works on any device and float dtype and is differentiable; the output has ``first``'s memory format.
    """
    if first.shape != second.shape or first.dim() != 4:
        shapes = f"{list(first.shape)} and {list(second.shape)}"
        raise ValueError(f"cost_volume needs two [B, C, H, W] tensors of one shape, got {shapes}")
    if first.device != second.device:
        raise ValueError(f"cost_volume needs both tensors on one device, got {first.device} and {second.device}")
    return in_layout_of(SELECTOR.compute(first, second, max_displacement), first)

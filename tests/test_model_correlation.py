"""The cost volume: the PyTorch paths (shifted products, tiled products) against its definition and each other,
the choice between them and a fast kernel (tested on the CPU with kernels made to be right, wrong or failing), and
the CuPy kernel itself on a GPU.

Precision of the GPU checks: float64 and float32 to 1e-5 relative (forward) and 1e-4 (gradients) against the
PyTorch path in the same dtype; float16 against the PyTorch path in float64 on the same inputs, to 2e-3 (one
rounding to an 11-bit mantissa), and never worse than the PyTorch path's own float16 result. The cost volume has
no matrix products or convolutions, so TF32 does not apply to it.
"""

import importlib.util
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cdvd_tsp.model import correlation
from cdvd_tsp.model.correlation import (
    BACKEND_CHOICES,
    BACKEND_VARIABLE,
    SELECTOR,
    KernelSelector,
    cost_volume,
    cost_volume_stacked,
    cost_volume_tiled,
    cost_volume_torch,
    relative_difference,
    torch_formulation,
)
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import REPO_ROOT

FORWARD_BOUND = 1e-5
GRADIENT_BOUND = 1e-4
FLOAT16_BOUND = 2e-3


def definition(first: torch.Tensor, second: torch.Tensor, radius: int) -> torch.Tensor:
    """The cost volume written pixel by pixel, as the contract states it."""
    batch, channels, height, width = first.shape
    span = 2 * radius + 1
    out = torch.zeros(batch, span * span, height, width, dtype=first.dtype)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            channel = (dy + radius) * span + (dx + radius)
            for y in range(height):
                for x in range(width):
                    if 0 <= y + dy < height and 0 <= x + dx < width:
                        out[:, channel, y, x] = (first[:, :, y, x] * second[:, :, y + dy, x + dx]).sum(1) / channels
    return out


def random_pair(shape: tuple[int, ...], seed: int = 0, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    first, second = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(2))
    return first.to(**kwargs), second.to(**kwargs)


@pytest.mark.parametrize("shape,radius", [((2, 3, 5, 7), 2), ((1, 4, 6, 3), 4)])
def test_torch_path_is_the_definition(shape: tuple[int, ...], radius: int) -> None:
    first, second = random_pair(shape)
    assert relative_difference(cost_volume_torch(first, second, radius), definition(first, second, radius)) < 1e-14


def test_cost_volume_is_the_definition_at_the_flow_nets_radius() -> None:
    first, second = random_pair((2, 5, 6, 7))
    assert torch.allclose(cost_volume(first, second), definition(first, second, radius=4), rtol=0, atol=1e-12)


def test_cost_volume_gradients_pass_gradcheck() -> None:
    first, second = (tensor.requires_grad_() for tensor in random_pair((1, 2, 3, 5), seed=1))
    assert torch.autograd.gradcheck(cost_volume, (first, second), fast_mode=True)


TILED_SHAPES = [((2, 3, 5, 7), 2), ((1, 4, 6, 3), 4), ((2, 5, 7, 10), 4), ((1, 3, 4, 17), 4), ((1, 2, 9, 16), 1)]
"""Widths below, at, between and above multiples of the tile (8), heights below the search window, batches."""
TILED_BOUND = 1e-12
"""float64: the tiled products sum the channels in another order than the shifted products; nothing else differs."""


@pytest.mark.parametrize("shape,radius", TILED_SHAPES)
def test_tiled_products_equal_the_shifted_products_forward_and_backward(shape: tuple[int, ...], radius: int) -> None:
    first, second = (tensor.requires_grad_() for tensor in random_pair(shape, seed=4))
    span = 2 * radius + 1
    grad_out = torch.randn(shape[0], span * span, *shape[2:], generator=torch.Generator().manual_seed(5)).double()
    tiled, shifted = cost_volume_tiled(first, second, radius), cost_volume_torch(first, second, radius)
    assert tiled.shape == shifted.shape and relative_difference(tiled, shifted) < TILED_BOUND
    got = torch.autograd.grad(tiled, (first, second), grad_out)
    expected = torch.autograd.grad(shifted, (first, second), grad_out)
    assert all(relative_difference(a, b) < TILED_BOUND for a, b in zip(got, expected, strict=True))


def test_tiled_products_are_the_definition_and_pass_gradcheck() -> None:
    first, second = random_pair((2, 3, 5, 11), seed=6)
    assert relative_difference(cost_volume_tiled(first, second, 3), definition(first, second, 3)) < 1e-14
    leaves = [tensor[:, :, :, :9].requires_grad_() for tensor in random_pair((1, 2, 3, 9), seed=7)]
    assert torch.autograd.gradcheck(lambda a, b: cost_volume_tiled(a, b, 2), leaves, fast_mode=True)


@pytest.mark.parametrize("shape,radius", TILED_SHAPES)
def test_the_exported_stacked_products_are_the_definition(shape: tuple[int, ...], radius: int) -> None:
    first, second = random_pair(shape, seed=11)
    stacked = cost_volume_stacked(first, second, radius)
    assert stacked.shape == cost_volume_torch(first, second, radius).shape
    assert relative_difference(stacked, definition(first, second, radius)) < 1e-14


def test_under_export_the_stacked_products_are_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    for choice in BACKEND_CHOICES:
        monkeypatch.setenv(BACKEND_VARIABLE, choice)
        assert torch_formulation(torch.zeros(1, 1, 1, 1)) is cost_volume_stacked
    first, second = random_pair((1, 3, 6, 9), seed=12)
    assert torch.equal(cost_volume(first, second), cost_volume_stacked(first, second))


def test_tiled_products_promote_mixed_dtypes_like_the_shifted_products() -> None:
    first, second = random_pair((1, 3, 4, 9), seed=10)
    mixed = (first.float(), second)
    assert cost_volume_tiled(*mixed).dtype == cost_volume_torch(*mixed).dtype == torch.float64
    assert relative_difference(cost_volume_tiled(*mixed), cost_volume_torch(*mixed)) < TILED_BOUND


def test_tiled_products_take_any_layout_and_give_the_first_inputs() -> None:
    first, second = random_pair((2, 6, 7, 12), seed=8)
    expected = cost_volume_torch(first, second)
    channels_last = [tensor.contiguous(memory_format=torch.channels_last) for tensor in (first, second)]
    strided = [torch.stack([tensor, -tensor], dim=-1)[..., 0] for tensor in (first, second)]  # every other value
    for pair in (channels_last, strided, (channels_last[0], second)):
        volume = cost_volume_tiled(*pair)
        assert relative_difference(volume, expected) < TILED_BOUND
        assert volume.is_contiguous(memory_format=torch.channels_last) == (pair[0] is channels_last[0])
        assert volume.is_contiguous() == (pair[0] is not channels_last[0])
    assert cost_volume(*channels_last).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("choice", "cpu", "other"),
    [("auto", "tiled", "shifted"), ("torch", "shifted", "shifted"), ("tiled", "tiled", "tiled")],
)
def test_the_pytorch_formulation_is_tiled_on_the_cpu_by_default(
    monkeypatch: pytest.MonkeyPatch, choice: str, cpu: str, other: str
) -> None:
    monkeypatch.setenv(BACKEND_VARIABLE, choice)
    formulations = {cost_volume_tiled: "tiled", cost_volume_torch: "shifted"}
    assert formulations[torch_formulation(torch.zeros(1, 1, 1, 1))] == cpu
    assert formulations[torch_formulation(torch.zeros(1, 1, 1, 1, device="meta"))] == other  # stands in for CUDA
    first, second = random_pair((1, 3, 6, 9), seed=9, dtype=torch.float32)
    assert torch.equal(
        cost_volume(first, second), (cost_volume_tiled if cpu == "tiled" else cost_volume_torch)(first, second)
    )


def pytorch_path(first: torch.Tensor, second: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """What the selector computes without a kernel (the tiled products on the CPU)."""
    return torch_formulation(first)(first, second, radius)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"two \[B, C, H, W\] tensors of one shape"):
        cost_volume(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 5))


# ----- the choice, on the CPU, with kernels whose behaviour the tests decide


class TorchKernel:
    """A 'fast kernel' computed with PyTorch on the CPU, optionally made wrong or failing."""

    name = "fake"

    def __init__(self, forward_error: float = 0.0, backward_error: float = 0.0, fail_after: int | None = None) -> None:
        self.forward_error = forward_error
        self.backward_error = backward_error
        self.fail_after = fail_after
        """Calls (forward and backward) that succeed; every later call raises."""
        self.calls = 0

    def supports(self, first: torch.Tensor, second: torch.Tensor) -> bool:
        return True

    def _count(self) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED: made to fail\nsecond line")

    def forward(self, first: torch.Tensor, second: torch.Tensor, radius: int) -> torch.Tensor:
        self._count()
        return cost_volume_torch(first, second, radius) + self.forward_error

    def backward(
        self, grad_out: torch.Tensor, first: torch.Tensor, second: torch.Tensor, radius: int, need: tuple[bool, bool]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        self._count()
        grads = correlation.torch_gradients(grad_out, first, second, radius, need)
        return tuple(None if grad is None else grad + self.backward_error for grad in grads)


def cpu_selector(kernel: object) -> KernelSelector:
    return KernelSelector(lambda: kernel, device_types=("cpu",))


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_right_kernel_is_checked_once_per_dtype_then_used(caplog: pytest.LogCaptureFixture) -> None:
    kernel = TorchKernel()
    selector = cpu_selector(kernel)
    for dtype in (torch.float64, torch.float32):
        first, second = random_pair((2, 3, 6, 5), dtype=dtype)
        for _ in range(3):
            assert torch.equal(selector.compute(first, second, 4), cost_volume_torch(first, second, 4))
    # per dtype: the check's forward and backward, then three forward calls
    assert kernel.calls == 2 * (2 + 3)
    assert selector.checked == {(torch.device("cpu"), torch.float64, 4), (torch.device("cpu"), torch.float32, 4)}
    assert selector.disabled is None and not warnings_of(caplog)
    assert selector.describe().startswith("fake (checked: cpu float32, cpu float64)")


def test_gradients_go_through_the_kernel_and_pass_gradcheck() -> None:
    kernel = TorchKernel()
    selector = cpu_selector(kernel)
    first, second = (tensor.requires_grad_() for tensor in random_pair((2, 2, 4, 5), seed=1))
    assert torch.autograd.gradcheck(lambda a, b: selector.compute(a, b, 2), (first, second))
    calls = kernel.calls
    selector.compute(first, second, 2).sum().backward()
    assert kernel.calls == calls + 2  # one forward, one backward of the kernel itself


@pytest.mark.parametrize(
    "kernel,reason",
    [
        (TorchKernel(forward_error=1e-3), "differs from the PyTorch path"),
        (TorchKernel(backward_error=1e-3), "differs from the PyTorch path"),
        (TorchKernel(forward_error=float("nan")), "differs from the PyTorch path"),
        (TorchKernel(fail_after=0), "its check on cpu torch.float32 failed (RuntimeError: CUDA_ERROR_LAUNCH_FAILED"),
    ],
    ids=["wrong forward", "wrong backward", "nan", "error in the check"],
)
def test_a_kernel_that_fails_its_check_is_never_used(
    kernel: TorchKernel, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    selector = cpu_selector(kernel)
    first, second = random_pair((1, 3, 5, 6), dtype=torch.float32)
    for _ in range(3):
        assert torch.equal(selector.compute(first, second, 4), pytorch_path(first, second))
    assert kernel.calls <= 2  # only the check ran it
    messages = warnings_of(caplog)
    assert len(messages) == 1 and reason in messages[0] and "using the PyTorch path" in messages[0]
    assert "\n" not in messages[0]
    assert selector.describe().startswith("PyTorch (kernel off:")


def test_a_kernel_that_fails_later_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    kernel = TorchKernel(fail_after=3)  # the check (2 calls) and one more call succeed
    selector = cpu_selector(kernel)
    first, second = random_pair((2, 3, 5, 6))
    results = [selector.compute(first, second, 4) for _ in range(4)]
    assert torch.equal(results[0], cost_volume_torch(first, second, 4))  # the kernel's (a copy of the definition)
    assert all(torch.equal(result, pytorch_path(first, second)) for result in results[1:])
    assert kernel.calls == 4  # the failed call, and none after it
    messages = warnings_of(caplog)
    assert len(messages) == 1 and "it failed (RuntimeError: CUDA_ERROR_LAUNCH_FAILED: made to fail)" in messages[0]


def test_a_failing_backward_still_gives_the_right_gradients(caplog: pytest.LogCaptureFixture) -> None:
    kernel = TorchKernel(fail_after=3)  # check (2), then the forward below; its backward fails
    selector = cpu_selector(kernel)
    first, second = (tensor.requires_grad_() for tensor in random_pair((2, 3, 5, 6), seed=2))
    grad_out = torch.randn(2, 81, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = torch.autograd.grad(selector.compute(first, second, 4), (first, second), grad_out)
    expected = torch.autograd.grad(cost_volume_torch(first, second, 4), (first, second), grad_out)
    assert all(relative_difference(a, b) < 1e-14 for a, b in zip(got, expected, strict=True))
    assert len(warnings_of(caplog)) == 1 and "backward pass failed" in warnings_of(caplog)[0]
    assert selector.disabled is not None


def test_a_kernel_that_cannot_load_is_quiet_in_auto_and_warns_when_forced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> TorchKernel:
        raise ImportError("No module named 'cupy'")

    first, second = random_pair((1, 2, 4, 4))
    quiet = KernelSelector(missing, device_types=("cpu",))
    assert torch.equal(quiet.compute(first, second, 4), pytorch_path(first, second))
    assert not warnings_of(caplog)
    assert quiet.describe() == "PyTorch (kernel unavailable: ImportError: No module named 'cupy')"

    monkeypatch.setenv(BACKEND_VARIABLE, "cupy")
    forced = KernelSelector(missing, device_types=("cpu",))
    forced.compute(first, second, 4)
    forced.compute(first, second, 4)
    messages = warnings_of(caplog)
    assert len(messages) == 1 and "No module named 'cupy'" in messages[0]


def test_torch_forces_the_pytorch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_VARIABLE, "torch")
    kernel = TorchKernel()
    selector = cpu_selector(kernel)
    first, second = random_pair((1, 2, 4, 4))
    assert torch.equal(selector.compute(first, second, 4), cost_volume_torch(first, second, 4))
    assert kernel.calls == 0 and selector.describe() == f"PyTorch, shifted products ({BACKEND_VARIABLE}=torch)"


def test_an_unknown_choice_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_VARIABLE, "triton")
    with pytest.raises(UserError, match=rf"^{BACKEND_VARIABLE}='triton': use one of auto, torch, tiled, cupy$"):
        cost_volume(*random_pair((1, 2, 4, 4)))


def test_the_check_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    cpu_selector(TorchKernel()).compute(*random_pair((1, 2, 4, 4)), 4)
    assert torch.equal(torch.rand(3), expected)


def test_the_cpu_path_never_imports_cupy() -> None:
    script = (
        "import sys, torch\n"
        "from cdvd_tsp.model.correlation import cost_volume\n"
        "cost_volume(torch.rand(1, 2, 5, 5), torch.rand(1, 2, 5, 5))\n"
        "kernel = 'cdvd_tsp.model.correlation_cuda'\n"
        "assert 'cupy' not in sys.modules and kernel not in sys.modules, sorted(sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT / "code", capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA compiler) to compile the kernels")
def test_the_kernel_source_compiles_for_every_dtype(tmp_path: Path) -> None:
    from cdvd_tsp.model.correlation_cuda import C_TYPES, KERNEL_NAMES, KERNEL_SOURCE

    instances = "".join(
        f"template __global__ void {name}<{C_TYPES[dtype]}, 4>("
        f"const {C_TYPES[dtype]}*, const {C_TYPES[dtype]}*, {C_TYPES[dtype]}*, int, int, int, int);\n"
        for name in KERNEL_NAMES
        for dtype in C_TYPES
    )
    source = tmp_path / "cost_volume.cu"
    source.write_text(KERNEL_SOURCE + instances)
    completed = subprocess.run(
        ["nvcc", "-std=c++14", "-arch=sm_80", "-c", str(source), "-o", str(tmp_path / "cost_volume.o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr


# ----- the CuPy kernel on a GPU

needs_cupy = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("cupy") is None, reason="needs a CUDA GPU and CuPy"
)
GPU_SHAPES = [(1, 1, 1, 1), (2, 7, 9, 11), (3, 16, 13, 17), (1, 32, 40, 64), (2, 196, 12, 20)]


@pytest.fixture
def cupy_kernel(monkeypatch: pytest.MonkeyPatch) -> object:
    """The process's CuPy kernel, forced on; fails the test if the selector turned it off."""
    monkeypatch.setenv(BACKEND_VARIABLE, "cupy")
    yield SELECTOR
    assert SELECTOR.disabled is None, SELECTOR.disabled
    assert SELECTOR.kernel is not None and SELECTOR.kernel.name == "cupy"


def kernel_and_torch(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0, contiguous: bool = True) -> dict:
    """Forward and gradients of the kernel (through cost_volume) and of the PyTorch path, on the same inputs."""
    first, second = random_pair(shape, seed=seed, device="cuda", dtype=dtype)
    if not contiguous:  # the same values, laid out channels-last
        first, second = (tensor.to(memory_format=torch.channels_last) for tensor in (first, second))
        assert not first.is_contiguous()
    grad_out = torch.randn(shape[0], 81, *shape[2:], generator=torch.Generator().manual_seed(seed + 1))
    grad_out = grad_out.to(device="cuda", dtype=dtype)
    results = {}
    for name, function in (("kernel", cost_volume), ("torch", cost_volume_torch)):
        leaves = [first.detach().clone().requires_grad_(), second.detach().clone().requires_grad_()]
        output = function(*leaves)
        results[name] = (output, *torch.autograd.grad(output, leaves, grad_out))
    return results


@needs_cupy
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_cupy_matches_the_pytorch_path(cupy_kernel: object, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    results = kernel_and_torch(shape, dtype)
    (output, *grads), (expected, *expected_grads) = results["kernel"], results["torch"]
    assert output.dtype == dtype and output.is_cuda
    assert relative_difference(output, expected) <= FORWARD_BOUND
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert relative_difference(grad, expected_grad) <= GRADIENT_BOUND
    assert (torch.device("cuda", torch.cuda.current_device()), dtype, 4) in SELECTOR.checked


@needs_cupy
@pytest.mark.parametrize("shape", GPU_SHAPES[1:])
def test_cupy_float16_is_as_close_to_float64_as_one_rounding(cupy_kernel: object, shape: tuple[int, ...]) -> None:
    results = kernel_and_torch(shape, torch.float16)
    first, second = random_pair(shape, device="cuda", dtype=torch.float16)
    reference = cost_volume_torch(first.double(), second.double())
    kernel_error = relative_difference(results["kernel"][0], reference)
    assert results["kernel"][0].dtype == torch.float16
    assert kernel_error <= FLOAT16_BOUND
    assert kernel_error <= relative_difference(results["torch"][0], reference) + 1e-4


@needs_cupy
def test_cupy_takes_non_contiguous_inputs(cupy_kernel: object) -> None:
    results = kernel_and_torch((2, 8, 15, 21), torch.float32, contiguous=False)
    for ours, theirs in zip(results["kernel"], results["torch"], strict=True):
        assert relative_difference(ours, theirs) <= GRADIENT_BOUND


@needs_cupy
def test_cupy_gradcheck_in_float64(cupy_kernel: object) -> None:
    first, second = (tensor.requires_grad_() for tensor in random_pair((2, 3, 6, 7), device="cuda"))
    assert torch.autograd.gradcheck(cost_volume, (first, second))


@needs_cupy
def test_cupy_runs_on_the_current_stream_and_in_a_cuda_graph(cupy_kernel: object) -> None:
    first, second = random_pair((2, 16, 24, 40), device="cuda", dtype=torch.float32)
    expected = cost_volume_torch(first, second)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_stream = cost_volume(first, second)
    torch.cuda.current_stream().wait_stream(stream)
    assert relative_difference(on_stream, expected) <= FORWARD_BOUND

    graph = torch.cuda.CUDAGraph()
    static_first, static_second = first.clone(), second.clone()
    with torch.cuda.graph(graph):
        static_out = cost_volume(static_first, static_second)
    new_first, new_second = random_pair((2, 16, 24, 40), seed=9, device="cuda", dtype=torch.float32)
    static_first.copy_(new_first)
    static_second.copy_(new_second)
    graph.replay()
    assert relative_difference(static_out, cost_volume_torch(new_first, new_second)) <= FORWARD_BOUND

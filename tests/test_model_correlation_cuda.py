"""The CuPy cost-volume kernels' source, compiled for the CPU with g++ and run thread by thread: their indexing and
border handling equal the PyTorch path (forward and both gradients) for float64, float32 and float16.

This checks the arithmetic without a GPU; the launch through CuPy, streams and graphs are tested on a GPU in
test_correlation.py. Only the two float16 conversions (inline PTX) are replaced, by the compiler's _Float16.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.model.correlation import cost_volume_torch, relative_difference, torch_gradients
from cdvd_tsp.model.correlation_cuda import KERNEL_SOURCE

DRIVER = Path(__file__).parent / "data" / "kernel_host_driver.cpp"
HOST_PRELUDE = """
#include <cstring>
#define __global__
#define __device__
#define __forceinline__ inline
struct thread_index { long long x; };
static thread_index blockIdx, blockDim, threadIdx;
"""
PTX_TO_HOST = {
    'float value;\n    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(pointer->bits));\n    return value;': (
        "_Float16 half; std::memcpy(&half, &pointer->bits, 2); return (float)half;"
    ),
    'unsigned short bits;\n    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));\n    pointer->bits = bits;': (
        "_Float16 half = (_Float16)value; std::memcpy(&pointer->bits, &half, 2);"
    ),
}
DTYPES = {
    torch.float64: (0, np.float64, 1e-14),
    torch.float32: (1, np.float32, 1e-6),
    torch.float16: (2, np.float16, 1e-3),
}
"""dtype: (driver code, numpy dtype, bound against the float64 PyTorch path: float16 and float32 results are rounded
once, float64 ones only by summation order)."""
SHAPES = [(1, 1, 1, 1), (2, 7, 9, 11), (3, 5, 4, 17), (1, 3, 13, 6)]


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("needs g++")
    folder = tmp_path_factory.mktemp("kernel")
    source = KERNEL_SOURCE
    for ptx, host in PTX_TO_HOST.items():
        assert ptx in source, "the float16 conversions changed: update PTX_TO_HOST"
        source = source.replace(ptx, host)
    (folder / "driver.cpp").write_text(HOST_PRELUDE + source + DRIVER.read_text())
    binary = folder / "driver"
    completed = subprocess.run(
        [compiler, "-O1", "-std=c++17", "-o", str(binary), str(folder / "driver.cpp")], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr
    return binary


def run_kernel(
    driver: Path, which: int, dtype: torch.dtype, shape: tuple, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    code, numpy_dtype, _ = DTYPES[dtype]
    folder = driver.parent
    a.numpy().astype(numpy_dtype).tofile(folder / "a")
    b.numpy().astype(numpy_dtype).tofile(folder / "b")
    arguments = [str(value) for value in (which, code, *shape)] + [str(folder / name) for name in ("a", "b", "out")]
    subprocess.run([str(driver), *arguments], check=True, timeout=60)
    return torch.from_numpy(np.fromfile(folder / "out", dtype=numpy_dtype).astype(np.float64))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_the_kernels_compute_the_cost_volume_and_its_gradients(driver: Path, shape: tuple, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    first, second = (torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) for _ in range(2))
    grad_out = torch.randn(shape[0], 81, *shape[2:], generator=generator, dtype=torch.float64).to(dtype)
    inputs = [tensor.double() for tensor in (first, second, grad_out)]
    expected = cost_volume_torch(inputs[0], inputs[1], 4)
    expected_first, expected_second = torch_gradients(inputs[2], inputs[0], inputs[1], 4, (True, True))

    bound = DTYPES[dtype][2]
    forward = run_kernel(driver, 0, dtype, shape, first, second).view_as(expected)
    grad_first = run_kernel(driver, 1, dtype, shape, grad_out, second).view_as(expected_first)
    grad_second = run_kernel(driver, 2, dtype, shape, grad_out, first).view_as(expected_second)
    assert relative_difference(forward, expected) <= bound
    assert relative_difference(grad_first, expected_first) <= bound
    assert relative_difference(grad_second, expected_second) <= bound

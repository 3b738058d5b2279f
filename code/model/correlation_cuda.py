"""The cost volume as CuPy CUDA kernels, forward and backward, for float16, float32 and float64 CUDA tensors.

Only `model.correlation` uses this module (it owns autograd, the choice of the kernel and its checks: nothing here
decides whether the kernel is trusted). CuPy is imported when `load_kernel` is called, never at import time.

Layout: inputs [B, C, H, W] (made contiguous), output [B, (2r+1)^2, H, W], channel ``(dy + r) * (2r + 1) + (dx + r)``.
Sums run in float32 for float16 inputs (float64 for float64) and are divided by C once, at the end. Every kernel
is launched on PyTorch's current CUDA stream, so it orders with the surrounding PyTorch work and can be captured
in a CUDA graph; outputs are allocated by PyTorch. The backward pass gathers (no atomics): its results do not depend
on thread timing.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

THREADS_PER_BLOCK = 256

KERNEL_SOURCE = r"""
struct half_bits { unsigned short bits; };

__device__ __forceinline__ float load(const half_bits* pointer) {
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(pointer->bits));
    return value;
}
__device__ __forceinline__ float load(const float* pointer) { return *pointer; }
__device__ __forceinline__ double load(const double* pointer) { return *pointer; }

__device__ __forceinline__ void store(half_bits* pointer, float value) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
    pointer->bits = bits;
}
__device__ __forceinline__ void store(float* pointer, float value) { *pointer = value; }
__device__ __forceinline__ void store(double* pointer, double value) { *pointer = value; }

template <typename T> struct accumulator { typedef float type; };
template <> struct accumulator<double> { typedef double type; };

// One thread per (b, dy, y, x): the 2R+1 displacements of one row of the search window.
template <typename T, int R>
__global__ void cost_volume_forward(const T* __restrict__ first, const T* __restrict__ second,
                                    T* __restrict__ out, int batch, int channels, int height, int width) {
    typedef typename accumulator<T>::type acc_t;
    const int span = 2 * R + 1;
    const long long plane = (long long)height * width;
    const long long total = (long long)batch * span * plane;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= total) return;
    const int x = (int)(index % width);
    const int y = (int)((index / width) % height);
    const int row = (int)((index / plane) % span);
    const int b = (int)(index / (plane * span));
    const int source_y = y + row - R;

    acc_t sums[span];
    #pragma unroll
    for (int k = 0; k < span; ++k) sums[k] = 0;
    if (source_y >= 0 && source_y < height) {
        const T* first_pixel = first + (long long)b * channels * plane + (long long)y * width + x;
        const T* second_row = second + (long long)b * channels * plane + (long long)source_y * width;
        for (int c = 0; c < channels; ++c) {
            const acc_t value = load(first_pixel + c * plane);
            const T* row_c = second_row + c * plane;
            #pragma unroll
            for (int k = 0; k < span; ++k) {
                const int source_x = x + k - R;
                if (source_x >= 0 && source_x < width) sums[k] += value * (acc_t)load(row_c + source_x);
            }
        }
    }
    T* out_pixel = out + ((long long)b * span * span + (long long)row * span) * plane + (long long)y * width + x;
    #pragma unroll
    for (int k = 0; k < span; ++k) store(out_pixel + k * plane, sums[k] / (acc_t)channels);
}

// Where element ``index`` of a [B, C, H, W] tensor lies (the channel is not needed by the gradients).
struct feature_pixel { int b, y, x; };
__device__ __forceinline__ feature_pixel locate(long long index, int channels, int height, int width) {
    feature_pixel at;
    at.x = (int)(index % width);
    at.y = (int)((index / width) % height);
    at.b = (int)(index / ((long long)height * width * channels));
    return at;
}

// d out / d first: one thread per (b, c, y, x) of first, summing over the displacements.
template <typename T, int R>
__global__ void cost_volume_backward_first(const T* __restrict__ grad_out, const T* __restrict__ second,
                                           T* __restrict__ grad_first, int batch, int channels, int height,
                                           int width) {
    typedef typename accumulator<T>::type acc_t;
    const int span = 2 * R + 1;
    const long long plane = (long long)height * width;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)batch * channels * plane) return;
    const feature_pixel at = locate(index, channels, height, width);
    const T* second_plane = second + (index / plane) * plane;
    const T* grad_pixel = grad_out + (long long)at.b * span * span * plane + (long long)at.y * width + at.x;
    const int x = at.x, y = at.y;
    acc_t sum = 0;
    for (int row = 0; row < span; ++row) {
        const int source_y = y + row - R;
        if (source_y < 0 || source_y >= height) continue;
        #pragma unroll
        for (int k = 0; k < span; ++k) {
            const int source_x = x + k - R;
            if (source_x < 0 || source_x >= width) continue;
            sum += (acc_t)load(grad_pixel + (row * span + k) * plane) *
                   (acc_t)load(second_plane + (long long)source_y * width + source_x);
        }
    }
    store(grad_first + index, sum / (acc_t)channels);
}

// d out / d second: one thread per (b, c, y, x) of second, gathering from the pixels of first that saw it.
template <typename T, int R>
__global__ void cost_volume_backward_second(const T* __restrict__ grad_out, const T* __restrict__ first,
                                            T* __restrict__ grad_second, int batch, int channels, int height,
                                            int width) {
    typedef typename accumulator<T>::type acc_t;
    const int span = 2 * R + 1;
    const long long plane = (long long)height * width;
    const long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (long long)batch * channels * plane) return;
    const feature_pixel at = locate(index, channels, height, width);
    const T* first_plane = first + (index / plane) * plane;
    const T* grad_batch = grad_out + (long long)at.b * span * span * plane;
    const int x = at.x, y = at.y;
    acc_t sum = 0;
    for (int row = 0; row < span; ++row) {
        const int target_y = y - (row - R);
        if (target_y < 0 || target_y >= height) continue;
        #pragma unroll
        for (int k = 0; k < span; ++k) {
            const int target_x = x - (k - R);
            if (target_x < 0 || target_x >= width) continue;
            const long long target = (long long)target_y * width + target_x;
            sum += (acc_t)load(grad_batch + (row * span + k) * plane + target) * (acc_t)load(first_plane + target);
        }
    }
    store(grad_second + index, sum / (acc_t)channels);
}
"""

C_TYPES = {torch.float16: "half_bits", torch.float32: "float", torch.float64: "double"}
"""The dtypes the kernels take, with their C type names."""
KERNEL_NAMES = ("cost_volume_forward", "cost_volume_backward_first", "cost_volume_backward_second")


class CupyKernel:
    """The kernels as a `model.correlation.FastKernel`: compiled with NVRTC once per (device, radius), launched on
    PyTorch's current stream. Inputs must be contiguous, of one supported dtype, on one CUDA device."""

    name = "cupy"

    def __init__(self, cupy: Any) -> None:
        self.cupy = cupy
        self.modules: dict[tuple[int, int], Any] = {}
        self.functions: dict[tuple[int, int, str, torch.dtype], Any] = {}
        self.streams: dict[int, Any] = {}
        self.lock = threading.Lock()

    def supports(self, first: Tensor, second: Tensor) -> bool:
        dtype = torch.promote_types(first.dtype, second.dtype)
        return first.is_cuda and second.device == first.device and dtype in C_TYPES

    def _function(self, name: str, dtype: torch.dtype, radius: int, device: int) -> Any:
        """The kernel ``name`` for ``dtype`` and ``radius`` on ``device``, compiled at the first request."""
        key = (device, radius, name, dtype)
        function = self.functions.get(key)
        if function is None:
            with self.lock, self.cupy.cuda.Device(device):
                module = self.modules.get((device, radius))
                if module is None:
                    module = self.modules[(device, radius)] = self._compile(radius)
                function = self.functions[key] = module.get_function(f"{name}<{C_TYPES[dtype]}, {radius}>")
        return function

    def _compile(self, radius: int) -> Any:
        """Every kernel for every dtype at ``radius``, compiled by NVRTC for the current device."""
        expressions = [f"{kernel}<{C_TYPES[dtype]}, {radius}>" for kernel in KERNEL_NAMES for dtype in C_TYPES]
        module = self.cupy.RawModule(code=KERNEL_SOURCE, options=("-std=c++14",), name_expressions=expressions)
        module.compile()
        return module

    def _stream(self, device: torch.device) -> Any:
        """PyTorch's current stream on ``device``, as CuPy's launch takes it."""
        pointer = torch.cuda.current_stream(device).cuda_stream
        stream = self.streams.get(pointer)
        if stream is None:
            with warnings.catch_warnings():
                # CuPy 14 deprecates ExternalStream for Stream.from_external; ExternalStream is what was run on a GPU
                warnings.simplefilter("ignore", DeprecationWarning)
                stream = self.streams[pointer] = self.cupy.cuda.ExternalStream(pointer, device.index)
        return stream

    def _launch(self, name: str, output: Tensor, inputs: tuple[Tensor, Tensor], radius: int, elements: int) -> None:
        """Run kernel ``name``, one thread per element, writing ``output`` from ``inputs``."""
        if elements == 0:
            return
        batch, channels, height, width = output.shape[0], *inputs[1].shape[1:]
        device = output.device
        function = self._function(name, output.dtype, radius, device.index)
        blocks = (elements + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        arguments = (  # pointers as Python ints: CuPy passes them as 64-bit values, which is what a pointer is
            inputs[0].data_ptr(),
            inputs[1].data_ptr(),
            output.data_ptr(),
            *(np.int32(value) for value in (batch, channels, height, width)),
        )
        with self.cupy.cuda.Device(device.index):
            function((blocks,), (THREADS_PER_BLOCK,), arguments, stream=self._stream(device))

    def forward(self, first: Tensor, second: Tensor, radius: int) -> Tensor:
        batch, _, height, width = first.shape
        span = 2 * radius + 1
        out = first.new_empty(batch, span * span, height, width)
        self._launch("cost_volume_forward", out, (first, second), radius, batch * span * height * width)
        return out

    def backward(
        self, grad_out: Tensor, first: Tensor, second: Tensor, radius: int, need: tuple[bool, bool]
    ) -> tuple[Tensor | None, Tensor | None]:
        grad_first = grad_second = None
        if need[0]:
            grad_first = torch.empty_like(first)
            self._launch("cost_volume_backward_first", grad_first, (grad_out, second), radius, first.numel())
        if need[1]:
            grad_second = torch.empty_like(second)
            self._launch("cost_volume_backward_second", grad_second, (grad_out, first), radius, second.numel())
        return grad_first, grad_second


def load_kernel() -> CupyKernel:
    """Import CuPy and return the kernels (compiled at first use); raises ImportError without CuPy."""
    import cupy  # optional dependency, imported only on the CUDA path

    return CupyKernel(cupy)

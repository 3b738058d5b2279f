"""infer/transfer.py: host and device copies, the "copies done" marker and the model's clock.

On the CPU (every machine): a frame becomes a tensor without a copy when it can, every copy is the tensor itself,
the marker is always done, the clock is the wall clock of the timed blocks. On CUDA (skipped without a GPU): pinned
host frames, copies that are right once the marker is done (waited for in another thread too), the clock read from
CUDA events and bounded by the wall time around it.
"""

import threading
import time

import numpy as np
import pytest
import torch

from cdvd_tsp.infer.transfer import Ready, Transfer

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def frame(height: int = 6, width: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_the_device_type_decides_the_path_without_touching_the_device() -> None:
    assert Transfer(CPU).cuda is False
    assert Transfer(torch.device("cuda", 3)).cuda is True  # nothing is asked of CUDA until a copy is made


def test_a_contiguous_frame_becomes_a_tensor_that_shares_its_memory() -> None:
    rgb = frame()
    host = Transfer(CPU).host_frame(rgb)
    assert host.dtype == torch.uint8 and tuple(host.shape) == (6, 5, 3)
    assert np.shares_memory(host.numpy(), rgb)
    assert not host.is_pinned()


def test_a_strided_frame_is_copied_into_a_contiguous_tensor_of_the_same_values() -> None:
    rgb = frame()[::-1, :, ::-1]  # flipped rows, BGR order: negative strides, which torch.from_numpy refuses
    host = Transfer(CPU).host_frame(rgb)
    assert host.is_contiguous()
    np.testing.assert_array_equal(host.numpy(), rgb)


def test_on_the_cpu_every_copy_is_the_tensor_itself_and_every_marker_is_done() -> None:
    transfer = Transfer(CPU)
    tensor = torch.rand(1, 3, 4, 4)
    assert transfer.to_device(tensor) is tensor
    assert transfer.to_host(tensor) is tensor
    ready = transfer.ready()
    assert isinstance(ready, Ready) and ready.event is None
    ready.wait()  # returns at once


def test_ready_waits_on_its_event_only_when_asked() -> None:
    class Event:
        synchronized = 0

        def synchronize(self) -> None:
            self.synchronized += 1

    event = Event()
    ready = Ready(event)  # type: ignore[arg-type]
    assert event.synchronized == 0
    ready.wait()
    assert event.synchronized == 1


def test_the_cpu_clock_sums_the_wall_time_of_the_timed_blocks() -> None:
    transfer = Transfer(CPU)
    spans: list = []
    with transfer.timed(spans):
        time.sleep(0.03)
    time.sleep(0.05)  # not timed
    with transfer.timed(spans):
        time.sleep(0.02)
    assert len(spans) == 2 and all(isinstance(span, float) for span in spans)
    assert spans[0] >= 0.03 and spans[1] >= 0.02
    assert transfer.seconds(spans) == pytest.approx(spans[0] + spans[1])
    assert transfer.seconds([]) == 0.0


# ----- CUDA


@needs_cuda
def test_cuda_frames_are_pinned_and_copied_both_ways_exactly_once_the_marker_is_done() -> None:
    transfer = Transfer(torch.device("cuda"))
    rgb = frame(64, 48)[:, ::-1]
    host = transfer.host_frame(rgb)
    assert host.is_pinned()
    device = transfer.to_device(host)
    assert device.is_cuda
    result = device.permute(2, 0, 1).float() * 2 + 1  # a non-contiguous result: to_host makes it contiguous
    back = transfer.to_host(result)
    assert back.device.type == "cpu" and back.is_pinned() and back.is_contiguous()
    transfer.ready().wait()
    expected = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() * 2 + 1
    torch.testing.assert_close(back, expected, rtol=0, atol=0)


@needs_cuda
def test_a_cuda_marker_made_in_one_thread_is_waited_for_in_another() -> None:
    transfer = Transfer(torch.device("cuda"))
    values = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
    for _ in range(20):  # queue enough work that the copy is not done at once
        values = values * 1.0001
    back = transfer.to_host(values)
    ready = transfer.ready()
    seen: list[torch.Tensor] = []

    def worker() -> None:
        ready.wait()
        seen.append(back.clone())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    torch.testing.assert_close(seen[0], values.cpu(), rtol=0, atol=0)


@needs_cuda
def test_the_cuda_clock_reads_events_and_lies_within_the_wall_time_around_it() -> None:
    transfer = Transfer(torch.device("cuda"))
    matrix = torch.rand(1024, 1024, device="cuda")
    spans: list = []
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(3):
        with transfer.timed(spans):
            for _ in range(10):
                matrix = (matrix @ matrix).clamp_(0, 1)
    transfer.ready().wait()
    wall = time.perf_counter() - started
    assert len(spans) == 3 and all(isinstance(span[0], torch.cuda.Event) for span in spans)
    assert 0 < transfer.seconds(spans) <= wall

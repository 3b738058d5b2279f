"""The pieces that keep a training step from waiting for the device: the running loss sums on the device
(trainer/running_loss.py) and the guard that keeps the weights finite until the loop reads a bad loss
(trainer/step.py)."""

import math

import torch

from cdvd_tsp.trainer.running_loss import RunningLoss
from cdvd_tsp.trainer.step import zero_non_finite_gradients

CPU = torch.device("cpu")


def test_the_running_sums_are_the_hosts_sums_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    steps = [torch.rand(3, generator=generator) * 10 ** float(exponent) for exponent in range(-3, 4)]
    host = [0.125, 2.0, 0.0]  # sums restored from a checkpoint
    running = RunningLoss(list(host), CPU, keep_steps=True)
    for batch, values in enumerate(steps):
        running.add(batch, values)
        host = [total + value for total, value in zip(host, values.tolist(), strict=True)]
    reading = running.read()
    assert reading.sums == host  # the same float64 additions in the same order
    assert reading.first_bad_batch is None and reading.bad_values == []
    assert reading.steps == [values.tolist() for values in steps]
    assert running.read().steps == []  # each step is read once


def test_the_first_non_finite_batch_is_kept_until_read() -> None:
    running = RunningLoss([0.0, 0.0], CPU)
    running.add(4, torch.tensor([1.0, 2.0]))
    running.add(5, torch.tensor([math.nan, 2.0]))
    running.add(6, torch.tensor([math.inf, 1.0]))
    reading = running.read()
    assert reading.first_bad_batch == 5 and math.isnan(reading.bad_values[0]) and reading.bad_values[1] == 2.0
    running.add(7, torch.tensor([1.0, 1.0]))
    assert running.read().first_bad_batch is None


def test_gradients_are_zeroed_only_when_one_is_not_finite() -> None:
    layers = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    optimizer = torch.optim.Adam([{"params": layers.parameters()}, {"params": frozen.parameters()}])
    layers(torch.rand(5, 3)).sum().backward()
    before = [parameter.grad.clone() for parameter in layers.parameters()]
    zero_non_finite_gradients(optimizer)
    assert all(torch.equal(parameter.grad, grad) for parameter, grad in zip(layers.parameters(), before, strict=True))
    for bad in (math.nan, math.inf):
        layers[1].bias.grad[0] = bad
        zero_non_finite_gradients(optimizer)
        assert all(not parameter.grad.any() for parameter in layers.parameters())

"""The restoration net's building blocks (model/blocks.py): what each computes, the sizes it gives, and the
submodule indices the released checkpoints name."""

import torch
import torch.nn.functional as F
from torch import nn

from cdvd_tsp.model.blocks import ResBlock, conv_relu, upconv_relu


def test_a_resblock_is_conv_relu_conv_plus_the_identity() -> None:
    torch.manual_seed(0)
    block = ResBlock(4, 4, kernel_size=5).double()
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    inner = F.conv2d(F.relu(F.conv2d(x, block.conv1.weight, block.conv1.bias, padding=2)), block.conv2.weight,
                     block.conv2.bias, padding=2)  # fmt: skip
    assert torch.allclose(block(x), inner + x, atol=1e-14, rtol=0)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    assert torch.equal(block(x), x)  # no normalisation, nothing but the identity left


def test_conv_relu_keeps_the_size_or_halves_it_and_clamps_at_zero() -> None:
    layer = conv_relu(3, 5, kernel_size=5).double()
    assert isinstance(layer[0], nn.Conv2d)  # index 0: the checkpoints' "...0.weight"
    x = torch.randn(1, 3, 10, 6, dtype=torch.float64)
    out = layer(x)
    assert out.shape == (1, 5, 10, 6) and out.min() >= 0
    assert torch.equal(out, F.relu(layer[0](x)))
    assert conv_relu(3, 5, kernel_size=5, stride=2)(torch.randn(1, 3, 12, 8)).shape == (1, 5, 6, 4)


def test_upconv_relu_doubles_the_size_exactly() -> None:
    layer = upconv_relu(6, 3)
    assert isinstance(layer[0], nn.ConvTranspose2d)
    out = layer(torch.randn(1, 6, 5, 7))
    assert out.shape == (1, 3, 10, 14) and out.min() >= 0

"""Building blocks shared by the restoration net."""

from torch import Tensor, nn


class ResBlock(nn.Module):
    """conv -> ReLU -> conv, plus the identity (no normalisation), as released."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=padding)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.relu(self.conv1(x))) + x


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A 'same'-padded convolution followed by ReLU (index 0 is the conv, so checkpoint names match)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    )


def upconv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 transposed convolution that doubles the size, followed by ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.ReLU(inplace=True),
    )

"""The restoration net: an encoder-decoder over [prev aligned, center, next aligned, prior]."""

from torch import Tensor, nn

from cdvd_tsp.model.blocks import ResBlock, conv_relu, upconv_relu


class RECONS_VIDEO(nn.Module):
    """Three-scale encoder-decoder with ResBlocks (docs/faithfulness.md §6).

    The input holds ``n_sequence`` frames of ``in_channels`` each plus ``extra_channels`` (the prior), concatenated
    along the channel axis. The output is the restored center frame; there is no skip from the input frame.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_sequence: int = 3,
        out_channels: int = 3,
        n_resblock: int = 3,
        n_feat: int = 32,
        kernel_size: int = 5,
        extra_channels: int = 1,
    ) -> None:
        super().__init__()

        def resblocks(channels: int) -> list[nn.Module]:
            return [ResBlock(channels, channels, kernel_size=kernel_size) for _ in range(n_resblock)]

        n_input = in_channels * n_sequence + extra_channels
        self.inBlock = nn.Sequential(conv_relu(n_input, n_feat, kernel_size), *resblocks(n_feat))
        self.encoder_first = nn.Sequential(conv_relu(n_feat, n_feat * 2, kernel_size, stride=2), *resblocks(n_feat * 2))
        self.encoder_second = nn.Sequential(
            conv_relu(n_feat * 2, n_feat * 4, kernel_size, stride=2), *resblocks(n_feat * 4)
        )
        self.decoder_second = nn.Sequential(*resblocks(n_feat * 4), upconv_relu(n_feat * 4, n_feat * 2))
        self.decoder_first = nn.Sequential(*resblocks(n_feat * 2), upconv_relu(n_feat * 2, n_feat))
        self.outBlock = nn.Sequential(
            *resblocks(n_feat),
            nn.Conv2d(n_feat, out_channels, kernel_size=kernel_size, padding=kernel_size // 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Restore the center frame from ``x`` of shape [B, n_sequence * in_channels + extra_channels, H, W].

        H and W must be multiples of 4 (two stride-2 levels).
        """
        in_features = self.inBlock(x)
        encoded_first = self.encoder_first(in_features)
        encoded_second = self.encoder_second(encoded_first)
        decoded_second = self.decoder_second(encoded_second)
        decoded_first = self.decoder_first(decoded_second + encoded_first)
        return self.outBlock(decoded_first + in_features)

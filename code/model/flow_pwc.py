"""PWC-Net optical flow (the release's `Network`) and `Flow_PWC`: flow estimation plus frame warping.

Names of modules follow the release exactly, so `network-default.pytorch` and the released CDVD-TSP checkpoints
load unchanged. All grids are built in the input's dtype and on its device.

There are two warps, each a copy of a different release function (docs/faithfulness.md §3.4 and §4):
`warp_features` is PWC-Net's own backward warp inside the decoders, `Flow_PWC.warp` is CDVD-TSP's frame warp.
They differ in padding, in how the grid is computed and in the mask threshold (> 0.999 against >= 0.999); the
released weights were trained with both as they are, so neither is changed to match the other.
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.correlation import cost_volume
from cdvd_tsp.model.layout import in_layout_of

logger = logging.getLogger(__name__)

PYRAMID_CHANNELS = (16, 32, 64, 96, 128, 196)
ORDINAL_NAMES = ("moduleOne", "moduleTwo", "moduleThr", "moduleFou", "moduleFiv", "moduleSix")
"""The release's attribute names for the first to sixth member of a series, used for three series: the pyramid's
levels 1-6 (`Extractor`), the decoders of levels 2-6 (`Network`), and the five dense convs and the flow conv inside
a `Decoder`. The checkpoints' parameter names are made of them."""
COST_CHANNELS = 81
DENSE_CHANNELS = (128, 128, 96, 64, 32)
FLOW_SCALE = 20.0
"""The network predicts flow divided by 20 (PWC-Net's training convention)."""
WARP_SCALES = {5: 0.625, 4: 1.25, 3: 2.5, 2: 5.0}
"""Per decoder level: the factor from the upsampled flow (in units of 20 px at full size) to this level's pixels."""
SIZE_MULTIPLE = 64
"""The network sees frames resized to multiples of 64 (six stride-2 levels)."""
AUTOCAST_UNSAFE_DTYPES = (torch.bfloat16,)
"""Autocast dtypes PWC-Net is not run in: in bfloat16 its flows cost 0.26 dB of PSNR on the demo set (measured on
an H200), against 0.01 dB with the flow net in float32. float16 costs it nothing measurable."""


def leaky_relu() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.1)


def grid_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sampling positions are computed in at least float32: a 16-bit float cannot tell pixel positions apart
    above 2048 (float16) or 256 (bfloat16), and the validity masks threshold values within 1e-3 of 1."""
    return torch.promote_types(dtype, torch.float32)


def linspace(steps: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.linspace(-1, 1, steps)``; under ONNX export (model/onnx_export.py) the same positions from an arange,
    because the exporter bakes linspace's ``steps`` in as the traced size, which breaks the graph at other sizes.
    The two differ by float rounding only (about 1e-7)."""
    if not torch.compiler.is_exporting():
        return torch.linspace(-1.0, 1.0, steps, dtype=dtype, device=device)
    return torch.arange(steps, dtype=dtype, device=device) * (2.0 / (steps - 1)) - 1.0


def warp_features(features: Tensor, flow: Tensor) -> Tensor:
    """The decoders' feature warp: sample ``features`` at (x + u, y + v) with zero padding.

    This is the release's PWC-Net `Backward` (docs/faithfulness.md §3.4), reproduced operation for operation: the
    grid is ``linspace(-1, 1)`` plus the flow divided by (size - 1) / 2 (align_corners=True semantics), a channel
    of ones is sampled along with the features, and positions where it is not strictly above 0.999 (those that
    fall partly outside) are zeroed. Zero padding and the strict ``>`` are the release's; `Flow_PWC.warp` differs
    on both because the release's frame warp did. The mask carries no gradient. Sampling runs in `grid_dtype`;
    the result has the features' dtype and memory layout.
    """
    _, _, height, width = flow.shape
    dtype = grid_dtype(flow.dtype)
    horizontal = linspace(width, dtype, flow.device).view(1, 1, width)
    vertical = linspace(height, dtype, flow.device).view(1, height, 1)
    flow = flow.to(dtype)
    grid = torch.stack(
        [horizontal + flow[:, 0] / ((width - 1.0) / 2.0), vertical + flow[:, 1] / ((height - 1.0) / 2.0)], dim=3
    )
    ones = torch.ones_like(features[:, :1])  # in the features' layout, so that the concatenation keeps it
    sampled = F.grid_sample(
        torch.cat([features, ones], dim=1).to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    mask = (sampled[:, -1:].detach() > 0.999).to(features.dtype)
    return in_layout_of(sampled[:, :-1].to(features.dtype) * mask, features)


class Extractor(nn.Module):
    """Six-level feature pyramid: three 3x3 convs per level (the first with stride 2), LeakyReLU(0.1)."""

    def __init__(self) -> None:
        super().__init__()
        in_channels = 3
        for name, out_channels in zip(ORDINAL_NAMES, PYRAMID_CHANNELS, strict=True):
            level = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
                leaky_relu(),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
                leaky_relu(),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1),
                leaky_relu(),
            )
            setattr(self, name, level)
            in_channels = out_channels

    def forward(self, image: Tensor) -> list[Tensor]:
        """Return the pyramid, finest (level 1) first."""
        pyramid = []
        features = image
        for name in ORDINAL_NAMES:
            features = getattr(self, name)(features)
            pyramid.append(features)
        return pyramid


def decoder_input_channels(level: int) -> int:
    """Channels entering the dense convs of the decoder at ``level`` (2..6)."""
    if level == 6:
        return COST_CHANNELS
    return COST_CHANNELS + PYRAMID_CHANNELS[level - 1] + 2 + 2


class Decoder(nn.Module):
    """One coarse-to-fine level: cost volume, dense convs (each output put in front of its input), flow."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        current = decoder_input_channels(level)
        if level < 6:
            previous_features = decoder_input_channels(level + 1) + sum(DENSE_CHANNELS)
            self.moduleUpflow = nn.ConvTranspose2d(2, 2, kernel_size=4, stride=2, padding=1)
            self.moduleUpfeat = nn.ConvTranspose2d(previous_features, 2, kernel_size=4, stride=2, padding=1)
            self.warp_scale = WARP_SCALES[level]
        self.cost_activation = leaky_relu()
        in_channels = current
        for name, out_channels in zip(ORDINAL_NAMES[:5], DENSE_CHANNELS, strict=True):
            setattr(self, name, nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), leaky_relu()))
            in_channels += out_channels
        self.moduleSix = nn.Sequential(nn.Conv2d(in_channels, 2, kernel_size=3, padding=1))

    def forward(self, first: Tensor, second: Tensor, previous: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """Return (flow, features) at this level; ``previous`` is the coarser level's (flow, features)."""
        if previous is None:
            features = self.cost_activation(cost_volume(first, second))
        else:
            flow = self.moduleUpflow(previous[0])
            upsampled_features = self.moduleUpfeat(previous[1])
            warped_second = warp_features(second, flow * self.warp_scale)
            volume = self.cost_activation(cost_volume(first, warped_second))
            features = torch.cat([volume, first, flow, upsampled_features], dim=1)
        for name in ORDINAL_NAMES[:5]:
            features = torch.cat([getattr(self, name)(features), features], dim=1)
        return self.moduleSix(features), features


class Refiner(nn.Module):
    """Context network: dilated 3x3 convs on level 2's features, giving a flow residual."""

    LAYERS = ((128, 1), (128, 2), (128, 4), (96, 8), (64, 16), (32, 1))

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = decoder_input_channels(2) + sum(DENSE_CHANNELS)
        for out_channels, dilation in self.LAYERS:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation), leaky_relu()]
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, 2, kernel_size=3, padding=1))
        self.moduleMain = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.moduleMain(features)


class Network(nn.Module):
    """PWC-Net as released with CDVD-TSP. Input sizes must be multiples of 64; output is flow / 20 at 1/4 size."""

    def __init__(self) -> None:
        super().__init__()
        self.moduleExtractor = Extractor()
        for level in range(2, 7):
            setattr(self, ORDINAL_NAMES[level - 1], Decoder(level))
        self.moduleRefiner = Refiner()

    def forward(self, first: Tensor, second: Tensor) -> Tensor:
        first_pyramid = self.moduleExtractor(first)
        second_pyramid = self.moduleExtractor(second)
        estimate = None
        for level in range(6, 1, -1):
            decoder = getattr(self, ORDINAL_NAMES[level - 1])
            estimate = decoder(first_pyramid[level - 1], second_pyramid[level - 1], estimate)
        flow, features = estimate
        return flow + self.moduleRefiner(features)


def sampling_grid(flow: Tensor) -> Tensor:
    """Normalised grid_sample grid for pixel positions (x + u, y + v) under align_corners=True, in `grid_dtype`.

    Computed as the release's frame warp computes it, 2 (x + u) / max(size - 1, 1) - 1, which rounds differently
    from `warp_features`' ``linspace(-1, 1) + u / ((size - 1) / 2)``: each warp keeps its own release form.
    """
    _, _, height, width = flow.shape
    dtype = grid_dtype(flow.dtype)
    flow = flow.to(dtype)
    xs = torch.arange(width, dtype=dtype, device=flow.device).view(1, 1, width)
    ys = torch.arange(height, dtype=dtype, device=flow.device).view(1, height, 1)
    grid_x = 2.0 * (xs + flow[:, 0]) / max(width - 1, 1) - 1.0
    grid_y = 2.0 * (ys + flow[:, 1]) / max(height - 1, 1) - 1.0
    return torch.stack([grid_x, grid_y], dim=3)


class Flow_PWC(nn.Module):
    """PWC-Net wrapped for full-resolution frames: `estimate_flow` and `warp` (docs/faithfulness.md §3 and §4).

    The model calls the two methods; the release's `forward` (flow, a Sobel gradient nobody used, warps) and its
    ``device`` argument are not reproduced (tensors follow the input).
    """

    def __init__(self, load_pretrain: bool = False, pretrain_fn: str = "") -> None:
        super().__init__()
        self.moduleNetwork = Network()
        if load_pretrain:
            load_weights(self.moduleNetwork, pretrain_fn)
            logger.info("loaded PWC-Net weights from %s", pretrain_fn)

    def estimate_flow(self, first: Tensor, second: Tensor, in_bf16: bool = False) -> Tensor:
        """Flow [B, 2, H, W] telling, for each pixel of ``first``, where it is in ``second`` (in pixels).

        Under an autocast to a dtype in `AUTOCAST_UNSAFE_DTYPES` the network runs in float32 instead, unless
        ``in_bf16`` lets it run in bfloat16 (measured harmless on the CPU: docs/benchmarks-inference.md).
        """
        device_type = first.device.type
        autocast_dtype = torch.get_autocast_dtype(device_type)
        allowed = in_bf16 and autocast_dtype == torch.bfloat16
        if torch.is_autocast_enabled(device_type) and autocast_dtype in AUTOCAST_UNSAFE_DTYPES and not allowed:
            with torch.autocast(device_type, enabled=False):
                return self._estimate_flow(first.float(), second.float())
        return self._estimate_flow(first, second)

    def _estimate_flow(self, first: Tensor, second: Tensor) -> Tensor:
        _, _, height, width = first.shape
        net_height = math.ceil(height / SIZE_MULTIPLE) * SIZE_MULTIPLE
        net_width = math.ceil(width / SIZE_MULTIPLE) * SIZE_MULTIPLE
        if (net_height, net_width) != (height, width):
            size = (net_height, net_width)
            first = F.interpolate(first, size=size, mode="bilinear", align_corners=False)
            second = F.interpolate(second, size=size, mode="bilinear", align_corners=False)
        flow = FLOW_SCALE * F.interpolate(
            self.moduleNetwork(first, second), size=(height, width), mode="bilinear", align_corners=False
        )
        if (net_height, net_width) == (height, width):
            return flow
        # Python scalars, not a tensor made here: that would be a host-to-device copy per call (and no CUDA graph)
        return torch.cat([flow[:, :1] * (width / net_width), flow[:, 1:] * (height / net_height)], dim=1)

    def warp(self, frame: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """Sample ``frame`` at (x + u, y + v): bilinear, border padding, align_corners=True semantics.

        This is the release's `Flow_PWC.warp` (docs/faithfulness.md §4): the frame is sampled with border padding
        but the mask from ones with zero padding, and the mask keeps values of at least 0.999 (the release set
        those below 0.999 to 0 and the rest to 1, so exactly 0.999 counts as inside, unlike `warp_features`).

        Returns (warped frame, validity mask shaped like ``frame``); the mask is 1 where the sampled position lies
        inside the frame, 0 elsewhere, carries no gradient, and the warped frame is already multiplied by it and
        has ``frame``'s memory layout.
        """
        grid = sampling_grid(flow)
        warped = F.grid_sample(frame.to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
        with torch.no_grad():
            ones = grid.new_ones(frame.shape[0], 1, *frame.shape[2:])
            inside = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            mask = (inside >= 0.999).to(frame.dtype).expand_as(frame)
        return in_layout_of(warped.to(frame.dtype) * mask, frame), mask

"""CDVD-TSP: the cascade of (flow, warp, temporal sharpness prior, restoration) stages with shared weights."""

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cdvd_tsp.model.checkpoint import load_weights
from cdvd_tsp.model.flow_pwc import Flow_PWC
from cdvd_tsp.model.layout import in_layout, in_layout_of
from cdvd_tsp.model.prior import temporal_sharpness_prior
from cdvd_tsp.model.recons_video import RECONS_VIDEO
from cdvd_tsp.model.stages import CascadeOutputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepOptions:
    """How `CDVD_TSP.restore_center` lays out its work. No choice changes what it computes beyond float rounding
    (float64: to 1e-12, tests/test_model_cdvd_tsp.py); the defaults are the release's way."""

    batch_flows: bool = False
    """Both flows of a step (center to previous, center to following) in one call of PWC-Net on a batch of two,
    and both frame warps in one call; otherwise one after the other."""
    channels_last_flow: bool = False
    """PWC-Net, its cost volumes and the frame warps run in channels_last (NHWC) layout instead of NCHW."""
    channels_last_restoration: bool = False
    """The restoration net runs in channels_last layout."""
    flow_in_bf16: bool = False
    """Under a bfloat16 autocast PWC-Net runs in bfloat16 too; otherwise it runs in float32 there
    (`model.flow_pwc.AUTOCAST_UNSAFE_DTYPES`). Nothing changes outside a bfloat16 autocast."""


class CDVD_TSP(nn.Module):
    """Cascaded video deblurring with the temporal sharpness prior (Pan, Bai, Tang, CVPR 2020).

    ``n_sequence = 2T + 1`` input frames give T stages; each stage restores every frame that has both neighbours,
    so the sequence shortens by two per stage and the last stage restores the middle frame. The released model is
    T = 2 (five frames). The flow net and the restoration net are shared by all stages.

    ``device`` is accepted for compatibility with the release and ignored: tensors follow the input.
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_sequence: int = 5,
        out_channels: int = 3,
        n_resblock: int = 3,
        n_feat: int = 32,
        load_flow_net: bool = False,
        load_recons_net: bool = False,
        flow_pretrain_fn: str = "",
        recons_pretrain_fn: str = "",
        is_mask_filter: bool = True,
        device: object = None,
    ) -> None:
        super().__init__()
        if n_sequence < 3 or n_sequence % 2 == 0:
            raise ValueError(f"n_sequence must be odd and at least 3 (2T + 1 frames for T stages), got {n_sequence}")
        self.n_sequence = n_sequence
        self.n_stages = (n_sequence - 1) // 2
        self.is_mask_filter = is_mask_filter
        self.checkpoint_steps = False
        """When set, training recomputes each stage step in the backward pass instead of keeping its activations."""
        self.step_options = StepOptions()
        """How `restore_center` lays out its work when the caller does not say (`forward` and training use it)."""
        self.flow_net = Flow_PWC(load_pretrain=load_flow_net, pretrain_fn=flow_pretrain_fn)
        self.recons_net = RECONS_VIDEO(
            in_channels=in_channels,
            n_sequence=3,
            out_channels=out_channels,
            n_resblock=n_resblock,
            n_feat=n_feat,
            extra_channels=1,
        )
        if load_recons_net:
            load_weights(self.recons_net, recons_pretrain_fn)
            logger.info("loaded restoration net weights from %s", recons_pretrain_fn)

    def align(self, center: Tensor, neighbor: Tensor, flow_in_bf16: bool = False) -> tuple[Tensor, Tensor]:
        """Warp ``neighbor`` onto ``center`` with the flow from center to neighbor: (warped, mask)."""
        return self.flow_net.warp(neighbor, self.flow_net.estimate_flow(center, neighbor, flow_in_bf16))

    def align_both(
        self, previous: Tensor, center: Tensor, following: Tensor, batch: bool, flow_in_bf16: bool = False
    ) -> tuple[Tensor, ...]:
        """Both neighbours warped onto ``center``: (previous aligned, previous mask, following aligned, following
        mask), either in one call of the flow net and one warp on a batch of two (``batch``) or in two."""
        if not batch:
            return (*self.align(center, previous, flow_in_bf16), *self.align(center, following, flow_in_bf16))
        neighbours = torch.cat([previous, following])
        warped, masks = self.flow_net.warp(
            neighbours, self.flow_net.estimate_flow(torch.cat([center, center]), neighbours, flow_in_bf16)
        )
        (previous_aligned, following_aligned), (previous_mask, following_mask) = warped.chunk(2), masks.chunk(2)
        return previous_aligned, previous_mask, following_aligned, following_mask

    def restore_center(
        self, previous: Tensor, center: Tensor, following: Tensor, options: StepOptions | None = None
    ) -> Tensor:
        """One stage step for one frame: align both neighbours, compute the prior, restore the center.

        ``options`` (default: `step_options`) lays out the work; the output has ``center``'s memory layout.
        """
        options = self.step_options if options is None else options
        frames = [in_layout(frame, options.channels_last_flow) for frame in (previous, center, following)]
        previous_aligned, previous_mask, following_aligned, following_mask = self.align_both(
            *frames, batch=options.batch_flows, flow_in_bf16=options.flow_in_bf16
        )
        aligned = [previous_aligned, frames[1], following_aligned]
        prior = temporal_sharpness_prior(aligned, [previous_mask, None, following_mask], smooth=self.is_mask_filter)
        restoration_input = in_layout(torch.cat([*aligned, prior], dim=1), options.channels_last_restoration)
        return in_layout_of(self.recons_net(restoration_input), center)

    def stage(self, frames: list[Tensor]) -> list[Tensor]:
        """Restore every frame of ``frames`` that has two neighbours (the sequence shortens by two)."""
        if self.checkpoint_steps and torch.is_grad_enabled():
            return [
                checkpoint(self.restore_center, *frames[index - 1 : index + 2], use_reentrant=False)
                for index in range(1, len(frames) - 1)
            ]
        return [self.restore_center(*frames[index - 1 : index + 2]) for index in range(1, len(frames) - 1)]

    def forward_stages(self, x: Tensor) -> list[list[Tensor]]:
        """Every stage's outputs for ``x`` [B, 2T + 1, C, H, W]: stage s (from 0) restores frames s+1 .. 2T-1-s."""
        if x.dim() != 5 or x.shape[1] != self.n_sequence:
            raise ValueError(f"CDVD_TSP expects [B, {self.n_sequence}, C, H, W] input, got {list(x.shape)}")
        frames = list(x.unbind(dim=1))
        stages = []
        for _ in range(self.n_stages):
            frames = self.stage(frames)
            stages.append(frames)
        return stages

    def forward(self, x: Tensor) -> tuple[Tensor | None, ...]:
        """Release-compatible output: every stage's outputs but the last, the final output, then None.

        For T = 2 this is ``(recons_1, recons_2, recons_3, out, None)`` as released (None was the unused mid loss).
        """
        stages = self.forward_stages(x)
        intermediate = [frame for outputs in stages[:-1] for frame in outputs]
        return (*intermediate, stages[-1][0], None)

    def split_outputs(self, outputs: tuple[Tensor | None, ...]) -> CascadeOutputs:
        """`forward`'s tuple (of this model or a DataParallel/DDP wrapper of it) by stage: the inverse of its layout."""
        return CascadeOutputs.from_forward(outputs, self.n_stages)

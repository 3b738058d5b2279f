"""The two warps of model/flow_pwc.py keep the release's differences (docs/faithfulness.md §3.4 and §4) and their
inputs' memory layout, and `estimate_flow` rescales the network's flow to the frame's size axis by axis."""

import pytest
import torch

from cdvd_tsp.model.flow_pwc import Flow_PWC, warp_features

VALUE = 2.0


def shifted(width: int, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A constant float64 image 3 x width and a flow of ``u`` px to the right everywhere."""
    image = torch.full((1, 1, 3, width), VALUE, dtype=torch.float64)
    flow = torch.zeros(1, 2, 3, width, dtype=torch.float64)
    flow[:, 0] = u
    return image, flow


def test_the_frame_warp_pads_with_the_border_and_the_feature_warp_with_zeros() -> None:
    # the last column samples 0.0005 px beyond the edge: inside by both masks (0.9995 passes 0.999)
    image, flow = shifted(6, 0.0005)
    warped, mask = Flow_PWC().warp(image, flow)
    features = warp_features(image, flow)
    assert torch.equal(mask, torch.ones_like(mask))
    assert warped[..., -1].eq(VALUE).all()  # border padding: the edge value itself
    assert features[..., -1] == pytest.approx(VALUE * 0.9995, rel=1e-12)  # zero padding: 0.05 % of zero mixed in
    assert features[..., :-1] == pytest.approx(warped[..., :-1], rel=1e-12)


def test_both_warps_zero_a_sample_more_than_a_thousandth_of_a_pixel_outside() -> None:
    image, flow = shifted(6, 0.002)
    warped, mask = Flow_PWC().warp(image, flow)
    features = warp_features(image, flow)
    assert mask[..., -1].eq(0).all() and mask[..., :-1].eq(1).all()
    assert warped[..., -1].eq(0).all() and features[..., -1].eq(0).all()
    assert features[..., :-1] == pytest.approx(warped[..., :-1], rel=1e-12)


def test_the_frame_mask_carries_no_gradient_and_the_frame_does() -> None:
    image, flow = shifted(6, 0.3)
    flow.requires_grad_(True)
    warped, mask = Flow_PWC().warp(image, flow)
    assert not mask.requires_grad and warped.requires_grad


class ConstantNetwork(torch.nn.Module):
    """Stands in for PWC-Net: records the size it is given and returns a constant flow (in units of 20 px) at a
    quarter of that size, as the network does."""

    def __init__(self, u: float, v: float) -> None:
        super().__init__()
        self.u, self.v = u, v
        self.sizes: list[tuple[int, int]] = []

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(first.shape[2:]))
        height, width = first.shape[2] // 4, first.shape[3] // 4
        flow = torch.empty(first.shape[0], 2, height, width, dtype=first.dtype)
        flow[:, 0], flow[:, 1] = self.u, self.v
        return flow


def test_estimate_flow_rescales_u_by_the_width_ratio_and_v_by_the_height_ratio() -> None:
    # a 100 x 70 frame is seen as 128 x 128: 0.5 * 20 = 10 network pixels across are 10 * 100/128 frame pixels,
    # 0.25 * 20 = 5 down are 5 * 70/128
    flow_net = Flow_PWC()
    flow_net.moduleNetwork = ConstantNetwork(u=0.5, v=0.25)
    frames = torch.rand(2, 1, 3, 70, 100, dtype=torch.float64)
    flow = flow_net.estimate_flow(frames[0], frames[1])
    assert flow_net.moduleNetwork.sizes == [(128, 128)]
    assert flow.shape == (1, 2, 70, 100)
    assert torch.allclose(flow[:, 0], torch.full_like(flow[:, 0], 7.8125), rtol=0, atol=1e-12)
    assert torch.allclose(flow[:, 1], torch.full_like(flow[:, 1], 2.734375), rtol=0, atol=1e-12)


def test_estimate_flow_at_a_multiple_of_64_is_not_rescaled() -> None:
    flow_net = Flow_PWC()
    flow_net.moduleNetwork = ConstantNetwork(u=-0.5, v=0.125)
    first, second = torch.rand(2, 1, 3, 64, 128, dtype=torch.float64)
    flow = flow_net.estimate_flow(first, second)
    assert flow_net.moduleNetwork.sizes == [(64, 128)]
    assert flow[:, 0].eq(-10.0).all() and flow[:, 1].eq(2.5).all()


def test_under_a_bf16_autocast_pwc_net_runs_in_float32_unless_let_run_in_bf16() -> None:
    torch.manual_seed(3)
    flow_net = Flow_PWC().eval()
    first, second = torch.rand(2, 1, 3, 64, 64)
    with torch.no_grad():
        plain = flow_net.estimate_flow(first, second)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept = flow_net.estimate_flow(first, second)
            low = flow_net.estimate_flow(first, second, in_bf16=True)
        outside = flow_net.estimate_flow(first, second, in_bf16=True)  # no autocast: nothing changes
    assert torch.equal(kept, plain) and torch.equal(outside, plain)
    assert not torch.equal(low, plain)  # bfloat16's rounding: the network ran in it
    assert (low.float() - plain).abs().max() <= 0.05 * plain.abs().max()


def test_both_warps_keep_their_inputs_layout() -> None:
    generator = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 3, 6, 9, generator=generator, dtype=torch.float64)
    features = torch.rand(2, 5, 6, 9, generator=generator, dtype=torch.float64)
    flow = torch.randn(2, 2, 6, 9, generator=generator, dtype=torch.float64)
    warped, _ = Flow_PWC().warp(frame, flow)
    warped_features = warp_features(features, flow)
    for layout in (torch.contiguous_format, torch.channels_last):
        warped_in_layout, _ = Flow_PWC().warp(frame.contiguous(memory_format=layout), flow)
        features_in_layout = warp_features(features.contiguous(memory_format=layout), flow)
        assert warped_in_layout.is_contiguous(memory_format=layout)
        assert features_in_layout.is_contiguous(memory_format=layout)
        assert torch.equal(warped_in_layout, warped) and torch.equal(features_in_layout, warped_features)

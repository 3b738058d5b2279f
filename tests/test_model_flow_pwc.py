"""The two warps of model/flow_pwc.py keep the release's differences (docs/faithfulness.md §3.4 and §4)."""

import pytest
import torch

from model.flow_pwc import Flow_PWC, warp_features

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

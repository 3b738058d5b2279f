"""Building the model for training: its size from the options, its starting weights, its device wrappers."""

import argparse

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP, StepOptions
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.runtime import Runtime

FLOW_PRETRAIN_FILE = "network-default.pytorch"
PARAMETER_GROUPS = ("restoration_net", "flow_net")
"""The optimizer's parameter groups (`make_optimizer`), in order, by name (the TensorBoard curves' tags)."""


def build_model(args: argparse.Namespace, weights_follow: bool) -> CDVD_TSP:
    """CDVD_TSP sized by the options. PWC-Net starts from network-default.pytorch unless --no_flow_pretrain or
    ``weights_follow`` (a checkpoint will replace every weight anyway: --pre_train, --resume, --test_only)."""
    load_flow = not args.no_flow_pretrain and not weights_follow
    flow_file = args.pretrain_dir / FLOW_PRETRAIN_FILE
    if load_flow and not flow_file.is_file():
        raise UserError(
            f"{flow_file} not found: training starts PWC-Net from these weights; pretrain_models/README.md says "
            "where to get them (or pass --no_flow_pretrain to train PWC-Net from scratch)"
        )
    return CDVD_TSP(
        in_channels=args.n_colors,
        n_sequence=args.n_sequence,
        out_channels=args.n_colors,
        n_resblock=args.n_resblock,
        n_feat=args.n_feat,
        load_flow_net=load_flow,
        flow_pretrain_fn=str(flow_file),
    )


def freeze_flow_net_if_asked(model: CDVD_TSP, flow_lr: float) -> None:
    """--flow_lr 0 freezes the flow net: its weights stop requiring gradients, so the backward pass skips them (a step
    costs about 40 % less at T = 1) and Adam leaves them untouched. Call before wrapping for DDP, which registers only
    the weights that require gradients."""
    model.flow_net.requires_grad_(flow_lr > 0)


def unwrap(network: nn.Module) -> CDVD_TSP:
    """The CDVD_TSP inside a DataParallel or DistributedDataParallel wrapper (or ``network`` itself)."""
    model = network.module if isinstance(network, nn.DataParallel | DistributedDataParallel) else network
    if not isinstance(model, CDVD_TSP):
        raise TypeError(f"expected CDVD_TSP or a wrapper of it, got {type(model).__name__}")
    return model


def model_summary(model: CDVD_TSP) -> str:
    """One line: the model, its parameter count (and each net's), its window length."""
    flow = sum(parameter.numel() for parameter in model.flow_net.parameters())
    restoration = sum(parameter.numel() for parameter in model.recons_net.parameters())
    total = sum(parameter.numel() for parameter in model.parameters())
    return (
        f"{type(model).__name__}: {total:,} parameters (flow net {flow:,}, restoration net {restoration:,}), "
        f"windows of {model.n_sequence} frames (T = {model.n_stages})"
    )


def wrap_model(model: CDVD_TSP, runtime: Runtime, n_gpus: int) -> nn.Module:
    """DistributedDataParallel under torchrun, DataParallel over --n_GPUs, else the model itself."""
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if runtime.device.type == "cuda" and n_gpus > 1:
        return nn.DataParallel(model, device_ids=list(range(n_gpus)))
    return model


def step_options(channels_last: str) -> StepOptions:
    """The `StepOptions` of --channels_last (off, restoration, flow, all); the flows one after the other, as the
    release computed them."""
    return StepOptions(
        channels_last_flow=channels_last in ("flow", "all"),
        channels_last_restoration=channels_last in ("restoration", "all"),
    )


IMPLEMENTATION_SWITCHES = {
    "default": {"foreach": None, "fused": None},
    "for": {"foreach": False, "fused": None},
    "foreach": {"foreach": True, "fused": None},
    "fused": {"foreach": None, "fused": True},
}
"""--optimizer_impl: Adam's ``foreach`` and ``fused`` arguments (None: PyTorch's choice, which is foreach on CUDA
and the per-tensor loop on the CPU)."""


def set_optimizer_implementation(optimizer: torch.optim.Optimizer, implementation: str) -> None:
    """Make ``optimizer`` update with ``implementation`` (--optimizer_impl). Also after `load_state_dict`, which
    takes the switches of the run that saved the state: a resumed run may choose another implementation. Each
    parameter's step count goes where the implementation keeps it (the fused kernel: on the parameter's device)."""
    switches = IMPLEMENTATION_SWITCHES[implementation]
    for group in optimizer.param_groups:
        group.update(switches)
        for parameter in group["params"]:
            step = optimizer.state.get(parameter, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = parameter.device if switches["fused"] or group.get("capturable") else torch.device("cpu")
                optimizer.state[parameter]["step"] = step.to(device=device, dtype=torch.float32)


def make_optimizer(model: CDVD_TSP, args: argparse.Namespace) -> torch.optim.Adam:
    """Adam with the release's two groups: the restoration net at --lr and the flow net at --flow_lr, updated by
    the implementation of --optimizer_impl.

    The flow group stays when the flow net is frozen (see `freeze_flow_net_if_asked`), so the optimizer's state keeps
    one layout whatever --flow_lr is.
    """
    groups = [
        {"params": list(model.recons_net.parameters()), "lr": args.lr},
        {"params": list(model.flow_net.parameters()), "lr": args.flow_lr},
    ]
    return torch.optim.Adam(
        groups,
        betas=(args.beta1, args.beta2),
        eps=args.epsilon,
        weight_decay=args.weight_decay,
        lr=args.lr,
        **IMPLEMENTATION_SWITCHES[args.optimizer_impl],
    )

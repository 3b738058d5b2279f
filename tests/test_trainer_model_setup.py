"""trainer/model_setup.py: the training model sized by the options, PWC-Net's starting weights (and the message when
they are missing), freezing the flow net, the device wrappers and their unwrapping, the summary line, the optimizer.

Models are T = 1 with a tiny restoration net; the flow net is PWC-Net at its full size (it has no size option).
"""

import argparse
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.flow_pwc import Network
from cdvd_tsp.option import parse_args
from cdvd_tsp.trainer.model_setup import (
    FLOW_PRETRAIN_FILE,
    build_model,
    freeze_flow_net_if_asked,
    make_optimizer,
    model_summary,
    unwrap,
    wrap_model,
)
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.runtime import Runtime

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--cpu", "--n_stages", "1", "--n_feat", "4", "--n_resblock", "1"]
CPU = torch.device("cpu")


def options(*flags: str) -> argparse.Namespace:
    return parse_args([*TINY, *flags])


@pytest.fixture(scope="module")
def model() -> CDVD_TSP:
    torch.manual_seed(0)
    return build_model(options("--no_flow_pretrain"), weights_follow=False)


def flow_weights_file(folder: Path) -> Path:
    """A network-default.pytorch of PWC-Net's names holding weights no initialisation would draw: 0.25 + k / 1000."""
    state = {
        name: torch.full_like(tensor, 0.25 + index / 1000)
        for index, (name, tensor) in enumerate(Network().state_dict().items())
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / FLOW_PRETRAIN_FILE)
    return folder / FLOW_PRETRAIN_FILE


def flow_state_is(model: CDVD_TSP, file: Path) -> bool:
    saved = torch.load(file, weights_only=True)
    return all(torch.equal(tensor, saved[name]) for name, tensor in model.flow_net.moduleNetwork.state_dict().items())


# ----- the model and its starting weights


def test_the_model_is_sized_by_the_options_and_the_summary_line_counts_it(model: CDVD_TSP) -> None:
    assert isinstance(model, CDVD_TSP) and model.n_sequence == 3 and model.n_stages == 1
    assert model_summary(model) == (
        "CDVD_TSP: 9,414,769 parameters (flow net 9,374,274, restoration net 40,495), windows of 3 frames (T = 1)"
    )


def test_pwc_net_starts_from_network_default_pytorch_in_the_pretrain_folder(tmp_path: Path) -> None:
    file = flow_weights_file(tmp_path / "weights")
    loaded = build_model(options("--pretrain_models_dir", str(tmp_path / "weights")), weights_follow=False)
    assert flow_state_is(loaded, file)


@pytest.mark.parametrize(
    ("flags", "weights_follow"), [(["--no_flow_pretrain"], False), ([], True)], ids=["no_flow_pretrain", "follow"]
)
def test_pwc_net_is_not_loaded_with_no_flow_pretrain_or_when_a_checkpoint_follows(
    tmp_path: Path, flags: list[str], weights_follow: bool
) -> None:
    file = flow_weights_file(tmp_path / "weights")
    built = build_model(options("--pretrain_models_dir", str(tmp_path / "weights"), *flags), weights_follow)
    assert not flow_state_is(built, file)
    file.unlink()  # and then the file need not exist
    build_model(options("--pretrain_models_dir", str(tmp_path / "weights"), *flags), weights_follow)


def test_a_missing_pwc_net_file_says_where_it_was_looked_for_where_to_get_it_and_how_to_do_without(
    tmp_path: Path,
) -> None:
    with pytest.raises(UserError) as raised:
        build_model(options("--pretrain_models_dir", str(tmp_path)), weights_follow=False)
    assert str(raised.value) == (
        f"{tmp_path / 'network-default.pytorch'} not found: training starts PWC-Net from these weights; "
        "pretrain_models/README.md says where to get them (or pass --no_flow_pretrain to train PWC-Net from scratch)"
    )


# ----- freezing the flow net


def test_flow_lr_0_freezes_the_flow_net_only_and_a_positive_rate_unfreezes_it(model: CDVD_TSP) -> None:
    try:
        freeze_flow_net_if_asked(model, 0.0)
        assert not any(parameter.requires_grad for parameter in model.flow_net.parameters())
        assert all(parameter.requires_grad for parameter in model.recons_net.parameters())
        freeze_flow_net_if_asked(model, 1e-6)
        assert all(parameter.requires_grad for parameter in model.parameters())
    finally:
        model.requires_grad_(True)


def test_a_frozen_flow_net_gets_no_gradients_and_adam_leaves_it_untouched() -> None:
    torch.manual_seed(0)
    args = options("--no_flow_pretrain", "--flow_lr", "0")
    model = build_model(args, weights_follow=False)
    freeze_flow_net_if_asked(model, args.flow_lr)
    optimizer = make_optimizer(model, args)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 0.0]  # the flow group stays, at rate 0
    flow_before = [parameter.detach().clone() for parameter in model.flow_net.parameters()]
    recons_before = [parameter.detach().clone() for parameter in model.recons_net.parameters()]
    frames = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    *_, output, _ = model(frames)
    output.abs().mean().backward()
    optimizer.step()
    assert all(parameter.grad is None for parameter in model.flow_net.parameters())
    assert all(
        torch.equal(after, before) for after, before in zip(model.flow_net.parameters(), flow_before, strict=True)
    )
    changed = [
        not torch.equal(after, before)
        for after, before in zip(model.recons_net.parameters(), recons_before, strict=True)
    ]
    assert sum(changed) > len(changed) // 2  # the restoration net did learn


# ----- the optimizer


@pytest.mark.parametrize(
    ("flags", "rates"),
    [
        ([], (1e-4, 1e-6)),  # the released recipe: restoration net 1e-4, PWC-Net 1e-6
        (["--template", "DEMO"], (4e-4, 1e-4)),  # the demo model's (PWC-Net from scratch)
        (["--lr", "3e-4", "--flow_lr", "2e-5"], (3e-4, 2e-5)),
    ],
    ids=["release", "demo", "flags"],
)
def test_adam_has_the_restoration_net_then_the_flow_net_at_their_rates(
    model: CDVD_TSP, flags: list[str], rates: tuple[float, float]
) -> None:
    optimizer = make_optimizer(model, options("--no_flow_pretrain", *flags))
    assert isinstance(optimizer, torch.optim.Adam)
    restoration, flow = optimizer.param_groups
    assert [id(parameter) for parameter in restoration["params"]] == [id(p) for p in model.recons_net.parameters()]
    assert [id(parameter) for parameter in flow["params"]] == [id(p) for p in model.flow_net.parameters()]
    assert len(restoration["params"]) + len(flow["params"]) == len(list(model.parameters()))  # each weight once
    assert (restoration["lr"], flow["lr"]) == rates
    for group in (restoration, flow):
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0.0


def test_adams_betas_epsilon_and_weight_decay_come_from_the_options(model: CDVD_TSP) -> None:
    args = options("--no_flow_pretrain", "--beta1", "0.8", "--beta2", "0.99", "--epsilon", "1e-6")
    args.weight_decay = 1e-3
    for group in make_optimizer(model, args).param_groups:
        assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6 and group["weight_decay"] == 1e-3


# ----- the device wrappers


def test_on_the_cpu_without_torchrun_the_model_is_not_wrapped(model: CDVD_TSP) -> None:
    assert wrap_model(model, Runtime(device=CPU), n_gpus=1) is model
    assert wrap_model(model, Runtime(device=CPU), n_gpus=2) is model  # DataParallel is for GPUs


def test_unwrap_finds_the_model_in_a_data_parallel_wrapper_and_refuses_other_modules(model: CDVD_TSP) -> None:
    assert unwrap(model) is model
    assert unwrap(nn.DataParallel(model)) is model
    with pytest.raises(TypeError, match="expected CDVD_TSP or a wrapper of it, got Linear"):
        unwrap(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="got Linear"):
        unwrap(nn.DataParallel(nn.Linear(2, 2)))


def test_under_torchrun_the_model_is_wrapped_in_ddp_and_unwrapped_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(options("--no_flow_pretrain"), weights_follow=False)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = wrap_model(model, Runtime(device=CPU, world_size=2), n_gpus=1)  # what torchrun's ranks say
        assert isinstance(wrapped, DistributedDataParallel) and wrapped.device_ids is None
        assert unwrap(wrapped) is model
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_n_gpus_over_1_on_cuda_is_data_parallel_over_the_first_n(model: CDVD_TSP) -> None:
    wrapped = wrap_model(model.cuda(), Runtime(device=torch.device("cuda", 0)), n_gpus=2)
    try:
        assert isinstance(wrapped, nn.DataParallel) and wrapped.device_ids == [0, 1]
        assert unwrap(wrapped) is model
    finally:
        model.cpu()

"""Strict checkpoint loading: released-style files load; anything that does not fit is refused by name."""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from conftest import Reference
from model.cdvd_tsp import CDVD_TSP
from model.checkpoint import CheckpointError, load_weights, read_state_dict
from model.flow_pwc import Flow_PWC

FLOW_PREFIX = "flow_net.moduleNetwork."


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def assert_same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name].to(tensor.dtype)), name


def test_released_checkpoint_loads(tmp_path: Path, recipe_weights: dict) -> None:
    path = save(OrderedDict(recipe_weights), tmp_path / "CDVD_TSP_DVD_Convergent.pt")
    model = CDVD_TSP().double()
    load_weights(model, path)
    assert_same_weights(model, recipe_weights)


@pytest.mark.parametrize("wrapper", ["module."])
def test_data_parallel_prefix_is_accepted(tmp_path: Path, recipe_weights: dict, wrapper: str) -> None:
    path = save({wrapper + name: tensor for name, tensor in recipe_weights.items()}, tmp_path / "ddp.pt")
    model = CDVD_TSP().double()
    load_weights(model, path)
    assert_same_weights(model, recipe_weights)


def test_half_precision_file_loads_as_float32(tmp_path: Path, recipe_weights: dict) -> None:
    half = {name: tensor.half() for name, tensor in recipe_weights.items()}
    model = CDVD_TSP()
    load_weights(model, save(half, tmp_path / "half.pt"))
    assert all(tensor.dtype == torch.float32 for tensor in model.state_dict().values())
    assert_same_weights(model, {name: tensor.float() for name, tensor in half.items()})


def test_flow_pretrain_loads_through_the_constructor(tmp_path: Path, recipe_weights: dict) -> None:
    flow_state = {name[len(FLOW_PREFIX) :]: t for name, t in recipe_weights.items() if name.startswith(FLOW_PREFIX)}
    path = save(flow_state, tmp_path / "network-default.pytorch")
    model = CDVD_TSP(load_flow_net=True, flow_pretrain_fn=str(path))
    assert_same_weights(model.flow_net.moduleNetwork, flow_state)


def test_recons_pretrain_loads_through_the_constructor(tmp_path: Path, recipe_weights: dict) -> None:
    prefix = "recons_net."
    recons_state = {name[len(prefix) :]: t for name, t in recipe_weights.items() if name.startswith(prefix)}
    path = save(recons_state, tmp_path / "recons.pt")
    model = CDVD_TSP(load_recons_net=True, recons_pretrain_fn=str(path))
    assert_same_weights(model.recons_net, recons_state)


def refused(model: torch.nn.Module, path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_weights(model, path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_truncated_state_dict_is_refused_with_missing_names(tmp_path: Path, recipe_weights: dict) -> None:
    names = list(recipe_weights)
    kept = {name: recipe_weights[name] for name in names[:-3]}
    message = refused(CDVD_TSP(), save(kept, tmp_path / "truncated.pt"))
    assert "3 missing" in message
    for name in names[-3:]:
        assert name in message


def test_renamed_entries_are_refused_as_missing_and_unexpected(tmp_path: Path, recipe_weights: dict) -> None:
    renamed = {name.replace("recons_net.", "reconstruction."): t for name, t in recipe_weights.items()}
    message = refused(CDVD_TSP(), save(renamed, tmp_path / "renamed.pt"))
    assert "84 missing: recons_net.inBlock.0.0.weight" in message  # model order
    assert "84 unexpected: reconstruction." in message
    assert message.count(", and 74 more") == 2  # long lists are cut to ten names


def test_misshaped_entry_is_refused_with_both_shapes(tmp_path: Path, recipe_weights: dict) -> None:
    state = dict(recipe_weights)
    state["recons_net.outBlock.3.bias"] = torch.zeros(4, dtype=torch.float64)
    message = refused(CDVD_TSP(), save(state, tmp_path / "misshaped.pt"))
    assert "1 with another shape: recons_net.outBlock.3.bias (file [4], model [3])" in message


def test_flow_file_is_refused_by_the_full_model(tmp_path: Path, recipe_weights: dict) -> None:
    flow_state = {name[len(FLOW_PREFIX) :]: t for name, t in recipe_weights.items() if name.startswith(FLOW_PREFIX)}
    message = refused(CDVD_TSP(), save(flow_state, tmp_path / "network-default.pytorch"))
    assert "does not fit CDVD_TSP" in message


class NotAStateDict:
    def __init__(self) -> None:
        self.weights = torch.zeros(3)


def test_pickled_object_is_refused_without_being_executed(tmp_path: Path) -> None:
    path = save(NotAStateDict(), tmp_path / "object.pt")
    message = refused(CDVD_TSP(), path)
    assert "not a plain state dict" in message


def test_state_dict_with_non_tensor_values_is_refused(tmp_path: Path, recipe_weights: dict) -> None:
    state = {"epoch": 3, **recipe_weights}
    message = refused(CDVD_TSP(), save(state, tmp_path / "with_epoch.pt"))
    assert "non-tensor entries: epoch" in message


def test_damaged_file_is_refused(tmp_path: Path, recipe_weights: dict) -> None:
    path = save(recipe_weights, tmp_path / "whole.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "cannot be read" in refused(CDVD_TSP(), damaged)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert "not found" in refused(CDVD_TSP(), tmp_path / "absent.pt")


def test_failed_load_leaves_the_model_untouched(tmp_path: Path, recipe_weights: dict, reference: Reference) -> None:
    model = reference.model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state = {name: torch.zeros_like(t) for name, t in recipe_weights.items()}
    state.pop("recons_net.outBlock.3.bias")
    refused(model, save(state, tmp_path / "partial.pt"))
    assert_same_weights(model, before)


def test_read_state_dict_does_not_strip_a_partial_prefix(tmp_path: Path) -> None:
    path = save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "mixed.pt")
    assert sorted(read_state_dict(path)) == ["b", "module.a"]


def test_flow_pwc_constructor_refuses_a_missing_pretrain_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Flow_PWC(load_pretrain=True, pretrain_fn=str(tmp_path / "network-default.pytorch"))


def test_a_recorded_n_sequence_stays_a_plain_state_dict_and_must_match(tmp_path: Path) -> None:
    from model.checkpoint import read_checkpoint, with_n_sequence

    trained = CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1)
    path = save(with_n_sequence(trained.state_dict(), trained.n_sequence), tmp_path / "t1.pt")
    plain = torch.load(path, weights_only=True)  # the release's way to load: a plain state dict of tensors
    CDVD_TSP(n_sequence=5, n_feat=4, n_resblock=1).load_state_dict(plain)
    assert read_checkpoint(path)[1] == 3 and read_checkpoint(save(trained.state_dict(), tmp_path / "p.pt"))[1] is None

    load_weights(CDVD_TSP(n_sequence=3, n_feat=4, n_resblock=1), path)
    message = refused(CDVD_TSP(n_sequence=5, n_feat=4, n_resblock=1), path)
    assert message.endswith("(--n_stages 2); use a checkpoint trained with n_sequence 5")
    other = CDVD_TSP(n_sequence=5, n_feat=4, n_resblock=1)
    load_weights(other, path, other_n_sequence=True)  # training from it (--pre_train) may change the window
    assert_same_weights(other, trained.state_dict())

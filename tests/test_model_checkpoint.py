"""Strict checkpoint loading: released-style files load; anything that does not fit is refused by name."""

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from cdvd_tsp.model.cdvd_tsp import CDVD_TSP
from cdvd_tsp.model.checkpoint import CheckpointError, load_weights, read_checkpoint
from cdvd_tsp.model.flow_pwc import Flow_PWC
from conftest import Reference

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


@pytest.mark.parametrize("zipped", [True, False], ids=["zip archive", "legacy format"])
def test_both_of_torch_save_s_formats_load_with_their_record(
    tmp_path: Path, recipe_weights: dict, zipped: bool
) -> None:
    """A zip archive is mapped (its tensors read where they are used), the legacy format (the release's PyTorch
    1.x may have written it) read whole: the same weights and record either way."""
    from cdvd_tsp.model.checkpoint import ZIP_MAGIC, with_n_sequence

    path = tmp_path / "model.pt"
    torch.save(with_n_sequence(recipe_weights, 5), path, _use_new_zipfile_serialization=zipped)
    assert path.read_bytes().startswith(ZIP_MAGIC) == zipped
    state, recorded = read_checkpoint(path)
    assert recorded == 5 and all(tensor.is_cpu for tensor in state.values())
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
    path = save(flow_state, tmp_path / "network-default.pytorch")
    assert refused(CDVD_TSP(), path) == (
        f"{path} holds PWC-Net's weights only (flow_net.moduleNetwork, 126 tensors), not a whole CDVD_TSP model"
    )


class NotAStateDict:
    def __init__(self) -> None:
        self.weights = torch.zeros(3)


def test_pickled_object_is_refused_without_being_executed(tmp_path: Path) -> None:
    path = save(NotAStateDict(), tmp_path / "object.pt")
    message = refused(CDVD_TSP(), path)
    assert message == (
        f"{path}: holds a pickled Python object (test_model_checkpoint.NotAStateDict), which loading with "
        "weights_only refuses, as it could run code; a checkpoint is a state dict of tensors (save model.state_dict())"
    )


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


def test_a_partial_wrapper_prefix_is_not_stripped(tmp_path: Path) -> None:
    path = save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "mixed.pt")
    assert sorted(read_checkpoint(path)[0]) == ["b", "module.a"]


def test_flow_pwc_constructor_refuses_a_missing_pretrain_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        Flow_PWC(load_pretrain=True, pretrain_fn=str(tmp_path / "network-default.pytorch"))


def test_a_recorded_n_sequence_stays_a_plain_state_dict_and_must_match(tmp_path: Path) -> None:
    from cdvd_tsp.model.checkpoint import with_n_sequence

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


# ----- what a file that is not the model's weights is: one short line, naming the file


def tiny() -> CDVD_TSP:
    return CDVD_TSP(n_feat=4, n_resblock=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path, bad: float) -> None:
    model = tiny()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["recons_net.outBlock.1.bias"][1] = bad
    state["flow_net.moduleNetwork.moduleSix.moduleOne.0.bias"][:2] = bad
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    message = refused(model, save(state, tmp_path / "diverged.pt"))
    kind = "NaN" if bad != bad else "inf"
    assert message == (
        f"{tmp_path / 'diverged.pt'}: tensor flow_net.moduleNetwork.moduleSix.moduleOne.0.bias holds 2 {kind} of its "
        f"{state['flow_net.moduleNetwork.moduleSix.moduleOne.0.bias'].numel()} values; so do 1 more: "
        "recons_net.outBlock.1.bias; non-finite weights are refused"
    )
    assert_same_weights(model, before)  # nothing was copied


def part(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: value for name, value in model.state_dict().items() if name.startswith(prefix)}


def test_a_pwc_net_file_loaded_as_the_whole_model_says_what_it_holds(tmp_path: Path) -> None:
    model = tiny()
    path = save(part(model, FLOW_PREFIX), tmp_path / "network-default.pytorch")
    assert refused(model, path) == (
        f"{path} holds PWC-Net's weights only (flow_net.moduleNetwork, 126 tensors), not a whole CDVD_TSP model"
    )
    path = save(part(model, "recons_net."), tmp_path / "recons.pt")
    message = refused(model, path)
    assert message.startswith(f"{path} holds the restoration net's weights only (recons_net, ")
    assert message.endswith(" tensors), not a whole CDVD_TSP model") and len(message) < 200


def test_a_whole_model_file_given_for_a_part_says_so(tmp_path: Path) -> None:
    whole = save(tiny().state_dict(), tmp_path / "CDVD_TSP_GOPRO.pt")
    with pytest.raises(CheckpointError) as caught:
        Flow_PWC(load_pretrain=True, pretrain_fn=str(whole))
    total = len(tiny().state_dict())
    assert str(caught.value) == (
        f"{whole} holds a larger model ({total} tensors), of which flow_net.moduleNetwork has the 126 tensors of a "
        "Network; pass the weights of the Network alone"
    )


def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path: Path) -> None:
    model = tiny()
    folder = tmp_path / "weights"
    folder.mkdir()
    assert refused(model, folder) == f"{folder}: is a folder, not a checkpoint file"
    empty = tmp_path / "empty.pt"
    empty.touch()
    assert refused(model, empty) == f"{empty}: is empty (0 bytes), not a PyTorch checkpoint"
    page = tmp_path / "download.pt"
    page.write_text("<!DOCTYPE html><html><head><title>Sign in to continue</title></head></html>\n")
    assert (
        refused(model, page)
        == f"{page}: not a PyTorch checkpoint (it starts with text: '<!DOCTYPE html><html><head><title>Sign i')"
    )
    pointer = tmp_path / "CDVD_TSP_DVD_Convergent.pt"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 22000000\n")
    assert (
        refused(model, pointer)
        == f"{pointer}: is a Git LFS pointer, not the checkpoint itself; fetch the file (git lfs pull)"
    )
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(1, 256)) * 4)
    assert "binary data, neither the zip archive torch.save writes nor a pickle" in refused(model, noise)


def test_pickles_are_described_without_pytorch_s_advice(tmp_path: Path) -> None:
    whole = tmp_path / "model.pt"
    torch.save(tiny(), whole)  # the whole module pickled, as torch.save(model) does
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    messages = [refused(tiny(), whole), refused(tiny(), plain)]
    assert messages[0].startswith(
        f"{whole}: holds a pickled Python object (cdvd_tsp.model.cdvd_tsp.CDVD_TSP), which loading"
    )
    assert messages[1].startswith(f"{plain}: holds a pickle that is not a state dict of tensors, refused by loading")
    for message in messages:
        assert "\x1b" not in message and "False" not in message and len(message) - len(str(tmp_path)) < 220


def test_a_training_state_is_named_as_one(tmp_path: Path) -> None:
    state = {"format": 1, "epoch": 3, "model": tiny().state_dict(), "optimizer": {}, "rng": {}}
    path = save(state, tmp_path / "state.pt")
    assert refused(tiny(), path) == (
        f"{path}: holds a training state (entries format, epoch, model, optimizer, rng), not a state dict of "
        "weights; the run's weights are the files in its model/ folder"
    )

"""The model reproduces the released model's outputs (the fixture) component by component, end to end, and in
its gradients: float64 to 1e-7 relative, float32 to 1e-4 (on CUDA with TF32 off; with TF32 on, to its own bound).
The same bounds hold in channels_last layout and with every `StepOptions` on (batched flows, channels_last).
On CUDA each test runs with each cost-volume path (the PyTorch operations and, where CuPy is installed, the kernel)."""

import importlib.util

import pytest
import torch

from cdvd_tsp.model.cdvd_tsp import StepOptions
from cdvd_tsp.model.correlation import BACKEND_VARIABLE, SELECTOR, cost_volume
from cdvd_tsp.model.flow_pwc import warp_features
from cdvd_tsp.model.prior import temporal_sharpness_prior
from cdvd_tsp.utils.precision import tf32_switched
from conftest import Reference, relative_error

FLOAT64_TOLERANCE = 1e-7
FLOAT32_TOLERANCE = 1e-4
OUTPUT_NAMES = ("recons_1", "recons_2", "recons_3", "out")


PLAIN = StepOptions()
ALL_OPTIONS = StepOptions(batch_flows=True, channels_last_flow=True, channels_last_restoration=True)


def component_outputs(
    reference: Reference, dtype: torch.dtype, device: str, layout: torch.memory_format = torch.contiguous_format
) -> dict[str, torch.Tensor]:
    """Run every component on the fixture's inputs (4-D ones in ``layout``); returns {fixture array name: output}."""
    model = reference.model(dtype, device)

    def get(name: str) -> torch.Tensor:
        tensor = reference[name].to(device=device, dtype=dtype)
        return tensor.contiguous(memory_format=layout) if tensor.dim() == 4 else tensor

    with torch.no_grad():
        warped, mask = model.flow_net.warp(get("warp_image"), get("warp_flow"))
        return {
            "corr_out": cost_volume(get("corr_first"), get("corr_second")),
            "flow_out": model.flow_net.estimate_flow(get("flow_first"), get("flow_second")),
            "warp_out": warped,
            "warp_mask": mask,
            "backward_out": warp_features(get("backward_in"), get("backward_flow")),
            "tsp_out": temporal_sharpness_prior(
                [frame.contiguous(memory_format=layout) for frame in get("tsp_frames").unbind(1)],
                [mask.contiguous(memory_format=layout) for mask in get("tsp_masks").unbind(1)],
            ),
            "recons_out": model.recons_net(get("recons_in")),
        }


def forward_and_gradients(
    reference: Reference, dtype: torch.dtype, device: str, options: StepOptions = PLAIN
) -> dict[str, torch.Tensor]:
    """Full forward (its steps with ``options``), the fixture's loss and the gradients of its six parameters."""
    model = reference.model(dtype, device)
    model.step_options = options
    outputs = model(reference["input"].to(device=device, dtype=dtype))
    assert len(outputs) == 5 and outputs[4] is None
    results = dict(zip(OUTPUT_NAMES, outputs[:4], strict=True))
    loss = sum(
        (output * reference[f"loss_weight_{index}"].to(device=device, dtype=dtype)).sum()
        for index, output in enumerate(outputs[:4])
    )
    loss.backward()
    results["loss"] = loss.detach()
    parameters = dict(model.named_parameters())
    for index, name in enumerate(reference.meta["grad_keys"]):
        results[f"grad_{index}"] = parameters[name].grad
    return results


@pytest.fixture(scope="module")
def float64_run(reference: Reference) -> dict[str, torch.Tensor]:
    return forward_and_gradients(reference, torch.float64, "cpu")


COMPONENTS = ("corr_out", "flow_out", "warp_out", "warp_mask", "backward_out", "tsp_out", "recons_out")


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, FLOAT32_TOLERANCE)])
def test_components_match_fixture(
    reference: Reference, dtype: torch.dtype, tolerance: float, layout: torch.memory_format
) -> None:
    outputs = component_outputs(reference, dtype, "cpu", layout)
    assert set(outputs) == set(COMPONENTS)
    for name, output in outputs.items():
        assert output.dtype == dtype, name
        assert relative_error(output, reference[name]) <= tolerance, name
    if layout == torch.channels_last:  # the layout went through (the masks are views of one channel)
        for name in ("corr_out", "flow_out", "warp_out", "backward_out", "recons_out"):
            assert outputs[name].is_contiguous(memory_format=torch.channels_last), name


@pytest.mark.parametrize("name", [*OUTPUT_NAMES, "loss"] + [f"grad_{index}" for index in range(6)])
def test_float64_forward_and_gradients_match_fixture(
    float64_run: dict[str, torch.Tensor], reference: Reference, name: str
) -> None:
    assert relative_error(float64_run[name], reference[name]) <= FLOAT64_TOLERANCE


def test_float64_forward_with_every_step_option_matches_fixture(reference: Reference) -> None:
    """The outputs only: the options' gradients equal the plain step's to 1e-12 (tests/test_model_cdvd_tsp.py), and
    a second float64 backward pass here would double this file's time."""
    model = reference.model(torch.float64)
    model.step_options = ALL_OPTIONS
    with torch.no_grad():
        outputs = model(reference["input"])
    for name, output in zip(OUTPUT_NAMES, outputs[:4], strict=True):
        assert output.dtype == torch.float64
        assert relative_error(output, reference[name]) <= FLOAT64_TOLERANCE, name


@pytest.mark.parametrize("options", [PLAIN, ALL_OPTIONS], ids=["plain", "all step options"])
def test_float32_forward_matches_fixture(reference: Reference, options: StepOptions) -> None:
    model = reference.model(torch.float32)
    model.step_options = options
    with torch.no_grad():
        outputs = model(reference["input"].float())
    for name, output in zip(OUTPUT_NAMES, outputs[:4], strict=True):
        assert output.dtype == torch.float32
        assert relative_error(output, reference[name]) <= FLOAT32_TOLERANCE, name


def test_state_dict_names_and_shapes_equal_release(reference: Reference) -> None:
    state = reference.model().state_dict()
    assert [(name, list(tensor.shape)) for name, tensor in state.items()] == [
        (name, shape) for name, shape in reference.meta["keys"]
    ]
    assert sum(tensor.numel() for tensor in state.values()) == 16_187_045


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
COST_VOLUME_PATHS = [
    "torch",
    "tiled",
    pytest.param("cupy", marks=pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="needs CuPy")),
]
TF32_TOLERANCE = 1e-2
"""float32 with TF32 convolutions (PyTorch's default for cuDNN): inputs of every convolution rounded to 10-bit
mantissas; measured 2.95e-3 on this fixture on an H200. Bounded here so that a real error (a wrong warp, a wrong
kernel: relative errors near 1) is still caught."""


@pytest.fixture
def cost_volume_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force the cost volume's code path for the test (CDVD_COST_VOLUME) and check it was the one used."""
    path = request.param
    monkeypatch.setenv(BACKEND_VARIABLE, path)
    yield path
    if path == "cupy":
        assert SELECTOR.disabled is None and SELECTOR.checked, SELECTOR.describe()


@needs_cuda
@pytest.mark.parametrize("options", [PLAIN, ALL_OPTIONS], ids=["plain", "all step options"])
@pytest.mark.parametrize("cost_volume_path", COST_VOLUME_PATHS, indirect=True)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, FLOAT32_TOLERANCE)])
def test_cuda_matches_fixture(
    reference: Reference, cost_volume_path: str, dtype: torch.dtype, tolerance: float, options: StepOptions
) -> None:
    """float64, and float32 with TF32 off (IEEE float32 arithmetic), to the CPU's bounds; with every step option
    on, the components take channels_last inputs."""
    layout = torch.channels_last if options == ALL_OPTIONS else torch.contiguous_format
    with tf32_switched(False):
        for name, output in component_outputs(reference, dtype, "cuda", layout).items():
            assert output.is_cuda
            assert relative_error(output, reference[name]) <= tolerance, name
        results = forward_and_gradients(reference, dtype, "cuda", options)
    # float32 gradients accumulate more rounding than outputs; compare them at the looser float32 bound only
    for name in [*OUTPUT_NAMES, "loss"] + ([f"grad_{index}" for index in range(6)] if dtype == torch.float64 else []):
        assert relative_error(results[name], reference[name]) <= tolerance, name


@needs_cuda
@pytest.mark.parametrize("options", [PLAIN, ALL_OPTIONS], ids=["plain", "all step options"])
@pytest.mark.parametrize("cost_volume_path", COST_VOLUME_PATHS, indirect=True)
def test_cuda_tf32_matches_fixture_to_its_own_bound(
    reference: Reference, cost_volume_path: str, options: StepOptions
) -> None:
    """float32 with TF32 on, PyTorch's default for convolutions: the outputs to TF32_TOLERANCE."""
    with tf32_switched(True):
        model = reference.model(torch.float32, "cuda")
        model.step_options = options
        with torch.no_grad():
            outputs = model(reference["input"].to("cuda", torch.float32))
    for name, output in zip(OUTPUT_NAMES, outputs[:4], strict=True):
        assert relative_error(output, reference[name]) <= TF32_TOLERANCE, name

"""One optimisation step of the cascade: forward (optionally under autocast, optionally compiled), the loss on every
stage's outputs against the ground truth of the frames they restore, backward, update. Nothing in a step waits for
the device: the loss terms stay there (`trainer.running_loss` reads them when a log line needs them)."""

import contextlib

import torch
from torch import Tensor, nn

from cdvd_tsp.loss import Loss
from cdvd_tsp.trainer.model_setup import unwrap
from cdvd_tsp.utils.precision import PRECISIONS, autocast

AMP_PRECISIONS = {"bf16": PRECISIONS["bf16"], "fp16": PRECISIONS["fp16"]}
"""--amp: the autocast settings of utils/precision.py, on CUDA and, for bf16, on a CPU with native bfloat16 (checked
by option/checks.py); under bf16 PWC-Net stays in float32, as in inference, and no loss scaling is needed."""


class TrainStep:
    """Runs `network` (CDVD_TSP or a wrapper of it) on batches and updates it with `optimizer`."""

    def __init__(
        self,
        network: nn.Module,
        loss: Loss,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        amp: str = "off",
        compile_forward: bool = False,
    ) -> None:
        self.network = network
        self.forward = torch.compile(network) if compile_forward else network
        """`network`, or its torch.compile'd form (--compile): what the step calls."""
        self.model = unwrap(network)
        """The CDVD_TSP inside `network`: it says what the outputs of `network` are."""
        self.loss = loss
        self.optimizer = optimizer
        self.device = device
        self.amp = amp
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        return autocast(AMP_PRECISIONS[self.amp], self.device)

    def compute_loss(self, blur: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
        """Forward a batch ([B, 2T+1, 3, H, W] each); returns the loss to minimise and the weighted terms (and
        their total), detached, on the device."""
        blur = blur.to(self.device, non_blocking=True)
        gt = gt.to(self.device, non_blocking=True)
        with self.autocast():
            outputs = self.model.split_outputs(self.forward(blur))
        output = torch.cat(outputs.flat(), dim=1).float()
        target = torch.cat(outputs.targets(gt), dim=1)
        total, values = self.loss(output, target)
        return total, values

    def optimise(self, total: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if not self.scaler.is_enabled():  # the loss scaler skips steps with non-finite gradients itself
            zero_non_finite_gradients(self.optimizer)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def zero_non_finite_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Zero every gradient of ``optimizer`` if any is not finite, on the device (the host does not wait).

    The loop reads the losses only at its log lines (`trainer.running_loss`) and stops there if one was not
    finite; until then the weights must stay finite, or the following steps would compute on NaN (where some
    kernels crash: a NaN sampling grid in the backward pass of the warp). Under DistributedDataParallel every
    process holds the same averaged gradients, so all decide alike. Finite gradients are left bit for bit."""
    gradients = [
        parameter.grad
        for group in optimizer.param_groups
        for parameter in group["params"]
        if parameter.grad is not None
    ]
    if not gradients:
        return
    not_finite = ~torch.isfinite(torch.stack(torch._foreach_norm(gradients))).all()
    for gradient in gradients:
        gradient.masked_fill_(not_finite, 0)

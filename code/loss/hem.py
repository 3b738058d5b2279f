"""Hard example mining loss (HEM), as the released training computed it (docs/faithfulness.md §8)."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HEM(nn.Module):
    """L1 loss on a per-sample pixel mask: the hardest pixels plus a random share.

    For each sample, a pixel is hard when its L1 residual summed over the channels is above the value at rank
    ``int(hard_share * H * W)`` of the residuals sorted in descending order; ``int(random_share * H * W)`` pixels
    picked uniformly at random are added. The loss is the mean absolute difference of ``x * mask`` and ``y * mask``
    over all elements. The mask is built on the device from this module's own generator (see `reseed`).
    """

    def __init__(self, hard_share: float = 0.5, random_share: float = 0.1) -> None:
        super().__init__()
        self.hard_share = hard_share
        self.random_share = random_share
        self.seed = 0
        self._generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, seed: int) -> None:
        """Make the random part of the masks a function of ``seed`` from now on, on every device."""
        self.seed = seed
        for generator in self._generators.values():
            generator.manual_seed(seed)

    def random_state(self) -> dict[str, Any]:
        """Where the random part of the masks is: the seed and each device's generator state (for a commit inside an
        epoch; `set_random_state` continues from it)."""
        return {
            "seed": self.seed,
            "generators": {str(device): generator.get_state() for device, generator in self._generators.items()},
        }

    def set_random_state(self, state: dict[str, Any]) -> None:
        """Continue the masks from `random_state`: the next masks are those the saved module would have drawn."""
        self.seed = state["seed"]
        self._generators = {}
        for name, generator_state in state["generators"].items():
            device = torch.device(name)
            self._generators[device] = torch.Generator(device=device)
            self._generators[device].set_state(generator_state)

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
            self._generators[device].manual_seed(self.seed)
        return self._generators[device]

    @torch.no_grad()
    def mask(self, x: Tensor, y: Tensor) -> Tensor:
        """The [B, 1, H, W] mask (1 for the pixels that count, 0 elsewhere) for outputs ``x`` and targets ``y``."""
        batch, _, height, width = x.shape
        pixels = height * width
        residual = (x - y).abs().sum(dim=1).reshape(batch, pixels).float()
        rank = int(self.hard_share * pixels)  # 0-based rank in descending order = (pixels - rank)-th smallest
        threshold = residual.kthvalue(pixels - rank, dim=1, keepdim=True).values
        selected = residual > threshold
        n_random = int(self.random_share * pixels)
        if n_random:
            noise = torch.rand(batch, pixels, device=x.device, generator=self._generator(x.device))
            chosen = noise.argsort(dim=1)[:, :n_random]
            selected.scatter_(1, chosen, True)
        return selected.reshape(batch, 1, height, width).to(x.dtype)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        mask = self.mask(x.detach(), y.detach())
        return F.l1_loss(x * mask, y * mask)

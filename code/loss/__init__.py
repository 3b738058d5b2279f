"""Training losses from the release's spec strings, e.g. ``'1*L1+2*HEM'``: a weighted sum of named terms."""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cdvd_tsp.loss.hem import HEM
from cdvd_tsp.utils.errors import UserError

LOSS_TYPES = {"L1": nn.L1Loss, "MSE": nn.MSELoss, "HEM": HEM}
SPEC_FORM = "<weight>*<type> terms joined by '+', e.g. '1*L1+2*HEM'"


@dataclass(frozen=True)
class LossTerm:
    weight: float
    name: str


def parse_loss_spec(spec: str) -> list[LossTerm]:
    """The terms of ``spec``; a one-line `UserError` naming the bad part if it is not well formed."""
    terms: list[LossTerm] = []
    for part in spec.split("+"):
        pieces = part.strip().split("*")
        if len(pieces) != 2 or not all(piece.strip() for piece in pieces):
            raise UserError(f"--loss {spec!r}: '{part}' is not a term; write {SPEC_FORM}")
        weight_text, name = (piece.strip() for piece in pieces)
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"--loss {spec!r}: weight '{weight_text}' of '{part}' is not a number") from None
        if not weight > 0 or weight == float("inf"):
            raise UserError(f"--loss {spec!r}: weight of '{part}' must be a positive finite number")
        if name not in LOSS_TYPES:
            raise UserError(f"--loss {spec!r}: unknown loss '{name}' (known: {', '.join(LOSS_TYPES)})")
        if any(term.name == name for term in terms):
            raise UserError(f"--loss {spec!r}: '{name}' appears twice")
        terms.append(LossTerm(weight, name))
    return terms


class Loss(nn.Module):
    """The weighted sum of the terms of a spec string.

    `forward` returns the total (for backward) and the detached weighted value of each term, in the order of
    `names` (the terms, then 'Total' when there is more than one term), as the release logged them.
    """

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.terms = parse_loss_spec(spec)
        self.functions = nn.ModuleList(LOSS_TYPES[term.name]() for term in self.terms)
        self.names = [term.name for term in self.terms] + (["Total"] if len(self.terms) > 1 else [])

    def reseed(self, seed: int) -> None:
        """Seed the random parts of the terms (HEM's random pixels)."""
        for function in self.functions:
            if isinstance(function, HEM):
                function.reseed(seed)

    def random_state(self) -> list[dict[str, Any] | None]:
        """The random state of each term (HEM's generators; None for the others), for `set_random_state`."""
        return [function.random_state() if isinstance(function, HEM) else None for function in self.functions]

    def set_random_state(self, states: list[dict[str, Any] | None]) -> None:
        """Continue every term's random part from `random_state` (of a loss with the same terms)."""
        if len(states) != len(self.functions):
            raise ValueError(f"{len(states)} random states for a loss of {len(self.functions)} terms")
        for function, state in zip(self.functions, states, strict=True):
            if isinstance(function, HEM):
                function.set_random_state(state)

    def forward(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        weighted = [
            term.weight * function(output, target) for term, function in zip(self.terms, self.functions, strict=True)
        ]
        total = torch.stack(weighted).sum() if len(weighted) > 1 else weighted[0]
        values = torch.stack([*weighted, total] if len(weighted) > 1 else weighted).detach()
        return total, values

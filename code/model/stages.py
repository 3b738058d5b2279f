"""The outputs of the CDVD_TSP cascade by stage, and the input frame each of them restores."""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class CascadeOutputs:
    """Every stage's outputs, as `CDVD_TSP.forward_stages` returns them: stage s (from 0) restores input frames
    s+1 .. 2T-1-s, in order, so the last stage restores the centre frame."""

    stages: list[list[Tensor]]

    @classmethod
    def from_forward(cls, outputs: Sequence[Tensor | None], n_stages: int) -> "CascadeOutputs":
        """Undo `CDVD_TSP.forward`'s release-compatible tuple: the outputs of the stages before the last, the final
        output, then None (the release's unused mid loss)."""
        frames = list(outputs[:-1])
        sizes = [2 * (n_stages - stage) - 1 for stage in range(n_stages)]
        if outputs[-1] is not None or len(frames) != sum(sizes):
            raise ValueError(f"not the output of a {n_stages}-stage CDVD_TSP: {len(outputs)} entries")
        starts = [sum(sizes[:stage]) for stage in range(n_stages)]
        return cls([frames[start : start + size] for start, size in zip(starts, sizes, strict=True)])

    @property
    def final(self) -> Tensor:
        """The last stage's output: the restored centre frame."""
        return self.stages[-1][0]

    @property
    def stage1_center(self) -> Tensor:
        """The first stage's output for the centre frame (the release's ``deblur_iter1``)."""
        first = self.stages[0]
        return first[len(first) // 2]

    def flat(self) -> list[Tensor]:
        """Every output, stage by stage (for T = 2 the release's recons_1, recons_2, recons_3, out)."""
        return [frame for stage in self.stages for frame in stage]

    def target_frames(self) -> list[int]:
        """The index in the input window of the frame each output of `flat` restores (T = 2: 1, 2, 3, 2)."""
        return [stage + 1 + index for stage, outputs in enumerate(self.stages) for index in range(len(outputs))]

    def targets(self, window: Tensor) -> list[Tensor]:
        """The frames of ``window`` [B, 2T+1, C, H, W] (the ground truth) that the outputs of `flat` restore."""
        return [window[:, frame] for frame in self.target_frames()]

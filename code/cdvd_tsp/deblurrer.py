"""`Deblurrer`: CDVD-TSP from Python, frames in and frames out, on the core that inference.py runs on.

    from cdvd_tsp import Deblurrer
    deblurrer = Deblurrer.from_checkpoint("DEMO")       # a preset, or the path of any checkpoint
    for restored in deblurrer.deblur(frames):           # H x W x 3 uint8 RGB arrays in, the same out, streaming
        ...

`Deblurrer.from_checkpoint` loads the model as the commands do (strict names and shapes, ``weights_only``, NaN and
inf refused, the recorded number of stages) with ``inference.py --input``'s defaults and options; each output of
`Deblurrer.deblur` is the same bytes as the PNG that ``inference.py --input`` writes for the same frames and
settings (the same `infer.restorer.Restorer` makes both). `Deblurrer.deblur_path` is ``--input``/``--output``
itself. Misuse raises `DeblurError` with one line naming the argument (docs/api.md).
"""

import argparse
import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from cdvd_tsp.infer.checks import check_size, frames_with_output
from cdvd_tsp.infer.execution import make_execution
from cdvd_tsp.infer.options import build_parser
from cdvd_tsp.infer.planning import PRESETS, plan_restoration
from cdvd_tsp.infer.restorer import Restorer
from cdvd_tsp.infer.run import run
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.paths import from_repo
from cdvd_tsp.utils.runtime import Ranks, pick_device


class DeblurError(UserError):
    """A misused `Deblurrer`: the argument named, what is wrong, in one line."""


FLAG = re.compile(r"--([a-z0-9_]+)\b")
"""A command-line flag in a message of the commands' checks, named as the API's argument instead."""
ARGUMENTS = {"model_path": "checkpoint", "border": "border_mode"}
"""The flags whose argument has another name here (the others have the flag's name)."""


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """The commands' `UserError`s as `DeblurError`s, their flags named as this API's arguments, without the
    traceback of where they were found."""
    try:
        yield
    except UserError as error:
        raise DeblurError(FLAG.sub(lambda match: ARGUMENTS.get(match[1], match[1]), str(error))) from None


def path_argument(name: str, value: object) -> str:
    """``value`` as a path's string; `DeblurError` naming the argument if it is neither a string nor a path."""
    if not isinstance(value, str | os.PathLike):
        raise DeblurError(f"{name} {value!r}: not a path (a string or a pathlib.Path)")
    return os.fspath(value)


def model_path(checkpoint: str | os.PathLike) -> Path:
    """A preset's released file under pretrain_models/ (as ``--default_data`` picks it), or the path given."""
    if isinstance(checkpoint, str) and checkpoint in PRESETS:
        return from_repo(PRESETS[checkpoint].model_path)
    return Path(path_argument("checkpoint", checkpoint)).expanduser().resolve()


def checked_value(name: str, value: object, action: argparse.Action) -> None:
    """What the command's parser would refuse of its flag's value, refused here too (the API passes it by)."""
    if action.choices is not None and value not in action.choices:
        raise DeblurError(f"{name} {value}: unknown; use one of {', '.join(map(str, action.choices))}")
    if action.nargs == 0 and not isinstance(value, bool):  # a switch (store_true, store_false)
        raise DeblurError(f"{name} {value!r}: give True or False")
    if action.type is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise DeblurError(f"{name} {value!r}: not a whole number")


def command_line(**given: object) -> argparse.Namespace:
    """inference.py's options with its defaults, but those ``given`` (None: the command's default), each checked
    as the command's parser checks its flag."""
    parser = build_parser()
    args = parser.parse_args([])
    actions = {action.dest: action for action in parser._actions}
    for name, value in given.items():
        if not hasattr(args, name):
            raise TypeError(f"unknown option {name}")
        if value is not None:
            checked_value(name, value, actions[name])
            setattr(args, name, value)
    return args


class Deblurrer:
    """A loaded CDVD-TSP model that restores videos given as frames (`deblur`) or on disk (`deblur_path`)."""

    def __init__(self, restorer: Restorer, options: dict[str, object]) -> None:
        self.restorer = restorer
        self.options = options
        """The command-line options this deblurrer was made with (for `deblur_path`)."""

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike = "DVD",
        device: str = "auto",
        precision: str | None = None,
        *,
        border_mode: str | None = "release",
        n_stages: int | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        self_ensemble: str | None = None,
        window: bool = False,
        release_step: bool = False,
        channels_last: str | None = None,
        batched_flows: str | None = None,
        flow_bf16: str | None = None,
        cuda_graphs: bool | None = None,
        compile: bool = False,
        backend: str = "pytorch",
    ) -> "Deblurrer":
        """Load ``checkpoint`` (a preset name, ``"DVD"``, ``"GOPRO"`` or ``"DEMO"``, or a checkpoint's path) as
        ``inference.py --input`` does, with its defaults: ``device`` ``"auto"``, ``"cpu"`` or ``"cuda"``;
        ``precision`` None for the command's default (bf16 on CPUs with native bfloat16, fp16 on CUDA, else
        fp32) or one of fp32, tf32, fp16, bf16; ``border_mode`` how the first and last T frames get their
        outputs (``"release"``, ``"replicate"``, ``"reflect"``; None: they get none); ``n_stages`` for a file that
        does not record its number of stages (the released ones: 2); ``tile``, ``tile_overlap`` and
        ``self_ensemble`` (``"x8"`` or ``"x16"``) as the flags of the same names; the speed options likewise;
        ``backend="onnxruntime"`` with the path of a step exported by ``export_model.py --format onnx``.
        Torch's threads are left as they are (``torch.set_num_threads``)."""
        options: dict[str, object] = {
            "device": device,
            "precision": precision,
            "border": border_mode is not None,
            "border_mode": border_mode,
            "n_stages": n_stages,
            "tile": tile,
            "tile_overlap": tile_overlap,
            "self_ensemble": self_ensemble,
            "window": window,
            "release_step": release_step,
            "channels_last": channels_last,
            "batched_flows": batched_flows,
            "flow_bf16": flow_bf16,
            "cuda_graphs": cuda_graphs,
            "compile": compile,
            "backend": backend,
        }
        with api_errors():
            path = model_path(checkpoint)
            args = command_line(**options)
            args.model_path = str(path)
            execution = make_execution(args, pick_device(device), evaluation=False)
            restoration = plan_restoration(args, path, border_default=True, crop=False)
            return cls(Restorer.load(restoration, execution), options)

    @property
    def device(self) -> torch.device:
        return self.restorer.execution.device

    @property
    def precision(self) -> str:
        return self.restorer.execution.precision.name

    @property
    def n_stages(self) -> int:
        return self.restorer.restoration.n_stages

    def deblur(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Restore a video: ``frames`` are H x W x 3 uint8 RGB arrays, all of one size, in order; yields each
        restored frame (H x W x 3 uint8) as soon as it is complete, in order. Only a few frames are held at a time
        (all of them with ``self_ensemble="x16"``, which runs the video backwards first). A frame of another size,
        dtype or shape, or no frame at all, raises `DeblurError`."""
        with api_errors():
            yield from self.restorer.restore(self._checked(frames))

    def _checked(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """``frames`` as they come, each checked (see `deblur`)."""
        if isinstance(frames, np.ndarray) and frames.ndim == 3:
            raise DeblurError("frames: one frame, not an iterable of frames; pass [frame] for a video of one")
        size: tuple[int, int] | None = None
        count = 0
        for count, frame in enumerate(frames, start=1):
            where = f"frames[{count - 1}]"
            if not isinstance(frame, np.ndarray):
                raise DeblurError(f"{where}: a {type(frame).__name__}, not a numpy array (H x W x 3 uint8 RGB)")
            if frame.dtype != np.uint8:
                raise DeblurError(f"{where}: dtype {frame.dtype}, not uint8 (H x W x 3 RGB, 0-255)")
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise DeblurError(f"{where}: shape {frame.shape}, not H x W x 3 (RGB)")
            if size is None:
                size = frame.shape[:2]
                check_size(where, size, crop=False, scored=False, crop_border=0)
            elif frame.shape[:2] != size:
                raise DeblurError(
                    f"{where}: {frame.shape[1]}x{frame.shape[0]}, but frames[0] is {size[1]}x{size[0]}; "
                    "every frame of a video must have one size"
                )
            yield frame
        if count == 0:
            raise DeblurError("frames: empty; give at least one H x W x 3 uint8 frame")
        restoration = self.restorer.restoration
        frames_with_output(count, restoration.border_mode, "frames", restoration.n_stages)  # too short a video

    def deblur_path(
        self,
        input: str | os.PathLike,
        output: str | os.PathLike,
        *,
        codec: str | None = None,
        quality: int | None = None,
    ) -> Path:
        """Deblur a folder of frames or a video file (``input``) into ``output`` (a folder of PNGs, or a video file
        for a video input: its sound, timestamps and rotation kept, coded with ``codec`` at ``quality`` as
        ``--codec``/``--quality`` say), as ``inference.py --input INPUT --output OUTPUT`` with this deblurrer's
        settings does: the same checks, the same files, committed as a whole; returns ``output``."""
        with api_errors():
            paths = {"input": path_argument("input", input), "output": path_argument("output", output)}
            args = command_line(**self.options, **paths, codec=codec, quality=quality)
            args.model_path = os.fspath(self.restorer.restoration.model_path)
            run(args, loaded=self.restorer, ranks=Ranks())
        return Path(output).expanduser().resolve()

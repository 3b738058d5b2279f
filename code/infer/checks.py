"""The checks of a run's plan, one job each: a setting picked or refused with a `UserError` naming the option or
the file (infer/planning.py calls them before anything is written)."""

from pathlib import Path

from cdvd_tsp.data.frames import BLUR_DIR, GT_DIR
from cdvd_tsp.model.checkpoint import read_checkpoint
from cdvd_tsp.model.streaming import RELEASE_BORDER, SIZE_MULTIPLE, frames_needed
from cdvd_tsp.model.tiling import DEFAULT_OVERLAP, Tiler
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.image import cropped_size
from cdvd_tsp.utils.manifest import read_manifest
from cdvd_tsp.utils.metrics import check_options, min_size

README_HINT = 'see README.md, section "Released weights and datasets"'
RELEASED_N_STAGES = 2
"""The released cascade (five frames): the number of stages of a checkpoint that does not record its own."""


def check_model_file(path: Path, hint: str = "") -> None:
    """The checkpoint must be a regular file; anything else is named for what it is (a folder, a device...). A
    missing one adds ``hint`` (what works without it) to the message."""
    if path.is_file():
        return
    if path.is_dir():
        checkpoints = sorted(entry.name for entry in path.glob("*.pt") if entry.is_file())
        holds = f" (it holds {shown_names(checkpoints)})" if checkpoints else ""
        raise UserError(f"--model_path {path}: is a folder, not a checkpoint file; give the .pt file itself{holds}")
    if path.exists():
        raise UserError(f"--model_path {path}: is not a regular file (a device, a pipe or a socket), not a checkpoint")
    raise UserError(
        f"model not found: {path}; put the released {path.name} there or pass --model_path "
        f"({README_HINT}, and pretrain_models/README.md){hint}"
    )


def check_dataset_folder(data_path: Path, hint: str = "") -> None:
    """The dataset must be a folder; a missing one says where the released test sets go (and ``hint``), a file what
    it is."""
    if data_path.is_dir():
        return
    if data_path.exists():
        raise UserError(
            f"--data_path {data_path}: is a file, not a dataset folder; give the folder that holds blur/<video>/ "
            "and gt/<video>/ (or GOPRO_Large, DVD or BSD as downloaded); a video file to deblur goes with --input"
        )
    raise UserError(
        f"dataset not found: {data_path}; put the test set there as blur/<video>/<frames> and gt/<video>/<frames> "
        f"or pass --data_path ({README_HINT}, and dataset/README.md){hint}"
    )


def shown_names(names: list[str], limit: int = 3) -> str:
    """Up to ``limit`` of ``names``, and how many more."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def pick_n_stages(path: Path, given: int | None) -> int:
    """The stages T of the model for the checkpoint ``path``: the number it records (files written by training),
    else ``--n_stages`` (``given``), else the released `RELEASED_N_STAGES`. A ``given`` number that contradicts
    the record is refused."""
    if given is not None and given < 1:
        raise UserError(f"--n_stages {given}: give 1 or more (the released model has {RELEASED_N_STAGES})")
    recorded = read_checkpoint(path)[1]
    if recorded is None:
        return RELEASED_N_STAGES if given is None else given
    stages = (recorded - 1) // 2
    if given is not None and given != stages:
        raise UserError(
            f"--n_stages {given}: {path} records n_sequence {recorded} (--n_stages {stages}); leave --n_stages out"
        )
    return stages


def pick_onnx_n_stages(path: Path, given: int | None) -> int:
    """The stages T an exported ONNX step records; a ``given`` ``--n_stages`` must agree."""
    from cdvd_tsp.model.onnx_step import read_n_stages

    recorded = read_n_stages(path)
    if given is not None and given != recorded:
        raise UserError(f"--n_stages {given}: {path} records {recorded} stages; leave --n_stages out")
    return recorded


def pick_border(given: bool | None, mode: str | None, default: bool) -> str | None:
    """The border padding (one of `BORDER_MODES`), or None without ``--border`` (``default`` when neither
    ``--border`` nor ``--no_border`` is given)."""
    border = default if given is None else given
    if not border:
        if mode is not None:
            raise UserError(f"--border_mode {mode}: pads the border frames, which this run leaves out; add --border")
        return None
    return mode or RELEASE_BORDER


def frames_with_output(count: int, border_mode: str | None, name: str, n_stages: int) -> list[int]:
    """Indices of the frames that get an output (every frame with a border); refuses videos too short for them."""
    needed = frames_needed(n_stages, border_mode)
    if count < needed:
        if border_mode is None:
            raise UserError(
                f"{name}: has {count} frame(s); without --border a video needs at least {needed} "
                f"({n_stages} stages; or pass --border to restore every frame)"
            )
        raise UserError(
            f"{name}: has {count} frame(s); --border_mode {border_mode} needs at least {needed} ({n_stages} stages)"
        )
    if border_mode is not None:
        return list(range(count))
    return list(range(n_stages, count - n_stages))


def check_size(name: str, size: tuple[int, int], crop: bool, scored: bool, crop_border: int) -> None:
    """Frames must be at least the metrics' smallest size (``min_size(crop_border)``, after the crop to multiples
    of 4) when scored, else 4 x 4. ``name`` is the video's folder or file, for the error."""
    height, width = size
    if crop:
        height, width = cropped_size(height, width, SIZE_MULTIPLE)
    smallest = min_size(crop_border) if scored else SIZE_MULTIPLE
    if min(height, width) >= smallest:
        return
    too_small = f"{name}: frames of {size[1]}x{size[0]} are too small; at least {smallest}x{smallest} needed"
    if not scored:
        raise UserError(f"{too_small} by the model")
    cropped = (
        f"; these are {width}x{height} once cropped to multiples of {SIZE_MULTIPLE}" if (height, width) != size else ""
    )
    raise UserError(
        f"{too_small} to be scored with --crop_border {crop_border} (the border left out on both sides and one SSIM "
        f"window{cropped})"
    )


def check_no_overwrite(inputs: list[Path], outputs: list[Path], option: str) -> None:
    """No output may replace an input file (``option`` picks where the outputs go)."""
    resolved = {path.resolve() for path in inputs}
    for path in outputs:
        if path.resolve() in resolved:
            raise UserError(f"{option}: the output {path} would overwrite an input frame; choose another {option}")


def check_not_input_folder(output: Path, input_folder: Path) -> None:
    """Frames are never written into the folder they are read from, whatever their format: the PNG outputs would be
    frames of every later run on that folder (beside JPEG inputs of the same names, which two frames may not share).
    A folder inside the input folder, or around it, is fine: frames are read from the folder itself only."""
    if output.resolve() == input_folder.resolve():
        raise UserError(
            f"--output {output}: is the input folder; its outputs would lie among the frames and be read as frames by "
            "every later run on it; choose another folder (one inside it will do)"
        )


INPUT_META = "input"
"""The key of the input (a resolved path) in the ``meta`` that each run records in its manifest."""


def check_default_place(output: Path, results_path: Path, input_path: Path, option: str) -> None:
    """A default output place (``option`` not given) holds the results of one input only: a run of another input
    is refused rather than replacing them, a run of the same input replaces its own. The input of the results in
    place is what their manifest's ``meta`` records (`INPUT_META`)."""
    manifest = read_manifest(results_path.parent, results_path.name)
    if manifest is None:
        return
    recorded = manifest.meta.get(INPUT_META)
    if recorded == str(input_path):
        return
    whose = f"the results of {recorded}" if isinstance(recorded, str) else "results whose input is not recorded"
    raise UserError(
        f"{output}: the default place of this run's results holds {whose}, and this run's input is {input_path}; "
        f"give {option} to put them elsewhere, or move the earlier results away"
    )


def check_folder_target(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path}: is a file, not a folder; the outputs go into a folder")


def check_not_in_dataset(result_path: Path, data_path: Path, layout: str) -> None:
    """Results inside the dataset's blur/ or gt/ (any other layout: inside the dataset) would be taken for videos
    by every later run."""
    if layout != "release":
        if result_path == data_path or data_path in result_path.parents:
            raise UserError(
                f"--result_path {result_path}: is inside the {layout} dataset {data_path}, where every later run "
                "would take it for a video; choose a folder outside it"
            )
        return
    for name in (BLUR_DIR, GT_DIR):
        folder = (data_path / name).resolve()
        if result_path == folder or folder in result_path.parents:
            raise UserError(
                f"--result_path {result_path}: is inside the dataset's {name}/ folder, where every later run would "
                f"take it for a video; choose a folder outside {folder}"
            )


def check_metrics(channel: str, crop_border: int) -> None:
    try:
        check_options(channel, crop_border)
    except ValueError:
        raise UserError(f"--crop_border {crop_border}: give a whole number of pixels, 0 or more") from None


def pick_tiles(tile: int | None, overlap: int | None) -> int | None:
    """``--tile_overlap`` (its default with ``--tile``, None without), after checking ``--tile`` and it: what
    `model.tiling.Tiler` accepts, refused in one line otherwise."""
    if tile is None:
        if overlap is not None:
            raise UserError("--tile_overlap goes with --tile; give --tile too or leave it out")
        return None
    if tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE:
        raise UserError(f"--tile {tile}: give a positive multiple of {SIZE_MULTIPLE} (e.g. 256)")
    if overlap is None:
        if tile <= DEFAULT_OVERLAP:
            raise UserError(
                f"--tile {tile}: not larger than the tiles' default overlap, {DEFAULT_OVERLAP} pixels; give a larger "
                f"--tile, or --tile_overlap below {tile} (a multiple of {SIZE_MULTIPLE})"
            )
        overlap = DEFAULT_OVERLAP
    if overlap < 0 or overlap % SIZE_MULTIPLE or overlap >= tile:
        raise UserError(
            f"--tile_overlap {overlap}: give a multiple of {SIZE_MULTIPLE} from 0 to less than --tile {tile}"
        )
    Tiler(tile, overlap)  # the same rules; a change there should not go unnoticed here
    return overlap

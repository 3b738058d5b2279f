"""The videos of a dataset folder in the layouts the field downloads, found by name or detected.

A caller (``inference.py --layout NAME``) uses one function::

    videos = find_videos(data_path, layout=args.layout)          # "auto" (default), "release", "gopro", "dvd", "bsd"
    videos = find_videos(root, "gopro", split="test", gopro_blur="blur_gamma")
    for video in videos: ...                                      # data.frames.VideoFrames: name, blur, gt

and gets what `data.frames.scan_dataset` gives for the release's layout: `VideoFrames` (name, blurred frame paths,
sharp frame paths or None), videos in natural order of their names, frames in natural order, every sharp frame
paired with the blurred frame of its name without the extension (`data.frames.pair_by_name`; in every layout the
downloads name both alike, GOPRO and BSD as PNG, DVD as JPEG, but a copy whose sharp frames were re-saved as PNG
still pairs). The layouts:

* ``release``: the release's reorganised form, ``<root>/blur/<video>/*`` and ``<root>/gt/<video>/*`` (optional);
  read by `scan_dataset` itself, so behaviour and order are those of the inference command today.
* ``gopro``: GOPRO_Large as downloaded, ``<split>/<sequence>/{blur,blur_gamma,sharp}/*.png``; ``root`` is
  GOPRO_Large (then ``split`` picks the split, ``test`` by default) or a split folder. ``gopro_blur`` picks
  ``blur`` (the default, what CDVD-TSP and most peers evaluate) or ``blur_gamma``.
* ``dvd``: DVD (Su et al. 2017) as downloaded, ``quantitative_datasets/<video>/{input,GT}/*.jpg``; ``root`` is the
  folder holding ``quantitative_datasets`` or that folder itself. All its videos are listed: the field's test
  split is a list of names, which the caller passes as ``only``.
* ``bsd``: BSD (Zhong et al. 2020), ``<split>/<sequence>/{Blur,Sharp}/RGB/*.png``; ``root`` holds the splits
  (``split`` picks, ``test`` by default) or is a split folder.

With several splits (``split=("train", "test")``) every name is ``<split>_<sequence>``, so names stay unique (BSD
numbers its sequences from 000 in each split); a single split keeps the sequence names. Detection looks at the
folder's first two levels only; a folder that fits no layout or more than one is a `UserError` of one line saying
what was expected, as are missing frames and a blurred or sharp frame without its pair.
"""

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cdvd_tsp.data.frames import (
    BLUR_DIR,
    VideoFrames,
    list_frames,
    natural_key,
    pair_by_name,
    reset_warnings,
    scan_dataset,
)
from cdvd_tsp.utils.errors import UserError

logger = logging.getLogger(__name__)

LAYOUTS = ("release", "gopro", "dvd", "bsd")
AUTO = "auto"
DEFAULT_SPLIT = "test"
GOPRO_BLURS = ("blur", "blur_gamma")
GOPRO_SHARP = "sharp"
DVD_FOLDER = "quantitative_datasets"
DVD_BLUR, DVD_SHARP = "input", "GT"
BSD_BLUR, BSD_SHARP, BSD_RGB = "Blur", "Sharp", "RGB"

EXPECTED = {
    "release": "blur/<video>/<frames> (and gt/<video>/<frames>)",
    "gopro": "[<split>/]<sequence>/blur|blur_gamma|sharp/<frames> (GOPRO_Large)",
    "dvd": "[quantitative_datasets/]<video>/input|GT/<frames> (DVD)",
    "bsd": "[<split>/]<sequence>/Blur/RGB|Sharp/RGB/<frames> (BSD)",
}


def _subdirs(folder: Path) -> list[Path]:
    """Visible subfolders of ``folder`` in natural order (none if it is not a readable folder)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted((path for path in entries if path.is_dir() and not path.name.startswith(".")), key=_name_key)


def _name_key(path: Path) -> list[int | str]:
    return natural_key(path.name)


def _is_gopro_sequence(folder: Path) -> bool:
    return (folder / GOPRO_SHARP).is_dir() and any((folder / blur).is_dir() for blur in GOPRO_BLURS)


def _is_dvd_video(folder: Path) -> bool:
    return (folder / DVD_BLUR).is_dir() and (folder / DVD_SHARP).is_dir()


def _is_bsd_sequence(folder: Path) -> bool:
    return (folder / BSD_BLUR / BSD_RGB).is_dir() and (folder / BSD_SHARP / BSD_RGB).is_dir()


SEQUENCE_TESTS: dict[str, Callable[[Path], bool]] = {
    "gopro": _is_gopro_sequence,
    "dvd": _is_dvd_video,
    "bsd": _is_bsd_sequence,
}


def _holds(folder: Path, is_sequence: Callable[[Path], bool]) -> bool:
    """Whether some subfolder of ``folder`` is a sequence of a layout."""
    return any(is_sequence(sub) for sub in _subdirs(folder))


def _split_folders(root: Path, is_sequence: Callable[[Path], bool]) -> dict[str, Path] | None:
    """The splits of ``root`` when ``root`` holds splits of sequences, or None when it holds sequences itself."""
    if _holds(root, is_sequence):
        return None
    return {sub.name: sub for sub in _subdirs(root) if _holds(sub, is_sequence)}


def _fits(root: Path, layout: str) -> bool:
    if layout == "release":
        return (root / BLUR_DIR).is_dir()
    if layout == "dvd":
        return _holds(root, _is_dvd_video) or _holds(root / DVD_FOLDER, _is_dvd_video)
    is_sequence = SEQUENCE_TESTS[layout]
    return _holds(root, is_sequence) or any(_holds(sub, is_sequence) for sub in _subdirs(root))


def detect_layout(root: Path) -> str:
    """The one layout ``root`` fits; a `UserError` if it fits none or several."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    found = [layout for layout in LAYOUTS if _fits(root, layout)]
    if not found:
        expected = "; ".join(f"{name}: {form}" for name, form in EXPECTED.items())
        raise UserError(f"{root}: not a dataset folder of a known layout; expected one of {expected}")
    if len(found) > 1:
        raise UserError(f"{root}: fits several layouts ({', '.join(found)}); choose one with --layout")
    logger.info("%s: detected the %s layout", root, found[0])
    return found[0]


@dataclass(frozen=True)
class _Sequence:
    name: str
    folder: Path
    blur: Path
    sharp: Path


def _pick_splits(
    root: Path, splits: dict[str, Path] | None, split: str | Sequence[str] | None, layout: str
) -> list[tuple[str, Path]]:
    """(split name, folder) pairs to read: ``root`` itself when it holds sequences."""
    if splits is None:
        if split is not None and split != root.name and list(split) != [root.name]:
            raise UserError(
                f"{root}: holds the {layout} sequences of one split ('{root.name}'), so the split {split!r} cannot be "
                "chosen here; pass the folder that holds the splits"
            )
        return [(root.name, root)]
    wanted = [DEFAULT_SPLIT] if split is None else [split] if isinstance(split, str) else list(split)
    if not wanted:
        raise UserError(f"{root}: no split chosen; its splits are {', '.join(splits)}")
    missing = [name for name in wanted if name not in splits]
    if missing:
        raise UserError(
            f"{root}: no split {', '.join(missing)} of {layout} sequences; found {', '.join(splits) or 'none'}"
        )
    return [(name, splits[name]) for name in wanted]


def _sequences(root: Path, layout: str, split: str | Sequence[str] | None, gopro_blur: str) -> list[_Sequence]:
    if layout == "dvd":
        folder = root / DVD_FOLDER if not _holds(root, _is_dvd_video) else root
        return [
            _Sequence(sub.name, sub, sub / DVD_BLUR, sub / DVD_SHARP) for sub in _subdirs(folder) if _is_dvd_video(sub)
        ]
    is_sequence = SEQUENCE_TESTS[layout]
    chosen = _pick_splits(root, _split_folders(root, is_sequence), split, layout)
    qualify = len(chosen) > 1
    sequences = []
    for split_name, folder in chosen:
        for sub in _subdirs(folder):
            if not is_sequence(sub):
                continue
            name = f"{split_name}_{sub.name}" if qualify else sub.name
            if layout == "gopro":
                sequences.append(_Sequence(name, sub, sub / gopro_blur, sub / GOPRO_SHARP))
            else:
                sequences.append(_Sequence(name, sub, sub / BSD_BLUR / BSD_RGB, sub / BSD_SHARP / BSD_RGB))
    return sequences


def _frames(sequence: _Sequence, layout: str) -> VideoFrames:
    for folder in (sequence.blur, sequence.sharp):
        if not folder.is_dir():
            raise UserError(f"{sequence.folder}: no '{folder.name}' folder; a {layout} sequence has {EXPECTED[layout]}")
    blur = list_frames(sequence.blur)
    if not blur:
        raise UserError(f"{sequence.blur}: video '{sequence.name}' has no frames (PNG, JPEG, BMP or TIFF)")
    return VideoFrames(
        sequence.name, blur, pair_by_name(sequence.name, blur, list_frames(sequence.sharp), sequence.folder)
    )


def find_videos(
    root: Path,
    layout: str = AUTO,
    split: str | Sequence[str] | None = None,
    gopro_blur: str = "blur",
    only: Collection[str] | None = None,
) -> list[VideoFrames]:
    """The videos of the dataset at ``root`` in ``layout`` (or the detected one).

    ``split``: for layouts with splits (gopro, bsd) when ``root`` holds them: a name or several (default ``test``).
    ``gopro_blur``: ``blur`` or ``blur_gamma``. ``only``: keep just these video names (all must exist), e.g. the
    DVD test list. The release layout is `scan_dataset`'s (its ``gt/`` is optional; the others need sharp frames).
    Starts a run's frame warnings afresh (`data.frames.reset_warnings`): this is where a run opens its data set.
    """
    reset_warnings()
    root = Path(root)
    if layout != AUTO and layout not in LAYOUTS:
        raise UserError(f"--layout {layout}: unknown; choose {AUTO} or one of {', '.join(LAYOUTS)}")
    if gopro_blur not in GOPRO_BLURS:
        raise UserError(f"GOPRO blur '{gopro_blur}': unknown; choose {' or '.join(GOPRO_BLURS)}")
    if layout == AUTO:
        layout = detect_layout(root)
    elif not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if layout == "release":
        if split is not None:
            raise UserError(f"{root}: the release layout has no splits; leave the split out")
        videos = scan_dataset(root)
    else:
        if not _fits(root, layout):
            raise UserError(f"{root}: not a {layout} dataset folder; expected {EXPECTED[layout]}")
        if layout == "dvd" and split is not None:
            raise UserError(f"{root}: the DVD layout has no splits; choose videos by name instead")
        videos = [_frames(sequence, layout) for sequence in _sequences(root, layout, split, gopro_blur)]
    names = [video.name for video in videos]
    repeated = sorted({name for name in names if names.count(name) > 1}, key=natural_key)
    if repeated:
        raise UserError(f"{root}: video names occur more than once: {', '.join(repeated)}")
    if only is not None:
        unknown = sorted(set(only) - set(names), key=natural_key)
        if unknown:
            raise UserError(f"{root}: no video named {', '.join(unknown)} in the {layout} layout")
        videos = [video for video in videos if video.name in set(only)]
    return videos

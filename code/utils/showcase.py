"""Pictures that show a result: side-by-side panels (blurred | deblurred | sharp) and short animations."""

from collections.abc import Sequence
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np

GAP = 4
LABEL_HEIGHT = 18


def labelled(image: np.ndarray, label: str) -> np.ndarray:
    """``image`` with a white strip on top holding ``label``."""
    strip = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, label, (4, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, image], axis=0)


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Equal-height uint8 RGB images in a row, each under its label, separated by white gaps."""
    if len(panels) != len(labels):
        raise ValueError("one label per panel")
    columns = [labelled(panel, label) for panel, label in zip(panels, labels, strict=True)]
    gap = np.full((columns[0].shape[0], GAP, 3), 255, np.uint8)
    row = [columns[0]]
    for column in columns[1:]:
        row += [gap, column]
    return np.concatenate(row, axis=1)


def write_animation(path: Path, frames: Sequence[np.ndarray], fps: float = 4.0) -> None:
    """Write uint8 RGB frames as a looping GIF."""
    iio.imwrite(path, np.stack(frames), plugin="pillow", duration=1000.0 / fps, loop=0)


class ShowcaseWriter:
    """Collects side-by-side panels per video; writes the middle frame's panel as PNG and the panels as a GIF."""

    def __init__(self, folder: Path, max_frames: int = 30, fps: float = 4.0) -> None:
        self.folder = Path(folder)
        self.max_frames = max_frames
        self.fps = fps
        self.panels: list[tuple[str, np.ndarray]] = []

    def add(self, frame_name: str, blurred: np.ndarray, deblurred: np.ndarray, sharp: np.ndarray | None) -> None:
        """One frame's panel; only the first ``max_frames`` of a video are kept."""
        if len(self.panels) >= self.max_frames:
            return
        images, labels = [blurred, deblurred], ["blurred", "deblurred"]
        if sharp is not None:
            images.append(sharp)
            labels.append("sharp")
        self.panels.append((frame_name, side_by_side(images, labels)))

    @staticmethod
    def file_names(video: str, frame_names: Sequence[str], max_frames: int = 30) -> list[str]:
        """The names `finish_video` writes for a video whose frames ``frame_names`` are added, in order."""
        kept = frame_names[:max_frames]
        return [f"{video}_{kept[len(kept) // 2]}.png", f"{video}.gif"] if kept else []

    def finish_video(self, video: str) -> list[Path]:
        """Write ``<video>_<middle frame>.png`` and ``<video>.gif``; returns the files written."""
        if not self.panels:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        still_name, animation_name = self.file_names(video, [name for name, _ in self.panels], self.max_frames)
        middle_panel = self.panels[len(self.panels) // 2][1]
        still = self.folder / still_name
        animation = self.folder / animation_name
        iio.imwrite(still, middle_panel)
        write_animation(animation, [panel for _, panel in self.panels], self.fps)
        self.panels = []
        return [still, animation]

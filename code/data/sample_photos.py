"""Sample photos that ship inside installed packages (scikit-image, matplotlib): the embedded data source.

Nothing is downloaded. The photos are split once, by name, into a training set and a held-out set, so the demo is
measured on scenes the demo model never saw. `load_photo` reads one ('package:file name') or a photo file (a path).
"""

from pathlib import Path

import numpy as np

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.utils.errors import UserError

TRAIN_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:camera.png",
    "skimage:rocket.jpg",
    "skimage:motorcycle_left.png",
    "skimage:motorcycle_right.png",
    "skimage:hubble_deep_field.jpg",
    "skimage:ihc.png",
    "skimage:retina.jpg",
    "skimage:moon.png",
    "skimage:brick.png",
    "skimage:grass.png",
    "skimage:gravel.png",
    "skimage:coins.png",
    "skimage:cell.png",
    "skimage:page.png",
    "skimage:text.png",
)
"""Photos the demo model trains on."""

HELD_OUT_PHOTOS = ("skimage:chelsea.png", "skimage:coffee.png", "matplotlib:grace_hopper.jpg")
"""Photos kept out of training: the demo set is made from these."""


def package_photo_dir(package: str) -> Path:
    """Folder of sample photos installed with ``package`` ('skimage' or 'matplotlib')."""
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    raise UserError(f"unknown photo package '{package}' (expected skimage or matplotlib)")


def photo_path(reference: str) -> Path:
    """Path of a photo given as a file path, or as 'package:file name' when no such file exists."""
    if Path(reference).is_file():
        return Path(reference)
    package, _, name = reference.partition(":")
    path = package_photo_dir(package) / name
    if not path.is_file():
        raise UserError(f"sample photo {reference} is not installed (looked for {path})")
    return path


def load_photo(reference: str) -> np.ndarray:
    """A photo (a file path or 'package:file name', `photo_path`) as H x W x 3 uint8 RGB."""
    return read_rgb(photo_path(reference))

"""What a model does to real footage, measured without a sharp reference: halos, texture, edges.

    python bench/bench_real_footage.py bikes.mp4                      # the demo model on its first 20 frames
    python bench/bench_real_footage.py clip.mp4 --frames 20 --default_data DVD --picture crops.png

Real footage has no sharp frame to score against, so three no-reference measures compare each output frame with
its input frame (grey levels 0-255, on the luma):

- **halo**: the share of pixels whose value lies more than 10 grey levels outside the range the input had within
  2 pixels of it (the 5 x 5 neighbourhood). Deblurring steepens an edge within that range; a bright or dark band
  beside an edge (ringing, a halo, a ghost edge) leaves it. The input scores 0 by definition; a faithful deblurring
  of a mildly blurred frame stays near 0.
- **texture**: the high-frequency energy (variance of the Laplacian) of the output over the input's, in the flat-ish
  textured areas (input gradient below its 60th percentile, 3 pixels or more away from any steeper part). Below 1:
  texture smoothed away; above 1: fine-scale detail added, recovered texture or artefacts (blotches, noise): the
  number does not tell which, the picture does.
- **edges**: the mean gradient magnitude of the output over the input's on the input's strongest edges (top 5 %).
  Above 1: edges made steeper (sharper); below 1: softened.

No harm would be: no new halos (halo near the input's 0), texture near 1 (neither smoothed nor blotched), edges
not below 1. The frames are read from a video file or a folder of frames; the model runs through the Python API.
Prints one line per frame and the means, and writes ``--picture`` (input | output crops of the middle frame, 2x).
Nothing is asserted; the machine is named.
"""

import argparse
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))

from cdvd_tsp import Deblurrer
from cdvd_tsp.data.video_io import open_input

HALO_LEVELS = 10.0
"""How far outside the input's local range a value must be to count as a halo (grey levels)."""
NEIGHBOURHOOD = 5


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, float64, 0-255."""
    red, green, blue = (rgb[..., channel].astype(np.float64) for channel in range(3))
    return 0.299 * red + 0.587 * green + 0.114 * blue


def halo_share(before: np.ndarray, after: np.ndarray) -> float:
    """The share of pixels of ``after`` more than `HALO_LEVELS` outside ``before``'s 5 x 5 local range."""
    kernel = np.ones((NEIGHBOURHOOD, NEIGHBOURHOOD), np.uint8)
    low, high = cv2.erode(before, kernel), cv2.dilate(before, kernel)
    outside = np.maximum(after - high, low - after)
    return float(np.mean(outside > HALO_LEVELS))


def texture_ratio(before: np.ndarray, after: np.ndarray) -> float:
    """Laplacian energy of ``after`` over ``before``'s in the input's textured, edge-free areas."""
    gradient = np.hypot(cv2.Sobel(before, cv2.CV_64F, 1, 0), cv2.Sobel(before, cv2.CV_64F, 0, 1))
    flat = cv2.erode((gradient < np.percentile(gradient, 60)).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    energy = [np.var(cv2.Laplacian(image, cv2.CV_64F)[flat]) for image in (before, after)]
    return float(energy[1] / max(energy[0], 1e-12))


def edge_ratio(before: np.ndarray, after: np.ndarray) -> float:
    """Mean gradient magnitude of ``after`` over ``before``'s on ``before``'s strongest 5 % of edges."""
    gradients = [
        np.hypot(cv2.Sobel(image, cv2.CV_64F, 1, 0), cv2.Sobel(image, cv2.CV_64F, 0, 1)) for image in (before, after)
    ]
    edges = gradients[0] >= np.percentile(gradients[0], 95)
    return float(gradients[1][edges].mean() / max(gradients[0][edges].mean(), 1e-12))


def measures(before_rgb: np.ndarray, after_rgb: np.ndarray) -> tuple[float, float, float]:
    before, after = luma(before_rgb), luma(after_rgb)
    return halo_share(before, after), texture_ratio(before, after), edge_ratio(before, after)


def machine() -> str:
    with open("/proc/cpuinfo") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    return f"{names[0] if names else platform.processor()}, {len(names)} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a video file or a folder of frames")
    parser.add_argument("--frames", type=int, default=20, help="how many of its first frames (default 20)")
    parser.add_argument("--default_data", default="DEMO", help="the model: DEMO (default), DVD, GOPRO or a path")
    parser.add_argument("--picture", help="write input | output crops of the middle frame here (PNG)")
    args = parser.parse_args()

    source = open_input(Path(args.input))
    inputs = [frame for _, frame in zip(range(args.frames), source.frames(), strict=False)]
    deblurrer = Deblurrer.from_checkpoint(args.default_data)
    outputs = list(deblurrer.deblur(inputs))
    print(
        f"machine: {machine()}; model {args.default_data}; {len(inputs)} frames of {args.input}, "
        f"{source.size[1]}x{source.size[0]}"
    )
    rows = [measures(before, after) for before, after in zip(inputs, outputs, strict=True)]
    for index, (halo, texture, edges) in enumerate(rows):
        print(f"frame {index:3d}: halo {100 * halo:6.3f} %  texture {texture:5.3f}  edges {edges:5.3f}")
    halo, texture, edges = np.mean(rows, axis=0)
    print(f"mean     : halo {100 * halo:6.3f} %  texture {texture:5.3f}  edges {edges:5.3f}")
    print("no harm would be: halo near 0 %, texture near 1, edges not below 1")
    if args.picture:
        middle = len(inputs) // 2
        height, width = source.size
        top, left = height // 4, width // 4
        crops = [
            image[top : top + height // 2, left : left + width // 2] for image in (inputs[middle], outputs[middle])
        ]
        picture = np.hstack([cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for crop in crops])
        cv2.imwrite(args.picture, picture[..., ::-1])
        print(f"picture: {args.picture} (frame {middle}: input | output, 2x)")


if __name__ == "__main__":
    main()

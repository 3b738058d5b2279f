"""The embedded demo end to end on a tiny set: `inference.py --default_data DEMO` makes its data on first use,
deblurs every frame, scores input and output, and writes side-by-side pictures and animations."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from cdvd_tsp import inference
from cdvd_tsp.data import demo
from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.infer import planning
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.metrics import psnr, ssim
from cdvd_tsp.utils.showcase import GAP, LABEL_HEIGHT
from conftest import save_seeded_weights

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The DEMO preset on a temporary repository root, with a 2-photo, 5-frame, 32x40 test split."""
    monkeypatch.setattr(demo, "from_repo", lambda path: tmp_path / path)
    monkeypatch.setattr(planning, "from_repo", lambda path: tmp_path / path)
    split = demo.SPLITS["test"]
    monkeypatch.setitem(demo.SPLITS, "test", demo.DemoSplit(split.photos[:2], 1, 5, (32, 40), split.seed))
    (tmp_path / "pretrain_models").mkdir()
    save_seeded_weights(tmp_path / "pretrain_models" / "CDVD_TSP_DEMO.pt")
    return tmp_path


def test_demo_run_makes_its_data_and_shows_the_result(tiny_demo: Path) -> None:
    assert inference.main(["--default_data", "DEMO", "--device", "cpu"]) == 0
    videos = ["chelsea_00", "coffee_00"]
    assert sorted(path.name for path in (tiny_demo / "dataset" / "DEMO" / "test" / "blur").iterdir()) == videos
    results_dir = tiny_demo / "infer_results" / "DEMO"
    report = json.loads((results_dir / "results.json").read_text())
    assert report["frames"] == 10  # --border is the DEMO default: every frame of both videos
    data = tiny_demo / "dataset" / "DEMO" / "test"
    names = [f"{index:05d}" for index in range(5)]
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "input_psnr": [], "input_ssim": []}
    for video in videos:
        assert sorted(path.stem for path in (results_dir / video).glob("*.png")) == names
        assert sorted(report["videos"][video]["frames"]) == names
        for name in names:
            # every score in the report is the protocol's metric of the files on disk
            output, blurred, sharp = (
                read_rgb(folder / f"{name}.png")
                for folder in (results_dir / video, data / "blur" / video, data / "gt" / video)
            )
            frame = report["videos"][video]["frames"][name]
            expected = {
                "psnr": psnr(output, sharp),
                "ssim": ssim(output, sharp),
                "input_psnr": psnr(blurred, sharp),
                "input_ssim": ssim(blurred, sharp),
            }
            for key, value in expected.items():
                assert frame[key] == pytest.approx(value, rel=1e-9, abs=1e-12)
                scores[key].append(value)
        still = iio.imread(results_dir / "showcase" / f"{video}_00002.png")
        assert still.shape == (LABEL_HEIGHT + 32, 3 * 40 + 2 * GAP, 3)  # blurred | deblurred | sharp, under labels
        for column, folder in enumerate((data / "blur" / video, results_dir / video, data / "gt" / video)):
            left = column * (40 + GAP)
            assert np.array_equal(still[LABEL_HEIGHT:, left : left + 40], read_rgb(folder / "00002.png"))
        animation = iio.imread(results_dir / "showcase" / f"{video}.gif", index=None)
        assert animation.shape[:3] == (5, *still.shape[:2])
    for key, values in scores.items():  # the total is the mean over all frames
        assert report[key] == pytest.approx(float(np.mean(values)), rel=1e-9)


def test_demo_data_is_reused_and_showcase_can_be_turned_off(tiny_demo: Path) -> None:
    assert inference.main(["--default_data", "DEMO", "--device", "cpu", "--no_showcase", "--no_border"]) == 0
    first = (tiny_demo / "dataset" / "DEMO" / "test" / "blur" / "chelsea_00" / "00000.png").stat().st_mtime_ns
    results_dir = tiny_demo / "infer_results" / "DEMO"
    assert not (results_dir / "showcase").exists()
    assert json.loads((results_dir / "results.json").read_text())["frames"] == 2  # the center frame of each video
    assert inference.main(["--default_data", "DEMO", "--device", "cpu", "--no_showcase"]) == 0
    assert (tiny_demo / "dataset" / "DEMO" / "test" / "blur" / "chelsea_00" / "00000.png").stat().st_mtime_ns == first


def test_showcase_is_refused_without_ground_truth(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--showcase goes with a dataset"):
        inference.main(["--input", str(tmp_path), "--showcase"])

"""inference.py's evaluation settings end to end on tiny data: dataset layouts, self-ensemble, tiles, metrics."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cdvd_tsp.data.frames import read_rgb
from cdvd_tsp.infer.restorer import load_model
from cdvd_tsp.inference import main
from cdvd_tsp.model.streaming import StreamingRunner, WindowRunner, with_border
from cdvd_tsp.model.tiling import TiledRunner
from cdvd_tsp.utils.errors import UserError
from cdvd_tsp.utils.image import to_tensor, to_uint8
from cdvd_tsp.utils.metrics import min_size, psnr, ssim
from conftest import ensemble_video, make_bsd, make_dataset, make_dvd, make_gopro, run_frames, save_seeded_weights

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = (22, 26)
"""Frames of the layout mirrors: cropped to 20 x 24 by the protocol, enough for the metrics' 19 x 19."""


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_seeded_weights(tmp_path_factory.mktemp("weights") / "model.pt", seed=7)


def evaluate(data: Path, weights: Path, result: Path, *flags: str) -> dict:
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(result), "--device", "cpu"]
    assert main([*argv, "--workers", "0", *flags]) == 0
    return json.loads((result / "results.json").read_text())


def only_log(folder: Path) -> list[str]:
    (log,) = folder.glob("inference_log_*.txt")
    return log.read_text().splitlines()


def mirror(kind: str, root: Path) -> Path:
    if kind == "release":
        return make_dataset(root / "DVD" / "test", {"clip": 3}, height=SIZE[0], width=SIZE[1])
    if kind == "gopro":
        return make_gopro(root / "GOPRO_Large", {"train": {"GOPR0372_07_00": 3}, "test": {"GOPR0384_11_00": 3}}, SIZE)
    if kind == "dvd":
        return make_dvd(root / "DeepVideoDeblurring_Dataset", {"IMG_0003": 3}, SIZE)
    return make_bsd(root / "BSD_2ms16ms", {"test": {"000": 3}}, SIZE)


VIDEO = {"release": "clip", "gopro": "GOPR0384_11_00", "dvd": "IMG_0003", "bsd": "000"}
SHARP = {
    "release": "gt/clip",
    "gopro": "test/GOPR0384_11_00/sharp",
    "dvd": "quantitative_datasets/IMG_0003/GT",
    "bsd": "test/000/Sharp/RGB",
}


@pytest.mark.parametrize("layout", ["release", "gopro", "dvd", "bsd"])
@pytest.mark.parametrize("how", ["detected", "given"])
def test_every_layout_is_evaluated(tmp_path: Path, weights: Path, layout: str, how: str) -> None:
    data = mirror(layout, tmp_path)
    flags = ["--border"] + (["--layout", layout] if how == "given" else [])
    report = evaluate(data, weights, tmp_path / "result", *flags)
    video = VIDEO[layout]
    assert list(report["videos"]) == [video] and report["frames"] == 3
    assert report["settings"]["layout"] == layout
    sharp_paths = sorted((data / SHARP[layout]).iterdir())
    frames = list(report["videos"][video]["frames"])
    assert frames == [path.stem for path in sharp_paths]
    for frame, sharp_path in zip(frames, sharp_paths, strict=True):
        output = read_rgb(tmp_path / "result" / video / f"{frame}.png")
        sharp = read_rgb(sharp_path)[:20, :24]
        assert report["videos"][video]["frames"][frame]["psnr"] == pytest.approx(psnr(output, sharp), rel=1e-12)
    assert f"+ layout: {layout}" in only_log(tmp_path / "result")


def test_gopro_blur_and_split_are_chosen_by_flags(tmp_path: Path, weights: Path) -> None:
    data = mirror("gopro", tmp_path)
    plain = evaluate(data, weights, tmp_path / "blur", "--border")
    gamma = evaluate(data, weights, tmp_path / "gamma", "--border", "--gopro_blur", "blur_gamma")
    # the mirror's blur frames are 20 grey levels from the sharp ones, blur_gamma 10
    assert gamma["input_psnr"] == pytest.approx(20 * np.log10(255 / 10), rel=1e-9)
    assert plain["input_psnr"] == pytest.approx(20 * np.log10(255 / 20), rel=1e-9)
    assert (plain["settings"]["gopro_blur"], gamma["settings"]["gopro_blur"]) == ("blur", "blur_gamma")
    train = evaluate(data, weights, tmp_path / "train", "--border", "--split", "train")
    assert list(train["videos"]) == ["GOPR0372_07_00"] and train["settings"]["split"] == "train"


def test_videos_keeps_only_the_named_ones(tmp_path: Path, weights: Path) -> None:
    data = make_dvd(tmp_path / "DVD", {"IMG_0003": 3, "IMG_0021": 3, "IMG_0030": 3}, SIZE)
    report = evaluate(data, weights, tmp_path / "result", "--border", "--videos", "IMG_0030,IMG_0003")
    assert list(report["videos"]) == ["IMG_0003", "IMG_0030"]
    assert report["settings"]["videos"] == ["IMG_0030", "IMG_0003"]


@pytest.mark.parametrize(
    ("build", "flags", "message"),
    [
        ("ambiguous", [], r"fits several layouts \(release, bsd\); choose one with --layout$"),
        ("unknown", [], "not a dataset folder of a known layout; expected one of release: blur/"),
        ("dvd", ["--layout", "gopro"], "not a gopro dataset folder; expected"),
        ("dvd", ["--gopro_blur", "blur_gamma"], "--gopro_blur goes with the gopro layout"),
        ("dvd", ["--split", "test"], "the DVD layout has no splits"),
        ("gopro", ["--split", "valid"], "no split valid of gopro sequences"),
        ("gopro", ["--videos", "GOPR9999"], "no video named GOPR9999"),
    ],
)
def test_a_dataset_that_cannot_be_read_is_refused_in_one_line(
    tmp_path: Path, weights: Path, build: str, flags: list[str], message: str
) -> None:
    if build == "ambiguous":
        data = make_bsd(tmp_path / "mixed", {"test": {"000": 3}}, SIZE)
        make_dataset(data, {"clip": 3}, height=SIZE[0], width=SIZE[1])
    elif build == "unknown":
        data = tmp_path / "photos"
        (data / "holiday").mkdir(parents=True)
    else:
        data = mirror(build, tmp_path)
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(tmp_path / "result")]
    with pytest.raises(UserError, match=message) as error:
        main([*argv, "--device", "cpu", *flags])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "result").exists()


def test_result_inside_a_downloaded_dataset_is_refused(tmp_path: Path, weights: Path) -> None:
    data = mirror("gopro", tmp_path)
    with pytest.raises(UserError, match="is inside the gopro dataset"):
        main(["--data_path", str(data), "--model_path", str(weights), "--result_path", str(data / "out")])


def test_dataset_flags_are_refused_with_input(tmp_path: Path, weights: Path) -> None:
    folder = make_dataset(tmp_path / "data", {"clip": 3}, height=SIZE[0], width=SIZE[1]) / "blur" / "clip"
    with pytest.raises(UserError, match=r"^--layout goes with a dataset"):
        main(["--input", str(folder), "--model_path", str(weights), "--device", "cpu", "--layout", "gopro"])


def library_outputs(weights: Path, data: Path, video: str, runner: str = "streaming", **ensemble: object) -> list:
    """What the library gives for every frame of ``video`` (border-padded): plain, ensembled or tiled."""
    model = load_model(weights, torch.device("cpu"))
    frames = [to_tensor(read_rgb(path)[:20, :24]) for path in sorted((data / "blur" / video).iterdir())]
    with torch.inference_mode():
        if runner == "ensemble":
            return [to_uint8(image) for image in ensemble_video(lambda: StreamingRunner(model), frames, **ensemble)]
        tiled = TiledRunner(lambda: WindowRunner(model), **ensemble)  # type: ignore[arg-type]
        return [to_uint8(image) for image in run_frames(tiled, with_border(frames, 2))]


def outputs(folder: Path) -> list[np.ndarray]:
    return [read_rgb(path) for path in sorted(folder.glob("*.png"))]


def assert_same_images(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs) == 3
    for mine, library in zip(ours, theirs, strict=True):
        assert np.abs(mine.astype(int) - library.astype(int)).max() <= 1  # float32 paths: a rounding step at most


@pytest.mark.parametrize(("flag", "time_reversal"), [("x16", True)])  # x16 holds x8's transforms; x8's flag below
def test_self_ensemble_is_the_librarys_ensemble(tmp_path: Path, weights: Path, flag: str, time_reversal: bool) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=SIZE[0], width=SIZE[1])  # not square: transposes
    plain = evaluate(data, weights, tmp_path / "plain", "--border")
    report = evaluate(data, weights, tmp_path / "ensemble", "--border", "--self_ensemble", flag)
    assert report["settings"]["self_ensemble"] == flag
    expected = library_outputs(weights, data, "clip", "ensemble", time_reversal=time_reversal)
    assert_same_images(outputs(tmp_path / "ensemble" / "clip"), expected)
    assert report["psnr"] != plain["psnr"]
    assert any(line.startswith(f"+ self_ensemble: {flag} (") for line in only_log(tmp_path / "ensemble"))


def test_self_ensemble_alone_means_x8_and_works_without_border(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 5}, height=SIZE[0], width=SIZE[1])
    eight = evaluate(data, weights, tmp_path / "x8", "--self_ensemble")
    sixteen = evaluate(data, weights, tmp_path / "x16", "--self_ensemble", "x16")
    assert eight["settings"]["self_ensemble"] == "x8" and list(eight["videos"]["clip"]["frames"]) == ["00002"]
    assert list(sixteen["videos"]["clip"]["frames"]) == ["00002"] and sixteen["psnr"] != eight["psnr"]


def test_tiles_run_the_whole_cascade_per_tile(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=SIZE[0], width=SIZE[1])
    report = evaluate(data, weights, tmp_path / "tiled", "--border", "--tile", "16", "--tile_overlap", "8")
    assert (report["settings"]["tile"], report["settings"]["tile_overlap"]) == (16, 8)
    expected = library_outputs(weights, data, "clip", "tiled", tile=16, overlap=8)
    assert_same_images(outputs(tmp_path / "tiled" / "clip"), expected)
    untiled = library_outputs(weights, data, "clip", "tiled", tile=24, overlap=0)  # one tile: the untiled output
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 1 for a, b in zip(expected, untiled, strict=True))
    assert "+ tile: 16 (overlap 8)" in only_log(tmp_path / "tiled")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tile", "30"], "--tile 30: give a positive multiple of 4"),
        (["--tile", "0"], "--tile 0: give a positive multiple of 4"),
        (["--tile", "16", "--tile_overlap", "16"], "--tile_overlap 16: give a multiple of 4 from 0 to less than"),
        (["--tile", "16", "--tile_overlap", "6"], "--tile_overlap 6: give a multiple of 4"),
        (["--tile_overlap", "16"], "--tile_overlap goes with --tile"),
        (["--crop_border", "-1"], "--crop_border -1: give a whole number of pixels"),
    ],
)
def test_settings_that_cannot_apply_are_refused(tmp_path: Path, weights: Path, flags: list[str], message: str) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=SIZE[0], width=SIZE[1])
    argv = ["--data_path", str(data), "--model_path", str(weights), "--result_path", str(tmp_path / "result")]
    with pytest.raises(UserError, match=f"^{message}"):
        main([*argv, "--device", "cpu", *flags])
    assert not (tmp_path / "result").exists()


def test_metric_channel_and_crop_border_are_used_and_recorded(tmp_path: Path, weights: Path) -> None:
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=SIZE[0], width=SIZE[1])
    report = evaluate(data, weights, tmp_path / "y", "--border", "--metric_channel", "y", "--crop_border", "0")
    assert (report["settings"]["metric_channel"], report["settings"]["crop_border"]) == ("y", 0)
    for frame, scores in report["videos"]["clip"]["frames"].items():
        output = read_rgb(tmp_path / "y" / "clip" / f"{frame}.png")
        sharp = read_rgb(data / "gt" / "clip" / f"{frame}.png")[:20, :24]
        assert scores["psnr"] == pytest.approx(psnr(output, sharp, channel="y", crop_border=0), rel=1e-12)
        assert scores["ssim"] == pytest.approx(ssim(output, sharp, channel="y", crop_border=0), rel=1e-12)
        assert scores["psnr"] != pytest.approx(psnr(output, sharp), rel=1e-6)
    log = only_log(tmp_path / "y")
    assert "+ metric_channel: y" in log and "+ crop_border: 0" in log


def test_the_smallest_frame_follows_the_crop(tmp_path: Path, weights: Path) -> None:
    assert (min_size(4), min_size(0)) == (19, 11)
    data = make_dataset(tmp_path / "data", {"clip": 3}, height=14, width=16)  # 12 x 16 once cropped to 4s
    with pytest.raises(UserError, match="frames of 16x14 are too small; at least 19x19 needed"):
        main(["--data_path", str(data), "--model_path", str(weights), "--result_path", str(tmp_path / "r")])
    report = evaluate(data, weights, tmp_path / "result", "--border", "--crop_border", "0")
    assert report["frames"] == 3

"""Dataset layouts: tiny mirrors of GOPRO_Large, DVD, BSD and the release's form, found by name or detected."""

from pathlib import Path

import pytest

from cdvd_tsp.data.frames import scan_dataset
from cdvd_tsp.data.layouts import LAYOUTS, detect_layout, find_videos
from cdvd_tsp.utils.errors import UserError
from conftest import make_bsd, make_dataset, make_dvd, make_gopro, write_frames


def names(videos: list) -> list[str]:
    return [video.name for video in videos]


def test_release_layout_is_exactly_scan_dataset(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "DVD" / "test", {"v10": 3, "v2": 2, "a": 1}, height=8, width=8)
    assert detect_layout(root) == "release"
    assert find_videos(root) == find_videos(root, "release") == scan_dataset(root)
    assert names(find_videos(root)) == ["a", "v2", "v10"]  # natural order, as the inference command reads them


def test_release_layout_without_ground_truth(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "mine", {"clip": 2}, height=8, width=8, gt=False)
    assert [video.gt for video in find_videos(root)] == [None]


@pytest.mark.parametrize("level", ["root", "split"])
def test_gopro_large_from_its_root_or_a_split(tmp_path: Path, level: str) -> None:
    root = make_gopro(
        tmp_path / "GOPRO_Large",
        {"train": {"GOPR0372_07_00": 2}, "test": {"GOPR0410_11_00": 3, "GOPR0384_11_00": 2}},
    )
    folder = root if level == "root" else root / "test"
    assert detect_layout(folder) == "gopro"
    videos = find_videos(folder)
    assert names(videos) == ["GOPR0384_11_00", "GOPR0410_11_00"]  # the test split by default, natural order
    first = videos[1]
    assert [path.name for path in first.blur] == ["000047.png", "000048.png", "000049.png"]
    assert {path.parent.name for path in first.blur} == {"blur"}
    assert {path.parent.name for path in first.gt} == {"sharp"}
    gamma = find_videos(folder, "gopro", gopro_blur="blur_gamma")
    assert {path.parent.name for video in gamma for path in video.blur} == {"blur_gamma"}


def test_gopro_split_choice_and_several_splits_get_unique_names(tmp_path: Path) -> None:
    root = make_gopro(tmp_path / "GOPRO_Large", {"train": {"GOPR0372_07_00": 2}, "test": {"GOPR0410_11_00": 2}})
    assert names(find_videos(root, split="train")) == ["GOPR0372_07_00"]
    both = find_videos(root, "gopro", split=("train", "test"))
    assert names(both) == ["train_GOPR0372_07_00", "test_GOPR0410_11_00"]
    with pytest.raises(UserError, match="no split valid of gopro sequences; found test, train"):
        find_videos(root, split="valid")
    with pytest.raises(UserError, match="one split \\('test'\\)"):
        find_videos(root / "test", split="train")


@pytest.mark.parametrize("level", ["dataset", "quantitative"])
def test_dvd_as_downloaded(tmp_path: Path, level: str) -> None:
    root = make_dvd(tmp_path / "DeepVideoDeblurring_Dataset", {"IMG_0030": 3, "720p_240fps_2": 2, "IMG_0003": 2})
    folder = root if level == "dataset" else root / "quantitative_datasets"
    assert detect_layout(folder) == "dvd"
    videos = find_videos(folder)
    assert names(videos) == ["720p_240fps_2", "IMG_0003", "IMG_0030"]
    assert [path.name for path in videos[2].gt] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert {path.parent.name for path in videos[2].blur} == {"input"}
    assert names(find_videos(folder, "dvd", only={"IMG_0030", "IMG_0003"})) == ["IMG_0003", "IMG_0030"]
    with pytest.raises(UserError, match="no video named IMG_9999"):
        find_videos(folder, only=["IMG_9999"])


def test_bsd_splits_number_sequences_alike(tmp_path: Path) -> None:
    root = make_bsd(tmp_path / "BSD_2ms16ms", {"train": {"000": 2, "001": 2}, "test": {"000": 3, "010": 2}})
    assert detect_layout(root) == detect_layout(root / "test") == "bsd"
    assert names(find_videos(root)) == ["000", "010"]
    assert names(find_videos(root / "train")) == ["000", "001"]
    videos = find_videos(root, "bsd", split=["train", "test"])
    assert names(videos) == ["train_000", "train_001", "test_000", "test_010"]
    assert videos[2].blur[0].parts[-3:] == ("Blur", "RGB", "000000.png")
    assert videos[2].gt[0].parts[-3:] == ("Sharp", "RGB", "000000.png")


def test_an_unknown_folder_names_every_expected_form(tmp_path: Path) -> None:
    write_frames(tmp_path / "photos" / "holiday", 2)
    with pytest.raises(UserError) as error:
        find_videos(tmp_path / "photos")
    message = str(error.value)
    assert "\n" not in message and "not a dataset folder of a known layout" in message
    assert all(f"{layout}:" in message for layout in LAYOUTS)


def test_an_ambiguous_folder_is_refused(tmp_path: Path) -> None:
    root = make_bsd(tmp_path / "mixed", {"test": {"000": 2}})
    make_dataset(root, {"clip": 1}, height=8, width=8)
    with pytest.raises(UserError, match="fits several layouts \\(release, bsd\\); choose one with --layout"):
        detect_layout(root)
    assert names(find_videos(root, "bsd")) == ["000"]
    assert names(find_videos(root, "release")) == ["clip"]


def test_a_forced_layout_that_does_not_fit_says_what_it_expected(tmp_path: Path) -> None:
    root = make_dvd(tmp_path / "dvd", {"IMG_0030": 2})
    with pytest.raises(UserError, match=r"not a gopro dataset folder; expected .*blur_gamma"):
        find_videos(root, "gopro")
    with pytest.raises(UserError, match="--layout reds: unknown"):
        find_videos(root, "reds")
    with pytest.raises(UserError, match="dataset folder not found"):
        find_videos(tmp_path / "missing", "dvd")


def test_frame_counts_must_match(tmp_path: Path) -> None:
    root = make_gopro(tmp_path / "GOPRO_Large", {"test": {"GOPR0410_11_00": 3}})
    (root / "test" / "GOPR0410_11_00" / "sharp" / "000049.png").unlink()
    with pytest.raises(UserError, match="'GOPR0410_11_00' has 3 blurred frames but 2 sharp frames"):
        find_videos(root)


def test_a_gopro_sequence_without_the_chosen_blur_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "test"
    write_frames(root / "GOPR0410_11_00" / "blur", 2)
    write_frames(root / "GOPR0410_11_00" / "sharp", 2)
    assert names(find_videos(root)) == ["GOPR0410_11_00"]
    with pytest.raises(UserError, match="no 'blur_gamma' folder"):
        find_videos(root, gopro_blur="blur_gamma")


SHARP_FOLDERS = {
    "gopro": ("GOPRO_Large/test/GOPR0410_11_00", "sharp", ".png", 47),
    "dvd": ("DVD/quantitative_datasets/IMG_0030", "GT", ".jpg", 0),
    "bsd": ("BSD/test/000", "Sharp/RGB", ".png", 0),
}


def make_layout(tmp_path: Path, layout: str) -> Path:
    if layout == "gopro":
        return make_gopro(tmp_path / "GOPRO_Large", {"test": {"GOPR0410_11_00": 3}})
    if layout == "dvd":
        return make_dvd(tmp_path / "DVD", {"IMG_0030": 3})
    return make_bsd(tmp_path / "BSD", {"test": {"000": 3}})


@pytest.mark.parametrize("layout", ["gopro", "dvd", "bsd"])
def test_every_layout_pairs_sharp_frames_by_name(tmp_path: Path, layout: str) -> None:
    root = make_layout(tmp_path, layout)
    sequence, sharp, suffix, start = SHARP_FOLDERS[layout]
    folder = tmp_path / sequence / sharp
    (folder / f"{start + 1:06d}{suffix}").unlink()  # one sharp frame missing, another added: the counts agree
    write_frames(folder, 1, suffix, start=start + 5)
    with pytest.raises(UserError) as caught:
        find_videos(root, layout)
    blurred = {"gopro": "blur", "dvd": "input", "bsd": "Blur/RGB"}[layout]
    assert str(caught.value) == (
        f"{tmp_path / sequence}: video '{Path(sequence).name}' has 3 blurred and 3 sharp frames, but not of the same "
        f"names: no sharp frame for {blurred}/{start + 1:06d}{suffix}; no blurred frame for {sharp}/{start + 5:06d}"
        f"{suffix} (sharp and blurred frames pair by name, without the extension)"
    )


def test_dvd_sharp_frames_saved_as_png_pair_with_jpeg_inputs(tmp_path: Path) -> None:
    root = make_dvd(tmp_path / "DVD", {"IMG_0030": 3})
    gt = root / "quantitative_datasets" / "IMG_0030" / "GT"
    for path in gt.iterdir():
        path.unlink()
    write_frames(gt, 3, ".png")
    (video,) = find_videos(root)
    assert [(blur.name, sharp.name) for blur, sharp in zip(video.blur, video.gt, strict=True)] == [
        ("000000.jpg", "000000.png"),
        ("000001.jpg", "000001.png"),
        ("000002.jpg", "000002.png"),
    ]

"""Frame sources (folders, video files) and the video writer."""

from pathlib import Path

import av
import numpy as np
import pytest

from cdvd_tsp.data import video_io
from cdvd_tsp.data.frames import read_rgb, to_8_bit
from cdvd_tsp.data.video_io import VideoWriter, format_bits, open_frame_folder, open_input, open_video
from cdvd_tsp.utils.errors import UserError
from conftest import make_dataset, sharp_frames, write_image


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    with VideoWriter(path, frames[0].shape[:2], fps) as writer:
        for frame in frames:
            writer.write(frame)


@pytest.mark.parametrize(("height", "width"), [(32, 48), (31, 45)])
def test_video_round_trip_keeps_count_size_rate_and_content(tmp_path: Path, height: int, width: int) -> None:
    frames = sharp_frames(4, height, width)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=12.5)
    assert not list(tmp_path.glob(".*"))  # the hidden partial file was renamed

    source = open_input(path)
    coded = (height + height % 2, width + width % 2)  # H.264 4:2:0 needs even sizes: the last row/column repeated
    assert (source.name, source.size, source.fps, len(source)) == ("clip", coded, 12.5, 4)
    assert source.frame_names == ["00000", "00001", "00002", "00003"]
    decoded = list(source.frames())
    assert len(decoded) == 4
    for ours, original in zip(decoded, frames, strict=True):
        assert ours.shape == (*coded, 3) and ours.dtype == np.uint8
        padded = np.pad(original, ((0, coded[0] - height), (0, coded[1] - width), (0, 0)), "edge")
        assert np.abs(ours.astype(float) - padded).mean() < 4.0  # lossy (4:2:0 chroma on a noisy scene)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"  # what every player opens


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"earlier result")
    with pytest.raises(RuntimeError, match="stop"), VideoWriter(path, (32, 48), 10.0) as writer:
        writer.write(sharp_frames(1, 32, 48)[0])
        raise RuntimeError("stop")
    assert path.read_bytes() == b"earlier result"
    assert sorted(item.name for item in tmp_path.iterdir()) == ["out.mp4"]


def test_unknown_video_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot write \.xyz videos"):
        VideoWriter(tmp_path / "out.xyz", (32, 48), 10.0)


def test_folder_source_is_naturally_sorted_and_reads_gray_and_rgba_as_rgb(tmp_path: Path) -> None:
    frames = sharp_frames(3, 24, 32)
    write_image(tmp_path / "f10.png", frames[2])
    write_image(tmp_path / "f2.jpg", frames[1][..., 0])  # gray
    rgba = np.concatenate([frames[0], np.full((24, 32, 1), 128, np.uint8)], axis=2)
    write_image(tmp_path / "f1.png", rgba)
    (tmp_path / "notes.txt").write_text("not a frame")

    source = open_frame_folder(tmp_path)
    assert source.frame_names == ["f1", "f2", "f10"]
    assert source.size == (24, 32)
    decoded = list(source.frames())
    assert all(frame.shape == (24, 32, 3) for frame in decoded)
    assert np.array_equal(decoded[0], frames[0])
    assert np.array_equal(decoded[2], frames[2])
    assert np.abs(decoded[1].astype(float) - frames[1][..., :1]).mean() < 3.0  # JPEG


def test_frames_that_would_share_an_output_name_are_refused(tmp_path: Path) -> None:
    frame = sharp_frames(1, 24, 32)[0]
    write_image(tmp_path / "a.png", frame)
    write_image(tmp_path / "a.jpg", frame)
    with pytest.raises(UserError, match=r"both be saved as a\.png"):
        open_frame_folder(tmp_path)


def test_a_frame_that_changes_size_after_the_check_is_named(tmp_path: Path) -> None:
    frames = sharp_frames(2, 24, 32)
    for index, frame in enumerate(frames):
        write_image(tmp_path / f"{index}.png", frame)
    source = open_frame_folder(tmp_path)
    write_image(tmp_path / "1.png", frames[1][:20])
    with pytest.raises(UserError, match=r"1\.png is 32x20"):
        list(source.frames())


def test_input_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        open_input(tmp_path / "missing.mp4")
    write_image(tmp_path / "one.png", sharp_frames(1, 24, 32)[0])
    with pytest.raises(UserError, match="a single image"):
        open_input(tmp_path / "one.png")
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(UserError, match=r"cannot read video .*broken\.mp4"):
        open_video(tmp_path / "broken.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no frames"):
        open_input(empty)
    with pytest.raises(UserError, match="--data_path"):
        open_input(make_dataset(tmp_path / "dataset", {"v": 1}, 24, 32))


def test_a_truncated_video_is_read_as_far_as_it_goes_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = tmp_path / "whole.mp4"
    write_video(whole, sharp_frames(20, 32, 40), fps=10.0)
    streamable = tmp_path / "streamable.mp4"  # the index first, as for streaming: a cut file still decodes
    with av.open(str(whole)) as source, av.open(str(streamable), "w", options={"movflags": "+faststart"}) as copy:
        stream = copy.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = stream
                copy.mux(packet)
    with caplog.at_level("WARNING"):
        assert len(open_video(streamable)) == 20
    assert caplog.records == []
    truncated = tmp_path / "truncated.mp4"
    data = streamable.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        video = open_video(truncated)
    assert 0 < len(video) < 20 and len(list(video.frames())) == len(video)
    assert "the file may be truncated" in caplog.text and "about 20 frames" in caplog.text


RAMP = np.arange(65536, dtype=np.uint16).reshape(256, 256)
"""Every 16-bit value once."""


def test_a_16_bit_video_rounds_by_the_rule_of_16_bit_frames(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import cv2

    stored = np.stack([RAMP, RAMP[::-1], RAMP.T], axis=2)
    cv2.imwrite(str(tmp_path / "frame.png"), stored[:, :, ::-1])
    video = tmp_path / "deep.mov"  # lossless 16-bit RGB frames: what FFmpeg decodes is exactly what was stored
    with av.open(str(video), "w") as container:
        stream = container.add_stream("png", rate=10)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "rgb48be"
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb48le")))
        container.mux(stream.encode(None))
    with caplog.at_level("WARNING"):
        source = open_input(video)
    assert source.deep and len(source) == 2
    assert caplog.messages == [
        f"{video}: 16 bits per sample, decoded as 16-bit RGB and rounded to the nearest 8-bit value "
        "(16-bit v: round(v / 257)) (said once per run)"
    ]
    expected = to_8_bit(stored, 65535)
    for frame in source.frames():
        assert frame.dtype == np.uint8 and np.array_equal(frame, expected)
    assert np.array_equal(read_rgb(tmp_path / "frame.png"), expected)  # the same 8 bits as the frame file
    with caplog.at_level("WARNING"):
        open_input(video)  # a second run is told again
    assert len(caplog.messages) == 2


def test_an_8_bit_video_is_read_as_it_is_without_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, sharp_frames(2, 16, 24))
    with caplog.at_level("WARNING"):
        assert not open_input(path).deep
    assert caplog.messages == []


@pytest.mark.parametrize(
    ("pixel_format", "bits"),
    [
        ("yuv420p", 8),
        ("yuvj420p", 8),
        ("yuv420p10le", 10),
        ("yuv444p12le", 12),
        ("rgb48be", 16),
        ("rgba64le", 16),
        ("gray16le", 16),
        ("p010le", 10),
        ("x2rgb10le", 10),
        ("rgb565le", 6),
        ("nv12", 8),
        ("grayf32le", 32),
    ],
)
def test_bits_per_sample_of_pixel_formats(pixel_format: str, bits: int) -> None:
    assert format_bits(av.VideoFormat(pixel_format)) == bits


def test_a_direct_writer_writes_the_file_itself_and_a_failed_one_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``direct``: for a file in a staging folder (utils/committed.py), written in place, without a rename."""

    def no_rename(source: str, destination: str) -> None:
        raise AssertionError("a direct write renames nothing")

    monkeypatch.setattr(video_io.os, "replace", no_rename)
    path = tmp_path / "out.mp4"
    with VideoWriter(path, (32, 48), 10.0, direct=True) as writer:
        writer.write(sharp_frames(1, 32, 48)[0])
    assert len(open_video(path)) == 1 and list(tmp_path.iterdir()) == [path]
    with pytest.raises(RuntimeError, match="stop"), VideoWriter(path, (32, 48), 10.0, direct=True) as writer:
        writer.write(sharp_frames(1, 32, 48)[0])
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []

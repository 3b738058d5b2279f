"""Videos out as they came in: an output video keeps its input's sound (copied, not re-encoded), timestamps
(variable frame rates included), duration and displayed orientation; .mp4, .mov, .mkv, .webm and .gif outputs are
videos of their type; ``--codec`` and ``--quality`` choose the coding; what cannot be written is refused in one line
before anything is."""

import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cdvd_tsp.data.video_io import VideoWriter, open_video, plan_encoding
from cdvd_tsp.inference import main
from cdvd_tsp.utils.errors import UserError
from conftest import inference_refused, sharp_frames

pytestmark = pytest.mark.usefixtures("single_thread")

VFR = (0, 1600, 2400, 6400, 6560, 11200)
"""Irregular timestamps (1/16000 s): 0.1 s, 0.05 s, 0.25 s, 0.01 s and 0.29 s apart."""
TIME_BASE = Fraction(1, 16000)


def make_clip(
    path: Path,
    frames: list[np.ndarray],
    pts: tuple[int, ...] = VFR,
    audio: str | None = "aac",
    rotation: int | None = None,
) -> Path:
    """A clip made with PyAV: H.264 frames at ``pts`` (in `TIME_BASE`), a sine of ``audio`` as long as the video
    and a tenth of a second more, the display matrix turned ``rotation`` degrees counter-clockwise."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = video.codec_context.time_base = TIME_BASE
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = container.add_stream(audio, rate=48000, layout="mono") if audio is not None else None
        for frame_pts, image in zip(pts, frames, strict=True):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = frame_pts, TIME_BASE
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = int((pts[-1] * TIME_BASE + Fraction(1, 10)) * 48000)
            wave = (0.3 * np.sin(2 * math.pi * 440 * np.arange(total) / 48000)).astype(np.float32)[None]
            step = sound.codec_context.frame_size or 960
            sample_format = sound.codec_context.format.name
            if sample_format.startswith("s16"):
                wave = (wave * 32767).astype(np.int16)
            for start in range(0, total, step):
                chunk = wave[:, start : start + step]
                samples = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(chunk if sample_format.endswith("p") else chunk.T.reshape(1, -1)),
                    format=sample_format,
                    layout="mono",
                )
                samples.sample_rate, samples.pts = 48000, start
                container.mux(sound.encode(samples))
            container.mux(sound.encode(None))
    return path


def audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    """Each audio packet's time in seconds and bytes."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [(packet.pts * packet.time_base, bytes(packet)) for packet in container.demux(stream) if packet.size]


def video_facts(path: Path) -> tuple[str, str, list[Fraction], float, int]:
    """The container's format, the video's codec, each frame's time in seconds, the duration and the rotation."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        times = [frame.pts * frame.time_base for frame in frames]
        return (
            container.format.name,
            stream.codec_context.name,
            times,
            container.duration / av.time_base,
            round(frames[0].rotation),
        )


def write_like(source_path: Path, output: Path, codec: str | None = None, quality: int | None = None) -> None:
    """What inference does with a video: every frame, its own timestamp, the source's sound."""
    source = open_video(source_path)
    encoding = plan_encoding(output, source, codec, quality)
    with VideoWriter(output, source.size, source.fps, encoding=encoding, source=source) as writer:
        for index, frame in enumerate(source.frames()):
            writer.write(frame, index)


@pytest.mark.parametrize(
    ("suffix", "audio", "format_name", "codec"),
    [
        (".mp4", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "h264"),
        (".mov", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "h264"),
        (".mkv", "aac", "matroska,webm", "h264"),
        (".webm", "libopus", "matroska,webm", "vp9"),
    ],
)
def test_an_output_keeps_its_input_s_sound_timestamps_and_duration(
    tmp_path: Path, suffix: str, audio: str, format_name: str, codec: str
) -> None:
    clip_suffix = ".mkv" if suffix == ".webm" else ".mp4"  # opus sound from a .mkv (.webm holds VP9 only)
    clip = make_clip(tmp_path / f"clip{clip_suffix}", sharp_frames(6, 24, 32), audio=audio)
    output = tmp_path / f"out{suffix}"
    write_like(clip, output)
    ours, theirs = video_facts(output), video_facts(clip)
    assert ours[:2] == (format_name, codec)
    assert ours[2] == theirs[2] == [value * TIME_BASE for value in VFR]  # each frame at its input frame's time
    assert abs(ours[3] - theirs[3]) <= 0.1  # the duration within one frame (10 fps on average)
    sound, copied = audio_packets(clip), audio_packets(output)  # at the same times (Matroska counts in ms)
    assert len(sound) > 10 and [data for _, data in copied] == [data for _, data in sound]  # copied, not re-encoded
    assert all(abs(ours - theirs) <= Fraction(1, 1000) for (ours, _), (theirs, _) in zip(copied, sound, strict=True))


def test_a_rotated_input_comes_out_upright_and_displays_the_same(tmp_path: Path) -> None:
    stored = sharp_frames(3, 24, 32)
    clip = make_clip(tmp_path / "phone.mp4", stored, pts=(0, 1600, 3200), audio=None, rotation=90)
    source = open_video(clip)
    assert (source.rotation, source.size) == (90, (32, 24))  # displayed portrait
    for ours, image in zip(source.frames(), stored, strict=True):
        assert np.abs(ours.astype(int) - np.rot90(image, 1)).mean() < 4  # counter-clockwise, as players show it
    output = tmp_path / "out.mp4"
    write_like(clip, output)
    assert video_facts(output)[4] == 0  # no rotation left to apply
    again = open_video(output)
    assert again.size == (32, 24)
    for ours, image in zip(again.frames(), stored, strict=True):
        assert np.abs(ours.astype(int) - np.rot90(image, 1)).mean() < 5


def test_a_gif_output_is_a_gif_at_the_input_s_times_without_sound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", sharp_frames(6, 24, 32))
    output = tmp_path / "out.gif"
    with caplog.at_level(logging.WARNING):
        write_like(clip, output)
    assert caplog.messages == [f"--output {output}: a GIF has no sound; the audio of {clip} is left out"]
    name, codec, times, _, _ = video_facts(output)
    assert (name, codec) == ("gif", "gif") and audio_packets(output) == []
    assert times == [round(value * TIME_BASE * 100) / Fraction(100) for value in VFR]  # in hundredths of a second
    frames = list(open_video(output).frames())
    assert len(frames) == 6 and frames[0].shape == (24, 32, 3)


@pytest.mark.parametrize(("codec", "quality", "name"), [("vp9", 40, "vp9"), ("h264", 0, "h264")])
def test_codec_and_quality_choose_the_coding(tmp_path: Path, codec: str, quality: int, name: str) -> None:
    clip = make_clip(tmp_path / "clip.mp4", sharp_frames(6, 24, 32), audio=None)
    output = tmp_path / "out.mkv"
    write_like(clip, output, codec, quality)
    assert video_facts(output)[1] == name
    assert video_facts(output)[2] == [value * TIME_BASE for value in VFR]


@pytest.mark.parametrize(
    ("name", "codec", "quality", "message"),
    [
        (
            "out.webm",
            None,
            None,
            "--output {output}: a .webm file cannot hold the aac audio of {clip} (copied as it is, not re-encoded); "
            "give a .mp4 or .m4v or .mov or .mkv --output (.mkv holds any audio)",
        ),
        ("out.mp4", "vp9", None, "--codec vp9: a .mp4 file holds h264; give another --codec or a .mkv "),
        ("out.mkv", "vp9", 64, "--quality 64: vp9 takes 0 (best) to 63 (worst)"),
        ("out.mp4", None, -1, "--quality -1: h264 takes 0 (best) to 51 (worst)"),
        ("out.gif", "h264", None, "--codec h264: a .gif output is coded as GIF; leave --codec out"),
        ("out.gif", None, 20, "--quality goes with h264 and vp9; a .gif output takes none"),
        ("out.avi", None, None, "--output {output}: cannot write .avi videos; give one of .mp4, .m4v, .mov, .mkv, "),
        ("frames", "vp9", None, "--codec goes with a video --output (.mp4, .m4v, .mov, .mkv, .webm, .gif); "),
    ],
)
def test_what_cannot_be_written_is_refused_in_one_line_before_anything_is(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, codec: str | None, quality: int | None, message: str
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", sharp_frames(6, 24, 32))
    output = tmp_path / name
    argv = ["--input", str(clip), "--output", str(output), "--default_data", "DEMO", "--device", "cpu"]
    argv += ["--codec", codec] if codec else []
    argv += ["--quality", str(quality)] if quality is not None else []
    assert inference_refused(argv, capsys).startswith(message.format(output=output, clip=clip))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]


def test_evaluation_refuses_codec_and_quality() -> None:
    from cdvd_tsp.infer.options import parse_args
    from cdvd_tsp.infer.planning import PRESETS, plan_evaluation

    args = parse_args(["--default_data", "DEMO", "--quality", "20"])
    with pytest.raises(UserError, match=r"^--codec and --quality go with --input and a video --output"):
        plan_evaluation(args, PRESETS["DEMO"], Path("unused.pt"), None, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("border", [True, False])
def test_inference_writes_a_video_like_its_input(tmp_path: Path, border: bool) -> None:
    """The whole command: with --no_border the first and last T frames get no output, and those that do keep their
    own timestamps; the sound is the input's."""
    clip = make_clip(tmp_path / "clip.mp4", sharp_frames(6, 24, 32))
    output = tmp_path / "out.mp4"
    flags = [] if border else ["--no_border"]
    argv = ["--input", str(clip), "--output", str(output), "--default_data", "DEMO", "--device", "cpu", *flags]
    assert main(argv) == 0
    _, codec, times, _, _ = video_facts(output)
    kept = VFR if border else VFR[2:-2]  # the DEMO model has 2 stages
    assert (codec, times) == ("h264", [value * TIME_BASE for value in kept])
    assert audio_packets(output) == audio_packets(clip)

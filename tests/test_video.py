"""stylize.video end to end: tiny clips made here with PyAV, transcoded through trivial processors, checked packet by packet."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from stylize.config import VideoOptions  # noqa: E402
from stylize.errors import StylizeError  # noqa: E402
from stylize.io.files import TEMP_SUFFIX  # noqa: E402
from stylize.video import probe, transcode  # noqa: E402
from stylize.video.workdir import work_folder_for  # noqa: E402

SEGMENTS = VideoOptions(segment_seconds=0.25)  # 6 frames a segment at 24 fps


# ------------------------------------------------------------------------------------------------------------- clips


def picture(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: gradients that move with ``index``, and a white 8x8 marker in the top-left corner."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, (40 + index * 9) % 256)], -1)
    rgb = rgb.astype(np.uint8)
    rgb[:8, :8] = 255
    return rgb


def make_clip(
    path: Path,
    *,
    size: tuple[int, int] = (64, 48),
    frames: int = 12,
    rate: int = 24,
    pts_ms: list[int] | None = None,
    start_ms: int = 0,
    audio_delay_ms: int = 0,
    audio: str | None = "aac",
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    subtitles: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a small clip: ``frames`` pictures (at ``pts_ms`` milliseconds if given), a 440 Hz tone, an SRT cue.

    ``start_ms`` makes every stream start that late (as MPEG-TS and cut-out clips do); ``audio_delay_ms`` the audio.
    """
    width, height = size
    if start_ms and pts_ms is None:
        pts_ms = [start_ms + round(index * 1000 / rate) for index in range(frames)]
    container = av.open(os.fspath(path), "w", options=options or {})
    video = container.add_stream(codec, rate=rate, options={"preset": "ultrafast"} if codec.startswith("libx26") else {})
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    if pts_ms is not None:
        video.codec_context.time_base = Fraction(1, 1000)
        frames = len(pts_ms)
    if rotation is not None:
        video.set_display_rotation(rotation)
    sound = None
    if audio == "aac":
        sound = container.add_stream("aac", rate=48000)
        sound.layout = "mono"
    elif audio == "pcm_s16le":
        sound = container.add_stream("pcm_s16le", rate=48000)
        sound.layout = "stereo"
    text = container.add_mux_stream("subrip", time_base=Fraction(1, 1000)) if subtitles else None
    samples = (start_ms + audio_delay_ms) * 48
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(picture(index, width, height), format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
        container.mux(video.encode(frame))
        seconds = (pts_ms[index] / 1000 + 0.05) if pts_ms is not None else (index + 1) / rate
        while sound is not None and samples < seconds * 48000:
            tone = (0.3 * np.sin(2 * np.pi * 440 * (np.arange(1024) + samples) / 48000)).astype(np.float32)[None]
            if audio == "pcm_s16le":
                chunk = av.AudioFrame.from_ndarray((np.repeat(tone, 2, 0) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="stereo")
            else:
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, samples
            samples += 1024
            container.mux(sound.encode(chunk))
    container.mux(video.encode(None))
    if sound is not None:
        container.mux(sound.encode(None))
    if text is not None:
        cue = av.Packet(b"Hello, world")
        cue.pts, cue.dts, cue.duration, cue.time_base, cue.stream = 100, 100, 300, Fraction(1, 1000), text
        container.mux(cue)
    container.close()
    return path


def packets(path: Path, kind: str) -> list[tuple[int | None, int | None, bytes]]:
    with av.open(os.fspath(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]


def decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    """(seconds, (H, W, 3) RGB) of every frame, as FFmpeg decodes it without stylize."""
    with av.open(os.fspath(path)) as container:
        return [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]


# -------------------------------------------------------------------------------------------------------- processors


def invert(frames: list[torch.Tensor]) -> list[torch.Tensor]:
    return [255 - frame for frame in frames]


class RunningMean:
    """A temporal processor: each output is an exponential mean of the frames so far (state: the mean)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.mean: torch.Tensor | None = None
        self.seen = 0
        self.fail_after = fail_after
        self.batches: list[int] = []
        self.loaded: list[dict[str, torch.Tensor]] = []

    def __call__(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        self.batches.append(len(frames))
        out = []
        for frame in frames:
            self.seen += 1
            if self.fail_after is not None and self.seen > self.fail_after:
                raise RuntimeError("simulated crash")
            pixels = frame.float()
            self.mean = pixels if self.mean is None else 0.6 * self.mean + 0.4 * pixels
            out.append(self.mean.round().to(torch.uint8))
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.mean is None else {"mean": self.mean}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.loaded.append(state)
        self.mean = state.get("mean")


# ------------------------------------------------------------------------------------------------------------- tests


def test_probe_describes_the_clip(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "clip.mp4", frames=12))
    assert (info.codec, info.size, info.frames, info.average_rate, info.rotation) == ("h264", (64, 48), 12, 24, 0)
    assert info.duration == pytest.approx(0.5)
    assert [s.codec for s in info.audio] == ["aac"]
    assert info.colour.guessed and info.colour.describe().startswith("smpte170m, limited")  # untagged SD: BT.601
    assert (info.pix_fmt, info.bit_depth) == ("yuv420p", 8)


def test_transcode_processes_frames_and_copies_audio_exactly(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", frames=12)
    progress: list[tuple[int, int | None]] = []
    result = transcode(source, tmp_path / "out.mp4", invert, on_progress=lambda done, total: progress.append((done, total)))

    assert (result.frames, result.processed_frames, result.size, result.codec) == (12, 12, (64, 48), "libx264")
    assert result.streams_copied == ("audio #1 (aac)",) and result.notes == ()
    assert result.duration == pytest.approx(probe(source).duration)
    assert progress[0] == (0, 12) and progress[-1] == (12, 12)
    assert packets(result.path, "audio") == packets(source, "audio")  # bytes and timestamps
    before, after = decoded(source), decoded(result.path)
    assert [t for t, _ in after] == [t for t, _ in before]
    for (_, a), (_, b) in zip(before, after, strict=True):  # inverted, up to compression
        assert np.abs(255 - a.astype(int) - b.astype(int)).mean() < 6
    with av.open(os.fspath(result.path)) as container:
        context = container.streams.video[0].codec_context
        assert (context.pix_fmt, context.colorspace, context.color_range) == ("yuv420p", 6, 1)  # tagged as decoded
    assert not work_folder_for(result.path).exists()


def test_variable_frame_rate_keeps_every_timestamp(tmp_path: Path) -> None:
    # The second segment's encoder starts its decode timestamps long before 250 ms (the B-frame delay spans the gap to
    # 490 ms), before the first segment's last ones: the join moves them; no segment starts in 0.75-1 s.
    times = [0, 40, 80, 120, 160, 200, 240, 250, 490, 495, 500, 740, 745, 1210]
    source = make_clip(tmp_path / "vfr.mkv", pts_ms=times)
    for name in ("out.mkv", "out.mp4"):
        result = transcode(source, tmp_path / name, options=SEGMENTS)
        assert [round(t * 1000) for t, _ in decoded(result.path)] == times
        assert result.duration == pytest.approx(1.251)  # to the end of the last frame: 1210 ms + its own 41 ms
        assert result.segments == 4


def test_batches_stay_inside_segments_and_state_survives_a_crash(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", frames=24)
    reference = RunningMean()
    uninterrupted = transcode(source, tmp_path / "reference.mp4", reference, SEGMENTS, batch_size=4)
    assert reference.batches == [4, 2] * 4  # 6-frame segments: a batch never spans two
    assert uninterrupted.segments == 4

    target = tmp_path / "out.mp4"
    crashing = RunningMean(fail_after=15)
    with pytest.raises(RuntimeError, match="simulated crash"):
        transcode(source, target, crashing, SEGMENTS, batch_size=4)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    work = work_folder_for(target)
    assert sorted(p.name for p in work.glob("segment-*")) == ["segment-000000.packets", "segment-000001.packets"]

    resumed = RunningMean()
    result = transcode(source, target, resumed, SEGMENTS, batch_size=4)
    assert (result.segments_reused, result.processed_frames, result.frames) == (2, 12, 24)
    assert len(resumed.loaded) == 1 and torch.equal(resumed.loaded[0]["mean"], crashing_state_after(source, 12))
    assert packets(target, "video") == packets(tmp_path / "reference.mp4", "video")  # byte for byte
    assert packets(target, "audio") == packets(source, "audio")
    assert not work.exists()


def crashing_state_after(source: Path, frames: int) -> torch.Tensor:
    """The running mean after ``frames`` frames, computed without stylize.video's decoder."""
    mean = RunningMean()
    for _, rgb in decoded(source)[:frames]:
        mean([torch.from_numpy(rgb).permute(2, 0, 1)])
    assert mean.mean is not None
    return mean.mean


def test_a_processor_breaking_its_contract_fails_cleanly(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", audio=None)
    with pytest.raises(ValueError, match="uint8"):
        transcode(source, tmp_path / "out.mp4", lambda frames: [f.float() for f in frames])
    with pytest.raises(ValueError, match="different sizes"):
        transcode(source, tmp_path / "out.mp4", lambda frames: [f[:, : 40 + len(frames)] for f in frames], batch_size=5)
    assert not (tmp_path / "out.mp4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_changed_options_start_afresh(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", frames=24)
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        transcode(source, target, RunningMean(fail_after=15), SEGMENTS, batch_size=4)
    result = transcode(source, target, RunningMean(), VideoOptions(segment_seconds=0.25, crf=30), batch_size=4)
    assert result.segments_reused == 0 and result.processed_frames == 24
    assert "not reused" in result.notes[0]


def test_spelling_out_the_default_encoder_settings_still_resumes(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", frames=24)
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        transcode(source, target, RunningMean(fail_after=15), SEGMENTS, batch_size=4)
    explicit = VideoOptions(segment_seconds=0.25, codec="libx264", preset="veryfast", crf=18)
    result = transcode(source, target, RunningMean(), explicit, batch_size=4)
    assert result.segments_reused == 2 and result.processed_frames == 12


def test_rotation_is_applied_to_the_pixels(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "portrait.mp4", rotation=90, audio=None)  # shown turned 90 degrees counterclockwise
    info = probe(source)
    assert (info.rotation, info.size) == (270, (48, 64))
    seen: list[torch.Size] = []
    result = transcode(source, tmp_path / "out.mp4", lambda frames: seen.extend(f.shape for f in frames) or frames)
    assert seen[0] == (3, 64, 48) and result.size == (48, 64)
    _, first = decoded(result.path)[0]
    assert first[-8:, :8].mean() > 240 and first[:8, :8].mean() < 200  # the top-left marker is now bottom-left
    with av.open(os.fspath(result.path)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0


def test_odd_size_is_cropped_and_max_size_scales_to_even(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "odd.mkv", size=(65, 49), audio=None, pix_fmt="yuv444p")
    result = transcode(source, tmp_path / "out.mp4", invert)
    assert result.size == (64, 48) and "cropped" in " ".join(result.notes)
    seen: list[torch.Size] = []
    scaled = transcode(source, tmp_path / "small.mp4", lambda frames: seen.extend(f.shape for f in frames) or frames, VideoOptions(max_size=33))
    assert seen[0] == (3, 24, 32) and scaled.size == (32, 24)


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p"])
def test_high_bit_depth_and_full_chroma_become_8_bit_420(tmp_path: Path, pix_fmt: str) -> None:
    source = make_clip(tmp_path / "deep.mkv", pix_fmt=pix_fmt, audio=None)
    assert probe(source).pix_fmt == pix_fmt
    result = transcode(source, tmp_path / "out.mp4")
    with av.open(os.fspath(result.path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert pix_fmt in " ".join(result.notes)
    (_, a), (_, b) = decoded(source)[3], decoded(result.path)[3]
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_streams_the_container_cannot_hold(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mkv", audio="pcm_s16le", subtitles=True)
    kept = transcode(source, tmp_path / "out.mkv")
    assert kept.streams_copied == ("audio #1 (pcm_s16le)", "subtitle #2 (srt)") and kept.notes == ()
    assert packets(kept.path, "subtitles") == packets(source, "subtitles")
    assert packets(kept.path, "audio") == packets(source, "audio")

    mp4 = transcode(source, tmp_path / "out.mp4")
    assert mp4.streams_copied == ("audio #1 (pcm_s16le) re-encoded to aac",)
    assert any("re-encoded to aac" in note for note in mp4.notes) and any("(srt) was dropped" in note for note in mp4.notes)
    with av.open(os.fspath(mp4.path)) as container:
        assert [(s.type, s.codec_context.name) for s in container.streams] == [("video", "h264"), ("audio", "aac")]


def test_x264_defaults_to_veryfast_at_crf_18_and_takes_other_settings(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "clip.mp4", frames=6)
    default = transcode(source, tmp_path / "default.mp4").path.read_bytes()  # x264 writes its settings into the stream
    assert b" crf=18.0 " in default and b" subme=2 " in default and b" ref=1 " in default  # veryfast's subme and refs
    chosen = transcode(source, tmp_path / "medium.mp4", options=VideoOptions(preset="medium", crf=20)).path.read_bytes()
    assert b" crf=20.0 " in chosen and b" subme=7 " in chosen and b" ref=3 " in chosen


def test_webm_gets_vp9_and_opus(tmp_path: Path) -> None:
    result = transcode(make_clip(tmp_path / "clip.mp4"), tmp_path / "out.webm")
    with av.open(os.fspath(result.path)) as container:
        assert [s.codec_context.name for s in container.streams] == ["vp9", "opus"]
    assert result.codec == "libvpx-vp9" and len(decoded(result.path)) == 12


@pytest.mark.parametrize("audio", ["aac", "pcm_s16le"])  # copied, and re-encoded for MP4
def test_a_late_start_is_moved_to_zero_and_audio_keeps_its_place(tmp_path: Path, audio: str) -> None:
    source = make_clip(tmp_path / "late.mkv", start_ms=2000, audio_delay_ms=300, audio=audio)
    assert probe(source).start_time == 2.0
    result = transcode(source, tmp_path / "out.mp4")
    assert [t for t, _ in decoded(result.path)] == pytest.approx([t - 2 for t, _ in decoded(source)], abs=1e-4)
    with av.open(os.fspath(result.path)) as container:
        stream = container.streams.audio[0]
        first = next(p for p in container.demux(stream) if p.size)
        assert float(first.pts * stream.time_base) == pytest.approx(0.3 - 1024 / 48000, abs=0.002)  # AAC primes 1024 samples


# -------------------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    from PIL import Image

    clip = make_clip(tmp_path / "clip.mp4")
    Image.new("RGB", (16, 16), "red").save(tmp_path / "photo.jpg")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "cut.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # index at the end: lost
    faststart = make_clip(tmp_path / "faststart.mp4", frames=48, options={"movflags": "faststart"})
    (tmp_path / "cut-faststart.mp4").write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    with av.open(os.fspath(tmp_path / "sound.m4a"), "w") as sound_only:
        sound = sound_only.add_stream("aac", rate=48000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        chunk.sample_rate, chunk.pts = 48000, 0
        sound_only.mux(sound.encode(chunk) + sound.encode(None))
    cases = {
        "photo.jpg": "is an image, not a video",
        "noise.mp4": "is not a video file",
        "cut.mp4": "corrupt or truncated MP4/MOV file",
        "cut-faststart.mp4": "is truncated",
        "sound.m4a": "has no video stream, only audio",
        "missing.mp4": "no such file",
    }
    for name, message in cases.items():
        with pytest.raises(StylizeError, match=message) as caught:
            transcode(tmp_path / name, tmp_path / "out.mp4")
        assert "\n" not in str(caught.value) and caught.value.hint
    assert not (tmp_path / "out.mp4").exists() and not work_folder_for(tmp_path / "out.mp4").exists()


def test_zero_video_frames(tmp_path: Path) -> None:
    container = av.open(os.fspath(tmp_path / "empty.mkv"), "w")  # Matroska lists a track with no frames
    video = container.add_stream("libx264", rate=24)
    video.width, video.height = 64, 48
    sound = container.add_stream("aac", rate=48000)
    chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    chunk.sample_rate, chunk.pts = 48000, 0
    container.mux(sound.encode(chunk) + sound.encode(None))
    container.close()
    with pytest.raises(StylizeError, match="has no video frames"):
        transcode(tmp_path / "empty.mkv", tmp_path / "out.mp4")


def test_bad_outputs_fail_before_any_work(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=2, audio=None)
    (tmp_path / "taken.mp4").write_bytes(b"mine")
    with pytest.raises(StylizeError, match="is the input file"):
        transcode(clip, tmp_path / "." / "clip.mp4", overwrite=True)
    with pytest.raises(StylizeError, match="already exists"):
        transcode(clip, tmp_path / "taken.mp4")
    assert (tmp_path / "taken.mp4").read_bytes() == b"mine"
    with pytest.raises(StylizeError, match="cannot tell the video format"):
        transcode(clip, tmp_path / "out.xyz")
    with pytest.raises(StylizeError, match="cannot hold libx264"):
        transcode(clip, tmp_path / "out.webm", options=VideoOptions(codec="libx264"))
    with pytest.raises(StylizeError, match="cannot encode pixel format"):
        transcode(clip, tmp_path / "out.mp4", options=VideoOptions(pix_fmt="rgb48"))
    assert transcode(clip, tmp_path / "taken.mp4", overwrite=True).frames == 2

"""Videos through the pipeline: stylize apply clip.mp4 out.mp4, temporal stability, exact resumes, folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("cv2")

from stylize.api import Stylizer  # noqa: E402
from stylize.config import ApplyOptions, TemporalOptions, VideoOptions  # noqa: E402
from stylize.errors import StylizeError  # noqa: E402
from stylize.pipeline.temporal import FrameStylizer, TemporalStatistics  # noqa: E402
from stylize.video import transcode  # noqa: E402
from tests.conftest import invoke, make_photo  # noqa: E402
from tests.test_video import decoded, make_clip, packets  # noqa: E402

SEGMENTS = VideoOptions(segment_seconds=0.25, preset="ultrafast")  # 6 frames a segment at 24 fps


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    return Stylizer.load("multistyle26", device="cpu", precision="fp32", compile="never")


def smooth_picture(rng: np.random.Generator, coarse: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """A photo-like ``(3, H, W)`` float picture in ``[0, 1]``: ``coarse`` random colours from ``rng``, enlarged
    bicubically to ``size``."""
    grid = torch.from_numpy(rng.random((1, 3, *coarse))).float()
    return torch.nn.functional.interpolate(grid, size=size, mode="bicubic", align_corners=False).clamp(0, 1)[0]


def moving_clip(path: Path, frames: int = 18, cut_at: int | None = None) -> Path:
    """A textured picture panning 1 pixel a frame (and another picture from ``cut_at`` on): known motion."""
    import av

    smooth = smooth_picture(np.random.default_rng(0), (10, 15), (80, 120))
    base = (smooth.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    other = 255 - base
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=24, options={"preset": "ultrafast", "crf": "10"})
    stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
    for index in range(frames):
        picture = other if cut_at is not None and index >= cut_at else base
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture[8:72, index : index + 96]), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def flicker(path: Path) -> float:
    """Mean |frame_t shifted by the known motion - frame_t+1| over the visible pixels, in /255."""
    frames = [rgb.astype(np.float32) for _, rgb in decoded(path)]
    return float(np.mean([np.abs(a[:, 1:] - b[:, :-1]).mean() for a, b in zip(frames, frames[1:], strict=False)]))


def test_temporal_statistics_follow_a_running_mean_and_restart_at_cuts():
    hook = TemporalStatistics(momentum=0.5)
    mean, var = torch.tensor([[0.0], [2.0], [4.0]]), torch.tensor([[1.0], [1.0], [3.0]])
    hook.begin([True, False, True])
    got_mean, got_var = hook("layer", mean, var)
    assert got_mean.flatten().tolist() == [0.0, 1.0, 4.0] and got_var.flatten().tolist() == [1.0, 1.0, 3.0]
    hook.begin([False])  # one image at a time (tiles) continues the same sequence
    assert hook("layer", torch.tensor([[8.0]]), torch.tensor([[1.0]]))[0].item() == 6.0


@pytest.mark.parametrize("setting", [{"momentum": 1.0}, {"flow_strength": -0.1}, {"blend_scale": 0.0}, {"blend_scale": 1.5}])
def test_temporal_settings_out_of_range_are_refused(setting):
    with pytest.raises(StylizeError, match="temporal settings out of range"):
        TemporalOptions(**setting)


def test_temporal_frames_flicker_less_than_per_frame(stylizer, tmp_path):
    clip = moving_clip(tmp_path / "pan.mp4", frames=10)
    plain = stylizer.apply_video(clip, tmp_path / "plain.mp4", temporal=False, video=SEGMENTS)
    steady = stylizer.apply_video(clip, tmp_path / "steady.mp4", temporal=True, video=SEGMENTS)
    assert plain.frames == steady.frames == 10
    assert flicker(tmp_path / "steady.mp4") < 0.9 * flicker(tmp_path / "plain.mp4")  # the full figure: scripts/bench/bench_video.py


def test_a_scene_cut_restarts_the_temporal_state(stylizer):
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 40), indexing="ij")
    picture = torch.stack([xs, ys, (xs - ys).abs()]).mul(200).add(30).to(torch.uint8)
    other = torch.full((3, 32, 40), 240, dtype=torch.uint8) - picture
    moved = torch.roll(picture, 1, dims=2)

    def run(frames: list[torch.Tensor]) -> torch.Tensor:
        processor = FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions(), TemporalOptions())
        return torch.stack([processor([frame])[0] for frame in frames])[-1].int()

    after_cut, alone = run([other, picture]), run([picture])
    assert (after_cut - alone).abs().max() <= 1  # a jump to another picture starts afresh
    continued, moved_alone = run([picture, moved]), run([moved])
    assert (continued - moved_alone).abs().float().mean() > 1.0  # a small move carries the scene's state on


def test_a_killed_temporal_run_resumes_to_the_same_bytes(stylizer, tmp_path, monkeypatch):
    clip = moving_clip(tmp_path / "pan.mp4", frames=24)
    reference = stylizer.apply_video(clip, tmp_path / "reference.mp4", video=SEGMENTS)
    calls = {"n": 0}
    original = FrameStylizer.__call__

    def crash_in_the_third_segment(self, frames):
        calls["n"] += 1
        if calls["n"] == 5:  # batches of 4 within 6-frame segments: 4, 2, 4, 2, [crash]
            raise RuntimeError("simulated kill")
        return original(self, frames)

    monkeypatch.setattr(FrameStylizer, "__call__", crash_in_the_third_segment)
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated kill"):
        stylizer.apply_video(clip, target, video=SEGMENTS)
    assert not target.exists()
    monkeypatch.setattr(FrameStylizer, "__call__", original)
    resumed = stylizer.apply_video(clip, target, video=SEGMENTS)
    assert resumed.segments_reused == 2 and resumed.frames == reference.frames
    assert packets(target, "video") == packets(tmp_path / "reference.mp4", "video")


def test_another_style_does_not_reuse_segments_of_an_interrupted_run(stylizer, tmp_path):
    clip = moving_clip(tmp_path / "pan.mp4", frames=12)
    first = transcode(clip, tmp_path / "a.mp4", lambda frames: frames, SEGMENTS, fingerprint="one")
    assert first.segments_reused == 0
    result = stylizer.apply_video(clip, tmp_path / "b.mp4", style="3", video=SEGMENTS)
    assert result.segments_reused == 0


def test_cli_video_keeps_the_sound_and_reports_json(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    out = tmp_path / "out.mkv"
    result = invoke("apply", str(clip), str(out), "--json", "--preset", "ultrafast", "--max-size", "48")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["frames"] == 12 and record["size"] == [48, 36] and record["streams_copied"] == ["audio #1 (aac)"]
    assert [data for *_, data in packets(out, "audio")] == [data for *_, data in packets(clip, "audio")]  # copied, not re-encoded
    again = invoke("apply", str(clip), str(out))
    assert again.returncode == 2 and b"--overwrite" in again.stderr


def test_folders_convert_their_videos_too(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.mp4", frames=6)
    make_photo(folder / "photo.png", (40, 32))
    result = invoke("apply", str(folder), str(tmp_path / "out"), "--workers", "0", "--json", "--no-temporal")
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["done"] == 2, result.stderr
    assert (tmp_path / "out" / "clip.mp4").is_file() and (tmp_path / "out" / "photo.png").is_file()
    only_images = invoke("apply", str(folder), str(tmp_path / "out2"), "--workers", "0", "--json", "--ext", "png")
    assert json.loads(only_images.stdout)["done"] == 1


def test_a_painting_style_works_on_video(tmp_path):
    arbitrary = Stylizer.load("arbitrary", device="cpu", precision="fp32", compile="never")
    painting = Path(__file__).resolve().parent.parent / "stylize" / "data" / "styles" / "wave.jpg"
    result = arbitrary.apply_video(make_clip(tmp_path / "c.mp4", frames=6), tmp_path / "o.mp4", style_image=str(painting), video=SEGMENTS)
    assert result.frames == 6
    with pytest.raises(StylizeError, match="painting"):
        arbitrary.apply_video(tmp_path / "c.mp4", tmp_path / "p.mp4", video=SEGMENTS)


def test_phase_lock_makes_a_panning_picture_keep_its_strokes(stylizer):
    """A picture panning 1 pixel a frame: per frame, the network draws other strokes at every shift that is not a
    multiple of 4; with the phase lock it draws the same strokes, moved."""
    picture = (smooth_picture(np.random.default_rng(1), (12, 20), (64, 120)) * 255).to(torch.uint8)
    frames = [picture[:, :, t : t + 96].contiguous() for t in range(9)]  # the content moves 1 pixel left a frame

    def flicker_of(temporal: TemporalOptions) -> float:
        processor = FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions(), temporal)
        out = [frame.float() for frame in processor(frames[:4]) + processor(frames[4:])]
        return float(np.mean([(a[:, 8:-8, 9:-8] - b[:, 8:-8, 8:-9]).abs().mean().item() for a, b in zip(out, out[1:], strict=False)]))

    unlocked = flicker_of(TemporalOptions(momentum=0.0, flow_strength=0.0, phase_lock=False))
    locked = flicker_of(TemporalOptions(momentum=0.0, flow_strength=0.0, phase_lock=True))
    assert locked < 0.5 * unlocked, (locked, unlocked)


def test_frames_too_wide_for_opencv_warp_the_same_way(stylizer, monkeypatch):
    """OpenCV's remap takes no side of 32,767 pixels or more; such frames warp with torch, to the same result."""
    from stylize.pipeline import temporal

    picture = (smooth_picture(np.random.default_rng(2), (12, 20), (64, 120)) * 255).to(torch.uint8)
    frames = [picture[:, :, 2 * t : 2 * t + 96].contiguous() for t in range(6)]

    def run() -> torch.Tensor:
        processor = FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions(), TemporalOptions())
        return torch.stack(processor(frames[:3]) + processor(frames[3:])).int()

    with_opencv = run()
    monkeypatch.setattr(temporal, "REMAP_SIDE_LIMIT", 8)
    with_torch = run()
    per_frame = torch.stack(FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions())(frames)).int()
    assert (with_opencv - per_frame).abs().float().mean() > 5  # the warped previous frames carry over
    assert (with_torch - with_opencv).abs().float().mean() < 0.01 and (with_torch - with_opencv).abs().max() <= 2


def test_temporal_frames_stream_in_tiles_as_they_run_whole(stylizer):
    """Frames too large for memory go through in tiles; the temporal state (statistics included) gives the same frames."""
    picture = (smooth_picture(np.random.default_rng(3), (12, 20), (64, 120)) * 255).to(torch.uint8)
    frames = [picture[:, :, t : t + 96].contiguous() for t in range(6)]

    def run(tile: str, temporal: TemporalOptions | None) -> torch.Tensor:
        processor = FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions(tile=tile), temporal)
        return torch.stack(processor(frames[:3]) + processor(frames[3:])).int()

    statistics_only = TemporalOptions(flow_strength=0.0, phase_lock=False)
    tiled = run("32", statistics_only)
    assert (run("off", statistics_only) - tiled).abs().max() <= 1
    assert (tiled - run("32", None)).abs().float().mean() > 2  # the tiles normalise with the running statistics
    assert (run("off", TemporalOptions()) - run("32", TemporalOptions())).abs().max() <= 1


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_the_blend_filter_carries_each_frequency_as_the_screened_solve_does(strength):
    """``low_pass`` stands for the solve's ``w^2 / (w^2 + k^4)``: a sine of each frequency keeps that share."""
    from stylize.pipeline.temporal import FlowBlend, low_pass

    sigma = FlowBlend(strength, 0.08).sigma
    x = np.arange(512, dtype=np.float32)
    for k in (0.05, 0.3, 0.6, 1.0, 1.5, 2.5):
        wave = np.tile(np.sin(k * x), (8, 1)).astype(np.float32)
        kept = low_pass(wave, sigma)[:, 64:-64]
        share = float(np.abs(kept).max() / np.abs(wave[:, 64:-64]).max())
        assert abs(share - strength**2 / (strength**2 + k**4)) < 0.06, (k, share)


@pytest.mark.parametrize(("width", "scale"), [(96, 1.0), (96, 0.5), (800, 0.5)])
def test_the_blend_carries_the_previous_frames_tone_on_any_grid(width, scale):
    """Still input, a new result with another tone: the blend keeps the previous result's tone and the new strokes,
    whether it works on the frame's pixels or on a coarser grid."""
    from stylize.pipeline.temporal import FlowBlend, Motion, grey

    rng = np.random.default_rng(4)
    height = width * 9 // 16
    picture = smooth_picture(rng, (6, 10), (height, width))
    strokes = torch.from_numpy(rng.random((3, height, width), dtype=np.float32)) * 0.1  # pixel-sized detail
    frame = (picture * 255).to(torch.uint8)
    motion, blend = Motion(), FlowBlend(1.0, 0.08, scale)
    first = (picture * 0.8 + strokes).clamp(0, 1)
    blend(first, motion(grey(frame), (height, width), cut=True))
    second = (picture * 0.8 + 0.1 + strokes.roll(1, dims=2)).clamp(0, 1)  # brighter, other strokes
    result = blend(second, motion(grey(frame), (height, width), cut=False))
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert (result - first)[inner].mean().abs() < 0.01  # the tone carried over
    detail = result - torch.nn.functional.avg_pool2d(result[None], 5, 1, 2, count_include_pad=False)[0]
    new_detail = second - torch.nn.functional.avg_pool2d(second[None], 5, 1, 2, count_include_pad=False)[0]
    assert torch.corrcoef(torch.stack([detail[inner].flatten(), new_detail[inner].flatten()]))[0, 1] > 0.8  # the new strokes kept


def test_frames_too_small_for_optical_flow_are_stylized_without_it(stylizer):
    """DIS flow needs a side of 12 pixels; an 8x10 clip is legal H.264 and goes through with the other methods."""
    frames = [torch.full((3, 8, 10), 100 + 2 * t, dtype=torch.uint8) for t in range(5)]  # one scene
    processor = FrameStylizer(stylizer.engine, stylizer.style_weights(), ApplyOptions(), TemporalOptions())
    out = processor(frames[:3]) + processor(frames[3:])
    assert [tuple(frame.shape) for frame in out] == [(3, 8, 10)] * 5


def test_motion_is_estimated_on_frames_of_up_to_720p_at_their_own_size():
    """A half-size flow's errors, scaled up, cost HD frames style and steadiness: 720p frames get a full-size flow,
    larger ones a flow on a copy of 1280 pixels' width that reports motion in the frame's pixels."""
    from stylize.pipeline.temporal import Motion, grey

    scene = (smooth_picture(np.random.default_rng(5), (27, 48), (1080, 1940)) * 255).to(torch.uint8)
    for height, width, step in ((720, 1280, 3), (1080, 1920, 6)):
        frames = [scene[:, :height, t : t + width].contiguous() for t in (0, step)]  # the content moves left
        lumas = [grey(frame) for frame in frames]
        assert tuple(lumas[0].shape) == (720, 1280)
        motion = Motion()
        motion(lumas[0], (height, width), cut=True)
        shift_x, shift_y = motion(lumas[1], (height, width), cut=False).content_shift()
        assert abs(shift_x + step) < 0.3 and abs(shift_y) < 0.3, (shift_x, shift_y)

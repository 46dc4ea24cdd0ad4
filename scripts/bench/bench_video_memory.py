#!/usr/bin/env python3
"""Video memory: the peak RSS of `stylize apply clip.mp4 out.mp4` must not grow with the clip's length.

Makes two H.264 clips with AAC sound that differ only in length (a moving picture with noise, so every frame
differs), runs the CLI on each in a fresh process with its defaults (temporal on) and reads its peak RSS (``ru_maxrss``
from ``wait4``). Target: the long clip's peak at most the short clip's plus 10%. Prints a table;
exits 1 on a miss. Downloads nothing::

    python scripts/bench/bench_video_memory.py [--short 10] [--long 60] [--size 320x240]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from bench_batch import measure  # this folder is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[2]
TARGET_GROWTH = 1.10  # long clip's peak RSS at most this times the short clip's
FPS = 25
SAMPLE_RATE = 48_000


def write_clip(path: Path, seconds: float, width: int, height: int) -> int:
    """An H.264 + AAC clip of ``seconds``: a diagonal gradient sliding 3 px a frame, noise of 4/255, a 440 Hz tone."""
    rng = np.random.default_rng(0)
    frames = round(seconds * FPS)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index in range(frames):
            base = ((x + y + 3 * index) % 256).astype(np.float32)
            pixels = np.stack([base, np.roll(base, 40, axis=1), 255 - base], axis=-1) + rng.normal(0, 4, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(pixels.clip(0, 255).astype(np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        samples = np.sin(2 * np.pi * 440 * np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())
    return frames


def peak_rss_mb(source: Path, target: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of `stylize apply source target` in a fresh process."""
    command = [sys.executable, "-m", "stylize", "apply", str(source), str(target), "--overwrite"]
    result = measure(command, {**os.environ, "PYTHONPATH": str(ROOT)}, sample_memory=False)
    return result["max_rss"] / 2**20, result["wall"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip")
    parser.add_argument("--long", type=float, default=60.0, help="seconds of the long clip")
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, seconds in (("short", args.short), ("long", args.long)):
            clip = Path(folder) / f"{label}.mp4"
            frames = write_clip(clip, seconds, width, height)
            peak, wall = peak_rss_mb(clip, Path(folder) / f"{label}_out.mp4")
            rows.append((label, seconds, frames, peak, wall))
    print(f"stylize apply clip.mp4 out.mp4 (defaults: bundled model, temporal on), {width}x{height}, {FPS} fps, AAC sound")
    print(f"{'clip':<6} {'seconds':>8} {'frames':>7} {'peak RSS MB':>12} {'wall s':>8} {'frames/s':>9}")
    for label, seconds, frames, peak, wall in rows:
        print(f"{label:<6} {seconds:>8.0f} {frames:>7} {peak:>12.0f} {wall:>8.1f} {frames / wall:>9.1f}")
    short_peak, long_peak = rows[0][3], rows[1][3]
    ok = long_peak <= TARGET_GROWTH * short_peak
    print(f"{'ok    ' if ok else 'MISSED'} long clip's peak RSS <= {TARGET_GROWTH} x short clip's: {long_peak / short_peak:.3f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

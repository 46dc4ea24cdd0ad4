"""Turning decoded frames upright: the display matrix (or an old ``rotate`` tag) as transposes and flips.

Phones store portrait video as landscape pixels plus a display matrix saying "rotate by 90 degrees when shown". The
network must see the picture upright, so the rotation is applied to the pixels on decode and the output carries none.
The matrix is read exactly as FFmpeg's own command line does (``fftools``' autorotate), flips included.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

Step = str  # "transpose" (swap rows and columns), "hflip" (mirror left-right) or "vflip" (mirror top-bottom)


@dataclass(frozen=True)
class Orientation:
    """How to show decoded pixels upright: ``rotation`` clockwise degrees (0, 90, 180, 270) and the steps that do it."""

    rotation: int = 0
    steps: tuple[Step, ...] = ()

    @property
    def swaps_sides(self) -> bool:
        """True when the upright picture's width is the coded height (a quarter turn)."""
        return "transpose" in self.steps

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.swaps_sides else (width, height)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` array -> the upright ``(H', W', C)`` array (a view; the caller copies it once)."""
        for step in self.steps:
            if step == "transpose":
                pixels = pixels.transpose(1, 0, 2)
            elif step == "hflip":
                pixels = pixels[:, ::-1]
            elif step == "vflip":
                pixels = pixels[::-1]
        return pixels


UPRIGHT = Orientation()


def from_display_matrix(data: bytes) -> Orientation:
    """Read FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX`` (nine native-endian int32, 16.16 fixed point).

    Mirrors ``fftools/ffmpeg_filter.c``: quarter turns become transposes with flips, a half turn the flips the matrix
    holds; other angles are not right angles and are ignored (FFmpeg would rotate and pad the picture).
    """
    if len(data) < 36:
        return UPRIGHT
    m = struct.unpack("=9i", data[:36])
    scale_x, scale_y = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale_x == 0 or scale_y == 0:
        return UPRIGHT
    # Clockwise degrees: the negation of av_display_rotation_get(), which measures counterclockwise.
    theta = float(round(math.degrees(math.atan2(m[1] / scale_y, m[0] / scale_x))))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return Orientation(90, ("transpose",) if m[3] > 0 else ("transpose", "hflip"))
    if abs(theta - 180) < 1:
        return Orientation(180, tuple(step for step, flip in (("hflip", m[0] < 0), ("vflip", m[4] < 0)) if flip))
    if abs(theta - 270) < 1:
        return Orientation(270, ("transpose", "hflip", "vflip") if m[3] < 0 else ("transpose", "vflip"))
    if abs(theta) < 1 and m[4] < 0:
        return Orientation(0, ("vflip",))
    return UPRIGHT


def from_rotate_tag(value: str | None) -> Orientation:
    """Read the ``rotate`` metadata tag (clockwise degrees) that older muxers wrote instead of a display matrix."""
    try:
        degrees = int(float(value or 0)) % 360
    except ValueError:
        return UPRIGHT
    return {
        90: Orientation(90, ("transpose", "hflip")),
        180: Orientation(180, ("hflip", "vflip")),
        270: Orientation(270, ("transpose", "vflip")),
    }.get(degrees, UPRIGHT)

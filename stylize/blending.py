"""Mixing a stylized image with its photo: strength blending and colour preservation.

Both work on ``(B, 3, H, W)`` float tensors in ``[0, 1]`` and return new tensors (inputs are never modified).
"""

from __future__ import annotations

import torch

# Full-range BT.601 (the JPEG/JFIF convention, as PIL's "YCbCr" mode uses).
_RGB_TO_Y = (0.299, 0.587, 0.114)


def blend(stylized: torch.Tensor, photo: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength * stylized + (1 - strength) * photo``; 0 gives the photo back exactly, 1 the stylized image."""
    if strength >= 1.0:
        return stylized
    if strength <= 0.0:
        return photo.clone()
    return torch.lerp(photo, stylized, strength)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Y of full-range BT.601, ``(B, 1, H, W)``."""
    r, g, b = images.unbind(dim=1)
    return (_RGB_TO_Y[0] * r + _RGB_TO_Y[1] * g + _RGB_TO_Y[2] * b).unsqueeze(1)


def preserve_color(stylized: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Keep the photo's chroma and take the stylized luminance (Gatys et al.'s luminance-only transfer).

    Adding the luminance difference to every channel equals replacing Y in YCbCr while keeping Cb and Cr,
    because Y is a weighted sum whose weights add up to 1.
    """
    shift = luminance(stylized) - luminance(photo)  # (B, 1, H, W), broadcast over the 3 channels
    return (photo + shift).clamp(0.0, 1.0)

"""Mixing a stylized image with its photo: strength blending, colour preservation, detail-preserving upsampling.

Both work on ``(B, 3, H, W)`` float tensors in ``[0, 1]`` and return new tensors (inputs are never modified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def detail_upsample(stylized: torch.Tensor, photo: torch.Tensor, small_photo: torch.Tensor) -> torch.Tensor:
    """Bring ``stylized`` (made from ``small_photo``, a downscaled ``photo``) up to ``photo``'s size, adding back the
    luminance detail that the downscale took from the photo: ``up(stylized) + Y(photo) - Y(up(small_photo))``.

    The strokes keep the size they were painted at; edges and fine texture of the full-resolution photo stay sharp
    instead of the plain upsample's blur. All ``(B, 3, H, W)`` in ``[0, 1]``; the result is clamped to it.
    """
    size = photo.shape[-2:]
    upsampled = F.interpolate(stylized, size=size, mode="bicubic", align_corners=False)
    detail = luminance(photo) - luminance(F.interpolate(small_photo, size=size, mode="bicubic", align_corners=False))
    return upsampled.add_(detail).clamp_(0.0, 1.0)


def downscale(images: torch.Tensor, long_side: int) -> torch.Tensor:
    """``(B, 3, H, W)`` scaled so that its long side is ``long_side`` (antialiased bilinear); never upscaled."""
    height, width = images.shape[-2:]
    if max(height, width) <= long_side:
        return images
    scale = long_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
